"""`redis-workbook bench --grading`: a class graded by `redis-workbook grade` and by `nbgrader autograde`.

The class: N students, each handing in notebooks 01-06 as released (notebooks/) with
every solution cell answered by the reference solution (solutions/), markers left out,
as an honest learner would. The nbgrader course is a temporary copy of grader/course
with source/ written from solutions/ the way `redis-workbook release` writes it, then
nbgrader's own `generate_assignment`. The same submitted/ folder is graded three times,
one after the other: by `grade --jobs J` (sandboxed), by `grade --jobs J --unsafe-no-sandbox`
(the sandbox's own cost is the difference) and by `nbgrader autograde` (serial, its only way).
Both graders' scores must be the same for every submission.

Each `grade` pytest process writes where its time went (grading/timings.py); the report
shows the mean per submission, phase by phase, and the CPU each process used.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from redis_workbook import release
from redis_workbook.grading import points
from redis_workbook.grading.timings import TIMINGS_ENV

ASSIGNMENTS = ("01_setup", "02_indexing", "03_knn", "04_hybrid", "05_semantic_cache", "06_recommender")
STUDENTS, JOBS = 2, 2
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
COMMAND_TIMEOUT = 3600.0
# key -> (comparison, threshold): the grading targets (README, Benchmark); the class time only for the class it names.
TARGETS = {"grading_vs_nbgrader": ("<=", 0.25)}
CLASS_TARGET = {"students": 30, "jobs": 2, "assignments": ASSIGNMENTS, "seconds": 300.0}
Scores = dict[tuple[str, str], tuple[float, float]]  # (student, assignment) -> (score, max_score)


@dataclass(frozen=True)
class ClassPlan:
    students: int = STUDENTS
    jobs: int = JOBS
    assignments: tuple[str, ...] = ASSIGNMENTS

    @property
    def submissions(self) -> int:
        return self.students * len(self.assignments)

    def check(self, known: tuple[str, ...]) -> None:
        if self.students < 1:
            raise SystemExit(f"--students must be at least 1, got {self.students}.")
        if self.jobs < 1:
            raise SystemExit(f"--jobs must be at least 1, got {self.jobs}.")
        unknown = sorted(set(self.assignments) - set(known))
        if unknown or not self.assignments:
            raise SystemExit(f"--assignments: no grader checks for {', '.join(unknown) or 'nothing'}; "
                             f"choose among {', '.join(known)}.")


@dataclass
class Run:
    """One grader over the whole class: its wall time, the CPU of its processes, the load around it."""

    seconds: float
    cpu_seconds: float
    load_before: float
    load_after: float
    scores: Scores


# ------------------------------------------------------------------ the class and the course


def course_root() -> Path:
    """The course being graded: the folder holding the grader (as `grade` finds it), its notebooks and solutions."""
    root = points.grader_dir().parent
    missing = [part for part in ("notebooks", "solutions") if not (root / part).is_dir()]
    if missing:
        raise SystemExit(f"bench --grading needs the course's {' and '.join(missing)} next to {root / 'grader'}: run "
                         "it in the repository or a course folder (`redis-workbook course DIR` writes one).")
    return root


def is_solution_cell(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and bool(cell.metadata.get("nbgrader", {}).get("solution"))


def honest_submission(root: Path, assignment: str) -> nbformat.NotebookNode:
    """The released learner notebook with every solution cell replaced by the reference solution's source."""
    solution = nbformat.read(root / "solutions" / f"{assignment}.ipynb", as_version=4)
    answers = {cell.metadata["nbgrader"]["grade_id"]:
               "\n".join(line for line in cell.source.splitlines() if line.strip() not in (BEGIN, END))
               for cell in solution.cells if is_solution_cell(cell)}
    nb = nbformat.read(root / "notebooks" / f"{assignment}.ipynb", as_version=4)
    for cell in nb.cells:
        if is_solution_cell(cell):
            cell.source = answers[cell.metadata["nbgrader"]["grade_id"]]
    return nb


def write_class(root: Path, submitted: Path, plan: ClassPlan) -> list[tuple[str, str]]:
    """nbgrader's layout, submitted/<student>/<assignment>/<assignment>.ipynb; the (student, assignment) pairs."""
    pairs = []
    for assignment in plan.assignments:
        nb = honest_submission(root, assignment)
        for number in range(plan.students):
            student = f"student{number + 1:03d}"
            path = submitted / student / assignment / f"{assignment}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)
            pairs.append((student, assignment))
    return sorted(pairs)


def make_course(root: Path, course: Path, assignments: tuple[str, ...]) -> None:
    """A copy of the nbgrader course: its config, source/ as `release` writes it, then generate_assignment."""
    course.mkdir(parents=True)
    shutil.copy(root / "grader" / "course" / "nbgrader_config.py", course / "nbgrader_config.py")
    table = release.read_points(root / "grader" / "points.toml")
    sources = {}
    for assignment in assignments:
        nb = nbformat.read(root / "solutions" / f"{assignment}.ipynb", as_version=4)
        sources[assignment] = release.dumps(release.normalise(release.with_tail(nb, assignment, table[assignment])))
    release.sync_sources(course, sources)
    release.run_generate_assignment(course, use_db=True)  # real nbgrader, with the gradebook autograde needs


def environment(tmp: Path) -> dict[str, str]:
    """As on an instructor's offline machine: each run its own embedded Redis servers, the local embedder."""
    env = {**release.nbgrader_environment(), "NBGRADER_EXCHANGE": str(tmp / "exchange")}
    for name in ("REDIS_URL", "OPENAI_API_KEY", TIMINGS_ENV):
        env.pop(name, None)
    return env


# ------------------------------------------------------------------ the runs


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float, float, float]:
    """Run a command to the end: (wall seconds, CPU seconds of it and the children it waited for, load before/after)."""
    load_before = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("wb") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(command[2:5])} failed (exit {done.returncode}); its log ends:\n{tail}")
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return seconds, cpu, load_before, os.getloadavg()[0]


def run_grade(submitted: Path, out: Path, plan: ClassPlan, env: dict[str, str], logs: Path, timings: Path | None,
              unsafe: bool = False) -> Run:
    command = [sys.executable, "-m", "redis_workbook.cli", "grade", str(submitted), "--out", str(out),
               "--jobs", str(plan.jobs), *(["--unsafe-no-sandbox"] if unsafe else [])]
    env = {**env, **({TIMINGS_ENV: str(timings)} if timings else {})}
    name = "grade-unsafe" if unsafe else "grade"
    seconds, cpu, before, after = timed(command, logs, env, logs / f"{name}.log")
    return Run(seconds, cpu, before, after, read_gradebook(out / "gradebook.csv"))


def run_nbgrader(course: Path, env: dict[str, str], logs: Path) -> Run:
    nbgrader = [sys.executable, "-m", "nbgrader"]
    seconds, cpu, before, after = timed([*nbgrader, "autograde", "*", "--create"], course, env, logs / "autograde.log")
    csv_path = logs / "nbgrader.csv"
    timed([*nbgrader, "export", "--to", str(csv_path)], course, env, logs / "export.log")
    return Run(seconds, cpu, before, after, read_nbgrader(csv_path))


def read_gradebook(path: Path) -> Scores:
    """redis-workbook's gradebook.csv: student_id, assignment, score, max_score, status (a failed row: nan)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {(row["student_id"], row["assignment"]): (float(row["score"] or "nan"), float(row["max_score"]))
                for row in csv.DictReader(handle)}


def read_nbgrader(path: Path) -> Scores:
    """nbgrader's CSV export: assignment, duedate, timestamp, student_id, ..., score, max_score."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {(row["student_id"], row["assignment"]): (float(row["score"]), float(row["max_score"]))
                for row in csv.DictReader(handle)}


def differences(expected: list[tuple[str, str]], runs: dict[str, Scores]) -> list[str]:
    """Every submission on which the runs disagree (or that one of them has no row for), in words."""
    found = []
    for key in expected:
        seen = {name: scores.get(key) for name, scores in runs.items()}
        if len(set(seen.values())) != 1 or None in seen.values():
            found.append(f"{key[0]}/{key[1]}: " + ", ".join(
                f"{name} {'(no row)' if pair is None else f'{pair[0]:g}/{pair[1]:g}'}" for name, pair in seen.items()))
    return found


def breakdown(path: Path) -> tuple[dict[str, float], dict[str, float], int]:
    """The mean seconds of each phase and CPU seconds of each process per submission, from the timings file."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.exists() else []
    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for line in lines:
        for name, seconds in line["phases"].items():
            phases[name] = phases.get(name, 0.0) + seconds / len(lines)
        for name, seconds in line["cpu"].items():
            cpu[name] = cpu.get(name, 0.0) + (seconds or 0.0) / len(lines)
    return ({k: round(v, 3) for k, v in phases.items()}, {k: round(v, 3) for k, v in cpu.items()}, len(lines))


# ------------------------------------------------------------------ the measurement


def measure(plan: ClassPlan, say: Callable[[str], object] = print) -> dict[str, object]:
    """Grade the class with both graders; every figure as a JSON-ready dict."""
    root = course_root()
    plan.check(points.assignments(root / "grader"))
    n = plan.submissions
    with tempfile.TemporaryDirectory(prefix="redis-workbook-bench-grading-") as folder:
        tmp = Path(folder)
        course, logs = tmp / "course", tmp / "logs"
        say(f"bench --grading: {plan.students} students x {len(plan.assignments)} notebooks = {n} submissions, "
            f"grade --jobs {plan.jobs} vs nbgrader autograde")
        say("nbgrader generate_assignment (the course copy)...")
        make_course(root, course, plan.assignments)
        logs.mkdir()
        submitted = course / "submitted"
        expected = write_class(root, submitted, plan)
        env = environment(tmp)
        timings = logs / "timings.jsonl"
        say(f"redis-workbook grade --jobs {plan.jobs}...")
        ours = run_grade(submitted, tmp / "out", plan, env, logs, timings)
        say(f"  {ours.seconds:.1f} s, {ours.seconds / n:.2f} s per submission")
        say("nbgrader autograde...")
        theirs = run_nbgrader(course, env, logs)
        say(f"  {theirs.seconds:.1f} s, {theirs.seconds / n:.2f} s per submission")
        say(f"redis-workbook grade --jobs {plan.jobs} --unsafe-no-sandbox (the sandbox's cost)...")
        unsafe_timings = logs / "timings-unsafe.jsonl"
        unsafe = run_grade(submitted, tmp / "out-unsafe", plan, env, logs, unsafe_timings, unsafe=True)
        say(f"  {unsafe.seconds:.1f} s, {unsafe.seconds / n:.2f} s per submission")
        phases, cpu, timed_submissions = breakdown(timings)
        unsafe_phases, unsafe_cpu, _ = breakdown(unsafe_timings)
    differ = differences(expected, {"grade": ours.scores, "nbgrader": theirs.scores, "grade unsafe": unsafe.scores})
    for line in differ:
        say(f"  scores differ: {line}")
    results: dict[str, object] = {
        "grading_students": plan.students, "grading_jobs": plan.jobs, "grading_assignments": list(plan.assignments),
        "grading_submissions": n, "cpus": os.cpu_count(),
        "grading_s_per_submission": ours.seconds / n, "grading_seconds": ours.seconds,
        "nbgrader_s_per_submission": theirs.seconds / n, "nbgrader_seconds": theirs.seconds,
        "grading_vs_nbgrader": ours.seconds / theirs.seconds,
        "grading_unsafe_s_per_submission": unsafe.seconds / n, "grading_unsafe_seconds": unsafe.seconds,
        "sandbox_s_per_submission": (ours.seconds - unsafe.seconds) / n,
        # CPU: for grade, the processes of each submission as its grading process saw them before stopping them
        # (the worker's namespace is killed, not reaped, so rusage would miss it); for nbgrader, rusage of
        # everything it ran (kernels and their Redis servers are reaped)
        "grading_cpu_s_per_submission": sum(cpu.values()), "nbgrader_cpu_s_per_submission": theirs.cpu_seconds / n,
        "grading_unsafe_cpu_s_per_submission": sum(unsafe_cpu.values()),
        "grading_class_cpu_s": ours.cpu_seconds, "sandbox_phases_s": {
            name: round(phases.get(name, 0.0) - unsafe_phases.get(name, 0.0), 3) for name in phases},
        "grading_scores_match": not differ, "grading_score_differences": differ,
        "grading_load_average": {name: {"before": round(run.load_before, 2), "after": round(run.load_after, 2)}
                                 for name, run in (("grade", ours), ("nbgrader", theirs), ("grade_unsafe", unsafe))},
        "grading_phases_s": phases, "grading_process_cpu_s": cpu, "grading_timed_submissions": timed_submissions,
    }
    op, value = TARGETS["grading_vs_nbgrader"]
    targets = {"grading_vs_nbgrader": {"target": f"{op} {value:g}", "met": ours.seconds / theirs.seconds <= value}}
    if (plan.students, plan.jobs, plan.assignments) == tuple(CLASS_TARGET[k] for k in ("students", "jobs",
                                                                                       "assignments")):
        targets["grading_seconds"] = {"target": f"<= {CLASS_TARGET['seconds']:g}",
                                      "met": ours.seconds <= CLASS_TARGET["seconds"]}
    results["grading_targets"] = targets
    return results


# ------------------------------------------------------------------ reporting


def report(res: dict) -> str:  # type: ignore[type-arg]
    """The figures as Markdown tables: the class, then where one submission's time goes."""
    from redis_workbook.bench import markdown, target_text

    n, load = res["grading_submissions"], res["grading_load_average"]
    head = (f"**A class of {res['grading_students']} students x {len(res['grading_assignments'])} notebooks "
            f"({', '.join(res['grading_assignments'])}) = {n} submissions**, honest solutions, "
            f"`grade --jobs {res['grading_jobs']}` on {res['cpus']} CPUs. 1-minute load average before / after each "
            f"run: grade {load['grade']['before']} / {load['grade']['after']}, nbgrader "
            f"{load['nbgrader']['before']} / {load['nbgrader']['after']}, grade without sandbox "
            f"{load['grade_unsafe']['before']} / {load['grade_unsafe']['after']}.")
    targets = res["grading_targets"]
    rows = [("figure", "value", "how / compared with", "target"),
            ("grading_seconds", f"{res['grading_seconds']:.1f} s",
             f"redis-workbook grade --jobs {res['grading_jobs']}, the whole class, start to gradebook",
             target_text(targets.get("grading_seconds"))),
            ("grading_s_per_submission", f"{res['grading_s_per_submission']:.2f} s",
             f"CPU {res['grading_cpu_s_per_submission']:.2f} s per submission (its grading process, worker and "
             "two Redis servers)", ""),
            ("nbgrader_s_per_submission", f"{res['nbgrader_s_per_submission']:.2f} s",
             f"nbgrader autograde (serial) on the same course and submissions: {res['nbgrader_seconds']:.1f} s; "
             f"CPU {res['nbgrader_cpu_s_per_submission']:.2f} s per submission", ""),
            ("grading_vs_nbgrader", f"{res['grading_vs_nbgrader']:.2f}x", "grade's time / nbgrader's (below 1: faster)",
             target_text(targets.get("grading_vs_nbgrader"))),
            ("sandbox_s_per_submission", f"{res['sandbox_s_per_submission']:.2f} s",
             f"grade minus grade --unsafe-no-sandbox ({res['grading_unsafe_s_per_submission']:.2f} s per submission, "
             f"CPU {res['grading_unsafe_cpu_s_per_submission']:.2f} s); the sandbox's own phase: "
             f"{res['grading_phases_s'].get('sandbox', 0.0):.3f} s", ""),
            ("grading_scores_match", "yes" if res["grading_scores_match"] else "**no**",
             "grade, nbgrader and grade without sandbox give every submission the same score and max_score"
             + ("" if res["grading_scores_match"] else ": " + "; ".join(res["grading_score_differences"][:5])), "")]
    phases = [("phase of one submission (mean)", "seconds", "sandboxed minus --unsafe-no-sandbox")]
    phases += [(name, f"{seconds:.3f}", f"{res['sandbox_phases_s'].get(name, 0.0):+.3f}")
               for name, seconds in res["grading_phases_s"].items()]
    phases.append(("total inside the grading process", f"{sum(res['grading_phases_s'].values()):.3f}",
                   f"{sum(res['sandbox_phases_s'].values()):+.3f}"))
    cpu = [("process", "CPU seconds per submission (mean)")]
    cpu += [(name, f"{seconds:.3f}") for name, seconds in res["grading_process_cpu_s"].items()]
    return "\n\n".join([head, markdown(rows),
                        f"Where one submission's time goes, inside its grading process (wall clock, mean of "
                        f"{res['grading_timed_submissions']}, {res['grading_jobs']} at a time):", markdown(phases),
                        markdown(cpu)])
