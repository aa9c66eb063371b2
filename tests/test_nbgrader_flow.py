"""nbgrader's own flow on the course folder gives the same scores as `redis-workbook grade` (issue 4).

A temporary copy of the course folder (grader/course/nbgrader_config.py, source/ written
from solutions/ by release's own functions, as `redis-workbook release` does) goes through
real nbgrader: `generate_assignment`, `autograde --create`, `export` to CSV. The same
submitted/ folder is graded by `redis-workbook grade` meanwhile (both at once: nbgrader
leaves a core idle most of the time). Per student and assignment, the two must agree on
score and max_score; both must also tell the class apart (full marks, zero, in between),
so agreement can't come from both graders failing everyone alike.

The class, for 01_setup and 06_recommender, on the learner notebooks as released (notebooks/):
- s1_full: every solution cell replaced by the reference solution from solutions/;
- s2_stubs: the notebook as released, stubs and all;
- s3_partial: one function right, another with a classic mistake (RESP3-only parsing of
  MODULE LIST in 01; similar_products excluding with `endswith` in 06), the rest stubs.

Two cases where a grader that runs every cell on one shared Redis would differ from nbgrader
come from a fourth student, s4_diverges, graded in the same run and compared in their own tests:
- 01_setup: the stub left in place and the right function defined in a cell appended after
  the check cells (nbgrader's test cells run before it; `grade` runs every cell, then tests);
- 06_recommender: track_view using the notebook's global `r` instead of its client argument
  (in `grade` the notebook's `r` is the Redis under test; in nbgrader and the self-check the
  tests run on a private server of their own).

Nothing is written in the repository: the course copy, exchange and outputs live in tmp.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from redis_workbook.bench_grading import is_solution_cell, make_course, read_nbgrader
from redis_workbook.grading import points

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("01_setup", "06_recommender")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION = "<the reference solution>"
COMMAND_TIMEOUT = 600  # seconds; far above the ~60 s a run takes, so a hang fails instead of stalling CI

RESP3_ONLY = '''def search_module_version(r):
    # The classic mistake: only RESP3's one-dict-per-module reply; a RESP2 client's flat lists break it.
    for module in r.execute_command("MODULE", "LIST"):
        if module[b"name"].decode().lower() == "search":
            return int(module[b"ver"])
    return None
'''
ENDSWITH = '''def similar_products(r, product_id, k=5):
    # The classic mistake: excluding the product with endswith also drops "11" when excluding "1".
    blob = r.hget(PRODUCT_PREFIX + product_id, "embedding")
    keys = [PRODUCT_PREFIX + pid for pid in nearest_product_ids(r, np.frombuffer(blob, dtype=np.float32), k + 1)]
    return [key.removeprefix(PRODUCT_PREFIX) for key in keys if not key.endswith(product_id)][:k]
'''
# student -> assignment -> {solution cell's grade_id: its new source}; cells not named keep their stub.
CLASS: dict[str, dict[str, dict[str, str]]] = {
    "s1_full": {"01_setup": {"search_module_version": SOLUTION},
                "06_recommender": {"track_view": SOLUTION, "get_recommendations": SOLUTION,
                                   "similar_products": SOLUTION}},
    "s2_stubs": {"01_setup": {}, "06_recommender": {}},
    "s3_partial": {"01_setup": {"search_module_version": RESP3_ONLY},
                   "06_recommender": {"track_view": SOLUTION, "similar_products": ENDSWITH}},
}

GLOBAL_R = '''def track_view(client, user_id, product_id, max_views=10, ttl=3600):
    # The mistake: the body uses the notebook's global `r`, not the client it is given.
    if not r.exists(PRODUCT_PREFIX + product_id):
        raise ValueError(f"product_id {product_id!r} is not a product")
    key = views_key(user_id)
    pipe = r.pipeline(transaction=True)
    pipe.lpush(key, product_id)
    pipe.ltrim(key, 0, max_views - 1)
    pipe.expire(key, ttl)
    pipe.zincrby(POPULAR_KEY, 1, product_id)
    pipe.execute()
'''
APPENDED = "<a new cell at the end>"  # answers key: a cell appended after the generated check cells
DIVERGENT = "s4_diverges"
DIVERGES = {DIVERGENT: {"01_setup": {APPENDED: "search_module_version"},
                        "06_recommender": {"track_view": GLOBAL_R}}}
Scores = dict[tuple[str, str], tuple[float, float]]  # (student, assignment) -> (score, max_score)


@dataclass
class Flow:
    """What the two graders said about the same submitted/ folder, and where their logs are."""

    nbgrader: Scores
    grade: Scores
    statuses: dict[tuple[str, str], str]
    logs: Path
    seconds: dict[str, float]


# ---------------------------------------------------------------------------------------------- the class
def reference_answers(assignment: str) -> dict[str, str]:
    """grade_id -> the reference solution's source, markers left out, as a learner would paste it."""
    nb = nbformat.read(REPO / "solutions" / f"{assignment}.ipynb", as_version=4)
    return {cell.metadata["nbgrader"]["grade_id"]:
            "\n".join(line for line in cell.source.splitlines() if line.strip() not in (BEGIN, END))
            for cell in nb.cells if is_solution_cell(cell)}


def submission(assignment: str, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The released learner notebook with the named solution cells answered."""
    nb = nbformat.read(REPO / "notebooks" / f"{assignment}.ipynb", as_version=4)
    reference = reference_answers(assignment)
    cells = {cell.metadata["nbgrader"]["grade_id"]: cell for cell in nb.cells if is_solution_cell(cell)}
    if APPENDED in answers:
        nb.cells.append(nbformat.v4.new_code_cell(reference[answers.pop(APPENDED)]))
    unknown = set(answers) - set(cells)
    assert not unknown, f"{assignment} has no solution cells {sorted(unknown)}; it has {sorted(cells)}"
    for grade_id, source in answers.items():
        cells[grade_id].source = reference[grade_id] if source == SOLUTION else source
    return nb


def write_class(submitted: Path) -> None:
    """nbgrader's layout: submitted/<student>/<assignment>/<assignment>.ipynb."""
    for student, work in {**CLASS, **DIVERGES}.items():
        for assignment, answers in work.items():
            path = submitted / student / assignment / f"{assignment}.ipynb"
            path.parent.mkdir(parents=True)
            nbformat.write(submission(assignment, dict(answers)), path)


# ---------------------------------------------------------------------------------------------- the course
def environment(tmp: Path) -> dict[str, str]:
    """As on an instructor's offline machine: each kernel its own embedded Redis, the local embedder."""
    env = {**os.environ, "NBGRADER_EXCHANGE": str(tmp / "exchange")}
    for name in ("REDIS_URL", "OPENAI_API_KEY"):
        env.pop(name, None)
    return env


def run_logged(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("wb") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command[2:4])} failed (exit {done.returncode}):\n{tail(log)}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM first: grade then stops its own pytest processes and Redis servers; SIGKILL if it won't."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(log: Path, size: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-size:]


# ---------------------------------------------------------------------------------------------- the gradebooks
def read_grade(path: Path) -> tuple[Scores, dict[tuple[str, str], str]]:
    """redis-workbook's gradebook.csv: student_id, assignment, score, max_score, status."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    scores = {(row["student_id"], row["assignment"]): (float(row["score"] or "nan"), float(row["max_score"]))
              for row in rows}
    return scores, {(row["student_id"], row["assignment"]): row["status"] for row in rows}


def side_by_side(flow: Flow) -> str:
    """Both gradebooks in one table, one row per student and assignment, disagreements marked."""
    lines = [f"{'student':<12} {'assignment':<16} {'nbgrader':>13} {'redis-workbook':>15}  status"]
    for key in sorted(set(flow.nbgrader) | set(flow.grade)):
        ours, theirs = flow.grade.get(key), flow.nbgrader.get(key)
        mark = "" if ours == theirs else "   <-- differs"
        lines.append(f"{key[0]:<12} {key[1]:<16} {show(theirs):>13} {show(ours):>15}  "
                     f"{flow.statuses.get(key, '-')}{mark}")
    return "\n".join(lines)


def show(pair: tuple[float, float] | None) -> str:
    return "(no row)" if pair is None else f"{pair[0]:g} / {pair[1]:g}"


# ---------------------------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    """generate_assignment, then autograde + export and redis-workbook grade on the same submitted/."""
    tmp = tmp_path_factory.mktemp("nbgrader-flow")
    course, out, logs = tmp / "course", tmp / "grade-out", tmp / "logs"
    logs.mkdir()
    start = time.perf_counter()
    seconds = {}
    make_course(REPO, course, ASSIGNMENTS)
    seconds["generate_assignment"] = time.perf_counter() - start
    write_class(course / "submitted")
    env = environment(tmp)
    grade_log = logs / "grade.log"
    with grade_log.open("wb") as log:
        grading = subprocess.Popen(
            [sys.executable, "-m", "redis_workbook.cli", "grade", str(course / "submitted"), "--out", str(out),
             "--jobs", "1"], cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            nbgrader = [sys.executable, "-m", "nbgrader"]
            run_logged([*nbgrader, "autograde", "*", "--create"], course, env, logs / "autograde.log")
            seconds["autograde"] = time.perf_counter() - start - sum(seconds.values())
            run_logged([*nbgrader, "export", "--to", str(tmp / "nbgrader.csv")], course, env, logs / "export.log")
            seconds["export"] = time.perf_counter() - start - sum(seconds.values())
            grading.wait(timeout=COMMAND_TIMEOUT)
            seconds["then waiting for grade"] = time.perf_counter() - start - sum(seconds.values())
        finally:
            stop(grading)
    if not (out / "gradebook.csv").exists():
        pytest.fail(f"redis-workbook grade wrote no gradebook (exit {grading.returncode}):\n{tail(grade_log)}")
    scores, statuses = read_grade(out / "gradebook.csv")
    return Flow(read_nbgrader(tmp / "nbgrader.csv"), scores, statuses, logs, seconds)


def test_nbgrader_and_redis_workbook_grade_give_the_same_scores(flow: Flow) -> None:
    table = side_by_side(flow)
    print(table)
    print(", ".join(f"{step} {value:.1f} s" for step, value in flow.seconds.items()))
    submitted = {(student, assignment) for student, work in {**CLASS, **DIVERGES}.items() for assignment in work}
    assert set(flow.grade) == submitted, f"redis-workbook grade's rows are not the class's submissions:\n{table}"
    assert set(flow.nbgrader) == submitted, f"nbgrader's export rows are not the class's submissions:\n{table}"
    compared = {key for key in submitted if key[0] in CLASS}
    differ = sorted(key for key in compared if flow.nbgrader[key] != flow.grade[key])
    assert not differ, (f"nbgrader and redis-workbook grade disagree on {differ} (score / max_score):\n{table}\n"
                        f"logs: {flow.logs}; the autograded notebooks are in the course copy's autograded/")


def test_both_graders_tell_the_class_apart(flow: Flow) -> None:
    """Full marks for the reference, 0 for the stubs, in between for the partial: neither grader is blind."""
    table = side_by_side(flow)
    for assignment in ASSIGNMENTS:
        total = float(sum(points.read(REPO / "grader" / "points.toml")[assignment].values()))
        for name, scores in (("nbgrader", flow.nbgrader), ("redis-workbook grade", flow.grade)):
            full, stubs, partial = (scores[student, assignment] for student in CLASS)
            assert full == (total, total), f"{name}: the reference solution of {assignment} is not full marks\n{table}"
            assert stubs == (0.0, total), f"{name}: the stubs of {assignment} earned points\n{table}"
            assert 0 < partial[0] < total and partial[1] == total, (
                f"{name}: the partial {assignment} should earn some points, not all\n{table}")
    not_graded = {key: status for key, status in flow.statuses.items() if status != "graded"}
    assert not not_graded, f"redis-workbook grade could not grade {not_graded}\n{table}"


def same_row(flow: Flow, assignment: str) -> None:
    key = (DIVERGENT, assignment)
    assert key in flow.nbgrader and key in flow.grade, f"no row for {key}\n{side_by_side(flow)}"
    assert flow.nbgrader[key] == flow.grade[key], (
        f"{key}: nbgrader {show(flow.nbgrader[key])}, redis-workbook grade {show(flow.grade[key])}")


def test_a_function_defined_after_the_check_cells_scores_the_same(flow: Flow) -> None:
    """nbgrader runs each test cell where it stands; grade runs only the cells above the first check cell."""
    same_row(flow, "01_setup")


def test_a_function_using_the_notebooks_global_client_scores_the_same(flow: Flow) -> None:
    """The notebook's own `r` is not the tests' Redis, under nbgrader and grade alike."""
    same_row(flow, "06_recommender")
