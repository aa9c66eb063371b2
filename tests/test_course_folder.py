"""A course folder (`redis-workbook course DIR`) is the grader an instructor edits: check, grade and release in it
use its grader/, even with an editable install of the repository; a points.toml it cannot read stops each of them
with one line saying which file and what to fix, and nothing is written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

COMMAND = [sys.executable, "-m", "redis_workbook.cli"]


def workbook(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_WORKBOOK_GRADER")}
    return subprocess.run([*COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def course(tmp_path: Path) -> Path:
    done = workbook("course", "term1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "term1"


def test_check_in_a_course_folder_uses_its_points(course: Path) -> None:
    points = course / "grader" / "points.toml"
    text = points.read_text()
    assert "test_search_module_version_is_the_loaded_version = 4" in text
    points.write_text(text.replace("test_search_module_version_is_the_loaded_version = 4",
                                   "test_search_module_version_is_the_loaded_version = 7"))
    done = workbook("check", "notebooks/01_setup.ipynb", cwd=course)
    assert "test_search_module_version_is_the_loaded_version  (0/7)" in done.stdout, done.stdout + done.stderr
    assert re.search(r"Total: 0/13 points", done.stdout), done.stdout


def test_a_broken_points_file_stops_every_command_with_one_line(course: Path) -> None:
    points = course / "grader" / "points.toml"
    points.write_text(points.read_text() + "\noops = = 1\n")
    submitted = course / "submitted" / "alice" / "01_setup"
    submitted.mkdir(parents=True)
    (submitted / "01_setup.ipynb").write_bytes((course / "notebooks" / "01_setup.ipynb").read_bytes())
    before = sorted(p.relative_to(course) for p in course.rglob("*"))
    for args in (("check", "notebooks/01_setup.ipynb"), ("grade", "submitted", "--out", "out"), ("release",)):
        done = workbook(*args, cwd=course)
        assert done.returncode != 0, f"{args}: {done.stdout}"
        assert "Traceback" not in done.stderr, done.stderr
        assert f"{points} is not valid TOML" in done.stderr and "fix it" in done.stderr, done.stderr
    assert sorted(p.relative_to(course) for p in course.rglob("*")) == before  # nothing written, no OUT
