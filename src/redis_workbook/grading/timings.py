"""Where the time of grading one submission goes: phases and CPU, for `redis-workbook bench --grading`.

When REDIS_WORKBOOK_TIMINGS names a file, each grading pytest process appends one JSON line
to it at the end: the seconds of each phase (its own start-up, collection, the two Redis
servers, the enclosure, the worker's start-up, the notebook's cells, the checks, the
teardown) and the CPU seconds of each of its processes. Otherwise nothing is recorded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TIMINGS_ENV = "REDIS_WORKBOOK_TIMINGS"


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system, with its reaped children) of a live process, from /proc; None when gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_start() -> float | None:
    """When this process started (time.time() clock), from /proc: it includes the interpreter's start-up."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


class Timeline:
    """Named moments of one grading process; `phases()` turns consecutive ones into durations."""

    def __init__(self) -> None:
        self.path = os.environ.get(TIMINGS_ENV)
        self.marks: list[tuple[str, float]] = []
        if self.path and (started := process_start()) is not None:
            self.marks.append(("process start", started))

    def mark(self, what: str, at: float | None = None) -> None:
        if self.path:
            self.marks.append((what, time.time() if at is None else at))

    def phases(self) -> dict[str, float]:
        """{phase: seconds}: each mark's name for the time since the mark before it (repeated names add up)."""
        out: dict[str, float] = {}
        for (_, before), (name, at) in zip(self.marks, self.marks[1:]):
            out[name] = round(out.get(name, 0.0) + max(0.0, at - before), 4)
        return out

    def write(self, **extra: object) -> None:
        if not self.path:
            return
        line = json.dumps({"phases": self.phases(), **extra}) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:  # one short append per process: lines stay whole
            handle.write(line)
