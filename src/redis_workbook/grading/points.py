"""Points per test, from one file: grader/points.toml (and an instructor's private points.toml).

    ["06_recommender"]
    test_track_view_newest_first = 2

Table names are assignment ids (notebook stems); a test module
`test_<assignment>[_anything].py` takes its points from the table of that id in
the nearest points.toml above it. A parametrized test's points are split evenly
between its cases, so the assignment's maximum is the sum of the table.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from redis_workbook.coursefolder import CHECKOUT, PACKAGED

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

POINTS_FILE = "points.toml"
GRADER_ENV = "REDIS_WORKBOOK_GRADER"


class GraderNotFound(LookupError):
    """No usable grader: no grader folder (with points.toml) was found, or its points.toml cannot be read."""


def grader_dir() -> Path:
    """REDIS_WORKBOOK_GRADER; else grader/ in the cwd or above (the repository, a course folder from
    `redis-workbook course`); else the repository an editable install was made from; else the installed package's
    own course."""
    if env := os.environ.get(GRADER_ENV):
        path = Path(env).resolve()
        if not (path / POINTS_FILE).is_file():
            raise GraderNotFound(f"{GRADER_ENV}={env} has no {POINTS_FILE}.")
        return path
    cwd = Path.cwd().resolve()
    candidates = [folder / "grader" for folder in (cwd, *cwd.parents)] + [CHECKOUT / "grader", PACKAGED / "grader"]
    for candidate in candidates:
        if (candidate / POINTS_FILE).is_file():
            return candidate
    raise GraderNotFound(
        f"No grader found: set {GRADER_ENV} to the folder holding the grader's test_*.py and {POINTS_FILE}, or "
        "work inside the repository or a course folder (`redis-workbook course DIR` writes one); this "
        f"installation carries no course of its own ({PACKAGED} is missing)."
    )


@cache
def _read(path: Path, mtime: float) -> dict[str, dict[str, float]]:
    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise GraderNotFound(f"{path} is not valid TOML ({exc}): fix it; each assignment is a table "
                                 '["NN_name"] of lines test_name = points.') from exc
    tables: dict[str, dict[str, float]] = {}
    for assignment, table in data.items():
        if not isinstance(table, dict):
            raise GraderNotFound(f"{path}: [{assignment}] must be a table of test_name = points.")
        for test, value in table.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise GraderNotFound(f"{path}: [{assignment}] {test} must be a number of points >= 0, "
                                     f"got {value!r}.")
        tables[assignment] = {test: float(value) for test, value in table.items()}
    return tables


def read(path: Path) -> dict[str, dict[str, float]]:
    """assignment -> test name -> points, from one points.toml."""
    path = Path(path).resolve()
    return _read(path, path.stat().st_mtime)


def assignments(folder: Path | None = None) -> tuple[str, ...]:
    """The assignment ids the grader knows, sorted."""
    return tuple(sorted(read((folder or grader_dir()) / POINTS_FILE)))


def secret_paths(grader: Path) -> list[Path]:
    """What learner code must never read: the grader, and the course's solutions, the repository's history and
    tests; and always the installed package's own grader and solutions (package data inside site-packages)."""
    history = grader.parent / ".git"
    return [grader, *(grader.parent / name for name in ("solutions", "tests")), history, *git_folders(history),
            PACKAGED / "grader", PACKAGED / "solutions"]


def git_folders(dot_git: Path) -> list[Path]:
    """Where a worktree's history really is: its `.git` is a file naming its git folder (`gitdir: ...`), whose
    `commondir` names the repository's own, holding every object (the grader's and solutions' files too)."""
    try:
        text = dot_git.read_text() if dot_git.is_file() else ""
    except OSError:
        return []
    if not text.startswith("gitdir:"):
        return []
    gitdir = (dot_git.parent / text.split(":", 1)[1].strip()).resolve()
    found = [gitdir]
    try:
        found.append((gitdir / (gitdir / "commondir").read_text().strip()).resolve())
    except OSError:
        pass
    return found


def module_path(assignment: str, folder: Path | None = None) -> Path:
    return (folder or grader_dir()) / f"test_{assignment}.py"


def assignment_of_module(stem: str, known: tuple[str, ...]) -> str | None:
    """`test_06_recommender_private` -> `06_recommender` (the longest known id it starts with)."""
    if not stem.startswith("test_"):
        return None
    name = stem[len("test_"):]
    matches = [a for a in known if name == a or name.startswith(a + "_")]
    return max(matches, key=len) if matches else None


def points_file_for(test_file: Path, stop: Path | None = None) -> Path | None:
    """The nearest points.toml in the test file's folder or above (not above `stop`)."""
    for folder in Path(test_file).resolve().parents:
        if (folder / POINTS_FILE).is_file():
            return folder / POINTS_FILE
        if stop is not None and folder == stop:
            break
    return None


def format_points(value: float) -> str:
    """2.0 -> '2', 0.5 -> '0.5' (gradebooks and feedback show points like people write them)."""
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"
