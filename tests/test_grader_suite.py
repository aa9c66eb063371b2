"""Tests of the grader's tests: points bookkeeping, full marks for the reference, mutants caught by name.

(a) Every test in grader/test_NN_*.py has exactly one entry in grader/points.toml, and every entry a test.
(b) The reference solutions (the definitions in solutions/NN_*.ipynb) pass every grader test.
(c) Mutants (tests/grader_mutants.py): correct templates of the learner functions pass, and each template
    with one classic mistake fails at least one grader test with a message that names the mistake (and,
    for a mutant with a `check`, fails that test and no other).

(d) Stubs: a notebook whose every function gives one constant answer (None, False, [], 0, ...) or always raises
    ValueError scores 0: a check of how a function says no counts only once it also does its job.

(b), (c) and (d) grade in local mode through the notebooks' own API (`self_check`, `require`), in a few
subprocesses run in parallel, each with its own embedded Redis.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from grader_mutants import COMMON, MUTANTS, TEMPLATES, Mutant

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
GRADER = ROOT / "grader"
SOLUTIONS = ROOT / "solutions"
POINTS = tomllib.loads((GRADER / "points.toml").read_text())
ASSIGNMENTS = sorted(POINTS)

# Runs in a subprocess: each job's source becomes a namespace, graded in local mode (the self-check's way)
# on one embedded Redis (every test starts with FLUSHALL); results as JSON: label -> run_tests' Results.to_json().
WORKER = r"""
import json, sys
from redis_workbook.grading import points
from redis_workbook.grading.check import run_tests
from redis_workbook.grading.plugin import LocalRun
from redis_workbook.server import EmbeddedRedis

jobs = json.load(open(sys.argv[1]))
grader = points.grader_dir()
results = {}
with EmbeddedRedis() as server:
    for job in jobs:
        namespace = {"__name__": "__main__"}
        try:
            exec(compile(job["source"], job["label"], "exec"), namespace)
        except Exception as exc:
            results[job["label"]] = {"tests": [], "infrastructure_error": f"{type(exc).__name__}: {exc}"}
            continue
        results[job["label"]] = run_tests(grader, job["assignment"], [], [LocalRun(namespace, server.url)]).to_json()
json.dump(results, open(sys.argv[2], "w"))
"""


# ------------------------------------------------------------------------------------------ (a) points
def grader_tests() -> dict[str, list[str]]:
    """assignment -> the test functions its grader module defines (duplicates kept, to catch them)."""
    found: dict[str, list[str]] = {}
    for path in sorted(GRADER.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        names = [node.name for node in tree.body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")]
        found[path.stem[len("test_"):]] = names
    return found


def test_every_grader_test_has_exactly_one_points_entry() -> None:
    tests = grader_tests()
    assert sorted(tests) == ASSIGNMENTS, "one grader module per assignment table in points.toml"
    for assignment, names in tests.items():
        duplicated = sorted({n for n in names if names.count(n) > 1})
        assert not duplicated, f"grader/test_{assignment}.py defines {duplicated} twice"
        without_points = sorted(set(names) - set(POINTS[assignment]))
        without_test = sorted(set(POINTS[assignment]) - set(names))
        assert not without_points, f"[{assignment}] has no points for {without_points}"
        assert not without_test, f"[{assignment}] gives points to tests that do not exist: {without_test}"


def test_points_are_positive_and_the_recommender_weighs_most() -> None:
    totals = {a: sum(POINTS[a].values()) for a in ASSIGNMENTS}
    assert all(isinstance(v, int) and v > 0 for table in POINTS.values() for v in table.values())
    assert all(8 <= total <= 12 for a, total in totals.items() if a not in ("06_recommender", "07_rag")), totals
    assert 25 <= totals["06_recommender"] <= 35, totals
    assert 18 <= totals["07_rag"] <= 24, totals  # retrieval-augmented answers, then their evaluation (issue 11)


def test_mutant_names_are_unique() -> None:
    """A mutant is graded under its name: a second one of the same name would silently replace the first."""
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), sorted({n for n in names if names.count(n) > 1})


# ------------------------------------------------------------------------------------------ (b) and (c)
GENERATED = re.compile(r"\b(self_check|require)\(")
DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def used_names(node: ast.stmt) -> set[str]:
    """Global names a statement reads (a function's own parameters and locals left out)."""
    loads = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        local = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}
        local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        loads -= local
    return loads


def solution_source(path: Path) -> str:
    """A solution notebook's definitions: imports, functions, classes, CONSTANTS, and the assignments they need.

    Demo statements (printing, plotting, timing) are left out; the grader calls the functions
    with its own Redis and data, so they must not depend on what the demos leave behind.
    """
    statements: list[tuple[ast.stmt, str]] = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and not GENERATED.search(cell.source):
            statements += [(node, cell.source) for node in ast.parse(cell.source).body]
    keep = {i for i, (node, _) in enumerate(statements) if isinstance(node, DEFINITIONS)
            or (isinstance(node, (ast.Assign, ast.AnnAssign)) and all(n.isupper() for n in bound_names(node)))}
    assignments = [i for i, (node, _) in enumerate(statements) if isinstance(node, (ast.Assign, ast.AnnAssign))]
    while True:  # the assignments that kept statements read, transitively (e.g. SPEC = product_index(dim))
        needed = set().union(*(used_names(statements[i][0]) for i in keep))
        more = {i for i in assignments if i not in keep and bound_names(statements[i][0]) & needed}
        if not more:
            break
        keep |= more
    return "\n\n".join(ast.get_source_segment(source, statements[i][0]) or "" for i, (_, source) in
                       enumerate(statements) if i in keep)


STUBS = {"None": "return None", "False": "return False", "True": "return True", "[]": "return []",
         "{}": "return {}", "0": "return 0", "''": "return ''", "ValueError": "raise ValueError('no')"}


def stub_source(assignment: str, body: str) -> str:
    """Every public function of the solution (and every method of its classes) doing just `body`."""
    path = SOLUTIONS / f"{assignment}.ipynb"
    lines = []
    for node in ast.parse(solution_source(path)).body if path.exists() else []:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            lines += [f"def {node.name}(*args, **kwargs):", f"    {body}", ""]
        elif isinstance(node, ast.ClassDef):
            lines += [f"class {node.name}:", "    def __init__(self, *args, **kwargs):", "        pass", "",
                      "    def __getattr__(self, name):", "        def method(*args, **kwargs):", f"            {body}",
                      "        return method", ""]
    return "\n".join(lines)


def all_jobs() -> dict[str, dict]:
    found = {}
    for assignment in ASSIGNMENTS:
        path = SOLUTIONS / f"{assignment}.ipynb"
        if path.exists():
            found[f"reference {assignment}"] = {"assignment": assignment, "source": solution_source(path)}
        found[f"template {assignment}"] = {"assignment": assignment, "source": COMMON + TEMPLATES[assignment]}
    for mutant in MUTANTS:
        found[f"mutant {mutant.name}"] = {"assignment": mutant.assignment, "source": mutant.source()}
    for assignment in ASSIGNMENTS:
        for stub, body in STUBS.items():
            found[f"stub {assignment} {stub}"] = {"assignment": assignment, "source": stub_source(assignment, body)}
    return {label: {"label": label, **job} for label, job in found.items()}


def run_batch(batch: list[dict], folder: Path, n: int) -> dict[str, dict]:
    jobs_file, results_file = folder / f"jobs{n}.json", folder / f"results{n}.json"
    jobs_file.write_text(json.dumps(batch))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENAI_API_KEY")}
    done = subprocess.run([sys.executable, "-c", WORKER, str(jobs_file), str(results_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not results_file.exists():
        raise AssertionError(f"grading worker failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return json.loads(results_file.read_text())


def label_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    if "mutant" in callspec.params:
        return f"mutant {callspec.params['mutant'].name}"
    if "stub" in callspec.params:
        return f"stub {callspec.params['assignment']} {callspec.params['stub']}"
    kind = "reference" if "reference" in item.name else "template"
    return f"{kind} {callspec.params['assignment']}"


@pytest.fixture(scope="module")
def graded(request: pytest.FixtureRequest) -> dict[str, dict]:
    """The selected tests' jobs, graded once in parallel subprocesses: label -> results (tests, messages)."""
    jobs = all_jobs()
    wanted = {label_of(item) for item in request.session.items if item.module is request.module}
    pending = [jobs[label] for label in jobs if label in wanted]
    workers = max(1, min(len(pending), (os.cpu_count() or 2)))
    batches = [pending[i::workers] for i in range(workers)]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(workers) as pool:
        results: dict[str, dict] = {}
        for batch_results in pool.map(run_batch, batches, [Path(tmp)] * workers, range(workers)):
            results.update(batch_results)
        return results


def failures(result: dict) -> dict[str, str]:
    if result.get("infrastructure_error"):
        return {"(infrastructure)": result["infrastructure_error"]}
    if not result.get("tests"):
        return {"(no tests ran)": "no test results"}
    return {t["name"]: t["message"] for t in result["tests"] if not t["passed"]}


def explain(failed: dict[str, str]) -> str:
    return "\n".join(f"--- {name}:\n{message}" for name, message in failed.items())


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_reference_solution_passes_every_grader_test(graded: dict[str, dict], assignment: str) -> None:
    if not (SOLUTIONS / f"{assignment}.ipynb").exists():
        pytest.skip(f"solutions/{assignment}.ipynb does not exist yet")
    result = graded[f"reference {assignment}"]
    assert len(result["tests"]) == len(POINTS[assignment]), result
    assert not failures(result), f"the reference solution of {assignment} fails:\n{explain(failures(result))}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_mutant_template_passes_every_grader_test(graded: dict[str, dict], assignment: str) -> None:
    result = graded[f"template {assignment}"]
    assert not failures(result), f"the correct template of {assignment} fails:\n{explain(failures(result))}"


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught_and_named(graded: dict[str, dict], mutant: Mutant) -> None:
    failed = failures(graded[f"mutant {mutant.name}"])
    assert failed, f"no grader test of {mutant.assignment} fails for the mistake: {mutant.name}"
    assert not any(name.startswith("(") for name in failed), explain(failed)
    naming = [name for name, message in failed.items() if mutant.keyword.lower() in message.lower()]
    assert naming, f"{mutant.name}: no failure message mentions {mutant.keyword!r}:\n{explain(failed)}"
    if mutant.check is not None:
        assert mutant.check in POINTS[mutant.assignment], f"{mutant.name}: no grader test {mutant.check!r}"
        assert list(failed) == [mutant.check], (
            f"{mutant.name} must cost exactly {mutant.check}, but fails {sorted(failed)}:\n{explain(failed)}")


@pytest.mark.parametrize("stub", STUBS)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_a_stub_that_always_gives_one_answer_scores_nothing(graded: dict[str, dict], assignment: str,
                                                             stub: str) -> None:
    result = graded[f"stub {assignment} {stub}"]
    assert result["tests"], result
    passed = [t["name"] for t in result["tests"] if t["passed"]]
    assert not passed, f"functions that only {STUBS[stub]} pass {passed}"
