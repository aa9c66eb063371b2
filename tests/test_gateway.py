"""The gateway admits, once told the learner's uid, only that uid and the grader's (SO_PEERCRED): where learners
share a filesystem (the sandbox's uid mode), a classmate's code cannot use another submission's sockets."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_workbook.grading.gateway import Gateway


@pytest.fixture
def greeter() -> Iterator[tuple[str, int]]:
    """A TCP server on loopback that says hello to every connection."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"hello")

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()
    server.close()


def connect_as(uid: int, path: str) -> bytes:
    """What a process of `uid` reads from the gateway's socket (b"" when it is refused)."""
    code = (f"import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\n"
            "sys.stdout.write(s.recv(5).hex())")
    python = shutil.which("python3", path="/usr/bin:/bin")  # outside /root, which other uids cannot enter
    done = subprocess.run([python, "-S", "-c", code], user=uid, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return bytes.fromhex(done.stdout)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("python3", path="/usr/bin:/bin") is None,
                    reason="needs root (to connect as other uids) and the system's python3")
def test_after_admit_only_other_uids_are_refused(greeter: tuple[str, int]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="rw-gateway-"))  # not below pytest's folder, which other uids cannot enter
    folder.chmod(0o755)
    gateway = Gateway(folder)
    try:
        path = gateway.expose(greeter)
        learner, classmate = 2_000_000_001, 2_000_000_002
        assert connect_as(classmate, path) == b"hello"  # before: the socket's mode decides
        gateway.admit_only(learner)
        assert connect_as(classmate, path) == b""
        assert connect_as(learner, path) == b"hello"
        assert connect_as(0, path) == b"hello"  # the grader's own uid
    finally:
        gateway.close()
        shutil.rmtree(folder)
