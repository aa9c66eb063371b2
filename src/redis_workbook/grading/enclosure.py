"""What surrounds one submission: a private folder, the gateway's sockets in it, the resource box.

The folder (0700) holds the Unix sockets the notebook may reach (the only folder of
the grader's it sees) and the Redis servers' files. A reaper process, in a session of
its own, waits for the grader to go away and then removes the folder and the box:
a grader that is killed leaves nothing behind either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from redis_workbook.grading import sandbox
from redis_workbook.grading.box import Box
from redis_workbook.grading.gateway import Gateway
from redis_workbook.server import reap_when_gone, stop_reaper

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_BASE = 56  # + /rw-submission-XXXXXXXX/sockets/notebook.sock stays under the 108 bytes of a socket path
class SandboxUnavailable(Exception):
    """The sandbox mode asked for is not possible on this machine."""


class Enclosure:
    """What surrounds one submission: a private folder, the gateway's sockets in it, the resource box."""

    def __init__(self, limits: sandbox.Limits, mode: str | None = None) -> None:
        """`mode`: one of sandbox.MODES, as `grade` found it once for the class; None: find the strongest."""
        if mode not in (None, *sandbox.MODES):
            raise SandboxUnavailable(f"sandbox mode must be one of {', '.join(sandbox.MODES)}, got {mode!r}")
        self.mode = mode or sandbox.mode()[0]
        # 0700. Unix socket paths have 108 bytes: a long TMPDIR would make every server unreachable.
        base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= MAX_BASE else "/tmp"
        if self.mode == "uid":  # no mount namespace: the learner's uid reaches its folder through the real path
            base = "/tmp"  # (grade's TMPDIR is private to the grader)
        self.folder = Path(tempfile.mkdtemp(prefix="rw-submission-", dir=base))
        if self.mode == "uid":  # no mount namespace: the learner's uid must pass through to its folder and sockets
            os.chmod(self.folder, 0o711)
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
