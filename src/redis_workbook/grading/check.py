"""Checking one notebook against its grader tests: the `check` command, and self_check/require in notebooks.

- `redis-workbook check NOTEBOOK`: the notebook runs sandboxed, exactly as when graded;
  one line per test (PASS/FAIL, points, message) and a total. Exit 0 when every
  test passes, 1 when any fails, 2 on bad usage (no such file, unknown assignment).
- `self_check(assignment, globals())` in a notebook: the same tests, in-process,
  against the notebook's own functions, on a fresh private embedded Redis.
- `require(assignment, test_name, globals())`: one test; AssertionError with the
  message when it fails (nbgrader's autograded test cells call it, so nbgrader's
  scores are the grader's).

The assignment id is the notebook's stem (`06_recommender`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from redis_workbook.grading import options, points, submission
from redis_workbook.grading.options import UsageProblem
from redis_workbook.grading.results import Results, check_report

GRADING_ENV = "REDIS_WORKBOOK_GRADING"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", help="the notebook to check, e.g. notebooks/06_recommender.ipynb")
    options.add(parser, "backend", "redis_url", "cell_timeout", "call_timeout")


def run(args: argparse.Namespace) -> int:
    try:
        grader = points.grader_dir()
        path = Path(args.notebook)
        if not path.is_file():
            raise UsageProblem(f"{path} does not exist (or is not a file).")
        assignment = assignment_for(path, points.assignments(grader))
    except (UsageProblem, points.GraderNotFound) as exc:
        print(f"redis-workbook check: {exc}", file=sys.stderr)
        return 2
    extra = ["--submission", str(path.absolute()),  # a link stays a link: refused
             *options.passed_on(args, "backend", "redis_url", "cell_timeout", "call_timeout")]
    results = run_tests(grader, assignment, extra)
    print(check_report(results))
    return 0 if results.all_passed else 1


def assignment_for(path: Path, known: tuple[str, ...]) -> str:
    """The notebook's stem when it is an assignment id, else the one assignment its check cells name."""
    if path.stem in known:
        return path.stem
    claims = submission.load(path).claims & set(known)
    if len(claims) == 1:
        return claims.pop()
    raise UsageProblem(f"{path.name}: unknown assignment {path.stem!r}. Name the notebook after its assignment, "
                       f"one of: {', '.join(known)}.")


def pytest_arguments(grader: Path, selection: str, results_json: Path) -> list[str]:
    """In-process pytest, repeatable: options.pytest_base, no terminal output, no addopts, output captured."""
    return [selection, *options.pytest_base(grader.parent), "-p", "no:terminal", "-o", "addopts=", "--capture=sys",
            "--results-json", str(results_json)]


def run_tests(grader: Path, assignment: str, extra: list[str], plugins: list | None = None,
              test_name: str | None = None) -> Results:
    """pytest.main on the assignment's grader module; the plugin's results."""
    import pytest

    selection = str(points.module_path(assignment, grader)) + (f"::{test_name}" if test_name else "")
    with tempfile.TemporaryDirectory(prefix="redis-workbook-check-") as folder:
        results_json = Path(folder) / "results.json"
        code = pytest.main(pytest_arguments(grader, selection, results_json) + extra, plugins=plugins or [])
        if not results_json.exists():
            return Results(score=0, max_score=0, infrastructure_error=f"the grader's tests for {assignment} could "
                           f"not run (pytest exit code {int(code)})")
        return Results.read(results_json)


# ---------------------------------------------------------------------------------------------- notebooks
def _local(assignment: str, namespace: dict, test_name: str | None = None) -> Results:
    from redis_workbook.grading.plugin import LocalRun
    from redis_workbook.server import EmbeddedRedis

    if not isinstance(assignment, str):
        raise TypeError(f"assignment must be a str such as '06_recommender', got {type(assignment).__name__}.")
    if not isinstance(namespace, dict):
        raise TypeError("namespace must be the notebook's globals() (a dict), "
                        f"got {type(namespace).__name__}: call self_check({assignment!r}, globals()).")
    grader = points.grader_dir()
    table = points.read(grader / points.POINTS_FILE)
    if assignment not in table:
        raise ValueError(f"assignment must be one of {', '.join(sorted(table))}, got {assignment!r}.")
    if test_name is not None and test_name not in table[assignment]:
        raise ValueError(f"test_name must be a test of {assignment} ({', '.join(table[assignment])}), "
                         f"got {test_name!r}.")
    with EmbeddedRedis() as server:
        return run_tests(grader, assignment, [], [LocalRun(namespace, server.url)], test_name)


def self_check(assignment: str, namespace: dict) -> bool:
    """Run the grader's tests of `assignment` on this notebook's functions; print PASS/FAIL lines and a total."""
    if os.environ.get(GRADING_ENV) == "worker":
        print("(self-check skipped: the grader is running this notebook)")
        return True
    results = _local(assignment, namespace)
    print(check_report(results))
    return results.all_passed


def require(assignment: str, test_name: str, namespace: dict) -> None:
    """Run one grader test; AssertionError with its message when it fails (nbgrader's test cells)."""
    if os.environ.get(GRADING_ENV) == "worker":
        return
    results = _local(assignment, namespace, test_name)
    if results.infrastructure_error:
        raise RuntimeError(f"{test_name} could not run: {results.infrastructure_error}")
    failed = [t for t in results.tests if not t.passed]
    if failed:
        raise AssertionError("\n".join(f"{t.name}: {t.message}" for t in failed))
    total = sum(t.points for t in results.tests)
    print(f"PASS {test_name} ({points.format_points(total)} points)")
