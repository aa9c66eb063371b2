"""The sandbox from the inside: what a notebook's code can see, reach, keep and spend, as root or not.

Each test runs a real notebook in the real worker (remote.Notebook, as grading does)
and reads what its code found; the grader's side checks the host afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from processes import descendants, wait_gone
from submissions import write_notebook

from redis_workbook.grading import backends, remote, sandbox, submission, workerprocess
from redis_workbook.grading.gateway import MAX_CONNECTIONS


@pytest.fixture(scope="module")
def under_test() -> Iterator[backends.RedisUnderTest]:
    server = backends.start("embedded", maxmemory_mb=64)
    yield server
    server.stop()


def run(tmp_path: Path, under_test: backends.RedisUnderTest, *cells: str, **settings: float) -> remote.Notebook:
    notebook = remote.Notebook(submission.load(write_notebook(tmp_path / "probe.ipynb", *cells)),
                               under_test.learner_url, workerprocess.Settings(**settings),
                               grading_address=under_test.address)
    notebook.prepare_for_test()
    return notebook


def test_the_notebook_sees_an_allow_list_and_writes_only_its_own_temp(tmp_path: Path,
                                                                       under_test: backends.RedisUnderTest) -> None:
    secret = tmp_path / f"secret-{uuid.uuid4().hex}"
    secret.write_text("42")
    probe = textwrap.dedent(f'''
        import os
        seen = {{}}
        for path in [{str(secret)!r}, "/home", "/run", "/var/lib", "/root/.ssh", "/etc/shadow", os.getcwd() + "/.."]:
            try:
                seen[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
            except OSError as exc:
                seen[path] = type(exc).__name__
        wrote = []
        for path in ["/usr/pwned", "/pwned", "/etc/pwned", os.environ["HOME"] + "/ok", "/tmp/ok", "/dev/shm/ok"]:
            try:
                open(path, "w").write("x")
                wrote.append(path)
            except OSError:
                pass
    ''')
    notebook = run(tmp_path, under_test, probe)
    try:
        nb = remote.RemoteNamespace(notebook)
        seen, home = nb.seen, nb.wrote[0]
        assert seen[str(secret)] == "FileNotFoundError"
        assert seen["/run"] == seen["/var/lib"] == seen["/root/.ssh"] == "FileNotFoundError"
        # /home holds at most the path to the venv or package when they live there (a user's clone), nothing else
        homes = sorted({Path(p).parts[2] for p in sandbox.needed_paths() if Path(p).parts[1:2] == ("home",)})
        assert seen["/home"] == (homes or "FileNotFoundError")
        assert seen["/etc/shadow"] == "PermissionError" or os.geteuid() != 0
        assert nb.wrote == [home, "/tmp/ok", "/dev/shm/ok"] and home.startswith("/tmp/home")
        assert not Path("/tmp/ok").exists() or Path("/tmp/ok").stat().st_mtime < time.time() - 60
    finally:
        notebook.close()


def test_the_network_reaches_only_the_exposed_servers(tmp_path: Path, under_test: backends.RedisUnderTest) -> None:
    classmate = socket.create_server(("127.0.0.1", 0))  # a port of the host, e.g. a classmate's Redis
    port = classmate.getsockname()[1]
    probe = textwrap.dedent(f'''
        import os
        import socket

        import redis

        def reach(host, port):
            try:
                socket.create_connection((host, port), timeout=1).close()
                return "connected"
            except OSError as exc:
                return type(exc).__name__

        classmate = reach("127.0.0.1", {port})
        outside = reach("192.0.2.1", 80)
        own = redis.Redis.from_url(os.environ["REDIS_URL"]).ping()

        def grader_redis(r):
            return r.acl_whoami(), r.ping()
    ''')
    notebook = run(tmp_path, under_test, probe)
    try:
        nb = remote.RemoteNamespace(notebook)
        assert nb.classmate == "ConnectionRefusedError"  # its own loopback: nothing listens there
        assert nb.outside in ("OSError", "TimeoutError")  # no route out
        assert nb.own is True
        user, pong = nb.grader_redis(under_test.admin())
        assert str(user).startswith("workbook-learner-") and pong is True
    finally:
        notebook.close()
        classmate.close()


def test_a_connection_flood_is_capped_and_the_grader_keeps_its_own(tmp_path: Path,
                                                                   under_test: backends.RedisUnderTest) -> None:
    probe = textwrap.dedent('''
        import redis

        held = []

        def flood(r):
            pool = r.connection_pool
            try:
                for _ in range(500):
                    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class,
                                                                              **pool.connection_kwargs))
                    client.ping()
                    held.append(client)
            except redis.RedisError as exc:
                return len(held), type(exc).__name__
            return len(held), None
    ''')
    notebook = run(tmp_path, under_test, probe)
    try:
        opened, error = remote.RemoteNamespace(notebook).flood(under_test.admin())
        assert opened == MAX_CONNECTIONS and error == "ConnectionError"
        admin = under_test.admin()
        assert admin.ping() and int(admin.info("clients")["connected_clients"]) < MAX_CONNECTIONS + 5
    finally:
        notebook.close()


def test_capabilities_are_gone_for_good(tmp_path: Path, under_test: backends.RedisUnderTest) -> None:
    probe = textwrap.dedent('''
        import subprocess

        import multiprocessing
        import threading

        caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith("Cap")]
        remount = subprocess.run(["mount", "-o", "remount,rw", "/usr"], capture_output=True).returncode
        nested = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -o remount,rw /usr && touch /usr/pwned"],
                                capture_output=True, text=True).stderr
        worker = threading.Thread(target=print, args=("a thread",))
        worker.start()
        worker.join()
        with multiprocessing.Pool(2) as pool:  # ordinary processes and threads still work
            squares = pool.starmap(pow, [(2, 2), (3, 2)])
    ''')
    notebook = run(tmp_path, under_test, probe)
    try:
        nb = remote.RemoteNamespace(notebook)
        assert set(nb.caps) == {"0000000000000000"}
        assert nb.remount != 0
        assert "unshare failed: Operation not permitted" in nb.nested  # the system-call filter says no
        assert not Path("/usr/pwned").exists()
        assert nb.squares == [4, 9] and "a thread" in notebook.output.text()
    finally:
        notebook.close()


def test_shared_memory_and_processes_die_with_the_notebook(tmp_path: Path, under_test: backends.RedisUnderTest) -> None:
    key = 0x5F000000 | (os.getpid() & 0xFFFFFF)
    probe = textwrap.dedent(f'''
        import ctypes
        import os
        import time

        libc = ctypes.CDLL(None)
        segment = libc.shmget({key}, 4096, 0o1666)
        if os.fork() == 0:  # a process that leaves the group and clears its parent-death signal
            os.setsid()
            libc.prctl(1, 0, 0, 0, 0)
            time.sleep(3600)
    ''')
    before = descendants(os.getpid())
    notebook = run(tmp_path, under_test, probe)
    try:
        assert remote.RemoteNamespace(notebook).segment >= 0
        started = descendants(os.getpid()) - before
    finally:
        notebook.close()
    segments = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    assert [line for line in segments if int(line.split()[0]) == key] == []
    assert len(started) >= 3  # the worker, its namespace's process 1 and the sleeper at least
    assert wait_gone(started, timeout=5) == []


def test_the_time_budget_covers_cells_and_calls_together(tmp_path: Path, under_test: backends.RedisUnderTest) -> None:
    sleep = "import time\ntime.sleep(1.2)\n"
    notebook = run(tmp_path, under_test, sleep, sleep, sleep, "def ok():\n    return 1\n", budget=3, cell_timeout=2)
    try:
        problems = notebook.problems()
        assert any("did not run: your notebook used up the 3 s its whole submission may take" in p for p in problems)
        with pytest.raises(pytest.fail.Exception, match="used up the 3 s"):
            remote.RemoteNamespace(notebook).ok()
    finally:
        notebook.close()


def test_a_graded_name_imported_from_the_package_is_refused(tmp_path: Path,
                                                            under_test: backends.RedisUnderTest) -> None:
    cell = "from redis_workbook.connection import redact as knn_search\n\n\ndef mine(x):\n    return x\n"
    notebook = run(tmp_path, under_test, cell)
    try:
        nb = remote.RemoteNamespace(notebook)
        with pytest.raises(pytest.fail.Exception, match="comes from redis_workbook.connection, not from your notebook"):
            nb.knn_search("redis://:pw@host:1")
        assert nb.mine(3) == 3
    finally:
        notebook.close()


def test_a_killed_grader_leaves_no_folder_behind(tmp_path: Path) -> None:
    script = textwrap.dedent('''
        import os, signal
        from redis_workbook.grading import sandbox
        from redis_workbook.grading.enclosure import Enclosure

        enclosure = Enclosure(sandbox.Limits())
        (enclosure.folder / "file").write_text("x")
        print(enclosure.folder, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    ''')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    folder = Path(done.stdout.strip())
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists()


def test_the_gateway_carries_large_values_both_ways(tmp_path: Path, under_test: backends.RedisUnderTest) -> None:
    probe = "def echo(r, value):\n    r.set('big', value)\n    return r.get('big')\n"
    notebook = run(tmp_path, under_test, probe)
    try:
        value = os.urandom(3_000_000)
        assert remote.RemoteNamespace(notebook).echo(under_test.admin(), value) == value
        assert redis.Redis.from_url(under_test.admin_url).strlen("big") == len(value)
    finally:
        notebook.close()


def test_where_no_sandbox_is_possible_grade_refuses_to_run_learner_code(tmp_path: Path,
                                                                        under_test: backends.RedisUnderTest) -> None:
    """Inside a sandbox no namespace can be made: a real place where `grade` must refuse (or be told it is unsafe)."""
    probe = textwrap.dedent('''
        import argparse

        from redis_workbook.grading import grade, sandbox

        found = sandbox.mode()
        try:
            grade._sandbox_mode(argparse.Namespace(unsafe_no_sandbox=False))
            refusal = None
        except grade.UsageProblem as exc:
            refusal = str(exc)
        unsafe = grade._sandbox_mode(argparse.Namespace(unsafe_no_sandbox=True))
    ''')
    notebook = run(tmp_path, under_test, probe)
    try:
        nb = remote.RemoteNamespace(notebook)
        mode, why = nb.found
        assert mode == "none" and "user mode:" in why and "user namespaces may be off" in why
        assert "no sandbox is possible here" in nb.refusal and "--unsafe-no-sandbox" in nb.refusal
        assert nb.unsafe == "none"
    finally:
        notebook.close()


def test_a_long_temp_folder_still_gives_reachable_sockets(tmp_path: Path, under_test: backends.RedisUnderTest,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Unix socket paths have 108 bytes: a deep TMPDIR (a home folder's cache, say) must not break grading."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr(tempfile, "tempdir", None)
    notebook = run(tmp_path, under_test, "def ping(r):\n    return r.ping()\n")
    try:
        assert remote.RemoteNamespace(notebook).ping(under_test.admin()) is True
    finally:
        notebook.close()
