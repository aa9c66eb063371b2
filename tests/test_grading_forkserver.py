"""The fork server grade forks each submission's pytest from: every child a fresh, separate process.

Each child runs a tiny pytest module that records what a grading process could carry over from
another: random state, its temporary folder, its environment, its session and parent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from redis_workbook.grading.forkserver import ForkServer

PROBE = '''
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
def server(tmp_path: Path) -> ForkServer:
    (tmp_path / "test_probe.py").write_text(PROBE)
    forks = ForkServer(tmp_path, dict(os.environ), tmp_path / "fork-server.log")
    yield forks
    forks.close()


def spawn(server: ForkServer, tmp_path: Path, name: str, **extra: str) -> tuple[int, dict]:
    folder = tmp_path / name
    folder.mkdir()
    env = {**os.environ, "TMPDIR": str(folder), "PROBE_OUT": str(folder / "out.json"), "PROBE_MARKER": name,
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **extra}
    log = folder / "pytest.log"
    log.touch()
    child = server.spawn([str(tmp_path / "test_probe.py"), "-q", "-p", "no:cacheprovider"], env, tmp_path, log,
                         f"probe {name}")
    code = child.wait(timeout=60)
    out = folder / "out.json"
    return code, json.loads(out.read_text()) if out.exists() else {"log": log.read_text()}


def test_children_are_fresh_processes_of_their_own(server: ForkServer, tmp_path: Path) -> None:
    code_a, a = spawn(server, tmp_path, "a", PROBE_ONLY_FIRST="secret")
    code_b, b = spawn(server, tmp_path, "b")
    assert (code_a, code_b) == (0, 0), (a, b)
    assert a["random"] != b["random"] and a["numpy"] != b["numpy"]  # reseeded in each child
    assert (a["tmp"], b["tmp"]) == (str(tmp_path / "a"), str(tmp_path / "b"))  # TMPDIR read anew
    assert (a["marker"], b["marker"]) == ("a", "b") and a["leaked"] == "secret" and b["leaked"] is None
    for child in (a, b):
        assert child["sid"] == child["pid"] and child["ppid"] == server.pid  # own session: grade stops its group
    assert (a["title"], b["title"]) == ("probe a", "probe b")


def test_exit_codes_come_back_and_the_server_leaves_nothing(server: ForkServer, tmp_path: Path) -> None:
    code, _ = spawn(server, tmp_path, "fail")
    assert code == 1  # pytest's code for a failed test
    pid = server.pid
    server.close()
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def test_a_server_killed_under_a_running_child_ends_it(server: ForkServer, tmp_path: Path) -> None:
    """grade still sees a child end when the server that forked it is gone (a grading child would also stop
    by its parent-death signal, which the grading plugin sets; this plain one is stopped by its group)."""
    (tmp_path / "test_sleep.py").write_text("import time\n\ndef test_sleep():\n    time.sleep(60)\n")
    log = tmp_path / "sleep.log"
    log.touch()
    child = server.spawn([str(tmp_path / "test_sleep.py"), "-q", "-p", "no:cacheprovider"],
                         {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, tmp_path, log, "sleeper")
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not server.gone.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.gone.is_set()
    os.killpg(child.pid, signal.SIGTERM)
    assert child.wait(timeout=10) == -1  # seen to end by its pidfd; nobody is left to say its exit code
