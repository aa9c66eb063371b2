"""One warm process per class that forks the grading pytest process of each submission.

A fresh `python -m pytest` per submission spent about 0.6 s (and 0.5 s of CPU) importing the
interpreter's startup, pytest, numpy, redis-py and the grading plugin before its first check:
a third of grading an honest notebook. `grade` starts this server once, before any thread,
and asks it for each submission's pytest run instead.

The server imports modules and nothing else: it never runs a test, opens a Redis or reads a
notebook, so every child is a fresh copy of the same clean process and nothing passes from one
submission to the next (`random` reseeds itself in a forked child; numpy's global generator is
reseeded here). A child starts its own session (grade stops it by its process group, as before),
takes the arguments, environment, folder and log `grade` gives it, runs `pytest.main` and exits
with its code after the interpreter's exit functions. The server answers each request with the
child's pid once it leads its session, and with its exit code when it ends; it holds only the
socket `grade` handed it, and exits when that closes or `grade` dies (the parent-death signal),
its children then stopping by theirs.

The grade side (`ForkServer`) gives `Forked` objects that wait and stop like `subprocess.Popen`;
a child is waited for by its pidfd, so it is seen to end even if the server is gone.

Protocol, one JSON object per line over a socketpair:
    grade -> server  {"id": N, "args": [...], "env": {...}, "cwd": "...", "log": "...", "title": "..."}
    server -> grade  {"id": N, "pid": PID} then {"id": N, "exit": CODE}, or {"id": N, "error": "..."} (no fork)
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# What a grading pytest process imports before its first check: pytest and its built-in plugins (pdb for its
# debugging plugin), the grading plugin (numpy, redis-py), and the library modules the grader's tests use
# (RedisVL for notebook 11's).
PRELOAD = ("pytest", "pdb", "redis_workbook.grading.plugin", "redis.commands.search.query", "redis_workbook.datasets",
           "redis_workbook.embeddings", "redis_workbook.openai_server", "redis_workbook.schema",
           "redis_workbook.report", "redisvl.index")
START_TIMEOUT_S = 60.0
EXIT_REPORT_S = 5.0  # how long a waiter waits for the server's exit code once the child's pidfd says it ended


def python() -> list[str]:
    """This Python, isolated (-I) when grade runs isolated (Gradescope's run_autograder starts it so)."""
    return [sys.executable, *(["-I"] if sys.flags.isolated else [])]


class ForkServerGone(Exception):
    """The server is not running (it could not start, or it died): grade starts its pytest processes itself."""


# ---------------------------------------------------------------------------------------------- grade's side
class Forked:
    """A child of the fork server, as grade sees it: `pid`, `returncode`, `poll`, `wait`, `send_signal`."""

    def __init__(self) -> None:
        self.pid = 0
        self.pidfd: int | None = None
        self.returncode: int | None = None
        self.started = threading.Event()
        self.reported = threading.Event()
        self.abandoned = False  # grade stopped waiting for it (an interrupt, a server not answering): killed on sight
        self.failed: str | None = None  # why the server could not fork it
        self.settling = threading.Lock()  # a job's thread and an interrupt may wait at once
        self.settled = False  # its end is known and its pidfd closed

    def _ended(self, timeout: float | None) -> bool:
        """Whether it has ended: its exit code came, or else its pidfd says so. A server that is gone marks every
        child reported without a code, while each may still be finishing (stopping its worker and Redis)."""
        pidfd = self.pidfd
        if self.returncode is not None or pidfd is None:
            return self.reported.wait(timeout)
        try:
            ready, _, _ = select.select([pidfd], [], [], timeout)
        except (OSError, ValueError):  # another thread settled it meanwhile (closed the pidfd)
            return True
        return bool(ready)

    def poll(self) -> int | None:
        if not self.settled:
            if not self._ended(0):
                return None
            self._settle()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.settled:
            if not self._ended(timeout):
                raise subprocess.TimeoutExpired(f"grading process {self.pid}", timeout or 0)
            self._settle()  # also when its code came first: its pidfd is closed either way
        assert self.returncode is not None
        return self.returncode

    def _settle(self) -> None:
        """The child has ended: its exit code from the server (-1 when the server is gone and cannot say)."""
        self.reported.wait(EXIT_REPORT_S)
        with self.settling:
            if self.returncode is None:
                self.returncode = -1
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
            self.settled = True

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            signal.pidfd_send_signal(self.pidfd, sig) if self.pidfd is not None else os.kill(self.pid, sig)


class ForkServer:
    """The server process and the socket to it; `spawn` forks one grading pytest process."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        ours, theirs = socket.socketpair()
        env = {**env, "OPENBLAS_NUM_THREADS": "1"}  # numpy is imported once here: no thread pool in a forked child
        try:
            with open(log, "ab") as errors:
                self.process = subprocess.Popen(
                    [*python(), "-m", "redis_workbook.grading.forkserver", str(theirs.fileno()), str(os.getpid())],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                    cwd=cwd, env=env, start_new_session=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.log = log
        self.socket = ours
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.children: dict[int, Forked] = {}
        self.gone = threading.Event()
        self.reader = threading.Thread(target=self._read, name="fork-server", daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def spawn(self, args: list[str], env: dict[str, str], cwd: Path, log: Path, title: str,
              cancelled: threading.Event | None = None) -> Forked:
        """Fork a grading process running `pytest.main(args)`, named `title` in `ps`; ForkServerGone when the
        server is not there (or does not answer), KeyboardInterrupt when `cancelled` is set first. Either way
        the request is abandoned: a process the server forks for it later is killed at once."""
        child, number = Forked(), next(self.ids)
        request = {"id": number, "args": args, "env": env, "cwd": str(cwd), "log": str(log), "title": title}
        with self.lock:
            if self.gone.is_set():
                raise ForkServerGone(self.why())
            self.children[number] = child
            try:
                self.socket.sendall(json.dumps(request).encode() + b"\n")
            except OSError as exc:
                raise ForkServerGone(str(exc)) from exc
        deadline = time.monotonic() + START_TIMEOUT_S
        while not child.started.wait(0.1):
            interrupted = cancelled is not None and cancelled.is_set()
            if interrupted or self.gone.is_set() or time.monotonic() > deadline:
                self._abandon(child)
                if interrupted:
                    raise KeyboardInterrupt
                raise ForkServerGone(self.why())
        if child.failed is not None:
            raise ForkServerGone(f"the fork server could not start a grading process ({child.failed})")
        return child

    def _abandon(self, child: Forked) -> None:
        with self.lock:
            child.abandoned = True
            started = child.started.is_set()
        if started:  # its pid came meanwhile
            _kill_group(child.pid)

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                data = self.socket.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)
                with self.lock:
                    child = self.children.get(message["id"])
                if child is None:
                    continue
                if "error" in message:
                    with self.lock:
                        child.failed = str(message["error"])
                        self.children.pop(message["id"], None)
                    child.started.set()
                elif "pid" in message:
                    with self.lock:
                        child.pid = message["pid"]
                        try:
                            child.pidfd = os.pidfd_open(child.pid)
                        except OSError:  # it has ended already; the exit report follows
                            child.pidfd = None
                        child.started.set()
                        abandoned = child.abandoned
                    if abandoned:  # e.g. a server that was stopped (SIGSTOP) answers long after grade gave up
                        _kill_group(child.pid)
                else:
                    child.returncode = message["exit"]
                    child.reported.set()
                    with self.lock:
                        self.children.pop(message["id"], None)
        self.gone.set()
        with self.lock:
            for child in self.children.values():
                child.reported.set()  # its waiter settles on -1 unless a code came
            self.children.clear()

    def why(self) -> str:
        code = self.process.poll()
        if code is None and self.gone.is_set():  # its socket closed as it exited: not reaped yet
            try:
                code = self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        tail = self.log.read_text(errors="replace")[-1500:].strip() if self.log.exists() else ""
        return f"the fork server {'exited with code ' + str(code) if code is not None else 'is not answering'}" + \
            (f": {tail}" if tail else "")

    def close(self) -> None:
        """End the server (its children, if any are left, stop by their parent-death signal)."""
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _kill_group(pid: int) -> None:
    """SIGKILL a forked grading process that nobody waits for, and its group (it leads one: setsid)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------- the server
def serve(fd: int, owner: int) -> None:
    from redis_workbook.server import die_with_parent

    die_with_parent(signal.SIGKILL)
    if os.getppid() != owner:  # grade died before the parent-death signal was set
        return
    channel = socket.socket(fileno=fd)
    _title("redis-workbook grade: fork server")
    preload()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, int] = {}  # pid -> request id
    buffer = b""
    while True:
        ready, _, _ = select.select([channel, wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
            _reap(channel, children)
        if channel in ready:
            data = channel.recv(65536)
            if not data:
                return  # grade is done (or gone): the children end with their parent-death signal
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                try:
                    pid = _fork(request, channel, (wake_read, wake_write))
                except OSError as exc:  # a process, memory or file limit: this request fails, the server and the
                    # classmates' grading processes it forked go on (its death would stop every one of them)
                    channel.sendall(json.dumps({"id": request["id"], "error": str(exc)}).encode() + b"\n")
                    continue
                children[pid] = request["id"]
                channel.sendall(json.dumps({"id": request["id"], "pid": pid}).encode() + b"\n")


def preload() -> None:
    import importlib

    from _pytest.config import default_plugins

    for name in (*PRELOAD, *(f"_pytest.{plugin}" for plugin in default_plugins)):
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # a child imports it (or fails to) as a fresh process would
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:  # forking a process with threads could hand a child a lock held forever
        raise SystemExit(f"the fork server has {len(threads)} threads after its imports; it must have one")


def _fork(request: dict, channel: socket.socket, wake: tuple[int, int]) -> int:
    ready_read, ready_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        os.close(ready_read)
        os.close(ready_write)
        raise
    if pid == 0:
        os.close(ready_read)
        _child(request, channel, wake, ready_write)  # never returns
    os.close(ready_write)
    os.read(ready_read, 1)  # the child leads its own session now: grade may signal its process group
    os.close(ready_read)
    return pid


def _child(request: dict, channel: socket.socket, wake: tuple[int, int], ready: int) -> None:
    code = 1
    try:
        os.setsid()
        os.write(ready, b".")
        os.close(ready)
        channel.close()
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null, log = os.open(os.devnull, os.O_RDONLY), os.open(request["log"], os.O_WRONLY | os.O_APPEND)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile

        tempfile.tempdir = None  # TMPDIR is this submission's private folder
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.argv = ["pytest", *request["args"]]
        _title(request["title"])
        import pytest

        code = int(pytest.main(request["args"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import atexit

        atexit._run_exitfuncs()  # what the interpreter would run at exit (servers' clean-up)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _title(title: str) -> None:
    """What `ps` shows for this process (a child: whose notebook it grades). The first call must come before the
    environment changes: setproctitle finds the room for a title after the arguments, where the environment was."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


def _reap(channel: socket.socket, children: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        number = children.pop(pid, None)
        if number is not None:
            channel.sendall(json.dumps({"id": number, "exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
