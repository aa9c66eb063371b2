"""`redis-workbook grade SUBMITTED_DIR --out OUT_DIR`: a class, graded in parallel, resumable.

SUBMITTED_DIR is nbgrader's layout, `<student_id>/<assignment>/<notebook>.ipynb`.
Each (student, assignment) is graded by its own trusted pytest process
(`pytest -p redis_workbook.grading.plugin --submission ...`, forked from a warm
process that imported pytest once: forkserver.py) with its own fresh Redis and a
sandboxed worker for the notebook, so nothing one learner does reaches another's
grade. It writes, per submission, OUT_DIR/<student>/<assignment>/
feedback.md then results.json (Gradescope's format, written atomically: a
results.json that exists is complete), and at the end OUT_DIR/gradebook.csv,
rebuilt from every results.json and sorted, with the columns
student_id,assignment,score,max_score,status.

Status "graded": the score is the grade (a notebook that is not valid JSON, empty
or for another assignment is graded 0, with the reason in its feedback).
"not graded: <reason>": the grader could not grade it (Redis died or the grader
crashed twice in a row: each submission is retried once on a fresh server), and
the score stays empty, never a silent 0. A rerun regrades exactly those, plus any
submission whose notebook or tests changed, so an interrupted run resumes and
ends with the same gradebook as an uninterrupted one.

The grader's tests are copied into a private (0700) folder first and the
instructor's folders are hidden from the learners' processes (see sandbox.py).
Each notebook is read once at intake (intake.py: real folders and regular files
only; a link, FIFO or device is graded 0 with a message); those bytes are hashed
and a private copy of them is what pytest grades. OUT_DIR is created 0700.
SIGTERM and Ctrl-C stop every grading process within seconds; a rerun resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from redis_workbook.grading import intake, options, points, sandbox, shards
from redis_workbook.grading.forkserver import Forked, ForkServer, ForkServerGone
from redis_workbook.grading.forkserver import python as forkserver_python
from redis_workbook.grading.options import ADMIN_URL_ENV, PARENT_ENV, UsageProblem
from redis_workbook.grading.results import (
    GRADED,
    NOT_GRADED,
    Check,
    Record,
    Results,
    feedback,
    gradescope,
    private_dirs,
    read_record,
    status_of,
    terminal_safe,
    write_gradebook,
    write_json_atomic,
    write_text_atomic,
)
from redis_workbook.server import reap_when_gone, stop_processes

PRIVATE_PREFIX = "redis-workbook-grade-"
LOG_TAIL = 3000
STALE_S = 600.0  # a private copy without its owner.pid this long is a leftover
GRACE_S = 120.0  # the grader's own work per submission (servers, checks) on top of the learner's time budget


@dataclass
class Job:
    """One submission: a student's notebook for one assignment, and where its results go.

    `notebook` is the grader's private copy of the bytes read once at intake (same file name),
    `sha256` their hash; or, when intake refused the submission, `problem` says why (graded 0).
    """

    student: str
    assignment: str
    notebook: Path
    out: Path
    sha256: str
    problem: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submitted", metavar="SUBMITTED_DIR", help="<student_id>/<assignment>/<notebook>.ipynb")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="results, feedback and gradebook.csv")
    parser.add_argument("--tests", metavar="EXTRA_DIR",
                        help="instructor-private test modules test_<assignment>*.py with their own points.toml")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    options.add(parser, "backend", "redis_url", "cell_timeout", "notebook_timeout", "call_timeout", "memory_mb",
                "submission_timeout", "hide")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="grade even where no sandbox is possible: learner code then runs as you, with your "
                             "files and network (only for code you trust)")
    parser.add_argument("--sandbox", choices=("auto", "uid"), default="auto",
                        help="auto (default): namespaces, as root or as an ordinary user. uid: as root where "
                             "namespaces are forbidden (a default Docker container, e.g. Gradescope's): a uid of its "
                             "own, Unix sockets only, and the grader's files must be readable by their owner only "
                             "(checked)")
    parser.add_argument("--shard", type=shards.parse, metavar="I/N",
                        help="grade only shard I of N (0 <= I < N): the students whose id hashes to I, with all their "
                             "assignments; `redis-workbook merge` joins the shards' OUT folders into one gradebook")


def run(args: argparse.Namespace) -> int:
    try:
        grader = points.grader_dir()
        known = points.assignments(grader)
        submitted, out, extra = _check_args(args)
        shards.check_out(out, args.shard)
    except (UsageProblem, points.GraderNotFound, shards.ShardProblem) as exc:
        print(f"redis-workbook grade: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends grade like Ctrl-C, at any point
    # Ctrl-C too, however grade was started: `grade ... &` in a script and nohup hand it SIGINT ignored.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    suite = running = None
    try:
        suite = Suite(grader, extra)
        suite.start_fork_server()  # its imports overlap with the sandbox's probe and reading the submissions
        running = Running(suite.fork_server, suite.fork_server_problem)
        try:
            args.sandbox = _sandbox_mode(args)
        except UsageProblem as exc:
            print(f"redis-workbook grade: {exc}", file=sys.stderr)
            return 2
        jobs = discover(submitted, out, suite.root / "submissions", known)
        students = {job.student for job in jobs}
        if args.shard is not None:
            jobs = [job for job in jobs if shards.shard_of(job.student, args.shard[1]) == args.shard[0]]
        problems = suite.preflight(sorted({j.assignment for j in jobs if j.assignment in known}), running)
        if problems:
            print("redis-workbook grade: the tests cannot grade anything yet:\n" + "\n".join(problems),
                  file=sys.stderr)
            return 2
        hide = [str(p) for p in (*points.secret_paths(grader), extra, submitted, out, suite.root, *args.hide)
                if p is not None]
        code = ClassRun(args, suite, known, hide, running).grade(jobs)
        if args.shard is not None and code != 130:  # finished (130: interrupted; a rerun resumes)
            shards.write_marker(out, args.shard, students, suite.fingerprint, [(j.student, j.assignment) for j in jobs])
        return code
    except KeyboardInterrupt:  # before grading started (reading the submissions, collecting the tests)
        if running is not None:
            running.stop_all()
        print("Interrupted before any submission was graded.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if suite is not None:
            suite.remove()


def _check_args(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    submitted = Path(args.submitted).resolve()
    if not submitted.is_dir():
        raise UsageProblem(f"SUBMITTED_DIR {args.submitted} is not a folder (expected <student>/<assignment>/*.ipynb).")
    if args.jobs < 1:
        raise UsageProblem(f"--jobs must be at least 1, got {args.jobs}.")
    if args.backend == "url" and not (args.redis_url or os.environ.get(ADMIN_URL_ENV)):
        raise UsageProblem("--backend url needs --redis-url redis://[user:password@]host:port.")
    extra = None
    if args.tests:
        extra = Path(args.tests).resolve()
        if not (extra / points.POINTS_FILE).is_file():
            raise UsageProblem(f"--tests {args.tests} must be a folder with test_<assignment>*.py and a "
                               f"{points.POINTS_FILE} giving their points.")
    out = Path(args.out).resolve()
    private_dirs(out)  # created 0700: results and feedback are for the instructor to hand out
    return submitted, out, extra


def _sandbox_mode(args: argparse.Namespace) -> str:
    """The sandbox learner code will run in; refuses to grade without one unless told it is unsafe."""
    if getattr(args, "sandbox", "auto") == "uid":
        if os.geteuid() != 0:
            raise UsageProblem("--sandbox uid gives learner code a uid of its own, which needs root.")
        return "uid"
    mode, why = sandbox.mode()
    if mode == "none" and not args.unsafe_no_sandbox:
        raise UsageProblem(f"no sandbox is possible here ({why}), so learner code would run as you, with your "
                           "files and network. Grade as root (e.g. in a container) or where user namespaces are "
                           "allowed, or pass --unsafe-no-sandbox to grade code you trust anyway.")
    return "none" if args.unsafe_no_sandbox else mode


def discover(submitted: Path, out: Path, copies: Path, known: tuple[str, ...]) -> list[Job]:
    """Every <student>/<assignment>/ (see intake.scan); each notebook read once, hashed and copied into `copies`.

    The copy (a private folder of this run) is what pytest grades, so what is graded is what was hashed.
    """
    jobs = []
    for entry in intake.scan(submitted, known):
        target = out / entry.student / entry.assignment
        if entry.data is None:
            refused = "refused:" + hashlib.sha256(str(entry.problem).encode()).hexdigest()
            jobs.append(Job(entry.student, entry.assignment, Path(entry.name), target, refused, entry.problem))
            continue
        copy = copies / entry.student / entry.assignment / entry.name
        private_dirs(copy.parent)
        with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(entry.data)
        jobs.append(Job(entry.student, entry.assignment, copy, target, hashlib.sha256(entry.data).hexdigest()))
    return jobs


class Suite:
    """The tests of this run, copied into a private folder: grader/*.py + points.toml, and extra/ if given."""

    def __init__(self, grader: Path, extra: Path | None) -> None:
        _remove_stale_copies()
        self.root = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))  # mode 0700: only the grader's user reads it
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self.reaper = reap_when_gone(self.root)  # even a grade that is killed leaves no copy behind
        self.tests = self._copy(grader, self.root / "tests")
        self.extra = self._copy(extra, self.tests / "extra") if extra else None
        (self.tests / "pytest.ini").write_text("[pytest]\n")
        digest = hashlib.sha256()
        for path in sorted(self.tests.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(self.tests)).encode() + b"\0" + path.read_bytes() + b"\0")
        self.fingerprint = digest.hexdigest()[:16]
        self.checks: dict[str, list[Check]] = {}  # assignment -> its tests as collected (not run yet)
        self.fork_server: ForkServer | None = None
        self.fork_server_problem: str | None = None

    def start_fork_server(self) -> None:
        """The warm process that forks each submission's pytest (forkserver.py); started here, from the main
        thread, before any other thread exists."""
        try:
            self.fork_server = ForkServer(self.tests, dict(os.environ), self.root / "fork-server.log")
        except OSError as exc:  # grading goes on, a process started per submission (Running says so)
            self.fork_server_problem = f"the fork server could not start: {exc}"

    @staticmethod
    def _copy(source: Path, target: Path) -> Path:
        """The whole folder but nbgrader's course and caches: tests may import helpers and read data files."""
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("course", "__pycache__", ".*"))
        return target

    def modules(self, assignment: str) -> list[Path]:
        found = [self.tests / f"test_{assignment}.py"]
        if self.extra is not None:
            known = tuple(points.read(self.extra / points.POINTS_FILE))
            found += sorted(p for p in self.extra.glob("test_*.py")
                            if points.assignment_of_module(p.stem, known) == assignment)
        return [p for p in found if p.exists()]

    def max_score(self, assignment: str) -> float:
        files = [self.tests / points.POINTS_FILE] + ([self.extra / points.POINTS_FILE] if self.extra else [])
        return sum(sum(points.read(f).get(assignment, {}).values()) for f in files)

    def pytest_options(self) -> list[str]:
        return [*options.pytest_base(self.tests), "-c", str(self.tests / "pytest.ini")]

    def preflight(self, assignments: list[str], running: Running) -> list[str]:
        """Collect every test module once, in a grading process of its own: syntax errors and tests without
        points stop the run up front, and the collected checks are what a refused submission fails."""
        modules = [str(m) for a in assignments for m in self.modules(a)]
        if not modules:
            return []
        with tempfile.TemporaryDirectory(dir=self.root) as work:
            collected, log = Path(work) / "collected.json", Path(work) / "pytest.log"
            log.touch()
            process = running.start([*modules, "--collect-only", "-q", *self.pytest_options(),
                                     "--results-json", str(collected)], self.environment(work), self.tests, log,
                                    "redis-workbook grade: collecting the tests")
            try:
                code = process.wait()
            finally:
                running.done(process)
            if not collected.exists():
                tail = log.read_text(errors="replace")[-LOG_TAIL:].strip()
                return [f"collecting {', '.join(modules)} failed (exit code {code}): {tail}"]
            results = Results.read(collected)
        for check in results.tests:
            self.checks.setdefault(check.assignment, []).append(check)
        return results.warnings

    def environment(self, work: str) -> dict[str, str]:
        """A grading pytest process's environment: this one's, the tests' copy, `work` as its temporary folder."""
        return {**os.environ, points.GRADER_ENV: str(self.tests),
                "TMPDIR": work,  # the submission's servers and sockets live in the run's private folder
                # only the plugins grading names (-p): installed ones (anyio's, ...) cost 0.2 s CPU per submission
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

    def refused(self, assignment: str, problem: str) -> Results:
        """The results of a submission intake refused: every test failed with the problem, 0 points (as pytest's)."""
        tests = [replace(check, passed=False, points=0.0, message=problem) for check in self.checks.get(assignment, [])]
        return Results(assignment=assignment, tests=tests, score=0.0, max_score=self.max_score(assignment),
                       submission_problem=problem, duration=0)

    def remove(self) -> None:
        """End the fork server and remove the copy now; the reaper stays until this process exits and removes
        whatever a grading thread still running after an interrupt creates in it (its pytest's temporary folder)."""
        if self.fork_server is not None:
            self.fork_server.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_stale_copies() -> None:
    """Private test copies left by a grade process that was killed (its pid is gone), or without an owner for
    STALE_S (a copy's removal raced with a folder made in it, and its reaper was killed too); only our own."""
    for folder in Path(tempfile.gettempdir()).glob(PRIVATE_PREFIX + "*"):
        try:
            info = folder.lstat()
            if info.st_uid != os.geteuid() or not stat.S_ISDIR(info.st_mode):
                continue
            if not (folder / "owner.pid").exists():  # a copy writes it right after making the folder
                if time.time() - info.st_mtime > STALE_S:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            owner = int(intake.read_regular(folder / "owner.pid", 32))
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError, intake.Refused):
            continue


class Running:
    """The grading processes alive right now, so an interrupt can stop every one of them.

    Each is forked by the suite's fork server; when that server is gone (it could not start, or died), the
    process is started as `python -m pytest` instead, exactly as the server's child would run it (with a warning).
    """

    def __init__(self, server: ForkServer | None, problem: str | None = None) -> None:
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen | Forked] = set()  # both wait, poll and stop alike
        self.stopping = threading.Event()
        self.server = server
        self.warnings = [f"grading went on without its fork server, a little slower ({problem})"] if problem else []

    def start(self, args: list[str], env: dict[str, str], cwd: Path, log: Path,
              title: str) -> subprocess.Popen | Forked:
        """A grading process running pytest with `args`, its output appended to `log`; `ps` shows `title`."""
        if self.stopping.is_set():
            raise KeyboardInterrupt
        process = None
        if self.server is not None:
            try:
                process = self.server.spawn(args, {**env, PARENT_ENV: str(self.server.pid)}, cwd, log, title,
                                            cancelled=self.stopping)  # an interrupt must not wait for an answer
            except ForkServerGone as exc:
                with self.lock:
                    self.server = None
                    self.warnings.append(f"grading went on without its fork server, a little slower ({exc})")
        with self.lock:
            if process is None:
                with open(log, "ab") as output:
                    process = subprocess.Popen([*forkserver_python(), "-m", "pytest", *args], stdin=subprocess.DEVNULL,
                                               stdout=output, stderr=subprocess.STDOUT, cwd=cwd,
                                               env={**env, PARENT_ENV: str(os.getpid())}, start_new_session=True)
            self.processes.add(process)
            if self.stopping.is_set():  # interrupted while it started: stop_all may have missed it
                stop_processes([process], group=True)
                raise KeyboardInterrupt
            return process

    def done(self, process: subprocess.Popen | Forked) -> None:
        with self.lock:
            self.processes.discard(process)

    def stop_all(self) -> None:
        with self.lock:
            self.stopping.set()
            processes = list(self.processes)
        stop_processes(processes, group=True)


class ClassRun:
    """Grading one class: which jobs to do, running them, writing their files."""

    def __init__(self, args: argparse.Namespace, suite: Suite, known: tuple[str, ...], hide: list[str],
                 running: Running) -> None:
        self.args, self.suite, self.known, self.hide, self.running = args, suite, known, hide, running
        self.jobs = 1 if args.backend == "url" else args.jobs
        if args.backend == "url" and args.jobs > 1:
            print("--backend url: grading one submission at a time (they share that one Redis).", file=sys.stderr)

    def grade(self, jobs: list[Job]) -> int:
        from tqdm import tqdm

        # One assignment's submissions after another: they take about as long as each other, so the parallel jobs
        # finish together (student by student, the class's last slow notebook ran alone at the end).
        todo = sorted((job for job in jobs if not self.complete(job)), key=lambda job: (job.assignment, job.student))
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="grading", unit="notebook",
                   file=sys.stderr, dynamic_ncols=True)
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        try:
            futures = [pool.submit(self.grade_one, job) for job in todo]
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        except KeyboardInterrupt:
            # SIGTERM/Ctrl-C (run() turns SIGTERM into this): stop every grading process group at once, within
            # stop_processes's grace; a second signal meanwhile is ignored, so the cleanup finishes and the run resumes.
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                self.running.stop_all()
                pool.shutdown(wait=True, cancel_futures=True)
                bar.close()
                gradebook = write_gradebook(self.args_out())
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            print(f"\nInterrupted. Rerun the same command to resume; the gradebook so far: {gradebook}",
                  file=sys.stderr)
            return 130
        pool.shutdown(wait=True)
        bar.close()
        return self.summary(jobs, write_gradebook(self.args_out()))

    def args_out(self) -> Path:
        return Path(self.args.out).resolve()

    def complete(self, job: Job) -> bool:
        """A results.json that says graded, for this very notebook and these very tests."""
        record = read_record(job.out / "results.json")
        return record is not None and record.graded and record.notebook_sha256 == job.sha256 and \
            record.tests == self.suite.fingerprint

    def grade_one(self, job: Job) -> None:
        record = Record(job.student, job.assignment, job.notebook.name, job.sha256, self.suite.fingerprint)
        if job.assignment not in self.known:
            self.write(job, None, f"{NOT_GRADED}: no grader tests for an assignment called {job.assignment!r}", record)
            return
        if job.problem is not None:  # a link, FIFO, device, missing or too large: the learner's problem, 0 points
            self.write(job, self.suite.refused(job.assignment, job.problem), GRADED, record)
            return
        results, crash = None, None
        for _attempt in range(2):  # a second try on a fresh server when the infrastructure failed
            results, crash = self.run_pytest(job)
            if status_of(results, crash) == GRADED:
                break
        self.write(job, results, status_of(results, crash), record)

    def write(self, job: Job, results: Results | None, status: str, record: Record) -> None:
        if self.running.stopping.is_set():
            return  # interrupted: leave no results, so the rerun grades it
        max_score = results.max_score if results else self.suite.max_score(job.assignment)
        record = record.settled(status, max_score if job.assignment in self.known else None, results)
        report = gradescope(record, results)
        write_text_atomic(job.out / "feedback.md", feedback(record, report))
        write_json_atomic(job.out / "results.json", report)  # last: its presence means complete

    def run_pytest(self, job: Job) -> tuple[Results | None, str | None]:
        """One trusted pytest process for this submission; (its results, or why there are none)."""
        args = self.args
        with tempfile.TemporaryDirectory(dir=self.suite.root) as work:
            results_json, log_path = Path(work) / "results.json", Path(work) / "pytest.log"
            arguments = [*map(str, self.suite.modules(job.assignment)), "-q",
                         *self.suite.pytest_options(), "--submission", str(job.notebook),
                         "--results-json", str(results_json), "--sandbox", args.sandbox,
                         *options.passed_on(args, "backend", "cell_timeout", "notebook_timeout", "call_timeout",
                                            "memory_mb", "submission_timeout"), *[f"--hide={p}" for p in self.hide]]
            env = self.suite.environment(work)
            if args.redis_url:
                env[ADMIN_URL_ENV] = args.redis_url  # in the environment, not on a command line others can read
            with open(log_path, "wb+") as log:
                try:
                    process = self.running.start(arguments, env, self.suite.tests, log_path,
                                                 f"redis-workbook grade: {job.student}/{job.assignment}")
                except KeyboardInterrupt:
                    return None, "interrupted"
                try:
                    process.wait(timeout=args.submission_timeout + GRACE_S)
                except subprocess.TimeoutExpired:
                    stop_processes([process], group=True)
                    return None, f"grading took longer than {args.submission_timeout + GRACE_S:g} s"
                finally:
                    self.running.done(process)
                if results_json.exists():
                    return Results.read(results_json), None
                log.seek(0)
                tail = log.read().decode("utf-8", errors="replace")[-LOG_TAIL:]
            return None, f"the grader crashed (exit code {process.returncode}): {tail.strip()}"

    def summary(self, jobs: list[Job], gradebook: Path) -> int:
        """Counts, the submissions not graded, and the sandbox's warnings (once each) for the instructor."""
        statuses, warnings = {}, set()
        for job in jobs:
            record = read_record(job.out / "results.json") or Record(job.student, job.assignment)
            statuses[(job.student, job.assignment)] = record.status
            warnings.update(record.warnings)
        warnings.update(self.running.warnings)
        failed = {k: v for k, v in statuses.items() if v != GRADED}
        print(f"graded {len(statuses) - len(failed)} of {len(statuses)} submissions; gradebook: {gradebook}",
              file=sys.stderr)
        for (student, assignment), status in sorted(failed.items()):
            print(terminal_safe(f"  {student}/{assignment}: {status[:300]}"), file=sys.stderr)
        for warning in sorted(warnings):
            print(terminal_safe(f"warning: {warning}"), file=sys.stderr)
        return 1 if failed else 0


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt
