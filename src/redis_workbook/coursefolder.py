"""`redis-workbook course DIR`: write a fresh course folder (notebooks, solutions, grader) into DIR.

The course is the repository's grader/ (checks, points.toml, the nbgrader course config),
notebooks/ (for learners) and solutions/ (for instructors). A built wheel carries a copy of
them as package data in redis_workbook/course/ (setup.py copies them at build time; the
repository folders stay the only source), so an installed package can check, grade, release
and open the workbook anywhere. An editable install reads the repository itself.

Standard library only: setup.py loads this file by path, before anything is installed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "course"  # in an installed wheel
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when installed editable from it (<repo>/src/...)
PARTS = ("grader", "notebooks", "solutions")
NOTEBOOKS = "[0-9][0-9]_*.ipynb"


def files(root: Path) -> list[Path]:
    """The course's files under `root`, relative to it: grader/ but its generated nbgrader folders, the notebooks."""
    found = [p for p in (root / "grader").rglob("*") if p.is_file() and _grader_file(p.relative_to(root / "grader"))]
    for part in ("notebooks", "solutions"):
        found += (root / part).glob(NOTEBOOKS)
    return sorted(p.relative_to(root) for p in found)


def _grader_file(relative: Path) -> bool:
    if any(name.startswith(".") or name == "__pycache__" for name in relative.parts) or relative.suffix == ".pyc":
        return False
    return relative.parts[0] != "course" or relative == Path("course", "nbgrader_config.py")


def source() -> Path:
    """The folder holding grader/, notebooks/ and solutions/: the installed package's copy, else the repository."""
    for root in (PACKAGED, CHECKOUT):
        if (root / "grader" / "points.toml").is_file():
            return root
    raise FileNotFoundError(f"This redis-workbook has no course: neither {PACKAGED} (an installed wheel) nor a "
                            "repository checkout around it holds grader/points.toml. Reinstall it from a wheel "
                            "built by `pip wheel` or `python -m build` in the repository.")


def copy(target: Path, root: Path | None = None, parts: tuple[str, ...] = PARTS) -> list[Path]:
    """Copy the course's files (of `parts`) from `root` (default: source()) into `target`; the files written."""
    root = root or source()
    written = []
    for relative in files(root):
        if relative.parts[0] in parts:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / relative, target / relative)
            written.append(target / relative)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="where to write the course (a new or empty folder)")


def run(args: argparse.Namespace) -> int:
    target = Path(args.folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        print(f"redis-workbook course: {target} exists and is not an empty folder; name a new one.", file=sys.stderr)
        return 2
    try:
        written = copy(target)
    except FileNotFoundError as exc:
        print(f"redis-workbook course: {exc}", file=sys.stderr)
        return 2
    counts = {part: sum(1 for p in written if p.relative_to(target).parts[0] == part) for part in PARTS}
    print(f"Wrote the course into {target}/: grader/ ({counts['grader']} files: checks, points.toml, the nbgrader "
          f"course), notebooks/ ({counts['notebooks']} for learners), solutions/ ({counts['solutions']}, for "
          "instructors only).\n"
          f"In {target}/: `redis-workbook lab` opens the notebooks, `redis-workbook check notebooks/NAME.ipynb` "
          "checks one, `redis-workbook release` regenerates notebooks/ from solutions/, `redis-workbook grade` "
          "grades a class with grader/.")
    return 0
