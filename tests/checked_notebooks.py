"""What the per-notebook grading tests (07, 09, 10, 11) share: `redis-workbook check`, sandboxed as a learner runs
it, giving the solution full marks, and a notebook with one mutant all but the check the mutant names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from grader_mutants import MUTANTS
from submissions import REPO, write_notebook
from test_grading_check import run_check

from redis_workbook.grading import points

SCORE = re.compile(r"Total: ([0-9.]+)/([0-9.]+) points")


def assignment_points(assignment: str) -> dict[str, float]:
    return points.read(REPO / "grader" / points.POINTS_FILE)[assignment]


def assert_full_marks(assignment: str) -> None:
    done = run_check(str(REPO / "solutions" / f"{assignment}.ipynb"))
    shown = points.format_points(sum(assignment_points(assignment).values()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and f"Total: {shown}/{shown} points" in done.stdout, done.stdout


def assert_loses_exactly_its_check(assignment: str, mutant_name: str, folder: Path) -> str:
    """Check a notebook holding the mutant: only its check fails, and the score is the total minus its points.
    Returns check's output for further assertions."""
    mutant = next(m for m in MUTANTS if m.name == mutant_name)
    done: subprocess.CompletedProcess[str] = run_check(str(write_notebook(folder / f"{assignment}.ipynb",
                                                                          mutant.source())))
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.findall(r"^FAIL  (\S+)", done.stdout, flags=re.MULTILINE) == [mutant.check], done.stdout
    score, table = SCORE.search(done.stdout), assignment_points(assignment)
    assert score is not None, done.stdout
    total = sum(table.values())
    assert float(score.group(1)) == total - table[mutant.check] and float(score.group(2)) == total, done.stdout
    return done.stdout
