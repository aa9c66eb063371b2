"""A whole class graded together: good, hostile and broken submissions, a Redis killed mid-class, interrupts.

One `redis-workbook grade --jobs 2` run grades tests/submissions' class of 06_recommender
notebooks with an instructor-private test folder. Each hostile notebook does one bad
thing next to correct code: it must get a clear message and keep the points its correct
code earns; every good notebook must get exactly the grade it gets when graded alone.
While the class runs, a watcher records every process the grader starts and kills the
Redis of two students (one once: regraded; one every time: "not graded").
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from submissions import CLASS, REPO, build_class

from redis_workbook.grading import points
from redis_workbook.grading.gateway import MAX_CONNECTIONS

PRIVATE_TEST = '''"""Instructor-private checks for 06_recommender, written by the class test."""


def test_private_similar_products_k1(nb, r, catalog):
    got = nb.similar_products(r, "1", k=1)
    assert isinstance(got, list) and len(got) == 1 and got[0] != "1", f"similar_products(r, '1', k=1) gave {got!r}"
'''
PRIVATE_POINTS = '["06_recommender"]\ntest_private_similar_products_k1 = 2\n'
OPTIONS = ["--cell-timeout", "4", "--call-timeout", "2", "--memory-mb", "1024", "--submission-timeout", "40",
           "--jobs", "2"]
SIMILAR = ("test_similar_products_never_return_the_product_itself", "test_similar_products_are_the_nearest",
           "test_private_similar_products_k1")
ALWAYS = "r_redis_always_dies"
ONCE = "r_redis_dies_once"


# ---------------------------------------------------------------------------------------------- processes
def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command name) for every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        table[int(stat.parent.name)] = (int(fields[1]), fields[19], name)
    return table


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Watcher(threading.Thread):
    """Every descendant of `root` seen while it runs; kills chosen students' Redis servers as they appear."""

    def __init__(self, root: int, kill_once: tuple[str, ...] = (), kill_always: tuple[str, ...] = ()) -> None:
        super().__init__(daemon=True)
        self.root, self.kill_once, self.kill_always = root, set(kill_once), set(kill_always)
        self.seen: dict[int, str] = {}  # pid -> start time
        self.killed: dict[str, int] = {}
        self.handled: set[int] = set()  # grading processes whose Redis under test was dealt with
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            table = process_table()
            children: dict[int, list[int]] = {}
            for pid, (parent, _, _) in table.items():
                children.setdefault(parent, []).append(pid)
            todo = [self.root]
            while todo:
                parent = todo.pop()
                for pid in children.get(parent, []):
                    self.seen.setdefault(pid, table[pid][1])
                    todo.append(pid)
                servers = [pid for pid in children.get(parent, []) if table[pid][2] == "redis-server"]
                if servers and parent not in self.handled:
                    self.maybe_kill(parent, min(servers))  # the first server a grading process starts is under test
            time.sleep(0.05)

    def maybe_kill(self, parent: int, server: int) -> None:
        self.handled.add(parent)
        command = cmdline(parent)
        for student in self.kill_once | self.kill_always:
            if f"{student}/06_recommender" in command:  # `ps` names the grading process after its notebook
                if student in self.kill_once and self.killed.get(student):
                    return
                os.kill(server, signal.SIGKILL)
                self.killed[student] = self.killed.get(student, 0) + 1

    def stop(self) -> None:
        self.halt.set()
        self.join()

    def survivors(self, grace: float = 15.0) -> list[str]:
        """Processes the grader started that are still alive after `grace` seconds."""
        deadline = time.monotonic() + grace
        while True:
            table = process_table()
            alive = [f"{pid} {cmdline(pid)[:200]}" for pid, start in self.seen.items()
                     if pid in table and table[pid][1] == start and table[pid][2] != "<defunct>"]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)


def grade_command(submitted: Path, out: Path, extra: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "redis_workbook.cli", "grade", str(submitted), "--out", str(out),
            "--tests", str(extra), *OPTIONS, *more]


def run_grade(submitted: Path, out: Path, extra: Path, **watch: tuple[str, ...]) -> tuple[int, str, Watcher]:
    process = subprocess.Popen(grade_command(submitted, out, extra), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    watcher = Watcher(process.pid, **watch)
    _, stderr = process.communicate(timeout=900)
    watcher.stop()
    return process.returncode, stderr, watcher


def gradebook(out: Path) -> list[dict[str, str]]:
    with open(out / "gradebook.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def results(out: Path, student: str) -> dict:
    return json.loads((out / student / "06_recommender" / "results.json").read_text())


def outcome(out: Path, student: str) -> tuple[float, list[tuple[str, str, float]]]:
    data = results(out, student)
    return data["score"], [(t["name"], t["status"], t["score"]) for t in data["tests"]]


def failed_tests(out: Path, student: str) -> set[str]:
    return {t["name"].split(":")[0] for t in results(out, student)["tests"] if t["status"] != "passed"}


# ---------------------------------------------------------------------------------------------- the class
@dataclass
class GradedClass:
    submitted: Path
    out: Path
    extra: Path
    token: str
    returncode: int
    stderr: str
    watcher: Watcher
    max_score: float
    seconds: float
    grade_pid: int

    def feedback(self, student: str) -> str:
        return (self.out / student / "06_recommender" / "feedback.md").read_text()

    def problems(self, student: str) -> str:
        return results(self.out, student)["output"]

    def printed(self, student: str) -> str:
        return results(self.out, student)["extra_data"]["redis_workbook"]["output"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> GradedClass:
    base = tmp_path_factory.mktemp("class")
    submitted, out, extra = base / "submitted", base / "out", base / "private"
    extra.mkdir()
    (extra / "test_06_recommender_private.py").write_text(PRIVATE_TEST)
    (extra / "points.toml").write_text(PRIVATE_POINTS)
    token = uuid.uuid4().hex[:10]
    other = base / f"other-run-{token}"  # another class's files elsewhere on the disk
    (other / "student" / "06_recommender").mkdir(parents=True)
    (other / "student" / "06_recommender" / f"answers-{token}.ipynb").write_text("{}")
    build_class(submitted, list(CLASS), {"REPO": str(REPO), "SUBMITTED": str(submitted), "OUT": str(out),
                                         "EXTRA": str(extra), "TOKEN": token, "OTHER": str(other)})
    started = time.monotonic()
    code, stderr, watcher = run_grade(submitted, out, extra, kill_once=(ONCE,), kill_always=(ALWAYS,))
    seconds = time.monotonic() - started
    print(f"\ngraded a class of {len(CLASS)} in {seconds:.1f} s")
    max_score = sum(points.read(REPO / "grader" / "points.toml")["06_recommender"].values()) + 2
    return GradedClass(submitted, out, extra, token, code, stderr, watcher, max_score, seconds, watcher.root)


def test_gradebook_has_one_sorted_row_per_submission(graded: GradedClass) -> None:
    rows = gradebook(graded.out)
    assert [r["student_id"] for r in rows] == sorted(CLASS)
    assert all(r["assignment"] == "06_recommender" for r in rows)
    not_graded = {r["student_id"]: r for r in rows if r["status"] != "graded"}
    assert list(not_graded) == [ALWAYS]
    assert not_graded[ALWAYS]["score"] == "" and not_graded[ALWAYS]["status"].startswith(
        "not graded: infrastructure failure")
    assert graded.returncode == 1 and f"{ALWAYS}/06_recommender: not graded" in graded.stderr


def test_good_submissions_get_the_grade_they_get_alone(graded: GradedClass, tmp_path: Path) -> None:
    alone = ["a_solution", "c_template", "d_endswith"]
    submitted = tmp_path / "alone"
    for student in alone:
        shutil.copytree(graded.submitted / student, submitted / student)
    code, _, _ = run_grade(submitted, tmp_path / "out", graded.extra)
    assert code == 0
    for student in alone:
        assert outcome(graded.out, student) == outcome(tmp_path / "out", student), student
    assert results(graded.out, "a_solution")["score"] == results(graded.out, "c_template")["score"] == graded.max_score
    assert failed_tests(graded.out, "d_endswith") == {SIMILAR[0], SIMILAR[2]}  # product 1's neighbours end in 1
    assert "endswith" in graded.feedback("d_endswith")


HOSTILE_PROBLEMS = {
    "h_infinite_loop": "cell 2 (`while True:`) was skipped: it timed out after 4 s",
    "h_long_sleep": "cell 2 (`import time`) was skipped: it timed out after 4 s",
    "h_sys_exit": "cell 2 (`import sys`) raised SystemExit: 3",
    "h_os_exit": "cell 1 (`import os`) was skipped: it ended the process (exit code 7)",
    "h_segfault": "cell 2 (`import ctypes`) was skipped: it killed the process (SIGSEGV, a crash in native code)",
    "h_memory_bomb": "cell 2 (`hog = []`) was skipped: it ran out of memory (limit 1024 MiB)",
    "h_redis_admin": "cell 2 (`import redis_workbook`) raised NoPermissionError",
}


@pytest.mark.parametrize("student", sorted(HOSTILE_PROBLEMS))
def test_a_hostile_cell_is_reported_and_the_rest_keeps_its_points(graded: GradedClass, student: str) -> None:
    assert HOSTILE_PROBLEMS[student] in graded.problems(student)
    assert HOSTILE_PROBLEMS[student] in graded.feedback(student)
    assert results(graded.out, student)["score"] == graded.max_score


def test_redis_admin_commands_are_refused(graded: GradedClass) -> None:
    problems = graded.problems("h_redis_admin")
    for cell, command in ((2, "flushall"), (3, "config|set"), (4, "shutdown")):
        assert f"cell {cell} (" in problems and f"run the '{command}' command" in problems
    assert "delete only the keys your notebook made" in problems


def test_fork_loop_is_bounded_and_printing_is_capped(graded: GradedClass) -> None:
    assert "fork refused after" in graded.printed("h_fork_loop")
    assert results(graded.out, "h_fork_loop")["score"] == graded.max_score
    size = (graded.out / "h_print_100mb" / "06_recommender" / "results.json").stat().st_size
    assert size < 100_000
    assert "bytes of output left out" in graded.printed("h_print_100mb")
    assert results(graded.out, "h_print_100mb")["score"] == graded.max_score


def test_monkeypatching_pytest_or_the_grader_changes_nothing(graded: GradedClass) -> None:
    assert failed_tests(graded.out, "h_monkeypatch") == set(SIMILAR)
    messages = [t["output"] for t in results(graded.out, "h_monkeypatch")["tests"] if t["status"] == "failed"]
    assert all(messages), messages


def test_a_call_that_hangs_fails_only_its_tests(graded: GradedClass) -> None:
    assert failed_tests(graded.out, "h_hangs_in_call") == set(SIMILAR)
    for test in results(graded.out, "h_hangs_in_call")["tests"]:
        if test["status"] == "failed":
            assert "timed out after 2 s" in test["output"]


def sandbox_warnings(graded: GradedClass, student: str) -> list[str]:
    """The sandbox's warnings, but the one an ordinary user always gets on cgroup v1 (no box)."""
    warnings = results(graded.out, student)["extra_data"]["redis_workbook"]["warnings"]
    return [w for w in warnings if not (os.geteuid() != 0 and w.startswith("no cgroup for the submission"))]


def test_secrets_are_out_of_reach(graded: GradedClass) -> None:
    assert "READ []" in graded.printed("h_read_secrets")
    assert sandbox_warnings(graded, "h_read_secrets") == []
    assert results(graded.out, "h_read_secrets")["score"] == graded.max_score


def test_other_runs_files_are_out_of_reach(graded: GradedClass) -> None:
    assert "OTHER []" in graded.printed("h_read_other_runs")
    assert results(graded.out, "h_read_other_runs")["score"] == graded.max_score
    assert (graded.out.stat().st_mode & 0o077) == 0, "OUT must be private to the grader"


def test_classmates_servers_are_out_of_reach(graded: GradedClass) -> None:
    assert "REACHED []" in graded.printed("h_network_scan")
    assert results(graded.out, "h_network_scan")["score"] == graded.max_score


def test_exhausting_redis_is_graded_as_the_learners_failure(graded: GradedClass) -> None:
    printed = graded.printed("h_exhaust_redis")
    assert "own Redis full: OutOfMemoryError" in printed and "own clients stop after" in printed
    data = results(graded.out, "h_exhaust_redis")
    assert data["extra_data"]["redis_workbook"]["status"] == "graded"
    grabbed = [int(n) for n in re.findall(r"grabbed (\d+) connections", printed)]
    assert grabbed and MAX_CONNECTIONS - 2 <= max(grabbed) <= MAX_CONNECTIONS  # the gateway's cap (`r` holds one)
    assert data["score"] > 0


def test_a_redis_stalled_by_learner_code_is_graded_as_the_learners_failure(graded: GradedClass) -> None:
    data = results(graded.out, "h_stalls_redis")
    assert data["extra_data"]["redis_workbook"]["status"] == "graded"
    assert "stopped answering after your code's commands reached it" in graded.problems("h_stalls_redis")
    assert data["score"] < graded.max_score


def test_memory_counts_for_all_processes_together(graded: GradedClass) -> None:
    printed = graded.printed("h_memory_children")
    killed = int(re.search(r"KILLED (\d+)", printed).group(1))
    if os.geteuid() == 0:  # a cgroup box: 5 x 450 MiB do not fit in 1024 + 2 x (256 + 64) + 256 MiB together
        assert killed >= 1, printed
    else:  # no box for an ordinary user on cgroup v1: each child stays under its own address-space limit
        assert killed == 0 and printed.count("ALLOCATED") == 5, printed
    assert results(graded.out, "h_memory_children")["score"] == graded.max_score


def test_the_time_budget_adds_up_and_an_overrun_is_graded(graded: GradedClass) -> None:
    data = results(graded.out, "h_time_budget")
    assert data["extra_data"]["redis_workbook"]["status"] == "graded"
    assert "used up the 40 s its whole submission may take" in graded.problems("h_time_budget")
    assert data["execution_time"] < 40 + 60


def owner(folder: Path) -> int | None:
    """The grade process that made a private folder (None: not readable here, e.g. another user's)."""
    try:
        return int((folder / "owner.pid").read_text())
    except (OSError, ValueError):
        return None


def test_nothing_is_left_behind(graded: GradedClass) -> None:
    key = 0x5E000000 | int(graded.token[:6], 16)
    segments = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    assert [line for line in segments if int(line.split()[0]) == key] == []
    assert "SHM" in graded.printed("h_leave_behind")  # the segment was made, in the submission's IPC namespace
    left = [p for p in (Path("/run/lock"), Path("/dev/shm"), Path("/var/tmp"), Path("/tmp"))
            if (p / f"pwned-{graded.token}").exists()]
    assert left == []
    assert [p for p in Path(tempfile.gettempdir()).glob("redis-workbook-grade-*") if owner(p) == graded.grade_pid] == []
    assert not list(Path("/sys/fs/cgroup/memory/redis-workbook").glob(f"{graded.grade_pid}-*"))
    assert results(graded.out, "h_leave_behind")["score"] == graded.max_score


def test_writes_outside_the_notebook_folder_do_not_land(graded: GradedClass) -> None:
    folders = (REPO / "grader", REPO, graded.submitted / "a_solution" / "06_recommender", graded.out,
               Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))
    leaked = [p for p in folders if (p / f"pwned-{graded.token}.txt").exists()]
    for folder in leaked:  # a breach must not also litter the machine's shared temp folders
        (folder / f"pwned-{graded.token}.txt").unlink()
    assert not leaked, f"learner code wrote into {[str(p) for p in leaked]}"
    assert results(graded.out, "h_write_outside")["score"] == graded.max_score


@pytest.mark.parametrize(("student", "reason"), [
    ("i_invalid_json", "is not valid JSON"), ("i_empty", "is empty (0 bytes)"),
    ("i_wrong_assignment", "This notebook is for 07_rag, not 06_recommender")])
def test_broken_notebooks_score_zero_with_the_reason(graded: GradedClass, student: str, reason: str) -> None:
    data = results(graded.out, student)
    assert data["score"] == 0 and data["extra_data"]["redis_workbook"]["status"] == "graded"
    assert reason in data["output"] and reason in graded.feedback(student)


def test_redis_killed_mid_class_is_regraded_or_marked_not_graded(graded: GradedClass) -> None:
    assert graded.watcher.killed == {ONCE: 1, ALWAYS: 2}
    assert results(graded.out, ONCE)["score"] == graded.max_score
    assert "Not graded" in graded.feedback(ALWAYS) and "infrastructure failure" in graded.feedback(ALWAYS)


def test_no_process_outlives_the_grader(graded: GradedClass) -> None:
    assert len(graded.watcher.seen) > 2 * len(CLASS)  # it did see the grader's processes
    assert graded.watcher.survivors() == []


def test_interrupted_grading_resumes_to_the_same_gradebook(graded: GradedClass, tmp_path: Path) -> None:
    students = ["c_template", "d_endswith", "h_os_exit", "h_redis_admin", "h_sys_exit", "i_invalid_json"]
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    for student in students:
        shutil.copytree(graded.submitted / student, submitted / student)
    for sig in (signal.SIGINT, signal.SIGKILL):
        done = len(list(out.glob("*/*/results.json")))
        process = subprocess.Popen(grade_command(submitted, out, graded.extra), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        watcher = Watcher(process.pid)
        deadline = time.monotonic() + 120
        while len(list(out.glob("*/*/results.json"))) <= done and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
        watcher.stop()
        assert process.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), stderr
        assert watcher.survivors() == []
    kept = {path: path.stat().st_mtime_ns for path in out.glob("*/*/results.json")}
    assert 0 < len(kept) < len(students)
    final = subprocess.run(grade_command(submitted, out, graded.extra), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    expected = [row for row in gradebook(graded.out) if row["student_id"] in students]
    assert gradebook(out) == expected
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # finished ones were not graded again


def test_testcontainers_backend_gives_the_same_grades(graded: GradedClass, docker_engine: object,
                                                      tmp_path: Path) -> None:
    students = ["c_template", "d_endswith", "h_redis_admin", "i_invalid_json"]
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    for student in students:
        shutil.copytree(graded.submitted / student, submitted / student)
    done = subprocess.run(grade_command(submitted, out, graded.extra, "--backend", "testcontainers"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert gradebook(out) == [row for row in gradebook(graded.out) if row["student_id"] in students]
    for student in students:
        assert outcome(out, student) == outcome(graded.out, student)
    assert results(out, "c_template")["extra_data"]["redis_workbook"]["backend"] == "testcontainers"


def test_a_fork_server_killed_mid_class_loses_no_grade(graded: GradedClass, tmp_path: Path) -> None:
    """grade forks each grading process from a warm server; killed, its running children stop ("not graded"),
    are regraded as `python -m pytest`, and the gradebook is the one the class got."""
    students = ["c_template", "d_endswith", "h_os_exit", "i_invalid_json"]
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    for student in students:
        shutil.copytree(graded.submitted / student, submitted / student)
    process = subprocess.Popen(grade_command(submitted, out, graded.extra), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    watcher = Watcher(process.pid)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        table = process_table()
        servers = [pid for pid, (parent, _, _) in table.items()
                   if parent == process.pid and "fork server" in cmdline(pid)]
        grading = [pid for pid, (parent, _, _) in table.items() if servers and parent == servers[0]
                   and "06_recommender" in cmdline(pid)]
        if grading:  # a submission is being graded by the server's child: kill the server under it
            os.kill(servers[0], signal.SIGKILL)
            killed = servers[0]
        time.sleep(0.02)
    _, stderr = process.communicate(timeout=600)
    watcher.stop()
    assert killed is not None, "no grading process forked by the fork server was seen"
    assert process.returncode == 0, stderr
    assert "grading went on without its fork server" in stderr
    assert gradebook(out) == [row for row in gradebook(graded.out) if row["student_id"] in students]
    assert watcher.survivors() == []


def test_a_copy_left_without_its_owner_is_removed_by_the_next_run(graded: GradedClass, tmp_path: Path) -> None:
    """A private copy with no owner.pid (its removal raced with a folder made in it, and its reaper was killed)
    is removed by the next grade once it is ten minutes old; a younger one may be a run starting: kept."""
    old = Path(tempfile.mkdtemp(prefix="redis-workbook-grade-"))
    young = Path(tempfile.mkdtemp(prefix="redis-workbook-grade-"))
    try:
        (old / "tmp-left").mkdir()
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        submitted = tmp_path / "submitted"
        shutil.copytree(graded.submitted / "i_invalid_json", submitted / "i_invalid_json")
        done = subprocess.run(grade_command(submitted, tmp_path / "out", graded.extra), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert not old.exists() and young.exists()
    finally:
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(young, ignore_errors=True)
