"""grade's fork server (grading/forkserver.py), driven directly: every child a fresh process of its own (random
state, temporary folder, environment, session, hash() seed), and what happens to a request the server answers
only after grade stopped waiting, a failed fork, a server killed under its children (a red team's finds).

Each test starts a real server, forks real pytest runs of a small test module from it and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_workbook.grading import forkserver
from redis_workbook.grading.forkserver import ForkServer, ForkServerGone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux only")

# What a forked grading process writes: the hash() seed its notebook's worker would get, or that it ran at all.
PROBE = '''
import os
import resource
import time

from redis_workbook.grading import workerprocess


def test_probe():
    with open(os.environ["PROBE_OUT"], "w") as handle:
        handle.write(workerprocess.worker_environment("redis://unused")["PYTHONHASHSEED"])
    time.sleep(float(os.environ.get("PROBE_SLEEP", "0")))
'''


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    started = ForkServer(tmp_path, dict(os.environ), tmp_path / "fork-server.log")
    yield started
    os.kill(started.pid, signal.SIGCONT)  # a test may leave it stopped
    started.close()


def spawn(server: ForkServer, folder: Path, name: str, sleep: float = 0,
          cancelled: threading.Event | None = None) -> forkserver.Forked:
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PROBE_OUT": str(folder / f"{name}.out"),
           "PROBE_SLEEP": str(sleep)}
    (folder / f"{name}.log").touch()  # grade makes it first, as here: the child appends to it
    return server.spawn([str(folder / "test_probe.py"), "-q", "-p", "no:cacheprovider"], env, folder,
                        folder / f"{name}.log", f"probe {name}", cancelled=cancelled)


def test_each_forked_grading_process_gives_its_notebook_a_hash_seed_of_its_own(server: ForkServer,
                                                                               tmp_path: Path) -> None:
    """The server imports workerprocess once for the class; its seed must not be every classmate's seed."""
    children = [spawn(server, tmp_path, f"child{i}") for i in range(3)]
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0], (tmp_path / "child0.log").read_text()
    seeds = [(tmp_path / f"child{i}.out").read_text() for i in range(3)]
    assert len(set(seeds)) == 3, seeds


def stopped_server_request(server: ForkServer, tmp_path: Path,
                           cancelled: threading.Event | None) -> tuple[forkserver.Forked, list[BaseException]]:
    """A request sent to a stopped server, from a thread of its own: the Forked grade waits on, what spawn raised."""
    os.kill(server.pid, signal.SIGSTOP)
    raised: list[BaseException] = []

    def request() -> None:
        try:
            spawn(server, tmp_path, "late", sleep=600, cancelled=cancelled)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            raised.append(exc)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    while not server.children:
        thread.join(0.01)
    child = next(iter(server.children.values()))
    if cancelled is not None:
        cancelled.set()
    thread.join(30)  # the server would answer never: only the interrupt (or the start timeout) ends the wait
    assert not thread.is_alive(), "spawn kept waiting for a stopped fork server"
    return child, raised


def test_an_interrupt_does_not_wait_for_a_stopped_server_and_its_late_child_is_killed(server: ForkServer,
                                                                                      tmp_path: Path) -> None:
    child, raised = stopped_server_request(server, tmp_path, threading.Event())
    assert [type(exc) for exc in raised] == [KeyboardInterrupt]
    os.kill(server.pid, signal.SIGCONT)  # it forks the request it had read: nobody waits for that grading process
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "late.out").exists()


def test_a_request_answered_after_the_start_timeout_is_not_graded_twice(server: ForkServer, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """grade grades it as `python -m pytest` meanwhile; the server's late child must not run the same checks."""
    monkeypatch.setattr(forkserver, "START_TIMEOUT_S", 0.5)
    child, raised = stopped_server_request(server, tmp_path, None)
    assert [type(exc) for exc in raised] == [ForkServerGone] and "not answering" in str(raised[0])
    os.kill(server.pid, signal.SIGCONT)
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "late.out").exists()


def test_a_child_that_outlives_its_server_is_waited_for_until_it_ends(server: ForkServer, tmp_path: Path) -> None:
    """A server that dies (SIGKILL, the OOM killer) cannot report its children's ends; grade must not take one that
    is still finishing for ended (it would regrade the submission beside it, and an interrupt would not stop it)."""
    child = spawn(server, tmp_path, "orphan", sleep=600)
    while not (tmp_path / "orphan.out").exists():
        assert child.poll() is None, (tmp_path / "orphan.log").read_text()
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    assert server.gone.wait(30)
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=1)  # the probe has no parent-death signal (grading processes get SIGTERM): it runs on
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -1  # ended; its code died with the server


def test_a_fork_that_fails_fails_its_request_alone(server: ForkServer, tmp_path: Path) -> None:
    """A fork refused at a limit (processes, memory, files) used to end the server, and with it every classmate's
    grading process it had forked (their parent-death signal): they were thrown away and graded again."""
    running = spawn(server, tmp_path, "running", sleep=2)
    while not (tmp_path / "running.out").exists():
        assert running.poll() is None, (tmp_path / "running.log").read_text()
        time.sleep(0.05)
    limit = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    taken = len(os.listdir(f"/proc/{server.pid}/fd"))  # 0 to taken-1: its next fork's pipe is refused
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (taken, limit[1]))
    with pytest.raises(ForkServerGone, match="could not start a grading process"):
        spawn(server, tmp_path, "refused")
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, limit)
    assert running.wait(timeout=120) == 0, "the grading process forked before must finish, its code reported"
    assert spawn(server, tmp_path, "after").wait(timeout=120) == 0


def test_an_end_a_stopped_server_never_reports_is_settled_once(server: ForkServer, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped server (SIGSTOP) reports no exit code: the end is known from the pidfd, with code -1, and
    waiting again (an interrupt's stop after the job's own wait) must not wait for that report again."""
    monkeypatch.setattr(forkserver, "EXIT_REPORT_S", 0.2)
    child = spawn(server, tmp_path, "unreported", sleep=1)
    while not (tmp_path / "unreported.out").exists():
        assert child.poll() is None, (tmp_path / "unreported.log").read_text()
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGSTOP)
    assert child.wait(timeout=120) == -1
    assert child.wait(timeout=5) == -1
    assert child.poll() == -1


# ---------------------------------------------------------------------------------------------- fresh children
FRESH_PROBE = '''
import json, os, random, tempfile
from pathlib import Path

import numpy as np


def test_record():
    Path(os.environ["PROBE_OUT"]).write_text(json.dumps({
        "random": random.random(), "numpy": float(np.random.random()), "tmp": tempfile.gettempdir(),
        "marker": os.environ.get("PROBE_MARKER"), "leaked": os.environ.get("PROBE_ONLY_FIRST"),
        "pid": os.getpid(), "sid": os.getsid(0), "ppid": os.getppid(),
        "title": Path("/proc/self/cmdline").read_bytes().replace(b"\\0", b" ").decode().strip(),
    }))
    assert os.environ["PROBE_MARKER"] != "fail"
'''


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ForkServer]:
    (tmp_path / "test_fresh.py").write_text(FRESH_PROBE)
    forks = ForkServer(tmp_path, dict(os.environ), tmp_path / "fork-fresh.log")
    yield forks
    forks.close()


def record(server: ForkServer, tmp_path: Path, name: str, **extra: str) -> tuple[int, dict]:
    folder = tmp_path / name
    folder.mkdir()
    env = {**os.environ, "TMPDIR": str(folder), "PROBE_OUT": str(folder / "out.json"), "PROBE_MARKER": name,
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **extra}
    log = folder / "pytest.log"
    log.touch()
    child = server.spawn([str(tmp_path / "test_fresh.py"), "-q", "-p", "no:cacheprovider"], env, tmp_path, log,
                          f"probe {name}")
    code = child.wait(timeout=60)
    out = folder / "out.json"
    return code, json.loads(out.read_text()) if out.exists() else {"log": log.read_text()}


def test_children_are_fresh_processes_of_their_own(fresh: ForkServer, tmp_path: Path) -> None:
    code_a, a = record(fresh, tmp_path, "a", PROBE_ONLY_FIRST="secret")
    code_b, b = record(fresh, tmp_path, "b")
    assert (code_a, code_b) == (0, 0), (a, b)
    assert a["random"] != b["random"] and a["numpy"] != b["numpy"]  # reseeded in each child
    assert (a["tmp"], b["tmp"]) == (str(tmp_path / "a"), str(tmp_path / "b"))  # TMPDIR read anew
    assert (a["marker"], b["marker"]) == ("a", "b") and a["leaked"] == "secret" and b["leaked"] is None
    for child in (a, b):
        assert child["sid"] == child["pid"] and child["ppid"] == fresh.pid  # own session: grade stops its group
    assert (a["title"], b["title"]) == ("probe a", "probe b")


def test_exit_codes_come_back_and_the_server_leaves_nothing(fresh: ForkServer, tmp_path: Path) -> None:
    code, _ = record(fresh, tmp_path, "fail")
    assert code == 1  # pytest's code for a failed test
    pid = fresh.pid
    fresh.close()
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def test_a_server_killed_under_a_running_child_ends_it(fresh: ForkServer, tmp_path: Path) -> None:
    """grade still sees a child end when the server that forked it is gone (a grading child would also stop
    by its parent-death signal, which the grading plugin sets; this plain one is stopped by its group)."""
    (tmp_path / "test_sleep.py").write_text("import time\n\ndef test_sleep():\n    time.sleep(60)\n")
    log = tmp_path / "sleep.log"
    log.touch()
    child = fresh.spawn([str(tmp_path / "test_sleep.py"), "-q", "-p", "no:cacheprovider"],
                         {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, tmp_path, log, "sleeper")
    os.kill(fresh.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not fresh.gone.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fresh.gone.is_set()
    os.killpg(child.pid, signal.SIGTERM)
    assert child.wait(timeout=10) == -1  # seen to end by its pidfd; nobody is left to say its exit code
