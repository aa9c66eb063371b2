"""A class graded as 3 shards (in parallel, as 3 hosts would) and merged is the class graded at once.

Merging checks that the shards add up to one class before it writes anything: a missing shard,
one given twice, or an OUT reused for another shard is an error that names the fix.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from submissions import BROKEN_SIMILAR, GOOD, REPO, write_notebook

from redis_workbook.grading.shards import shard_of

# No learner code here is slow: generous limits cost nothing and keep a loaded machine from failing a call in one
# run but not in the other.
OPTIONS = ["--cell-timeout", "60", "--call-timeout", "30", "--submission-timeout", "300"]
NOTEBOOK = "06_recommender/06_recommender.ipynb"
CLASS = {"ada": 2, "cy": 0, "hal": 1, "kim": 1}  # student -> the shard of 3 their id hashes to


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "redis_workbook.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def outcomes(out: Path) -> dict[str, list[tuple[str, str, float]]]:
    """student -> (test, status, points) per test, from each results.json (durations and times left out)."""
    return {path.parts[-3]: [(t["name"], t["status"], t["score"]) for t in json.loads(path.read_text())["tests"]]
            for path in sorted(out.glob(f"*/{NOTEBOOK.split('/')[0]}/results.json"))}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("shards")
    submitted = base / "submitted"
    (submitted / "ada" / "06_recommender").mkdir(parents=True)
    (submitted / "ada" / NOTEBOOK).write_bytes((REPO / "solutions" / "06_recommender.ipynb").read_bytes())
    write_notebook(submitted / "cy" / NOTEBOOK, GOOD, BROKEN_SIMILAR)
    (submitted / "hal" / "06_recommender").mkdir(parents=True)
    (submitted / "hal" / NOTEBOOK).write_text("not a notebook")
    write_notebook(submitted / "kim" / NOTEBOOK, GOOD)
    assert {student: shard_of(student, 3) for student in CLASS} == CLASS, "every shard gets a part of the class"
    runs = [cli("grade", str(submitted), "--out", str(base / "whole"), "--jobs", "3", *OPTIONS)]
    runs += [cli("grade", str(submitted), "--out", str(base / f"out{i}"), "--shard", f"{i}/3", *OPTIONS)
             for i in range(3)]
    for process in runs:
        code, stderr = finish(process)
        assert code == 0, stderr
    return base


def test_three_shards_merged_are_the_class_graded_at_once(graded: Path) -> None:
    for i in range(3):
        assert set(outcomes(graded / f"out{i}")) == {s for s, shard in CLASS.items() if shard == i}
    code, stderr = finish(cli("merge", str(graded / "out2"), str(graded / "out0"), str(graded / "out1"),
                              "--out", str(graded / "merged")))
    assert code == 0, stderr
    whole = (graded / "whole" / "gradebook.csv").read_text()
    assert (graded / "merged" / "gradebook.csv").read_text() == whole
    assert outcomes(graded / "merged") == outcomes(graded / "whole")
    rows = {row["student_id"]: row for row in csv.DictReader(io.StringIO(whole))}
    assert set(rows) == set(CLASS) and {row["status"] for row in rows.values()} == {"graded"}
    assert rows["ada"]["score"] == rows["ada"]["max_score"] != "0" and rows["hal"]["score"] == "0"
    assert 0 < float(rows["cy"]["score"]) < float(rows["kim"]["score"])
    assert (graded / "merged" / "kim" / "06_recommender" / "feedback.md").read_text() == \
        (graded / "whole" / "kim" / "06_recommender" / "feedback.md").read_text()

    again = finish(cli("merge", str(graded / "out0"), str(graded / "out1"), str(graded / "out2"),
                       "--out", str(graded / "merged")))
    assert again[0] == 0, again[1]
    assert (graded / "merged" / "gradebook.csv").read_text() == whole, "merging again changes nothing"


@pytest.mark.parametrize(("shards", "error"), [((0, 1), "shard 2/3 missing"), ((0, 1, 2, 1), "shard 1/3 given twice")])
def test_merge_refuses_missing_and_duplicate_shards_and_writes_nothing(graded: Path, shards: tuple[int, ...],
                                                                       error: str) -> None:
    target = graded / f"refused-{len(shards)}"
    code, stderr = finish(cli("merge", *[str(graded / f"out{i}") for i in shards], "--out", str(target)))
    assert code == 2 and error in stderr and "Nothing was written" in stderr, stderr
    assert not target.exists()
    assert not list(graded.glob(f".{target.name}*")), "no staging folder left behind"


def test_a_shard_out_is_not_reused_for_another_shard(graded: Path) -> None:
    code, stderr = finish(cli("grade", str(graded / "submitted"), "--out", str(graded / "out0"), "--shard", "1/3",
                              *OPTIONS))
    assert code == 2 and "holds the results of shard 0/3" in stderr, stderr
    code, stderr = finish(cli("grade", str(graded / "submitted"), "--out", str(graded / "out0"), "--shard", "3/3"))
    assert code == 2 and "0 <= I < N" in stderr, stderr
