"""One resource box per submission: memory, process count and CPU of all its processes together.

The notebook's worker (and everything it starts) and the notebook's own Redis join
the box; the limits hold for their sum, which per-process rlimits cannot do
(three children of 1 GiB each stay under a 2 GiB RLIMIT_AS).

- cgroup v1 (the `memory`, `pids` and `cpu` hierarchies, writable by root):
  redis-workbook/<grader pid>-<n> in each.
- cgroup v2: a child of the grader's own cgroup, where that cgroup is delegated
  to the grader's user with the controllers enabled (systemd's user slices, some
  containers).
- neither writable (an ordinary user on cgroup v1, most CI containers): no box;
  `warnings` says that memory is then bounded per process and processes per user.

A box is emptied (SIGKILL) and removed when the submission ends; boxes left by a
grader that was killed are removed by the next one (their owner pid is gone).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PREFIX = "redis-workbook"
_numbers = itertools.count()


class Box:
    """A cgroup (v1 or v2) with limits; `add(pid)` puts a process (and its future children) in it."""

    def __init__(self, memory_mb: int, processes: int, cpus: float) -> None:
        self.groups: list[Path] = []  # every group to remove, innermost first
        self.learner: list[Path] = []  # where learner processes go (all the limits)
        self.servers: list[Path] = []  # where its Redis servers go (memory and CPU, not the process count)
        self.kind = ""
        self.warnings: list[str] = []
        name = f"{os.getpid()}-{next(_numbers)}"
        try:
            if (CGROUP / "cgroup.controllers").exists():
                self._v2(name, memory_mb, processes, cpus)
            else:
                self._v1(name, memory_mb, processes, cpus)
        except OSError as exc:
            self.close()
            self.warnings.append(
                f"no cgroup for the submission ({exc.strerror or exc}): memory is limited per process "
                f"(address space) and processes per user, not for the submission as a whole; grade as root or "
                f"with a delegated cgroup v2 for one box around each submission")

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def describe(self, memory_mb: int, processes: int, cpus: float) -> str:
        return (f"one {self.kind} box for the whole submission: {memory_mb} MiB memory, {processes} processes, "
                f"{cpus:g} CPU")

    def _v1(self, name: str, memory_mb: int, processes: int, cpus: float) -> None:
        _remove_stale(CGROUP / "memory" / PREFIX)
        settings = {
            "memory": {"memory.limit_in_bytes": memory_mb << 20, "memory.memsw.limit_in_bytes": memory_mb << 20},
            "pids": {"pids.max": processes},
            "cpu": {"cpu.cfs_period_us": 100_000, "cpu.cfs_quota_us": int(100_000 * cpus)},
        }
        for controller, values in settings.items():
            group = CGROUP / controller / PREFIX / name
            group.mkdir(parents=True, exist_ok=True)
            self.groups.append(group)
            for file, value in values.items():
                if (group / file).exists():  # memsw only with swap accounting
                    (group / file).write_text(str(value))
            self.learner.append(group)
            if controller != "pids":
                self.servers.append(group)
        self.kind = "cgroup v1"

    def _v2(self, name: str, memory_mb: int, processes: int, cpus: float) -> None:
        own = Path(Path("/proc/self/cgroup").read_text().strip().split("::", 1)[-1].lstrip("/"))
        parent = CGROUP / own
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        missing = {"memory", "pids"} - set(enabled)
        if missing:
            raise OSError(0, f"cgroup v2 {parent} does not delegate {', '.join(sorted(missing))}")
        _remove_stale(parent, prefix=PREFIX + "-")
        group = parent / f"{PREFIX}-{name}"
        group.mkdir()
        self.groups.append(group)
        (group / "memory.max").write_text(str(memory_mb << 20))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        if "cpu" in enabled:
            (group / "cpu.max").write_text(f"{int(100_000 * cpus)} 100000")
        (group / "cgroup.subtree_control").write_text("+pids")
        learner, servers = group / "learner", group / "servers"  # v2 puts processes in leaves only
        for leaf in (learner, servers):
            leaf.mkdir()
            self.groups.insert(0, leaf)
        (learner / "pids.max").write_text(str(processes))
        self.learner, self.servers = [learner], [servers]
        self.kind = "cgroup v2"

    def add(self, pid: int, server: bool = False) -> None:
        """Put a process in the box: a learner process under every limit, a server under all but the count."""
        for group in self.servers if server else self.learner:
            (group / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        """How many processes of this box the kernel killed for memory so far."""
        for group in reversed(self.groups):  # the outermost group counts the whole box
            for file in ("memory.events", "memory.oom_control"):
                try:
                    lines = dict(line.split() for line in (group / file).read_text().splitlines() if " " in line)
                except OSError:
                    continue
                return int(lines.get("oom_kill", 0))
        return 0

    def close(self) -> None:
        """Kill whatever is left in the box and remove it."""
        for group in self.groups:
            _empty_and_remove(group)
        self.groups, self.learner, self.servers = [], [], []


def _pids(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _empty_and_remove(group: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        pids = _pids(group)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


def _remove_stale(parent: Path, prefix: str = "") -> None:
    """Boxes whose grader (the pid in their name) is gone: a grader that was killed left them."""
    if not parent.is_dir():
        return
    for group in parent.iterdir():
        if not group.is_dir() or not group.name.startswith(prefix):
            continue
        owner = group.name[len(prefix):].split("-")[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            for controller in ("memory", "pids", "cpu") if not prefix else ("",):
                _empty_and_remove(CGROUP / controller / PREFIX / group.name if controller else group)
