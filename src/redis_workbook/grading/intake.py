"""Taking in submitted files without trusting them: real folders and regular files only, one bounded read.

SUBMITTED_DIR is `<student_id>/<assignment>/<notebook>.ipynb`. Every entry below it is
looked at with lstat (never followed): a student or assignment folder that is a link,
and a notebook that is a link (to `solutions/…`, to `/dev/zero`), a FIFO or a device,
is never opened as a notebook. It is the learner's problem, graded 0 with a message
saying what to submit instead, and it cannot hang or crash the grading of the class.

A notebook is read once, opened with O_NOFOLLOW | O_NONBLOCK, checked to be the same
regular file lstat saw, and read up to MAX_NOTEBOOK_BYTES (+1, to tell "too large"):
`grade` hashes exactly those bytes and grades a private copy of them, and
`submission.load` (the `check` command, the grader's plugin) parses them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024
NOT_A_LINK = "submit the notebook file itself, not a link"
LINK = "a link (symlink)"


class Refused(Exception):
    """A submitted path the grader does not read; the text says why and what to submit instead."""


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISLNK(mode):
        return LINK
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_regular(path: Path, limit: int) -> bytes:
    """Up to limit + 1 bytes of the regular file `path`, in one read that never follows a link or blocks.

    Raises Refused(kind) when `path` is a link, FIFO, device, socket or folder (or was swapped
    for one between lstat and open), and OSError (e.g. FileNotFoundError) when it cannot be read.
    """
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise Refused(kind_of(before.st_mode))
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):  # swapped for a link after lstat (ELOOP)
            raise Refused(LINK) from exc
        raise
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise Refused(kind_of(now.st_mode) if not stat.S_ISREG(now.st_mode) else "replaced while it was read")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_notebook(path: Path) -> bytes:
    """The notebook's bytes (at most MAX_NOTEBOOK_BYTES); Refused with the learner's message otherwise."""
    path = Path(path)
    name = path.name
    try:
        raw = read_regular(path, MAX_NOTEBOOK_BYTES)
    except Refused as exc:
        if exc.args[0] == LINK:
            raise Refused(f"Your notebook {name} is {LINK}, not a file, so it scores 0: "
                          f"{NOT_A_LINK}, saved from Jupyter.") from None
        raise Refused(f"Your notebook {name} is {exc}, not a notebook file, so it scores 0: "
                      "submit the notebook file itself (the .ipynb Jupyter saved).") from None
    except FileNotFoundError:
        raise Refused(missing(path)) from None
    except OSError as exc:
        raise Refused(f"Your notebook {name} could not be read ({exc.strerror}): submit it again.") from None
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise Refused(f"Your notebook {name} is larger than {MAX_NOTEBOOK_BYTES >> 20} MB: "
                      "clear its outputs and submit again.")
    return raw


def missing(path: Path) -> str:
    try:
        others = sorted(n for n in os.listdir(path.parent) if n.endswith(".ipynb") and not n.startswith("."))
    except OSError:
        others = []
    return f"No notebook named {path.name} was submitted" + (
        f" (the folder holds {', '.join(others)}: submit one notebook, named {path.name})." if others else ".")


# ---------------------------------------------------------------------------------------------- a class
@dataclass
class Entry:
    """One (student, assignment) found in SUBMITTED_DIR: its notebook's bytes, or why there are none."""

    student: str
    assignment: str
    name: str  # the notebook's file name (the expected one when there is none)
    data: bytes | None = None
    problem: str | None = None


def scan(submitted: Path, known: tuple[str, ...]) -> Iterator[Entry]:
    """Every <student>/<assignment>/ of SUBMITTED_DIR, sorted, each notebook read once (one at a time).

    A student folder that is a link gets an entry with its problem for each assignment the
    class submitted (of `known`; all of them when the class submitted none). Hidden entries,
    stray files and links to anything but a folder are not submissions and are skipped.
    """
    linked, seen = [], set()
    for student in _entries(submitted):
        if student.is_symlink():
            if student.is_dir():  # stat, never opened: a link to a folder poses as a student's folder
                linked.append(student.name)
            continue
        if not student.is_dir(follow_symlinks=False):
            continue
        for folder in _entries(Path(student.path)):
            if folder.is_symlink() and folder.is_dir():
                seen.add(folder.name)
                yield Entry(student.name, folder.name, f"{folder.name}.ipynb", problem=(
                    f"Your folder {student.name}/{folder.name} is {LINK}, not a folder, so it scores 0: "
                    f"{NOT_A_LINK}, in a folder named {folder.name}."))
            elif folder.is_dir(follow_symlinks=False):
                seen.add(folder.name)
                yield _read_entry(student.name, Path(folder.path))
    assignments = sorted(seen & set(known)) or sorted(known)
    for student in linked:
        for assignment in assignments:
            yield Entry(student, assignment, f"{assignment}.ipynb", problem=(
                f"Your folder {student} is {LINK}, not a folder, so it scores 0: {NOT_A_LINK}, "
                f"as {student}/{assignment}/{assignment}.ipynb in real folders."))


def _entries(folder: Path) -> list[os.DirEntry]:
    """The folder's entries but hidden ones, sorted; none when it cannot be listed (a notebook is then missing)."""
    try:
        with os.scandir(folder) as listing:
            return sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []


def _read_entry(student: str, folder: Path) -> Entry:
    """The folder's <assignment>.ipynb, or its only .ipynb; whatever kind of file it is, it is read safely."""
    names = [e.name for e in _entries(folder) if e.name.endswith(".ipynb")]
    name = f"{folder.name}.ipynb"
    if name not in names and len(names) == 1:
        name = names[0]
    try:
        return Entry(student, folder.name, name, data=read_notebook(folder / name))
    except Refused as exc:
        return Entry(student, folder.name, name, problem=str(exc))
