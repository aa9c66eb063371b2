"""The built wheel is the whole course: installed outside the checkout it writes a course folder, checks a
notebook and grades a class from another directory, and learner code graded from it cannot read its grader
or solutions (package data inside site-packages, which the sandbox otherwise shows).

The wheel is built offline with this venv's setuptools and installed with --no-deps into a fresh venv that
imports this venv's dependencies through a .pth file (their folder only: the checkout's editable install
stays invisible), so nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from submissions import BROKEN_SIMILAR, GOOD, write_notebook

from redis_workbook import coursefolder

ROOT = Path(__file__).resolve().parents[1]
READ_PACKAGED = '''
from pathlib import Path

import redis_workbook

course = Path(redis_workbook.__file__).parent / "course"
found = []
for target in ("grader/test_06_recommender.py", "grader/points.toml", "solutions/06_recommender.ipynb"):
    try:
        (course / target).read_bytes()
        found.append(target)
    except OSError:
        pass
for folder in ("grader", "solutions"):
    try:
        found += [f"{folder}/{path.name}" for path in (course / folder).iterdir()]
    except OSError:
        pass
print("READ", sorted(found), "NOTEBOOKS", len(list((course / "notebooks").glob("*.ipynb"))))
'''


@dataclass
class Installed:
    venv: Path
    wheel: Path
    elsewhere: Path  # a folder with no repository around it

    def run(self, *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin" / "redis-workbook"), *args], cwd=cwd or self.elsewhere,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(base / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((base / "dist").glob("redis_workbook-*.whl"))
    venv = base / "venv"
    base_python = sys._base_executable  # type: ignore[attr-defined]  # the Python this venv was made from
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    print(f"\nwheel {wheel.stat().st_size / 1e6:.2f} MB, built and installed in {time.monotonic() - started:.1f} s")
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return Installed(venv, wheel, elsewhere)


def test_the_wheel_is_what_runs_and_it_writes_a_fresh_course(installed: Installed) -> None:
    where = subprocess.run([installed.venv / "bin" / "python", "-c", "import redis_workbook; "
                            "print(redis_workbook.__file__)"], capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed.venv)), f"the checkout's package was imported: {where}"
    done = installed.run("course", "mycourse")
    assert done.returncode == 0, done.stderr
    written = installed.elsewhere / "mycourse"
    assert coursefolder.files(written) == coursefolder.files(ROOT), "the course folder is the repository's course"
    for relative in coursefolder.files(ROOT):
        assert (written / relative).read_bytes() == (ROOT / relative).read_bytes(), relative
    again = installed.run("course", "mycourse")
    assert again.returncode == 2 and "not an empty folder" in again.stderr
    release = installed.run("release", "--check", cwd=written)  # nbgrader's generate_assignment, in the folder
    assert release.returncode == 0 and "in step" in release.stdout, release.stdout + release.stderr


def test_check_from_the_wheel_scores_a_solution(installed: Installed) -> None:
    notebook = installed.elsewhere / "06_recommender.ipynb"
    notebook.write_bytes((ROOT / "solutions" / "06_recommender.ipynb").read_bytes())
    done = installed.run("check", str(notebook))
    assert done.returncode == 0, done.stdout + done.stderr
    total = sum(coursefolder_points()["06_recommender"].values())
    assert f"Total: {total:g}/{total:g} points" in done.stdout


def coursefolder_points() -> dict[str, dict[str, float]]:
    from redis_workbook.grading import points

    return points.read(ROOT / "grader" / "points.toml")


def test_grade_in_a_course_folder_scores_a_class_and_hides_the_packaged_grader(installed: Installed) -> None:
    """The instructor grades inside a course folder, with its grader/; the package's copy must stay hidden too."""
    assert installed.run("course", "term1").returncode == 0
    course = installed.elsewhere / "term1"
    submitted, out = installed.elsewhere / "submitted", installed.elsewhere / "out"
    folder = "06_recommender/06_recommender.ipynb"
    (submitted / "a_good" / "06_recommender").mkdir(parents=True)
    (submitted / "a_good" / folder).write_bytes((ROOT / "solutions" / "06_recommender.ipynb").read_bytes())
    write_notebook(submitted / "b_broken" / folder, GOOD, BROKEN_SIMILAR)
    write_notebook(submitted / "c_reads_the_package" / folder, GOOD, READ_PACKAGED)
    done = installed.run("grade", str(submitted), "--out", str(out), "--jobs", "3", "--cell-timeout", "60",
                         "--call-timeout", "30", "--submission-timeout", "300", timeout=900, cwd=course)
    assert done.returncode == 0, done.stderr
    table = coursefolder_points()["06_recommender"]
    total = sum(table.values())
    with open(out / "gradebook.csv", newline="") as handle:
        scores = {row["student_id"]: (float(row["score"]), float(row["max_score"]), row["status"])
                  for row in csv.DictReader(handle)}
    similar = table["test_similar_products_never_return_the_product_itself"] + \
        table["test_similar_products_are_the_nearest"]
    assert scores == {"a_good": (total, total, "graded"), "b_broken": (total - similar, total, "graded"),
                      "c_reads_the_package": (total, total, "graded")}
    meta = json.loads((out / "c_reads_the_package" / "06_recommender" / "results.json").read_text())
    printed = meta["extra_data"]["redis_workbook"]["output"]
    learner_notebooks = len(list((ROOT / "notebooks").glob(coursefolder.NOTEBOOKS)))
    assert f"READ [] NOTEBOOKS {learner_notebooks}" in printed, printed  # the learner notebooks are there, not
    # the grader and solutions


def test_gradescope_from_the_wheel_carries_the_installed_package(installed: Installed) -> None:
    """No checkout around it: the autograder zip carries a wheel rebuilt from the installed files, the same files."""
    done = installed.run("gradescope", "06_recommender", "--out", "autograder.zip")
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(installed.elsewhere / "autograder.zip") as archive:
        assert {"setup.sh", "run_autograder", "grader/test_06_recommender.py"} <= set(archive.namelist())
        rebuilt = zipfile.ZipFile(io.BytesIO(archive.read(installed.wheel.name)))
    with zipfile.ZipFile(installed.wheel) as original:
        assert set(rebuilt.namelist()) == set(original.namelist())
        for name in original.namelist():
            if not name.endswith("/RECORD"):  # the RECORD lists the same files, hashes and sizes in another order
                assert rebuilt.read(name) == original.read(name), name
