"""The notebooks themselves: in step with solutions/, executable headless, and honest to learners.

For every solutions/NN_*.ipynb (picked up automatically) and its learner version
notebooks/NN_*.ipynb:

- `redis-workbook release --check` passes (the learner notebooks are generated from the solutions);
- the solution notebook runs top to bottom without an error, and its self-check says True;
- the learner notebook, untouched, runs clean: each stub prints one line saying what to write,
  each demo that needs one says "finish `X` above to see this", and the only errors are the
  generated check cells' (redis_workbook.exercises);
- no line of a solution region is in the learner notebook;
- the learner notebook's self-check returns False with the stubs, and True once the
  reference solution is pasted into its solution cells.

Each kernel starts its own embedded Redis (REDIS_URL unset) and has no OPENAI_API_KEY, as on a
learner's offline laptop. The executions run two at a time in worker processes, started when
the first test of this module starts; each notebook's run time goes to artifacts/notebook_times.*.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from redis_workbook.release import GENERATED, NOTEBOOK_PATTERN, dumps, normalise, with_tail

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts"
NAMES = [path.stem for path in sorted(SOLUTIONS.glob(NOTEBOOK_PATTERN))]
CELL_TIMEOUT = 300  # seconds; a cell that hangs fails its notebook instead of CI
RUN_TIMEOUT = 900
WORKERS = max(1, min(2, os.cpu_count() or 1))
KINDS = ("solution", "learner", "pasted")
# Which execution each test reads; only the executions of selected tests are started.
NEEDS = {"test_solution_notebook_runs": "solution", "test_untouched_learner_notebook_runs_clean": "learner",
         "test_self_check_fails_with_stubs": "learner", "test_self_check_passes_with_reference_pasted": "pasted"}
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TOTAL = re.compile(r"Total: ([0-9.]+)/([0-9.]+) points")


# ---------------------------------------------------------------- execution (in worker processes)
def execute(nb_text: str, cwd: str, allow_errors: bool) -> tuple[str, float, str | None]:
    """Run a notebook in a fresh python3 kernel: (executed notebook, seconds, first error or None)."""
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ.pop("REDIS_URL", None)
    nb = nbformat.reads(nb_text, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": cwd}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = ANSI.sub("", str(exc))
    return nbformat.writes(nb), time.perf_counter() - start, error


# ---------------------------------------------------------------- notebooks to run
def is_solution_cell(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and bool(cell.metadata.get("nbgrader", {}).get("solution"))


def split_regions(source: str) -> tuple[list[str], list[str]]:
    """(lines inside BEGIN/END SOLUTION markers, lines outside them), markers left out."""
    inside, outside, within = [], [], False
    for line in source.splitlines():
        if line.strip() in (BEGIN, END):
            within = line.strip() == BEGIN
        else:
            (inside if within else outside).append(line)
    return inside, outside


def pasted(name: str) -> nbformat.NotebookNode:
    """The learner notebook with each solution cell's stub replaced by the reference solution."""
    reference = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    answers = {cell.metadata["nbgrader"]["grade_id"]: cell.source for cell in reference.cells
               if is_solution_cell(cell)}
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if is_solution_cell(cell):
            answer = answers[cell.metadata["nbgrader"]["grade_id"]]
            cell.source = "\n".join(line for line in answer.splitlines() if line.strip() not in (BEGIN, END))
    return nb


def notebook_for(kind: str, name: str) -> tuple[str, str, bool]:
    """(notebook text, working directory, allow_errors) of one execution."""
    if kind == "solution":
        return (SOLUTIONS / f"{name}.ipynb").read_text(encoding="utf-8"), str(SOLUTIONS), False
    if kind == "learner":
        # Keep going past the first error so the self-check cell at the end runs too.
        return (NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"), str(NOTEBOOKS), True
    return nbformat.writes(pasted(name)), str(NOTEBOOKS), False


class Runs:
    """Executions submitted to the worker pool, looked up by (kind, name)."""

    def __init__(self, executor: ProcessPoolExecutor, jobs: list[tuple[str, str]]) -> None:
        self.futures: dict[tuple[str, str], Future | Exception] = {}
        for kind, name in jobs:
            try:
                self.futures[kind, name] = executor.submit(execute, *notebook_for(kind, name))
            except OSError as exc:  # e.g. notebooks/NN.ipynb not generated yet
                self.futures[kind, name] = exc

    def get(self, kind: str, name: str) -> tuple[nbformat.NotebookNode, float, str | None]:
        future = self.futures.get((kind, name))
        if future is None:
            pytest.fail(f"no {kind} execution of {name} was scheduled")
        if isinstance(future, Exception):
            pytest.fail(f"cannot run the {kind} version of {name}: {future}")
        text, seconds, error = future.result(timeout=RUN_TIMEOUT)
        return nbformat.reads(text, as_version=4), seconds, error

    def times(self) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for (kind, name), future in self.futures.items():
            if isinstance(future, Future) and future.done() and not future.exception():
                table.setdefault(name, {})[kind] = round(future.result()[1], 1)
        return dict(sorted(table.items()))


@pytest.fixture(scope="module", autouse=True)
def runs(request: pytest.FixtureRequest) -> Iterator[Runs]:
    """Start every execution the selected tests need, two at a time, as soon as the module starts."""
    wanted = set()
    for item in request.session.items:
        kind = NEEDS.get(getattr(item, "originalname", ""))
        if kind and item.module is sys.modules[__name__]:
            wanted.add((kind, item.callspec.params["name"]))
    jobs = sorted(wanted, key=lambda job: (KINDS.index(job[0]), job[1]))
    executor = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"))
    result = Runs(executor, jobs)
    yield result
    executor.shutdown(wait=False, cancel_futures=True)
    report_times(request, result.times())


def report_times(request: pytest.FixtureRequest, times: dict[str, dict[str, float]]) -> None:
    if not times:
        return
    lines = [f"Notebook run times in seconds ({WORKERS} at a time, each in a fresh kernel with its own Redis):",
             f"{'notebook':<22}" + "".join(f"{kind:>10}" for kind in KINDS)]
    for name, row in times.items():
        lines.append(f"{name:<22}" + "".join(f"{row.get(kind, float('nan')):>10.1f}" for kind in KINDS))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "notebook_times.json").write_text(json.dumps(times, indent=1) + "\n", encoding="utf-8")
    (ARTIFACTS / "notebook_times.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)


# ---------------------------------------------------------------- reading executed notebooks
def errors(nb: nbformat.NotebookNode) -> Iterator[tuple[int, nbformat.NotebookNode, dict]]:
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                yield index, cell, output


def self_check_result(nb: nbformat.NotebookNode) -> str | None:
    """"True" when the self-check cell printed full marks, "False" when less, None when it printed no total."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "self_check(" in cell.source and cell.metadata.get(GENERATED):
            assert not any(output.output_type == "execute_result" for output in cell.outputs), (
                "the self-check cell shows its return value; end it with `;`")
            total = TOTAL.search(printed(cell))
            return None if total is None else str(total.group(1) == total.group(2))
    pytest.fail("no generated self-check cell: run `redis-workbook release`")


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output.output_type == "stream")


def describe(output: dict) -> str:
    return ANSI.sub("", "\n".join(output.get("traceback", [])))[-3000:]


# ---------------------------------------------------------------- the tests
def test_release_tail_follows_points_and_replaces_itself() -> None:
    """The generated cells mirror points.toml, and regenerating replaces them instead of piling up."""
    answer = nbformat.v4.new_code_cell(f"def f():\n    {BEGIN}\n    return 1\n    {END}")
    answer.metadata["nbgrader"] = {"grade": False, "grade_id": "f", "locked": False, "schema_version": 3,
                                   "solution": True}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Demo"), answer])
    first = with_tail(nb, "99_demo", {"test_a": 2, "test_b": 1})
    tests = [c for c in first.cells if c.metadata.get(GENERATED) == "test"]
    assert [(c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"]["points"]) for c in tests] == [
        ("test_a", 2), ("test_b", 1)]
    assert all('require("99_demo", "' + c.metadata["nbgrader"]["grade_id"] + '", globals())' in c.source
               for c in tests)
    second = normalise(with_tail(first, "99_demo", {"test_b": 5}))
    assert len(second.cells) == 2 + 2 + 1  # own cells, heading + self-check, one test
    assert second.cells[-1].metadata["nbgrader"]["points"] == 5
    assert dumps(second) == dumps(normalise(nbformat.reads(dumps(second), as_version=4)))


def test_release_check_passes() -> None:
    done = subprocess.run([sys.executable, "-m", "redis_workbook.cli", "release", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"notebooks/ is out of step with solutions/:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("name", NAMES)
def test_solution_notebook_runs(runs: Runs, name: str) -> None:
    nb, seconds, error = runs.get("solution", name)
    assert error is None, f"solutions/{name}.ipynb failed after {seconds:.1f} s:\n{error[-4000:]}"
    check = self_check_result(nb)
    assert check == "True", f"the reference solution's self-check returned {check}:\n" + "\n".join(
        printed(cell) for cell in nb.cells if "self_check(" in cell.get("source", ""))


@pytest.mark.parametrize("name", NAMES)
def test_untouched_learner_notebook_runs_clean(runs: Runs, name: str) -> None:
    """Run top to bottom as released: one message per unfinished exercise, "finish X above" for its demos.

    The only errors allowed are the generated check cells' (`require`), which must fail while the
    functions are stubs: nbgrader scores them by their errors.
    """
    nb, _, _ = runs.get("learner", name)
    for index, cell, output in errors(nb):
        assert "require(" in cell.source and cell.metadata.get(GENERATED) and output.ename == "AssertionError", (
            f"notebooks/{name}.ipynb cell {index}, untouched, fails with {output.ename}: a learner would see a "
            f"traceback where a short message belongs:\n{describe(output)}")
    for cell in nb.cells:
        if is_solution_cell(cell):
            names = [line for line in printed(cell).splitlines() if line.startswith("✎")]
            assert len(names) == 1, (f"notebooks/{name}.ipynb: the exercise cell should print one line saying what "
                                     f"to write, printed {names}:\n{cell.source[:300]}")
    stubs = [cell for cell in nb.cells if is_solution_cell(cell)]
    waiting = [cell for cell in nb.cells if "above to see this" in printed(cell)]
    assert not stubs or waiting, f"notebooks/{name}.ipynb: no demo said which exercise it waits for"
    for cell in waiting:
        assert not any(output.output_type == "stream" and output.name == "stderr" for output in cell.outputs), (
            f"notebooks/{name}.ipynb: a waiting demo still printed to stderr:\n{printed(cell)}")


@pytest.mark.parametrize("name", NAMES)
def test_no_solution_code_in_learner_notebook(name: str) -> None:
    reference = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `redis-workbook release`")
    learner = nbformat.read(path, as_version=4)
    inside, outside = set(), set()
    for cell in reference.cells:
        lines_in, lines_out = split_regions(cell.source) if is_solution_cell(cell) else ([], cell.source.splitlines())
        inside |= {line.strip() for line in lines_in}
        outside |= {line.strip() for line in lines_out}
    # A line the notebook also shows outside a solution region (e.g. in a demo) gives nothing away.
    secret = {line for line in inside - outside if line and not line.startswith("#")}
    assert secret or not any(is_solution_cell(cell) for cell in reference.cells), "solution regions are empty"
    text = "\n".join(cell.source for cell in learner.cells)
    leaked = sorted(line for line in {line.strip() for line in text.splitlines()} if line in secret)
    assert not leaked, f"{path.relative_to(ROOT)} contains solution code: {leaked[:5]}"
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS"):
        assert marker not in text, f"{path.relative_to(ROOT)} still contains '### {marker}'"


@pytest.mark.parametrize("name", NAMES)
def test_self_check_fails_with_stubs(runs: Runs, name: str) -> None:
    nb, _, _ = runs.get("learner", name)
    if not any(is_solution_cell(cell) for cell in nb.cells):
        pytest.skip("no learner functions in this notebook")
    assert self_check_result(nb) == "False", "the self-check must fail while the functions are stubs"


@pytest.mark.parametrize("name", NAMES)
def test_self_check_passes_with_reference_pasted(runs: Runs, name: str) -> None:
    nb, seconds, error = runs.get("pasted", name)
    assert error is None, f"notebooks/{name}.ipynb with the reference pasted in failed:\n{error[-4000:]}"
    assert self_check_result(nb) == "True"
