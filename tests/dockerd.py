"""A private Docker engine: dockerd started on a socket, data root and exec root of its own.

For CI and offline grading machines where no Docker engine runs at boot but
Debian's `docker.io` is installed (DESIGN.md, "Docker on these machines"). The
engine is this process's alone: it listens only on a unix socket in a temp
folder (no TCP), creates no bridge network and touches no iptables
(`--bridge=none --iptables=false --ip-forward=false --ip-masq=false`; containers
use host networking), and ignores the machine's /etc/docker/daemon.json.

stop() leaves nothing behind: it removes every container, stops dockerd by its
PID, then ends by PID any process still running from this engine's folders
(its containerd, container shims and their children), unmounts what is left
and deletes the folder. It runs at interpreter exit too, and dockerd gets
SIGTERM if the thread that started it dies (Linux parent-death signal).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from redis_workbook.server import die_with_parent

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05
NETWORK_FLAGS = ("--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false")
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerdUnavailable(RuntimeError):
    """dockerd is not installed here, or cannot be started by this user; the message says which."""


def find_dockerd() -> str | None:
    """dockerd on PATH or in the sbin folders a non-root PATH often lacks."""
    return shutil.which("dockerd", path=f"{os.environ.get('PATH', '')}:{_SEARCH_PATH}")


class PrivateDockerd:
    """One dockerd of this process's own. Use as a context manager or call start()/stop()."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    @property
    def host(self) -> str:
        """The DOCKER_HOST value for this engine."""
        if self.root is None:
            raise DockerdUnavailable("The private dockerd is not started.")
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self, dockerd: str) -> list[str]:
        assert self.root is not None
        (self.root / "daemon.json").write_text(json.dumps({}))
        return [
            dockerd, "--host", self.host,
            "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"), "--config-file", str(self.root / "daemon.json"),
            *NETWORK_FLAGS, "--log-level", "warn",
        ]

    def start(self) -> PrivateDockerd:
        if self.process is not None:
            return self
        dockerd = find_dockerd()
        if dockerd is None:
            raise DockerdUnavailable(
                "dockerd is not installed. Install Debian's docker.io (`./workbook test` does it when run "
                "as root), or start a Docker engine yourself and set DOCKER_HOST."
            )
        if os.geteuid() != 0:
            raise DockerdUnavailable(
                f"dockerd needs root and this process runs as uid {os.geteuid()}. Run the tests as root, or "
                "start a Docker engine yourself and set DOCKER_HOST."
            )
        # /tmp, not $TMPDIR: a unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rwb-dockerd-", dir="/tmp" if os.path.isdir("/tmp") else None))
        started = time.perf_counter()
        with open(self.root / "dockerd.log", "wb") as log:
            self.process = subprocess.Popen(
                self.command(dockerd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent, start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, started: float) -> None:
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise DockerdUnavailable(f"dockerd exited at start (code {self.process.returncode}):\n{self.log()}")
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException, OSError):
                with contextlib.closing(self.client(timeout=2)) as client:
                    client.ping()
                    self.start_seconds = time.perf_counter() - started
                    return
            if time.perf_counter() - started > START_TIMEOUT_S:
                raise DockerdUnavailable(f"dockerd did not answer within {START_TIMEOUT_S:.0f} s:\n{self.log()}")
            time.sleep(POLL_INTERVAL_S)

    def client(self, timeout: float = 60.0) -> docker.DockerClient:
        """A docker-py client for this engine (API version negotiated)."""
        return docker.DockerClient(base_url=self.host, version="auto", timeout=timeout)

    def log(self, lines: int = 30) -> str:
        path = self.root / "dockerd.log" if self.root is not None else None
        if path is None or not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should use this engine through testcontainers."""
        return {"DOCKER_HOST": self.host, "TESTCONTAINERS_RYUK_DISABLED": "true",
                "TESTCONTAINERS_CONNECTION_MODE": "docker_host"}

    def stop(self) -> None:
        """Remove every container, stop dockerd, end what it left running, delete its folder."""
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        try:
            if process is not None and process.poll() is None:
                self._remove_containers()
        finally:
            if process is not None:
                _stop_child(process)
                for pid in self.leftovers():
                    _end(pid)
            if self.root is not None:
                _unmount_under(self.root)
                shutil.rmtree(self.root, ignore_errors=True)

    def _remove_containers(self) -> None:
        # Best effort: whatever this misses, the PID sweep in stop() ends.
        with contextlib.suppress(Exception), contextlib.closing(self.client(timeout=STOP_TIMEOUT_S)) as client:
            for container in client.containers.list(all=True):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)

    def leftovers(self) -> list[int]:
        """PIDs still running from this engine: processes naming its folder, and their descendants.

        Descendants come first so a container's processes end before the shim that watches them.
        """
        if self.root is None:
            return []
        table = _process_table()
        marker = str(self.root)
        found = [pid for pid, (_, cmdline) in table.items() if marker in cmdline]
        ordered: list[int] = []
        for pid in found:
            ordered = [*_descendants(pid, table), pid, *ordered]
        return [pid for pid in dict.fromkeys(ordered) if pid != os.getpid()]

    def __enter__(self) -> PrivateDockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process we can see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            table[int(entry.name)] = (ppid, cmdline)
    return table


def _descendants(pid: int, table: dict[int, tuple[int, str]]) -> list[int]:
    children = [child for child, (ppid, _) in table.items() if ppid == pid]
    return [grandchild for child in children for grandchild in (*_descendants(child, table), child)]


def _end(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM one process we started (directly or through our dockerd), then SIGKILL after a grace."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            if _is_zombie(pid):
                return
            time.sleep(POLL_INTERVAL_S)
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].startswith("Z")


def _unmount_under(root: Path) -> None:
    """Detach mounts dockerd left under its folder (overlay layers, shm), deepest first."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root) + "/"
    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        libc.umount2(target.encode(), mnt_detach)
