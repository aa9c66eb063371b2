"""The notebook's worker as a process: started sandboxed with its limits, talked to, its output kept, ended.

`WorkerProcess` starts `worker.py` in a fresh session with a scrubbed environment, puts it in the
submission's box before it reads anything, and ends it and everything it started (the namespace's
process 1 by pidfd, its process group, in uid mode its uid). `Settings` are the limits of one
submission; `remote.Notebook` runs the cells and calls through it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis_workbook.grading import sandbox, timings, wire
from redis_workbook.grading.box import Box


@dataclass
class Settings:
    """Time and resource limits of one submission's notebook process.

    `budget` is the learner's time for the whole submission: every cell and every call
    gets at most what is left of it, so no sum of per-cell or per-call limits can pass it.
    `sandbox_mode` is one of sandbox.MODES; None means the strongest this machine allows.
    """

    cell_timeout: float = 120.0
    notebook_timeout: float = 600.0
    call_timeout: float = 60.0
    budget: float = 1800.0
    startup_timeout: float = 60.0
    max_restarts: int = 3
    output_bytes: int = 4096
    sandbox_mode: str | None = None
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)


class InfrastructureError(Exception):
    """The worker could not be started at all: the grader's problem, not the learner's."""


class WorkerGone(Exception):
    """The worker timed out, died or broke the protocol during a request."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


# ---------------------------------------------------------------------------------------------- output
class CappedOutput:
    """The learner's stdout+stderr: the first and last `limit` bytes, and how much was dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.total += len(chunk)
            room = self.limit - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            self.tail += chunk
            del self.tail[:-self.limit]

    def text(self) -> str:
        with self.lock:
            dropped = self.total - len(self.head) - len(self.tail)
            middle = f"\n[... {dropped} bytes of output left out ...]\n" if dropped > 0 else ""
            return (bytes(self.head) + middle.encode() + bytes(self.tail)).decode("utf-8", errors="replace")

    def pump(self, fd: int, stop: threading.Event) -> None:
        """Read a pipe until EOF (or until told to stop, when a forked learner process keeps it open)."""
        import select

        try:
            while not stop.is_set():
                if not select.select([fd], [], [], 0.2)[0]:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                self.add(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------- process
def describe_exit(code: int | None) -> str:
    """How a worker ended, for a learner: 'killed the process (signal SIGSEGV, a crash)'."""
    if code is None:
        return "stopped answering"
    if code >= 0:
        return f"ended the process (exit code {code})"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = {"SIGSEGV": ", a crash in native code", "SIGXCPU": ": it used up its CPU time limit",
           "SIGXFSZ": ": it wrote a file over the size limit", "SIGABRT": ", an abort"}.get(name, "")
    return f"killed the process ({name}{why})"


def package_root() -> str:
    """The folder holding the redis_workbook package (the worker imports it from there too)."""
    return str(Path(__file__).resolve().parents[2])


# The notebook's hash() seed: random per grader process (as Python's own would be), but known
# here so a check can tell whether a cache key came from hash() (see `learner_hash`). Drawn again in
# a forked child: grade's fork server imports this module once for the whole class, which would
# otherwise give every notebook of the class the same seed.
def _draw_hash_seed() -> None:
    global HASH_SEED
    HASH_SEED = str(secrets.randbelow(2**32 - 2) + 1)


HASH_SEED = ""
_draw_hash_seed()
os.register_at_fork(after_in_child=_draw_hash_seed)


def learner_hash(text: str) -> int:
    """hash(text) as the notebook's process computes it: Python under the worker's PYTHONHASHSEED."""
    done = subprocess.run([sys.executable, "-c", "import sys; print(hash(sys.argv[1]))", text],
                          capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": HASH_SEED})
    return int(done.stdout)


def worker_environment(redis_url: str) -> dict[str, str]:
    """A scrubbed environment: none of the grader's secrets, Redis as the restricted learner user."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "PYTHONPATH": package_root(),
        "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false", "TERM": "dumb", "NO_COLOR": "1", "USER": "learner", "LOGNAME": "learner",
        "REDIS_URL": redis_url, "REDIS_WORKBOOK_GRADING": "worker", "PYTHONHASHSEED": HASH_SEED,
    }


class WorkerProcess:
    """One running worker: its process group, request channel and output pump."""

    def __init__(self, init: dict, settings: Settings, output: CappedOutput, box: Box) -> None:
        self.settings = settings
        self.startup: list[tuple[str, float]] = []  # (phase, when it ended), for timings
        spawned = time.time()
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        output_r, output_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-s", "-B", "-u", "-m", "redis_workbook.grading.worker",
                 str(request_r), str(reply_w), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=output_w, stderr=output_w, pass_fds=(request_r, reply_w),
                env=worker_environment(init["notebook_redis_url"]), cwd="/", start_new_session=True)
        except OSError as exc:
            for fd in (request_w, reply_r, output_r):
                os.close(fd)
            raise InfrastructureError(f"the notebook process could not be started: {exc}") from None
        finally:
            for fd in (request_r, reply_w, output_w):
                os.close(fd)
        os.set_blocking(request_w, False)
        self.channel = wire.Channel(reply_r, request_w)
        self.stop_pump = threading.Event()
        threading.Thread(target=output.pump, args=(output_r, self.stop_pump), daemon=True).start()
        self.report: dict = {}
        self.namespace_init: int | None = None  # a pidfd of the namespace's process 1 (sandbox.enter)
        self.namespace_pid: int | None = None
        try:
            box.add(self.process.pid)  # before it reads its init message: nothing runs outside the box
        except OSError as exc:
            self.kill()
            raise InfrastructureError(f"the notebook process could not join its resource box: {exc}") from None
        try:
            self.channel.send(init, timeout=settings.startup_timeout, alive=self.alive)
            ready = self.channel.receive(timeout=settings.startup_timeout, alive=self.alive)
            if isinstance(ready.get("namespace_init"), int):
                self.namespace_pid = ready["namespace_init"]
                self.namespace_init = _pidfd(ready["namespace_init"])
                ready = self.channel.receive(timeout=settings.startup_timeout, alive=self.alive)
        except wire.WireError as exc:
            self.kill()
            raise InfrastructureError(f"the notebook process did not start ({exc}; {describe_exit(self.code())})"
                                      ) from None
        if "ready" not in ready:
            self.kill()
            raise InfrastructureError(f"the notebook process did not start: {str(ready.get('fatal'))[:2000]}")
        self.report = ready["ready"]
        marks = ready.get("startup") if isinstance(ready.get("startup"), dict) else {}
        self.startup = [(what, float(marks[what])) for what in WORKER_PHASES if isinstance(marks.get(what), float)]
        if not self.startup or self.startup[0][1] < spawned:
            self.startup = []  # a worker whose clock makes no sense: its start-up counts as a whole
        self.startup.append(("worker ready", time.time()))

    def cpu(self) -> float | None:
        """CPU seconds of the worker so far: its host process and, in a namespace, its process 1 and children."""
        found = [timings.process_cpu(pid) for pid in (self.process.pid, self.namespace_pid) if pid is not None]
        return round(sum(value for value in found if value is not None), 3) if any(v is not None for v in found) \
            else None

    def alive(self) -> bool:
        return self.process.poll() is None

    def code(self) -> int | None:
        try:
            return self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def request(self, message: dict, timeout: float) -> dict:
        """Send one request and wait for its reply; WorkerGone when it hangs, dies or talks nonsense."""
        try:
            self.channel.send(message, timeout=timeout, alive=self.alive)
            return self.channel.receive(timeout=timeout, alive=self.alive)
        except wire.ChannelTimeout:
            self.kill()
            raise WorkerGone(f"timed out after {round(timeout, 1):g} s") from None
        except wire.ChannelClosed:
            code = self.code()  # how it ended, before kill() would make every ending a SIGKILL
            self.kill()
            raise WorkerGone(describe_exit(code)) from None
        except wire.WireError as exc:
            self.kill()
            raise WorkerGone(f"broke the connection to the grader ({exc})") from None

    def kill(self) -> None:
        """SIGKILL the namespace's process 1 (the kernel then ends all of it) and the whole process group."""
        if self.namespace_init is not None:
            try:
                signal.pidfd_send_signal(self.namespace_init, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            os.close(self.namespace_init)
            self.namespace_init = None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.stop_pump.set()
        for fd in (self.channel.read_fd, self.channel.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.report.get("mode") == "uid" and self.report.get("uid"):
            sandbox.kill_user(self.report["uid"])  # its processes that left the process group too
            sandbox.remove_files_of(self.report["uid"])  # no private /tmp in uid mode
        if cleanup := self.report.get("cleanup"):
            import shutil

            shutil.rmtree(cleanup, ignore_errors=True)
        self.report = {**self.report, "cleanup": "", "uid": None}


# The worker's start-up as it reports it (worker.main): each phase's end on the time.time() clock.
WORKER_PHASES = ("worker process and imports", "sandbox", "IPython shell")


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # already gone
