"""Process bookkeeping for tests that must prove they left nothing running."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below pid, read from /proc (no psutil in the dependencies)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pids: set[int], timeout: float = 20) -> list[str]:
    """Wait for pids to exit; return 'pid name' of the ones still running."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}" for pid in left if running(pid)]


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process, never a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Descendants(threading.Thread):
    """Every process below `pid` seen while it runs (polled from /proc), to prove none outlives it."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.seen, self.halt = pid, {}, threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            for child in descendants(self.pid):
                if child not in self.seen and (started := start_time(child)) is not None:
                    self.seen[child] = started
            time.sleep(0.05)

    def survivors(self, timeout: float = 5) -> list[str]:
        """Stop watching; 'pid name' of the seen processes still running after `timeout` seconds."""
        self.halt.set()
        self.join()
        same = {pid for pid, started in self.seen.items() if start_time(pid) == started}
        return wait_gone(same, timeout)
