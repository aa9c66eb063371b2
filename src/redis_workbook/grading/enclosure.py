"""What surrounds one submission: a private folder, the gateway's sockets in it, the resource box.

The folder (0700) holds the Unix sockets the notebook may reach (the only folder of
the grader's it sees) and the Redis servers' files. A reaper process, in a session of
its own, waits for the grader to go away and then removes the folder and the box:
a grader that is killed leaves nothing behind either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from redis_workbook.grading import sandbox
from redis_workbook.grading.box import Box
from redis_workbook.grading.gateway import Gateway

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Reads until the grader's end of the pipe closes (it exited or was killed), then cleans up.
# The box's cgroups can go once their processes are gone: kill what is left, a few tries.
REAPER = ('cat >/dev/null; rm -rf -- "$0"; for i in 1 2 3 4 5 6 7 8 9 10; do '
          'for g in "$@"; do [ -f "$g/cgroup.procs" ] && kill -9 $(cat "$g/cgroup.procs") 2>/dev/null; done; '
          'rmdir -- "$@" 2>/dev/null; [ -e "$1" ] || exit 0; sleep 0.5; done')


class SandboxUnavailable(Exception):
    """The sandbox mode asked for is not possible on this machine."""


class Enclosure:
    """What surrounds one submission: a private folder, the gateway's sockets in it, the resource box."""

    def __init__(self, limits: sandbox.Limits, mode: str | None = None) -> None:
        """`mode`: one of sandbox.MODES, as `grade` found it once for the class; None: find the strongest."""
        if mode not in (None, *sandbox.MODES):
            raise SandboxUnavailable(f"sandbox mode must be one of {', '.join(sandbox.MODES)}, got {mode!r}")
        self.mode = mode or sandbox.mode()[0]
        self.folder = Path(tempfile.mkdtemp(prefix="rw-submission-"))  # 0700; short: socket paths have 108 bytes
        self.sockets = self.folder / "sockets"  # the only folder of the grader's that the notebook sees
        self.sockets.mkdir(mode=0o755)
        os.chmod(self.sockets, 0o755)
        self.gateway = Gateway(self.sockets) if self.mode != "none" else None
        self.box = Box(limits.box_mb, limits.processes, limits.cpus)
        self.reaper = reap_when_gone(self.folder, self.box.groups)
        self.warnings = list(self.box.warnings)
        self.isolation = [self.box.describe(limits.box_mb, limits.processes, limits.cpus)] if self.box.active else []

    def reach(self, url: str) -> str:
        """A Redis URL as the notebook's process must use it: through the gateway when it has no network."""
        parts = urllib.parse.urlsplit(url)
        if self.gateway is None or parts.scheme == "unix":
            return url
        host = parts.hostname or "127.0.0.1"
        path = self.gateway.expose(("127.0.0.1" if host in LOOPBACK else host, parts.port or 6379))
        query = f"db={(parts.path or '/0').strip('/') or 0}"
        return urllib.parse.urlunsplit(("unix", parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else "",
                                        path, query, ""))

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
        self.box.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        stop_reaper(self.reaper)


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
