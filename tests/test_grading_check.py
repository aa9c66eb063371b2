"""`redis-workbook check` and the notebooks' self_check/require: exit codes, messages, repeatable in-process runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from submissions import ENDSWITH, GOOD, REPO, write_notebook

from redis_workbook.grading import check, points

TOTAL = points.format_points(sum(points.read(REPO / "grader" / "points.toml")["06_recommender"].values()))


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "redis_workbook.cli", "check", *args], capture_output=True,
                          text=True, timeout=300)


def test_check_passes_the_solution_and_names_every_test() -> None:
    done = run_check(str(REPO / "solutions" / "06_recommender.ipynb"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  test_track_view_newest_first  (" in done.stdout
    assert "FAIL" not in done.stdout and f"Total: {TOTAL}/{TOTAL} points" in done.stdout


def test_check_fails_with_the_mistake_named(tmp_path: Path) -> None:
    done = run_check(str(write_notebook(tmp_path / "06_recommender.ipynb", ENDSWITH)))
    assert done.returncode == 1
    assert "FAIL  test_similar_products_never_return_the_product_itself" in done.stdout
    assert "endswith" in done.stdout and "Total: " in done.stdout


@pytest.mark.parametrize("mistake", ["cache key from Python's hash()", "cache key from hash() modulo 10**8"])
def test_check_recognises_hash_keys_made_in_the_sandboxed_process(tmp_path: Path, mistake: str) -> None:
    """The notebook runs in another process with its own hash seed; the grader must still see hash() keys."""
    from grader_mutants import MUTANTS

    mutant = next(m for m in MUTANTS if m.name == mistake)
    done = run_check(str(write_notebook(tmp_path / "05_semantic_cache.ipynb", mutant.source())))
    assert done.returncode == 1
    assert "hash(" in done.stdout, done.stdout


def test_check_reports_a_broken_notebook_as_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "06_recommender.ipynb"
    path.write_text("{")
    done = run_check(str(path))
    assert done.returncode == 1
    assert "is not valid JSON" in done.stdout and f"Total: 0/{TOTAL} points" in done.stdout


def test_check_bad_usage_exits_2(tmp_path: Path) -> None:
    missing = run_check(str(tmp_path / "06_recommender.ipynb"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unknown = run_check(str(write_notebook(tmp_path / "my_homework.ipynb", "x = 1\n")))
    assert unknown.returncode == 2 and "unknown assignment 'my_homework'" in unknown.stderr
    assert "06_recommender" in unknown.stderr
    renamed = write_notebook(tmp_path / "copy.ipynb", GOOD, "self_check('06_recommender', globals())\n")
    assert check.assignment_for(renamed, points.assignments()) == "06_recommender"


def namespace(source: str) -> dict:
    scope: dict = {"__name__": "__main__"}
    exec(compile(source, "<notebook>", "exec"), scope)
    return scope


def test_self_check_and_require_run_in_process_again_and_again(capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = namespace(GOOD), namespace(ENDSWITH)
    for _ in range(2):
        assert check.self_check("06_recommender", good) is True
        assert check.self_check("06_recommender", bad) is False
    printed = capsys.readouterr().out
    assert printed.count(f"Total: {TOTAL}/{TOTAL} points") == 2
    assert printed.count("FAIL  test_similar_products_never_return_the_product_itself") == 2
    check.require("06_recommender", "test_track_view_newest_first", bad)
    assert "PASS test_track_view_newest_first (" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="endswith"):
        check.require("06_recommender", "test_similar_products_never_return_the_product_itself", bad)


def test_self_check_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="assignment must be one of .*06_recommender.*got '6'"):
        check.self_check("6", {})
    with pytest.raises(TypeError, match=r"namespace must be the notebook's globals\(\)"):
        check.self_check("06_recommender", [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="test_name must be a test of 06_recommender"):
        check.require("06_recommender", "test_nope", {})


def test_inside_the_grader_the_notebook_checks_do_nothing(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(check.GRADING_ENV, "worker")
    assert check.self_check("06_recommender", {}) is True
    check.require("06_recommender", "test_track_view_newest_first", {})
    assert "skipped" in capsys.readouterr().out


GRADER_CONFTEST = 'pytest_plugins = ["redis_workbook.grading.plugin"]\n'
GRADER_TESTS = '''
import pytest


@pytest.mark.parametrize("x", [1, 2])
def test_split(nb, x):
    assert nb.double(x) == 2 * x


def test_message(nb):
    assert nb.double(1) == 3, "double(1) should be 3 (on purpose)"


def test_bare(nb):
    assert nb.double(2) == 5


def test_error(nb, r):
    r.set("seen", "1")
    nb.explode()


def test_starts_empty(r):
    assert r.dbsize() == 0, "FLUSHALL before every test"
'''


def test_points_and_messages_per_test(tmp_path: Path) -> None:
    """Parametrized cases share their test's points; messages are the test's own, or the error, short."""
    from redis_workbook.grading.plugin import LocalRun
    from redis_workbook.server import EmbeddedRedis

    (tmp_path / "conftest.py").write_text(GRADER_CONFTEST)
    (tmp_path / "test_01_setup.py").write_text(GRADER_TESTS)
    (tmp_path / "points.toml").write_text('["01_setup"]\ntest_split = 3\ntest_message = 1\ntest_bare = 1\n'
                                          "test_error = 1\ntest_starts_empty = 1\n")
    scope = namespace("def double(x):\n    return 2 * x\n\ndef explode():\n    raise KeyError('boom')\n")
    with EmbeddedRedis() as server:
        got = check.run_tests(tmp_path, "01_setup", [], [LocalRun(scope, server.url)]).to_json()
    tests = {t["name"]: t for t in got["tests"]}
    assert [tests[f"test_split[{x}]"]["points"] for x in (1, 2)] == [1.5, 1.5]
    assert (got["score"], got["max_score"]) == (4.0, 7.0)
    assert tests["test_message"]["message"] == "double(1) should be 3 (on purpose)"
    assert tests["test_bare"]["message"].startswith("assert 4 == 5")
    assert tests["test_error"]["message"].startswith("KeyError: 'boom'")
    assert "explode" in tests["test_error"]["message"] and len(tests["test_error"]["message"].splitlines()) < 25
    assert tests["test_starts_empty"]["passed"]


def test_check_grades_like_nbgrader(tmp_path: Path) -> None:
    """Code below the autograded test cells does not count, and functions get their Redis from `r`."""
    test_cell = "require('06_recommender', 'test_track_view_newest_first', globals())\n"
    global_r = GOOD.replace("def track_view(r, ", "def track_view(_r, ")  # its body then uses the global r
    global_r += "\nimport redis_workbook\n\nr = redis_workbook.connect()\n"
    path = write_notebook(tmp_path / "06_recommender.ipynb", global_r, test_cell, "x = 1\n", "def y():\n    pass\n")
    notebook = json.loads(path.read_text())
    notebook["cells"][1]["metadata"]["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                                     "grade_id": "test_track_view_newest_first", "points": 3}
    path.write_text(json.dumps(notebook))
    done = run_check(str(path))
    assert done.returncode == 1
    assert "FAIL  test_track_view_newest_first" in done.stdout
    assert "PASS  test_similar_products_are_the_nearest" in done.stdout
    assert "cells 3, 4 below the autograded check cells did not run" in done.stdout
