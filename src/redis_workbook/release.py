"""`redis-workbook release [--check] [ASSIGNMENT ...]`: notebooks/ from solutions/, through nbgrader.

solutions/NN_name.ipynb is the only file anyone edits. Releasing:

1. rewrites the generated tail of each solution notebook from grader/points.toml: a
   "Check your work" heading, the self-check cell, and one nbgrader autograded test
   cell per grader test (so nbgrader's scores and the self-check's are the same tests);
2. copies the solutions into the nbgrader course folder (grader/course/source/) and
   runs nbgrader's own `generate_assignment` once for every assignment;
3. copies release/NN_name/NN_name.ipynb to notebooks/.

Outputs, execution counts and editor metadata are stripped from both, and cell ids
are stable, so the generated files are byte-for-byte deterministic and diffs show
only real changes. `--check` does all of it in a temporary course folder and exits 1
listing every file that is out of step: that is what CI runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from redis_workbook.coursefolder import CHECKOUT, PACKAGED
from redis_workbook.grading.points import GraderNotFound
from redis_workbook.grading.points import read as read_points_toml

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
GENERATED = "redis_workbook_generated"  # cell metadata key marking the cells release writes
NBGRADER_SCHEMA = 3
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
KEEP_CELL_METADATA = ("nbgrader", "deletable", "editable", "tags", GENERATED)


@dataclass(frozen=True)
class Layout:
    """Where the repository keeps each part the release touches."""

    root: Path

    @property
    def solutions(self) -> Path:
        return self.root / "solutions"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def course(self) -> Path:
        return self.root / "grader" / "course"

    @property
    def points(self) -> Path:
        return self.root / "grader" / "points.toml"


def find_root(start: Path | None = None, packaged: bool = False) -> Path:
    """The course's root: --root, else the nearest folder (cwd upwards, then the package's own) with solutions/ and
    grader/; with `packaged`, else the installed package's own course (read-only: for --check)."""
    candidates = [start] if start else []
    here = Path.cwd().resolve()
    candidates += [here, *here.parents, CHECKOUT]
    candidates += [PACKAGED] if packaged else []
    for folder in candidates:
        if (folder / "solutions").is_dir() and (folder / "grader").is_dir():
            return folder
    raise SystemExit("redis-workbook release: no solutions/ and grader/ folders found here or above; run it inside "
                     "the redis-workbook repository or a course folder (`redis-workbook course DIR` writes one), "
                     "or pass --root.")


def read_points(path: Path) -> dict[str, dict[str, int | float]]:
    """points.toml read by the grader's reader, with whole points as ints (nbgrader's metadata writes them so);
    empty when the file does not exist yet."""
    if not path.exists():
        return {}
    try:
        tables = read_points_toml(path)
    except GraderNotFound as exc:
        raise SystemExit(f"redis-workbook release: {exc}") from exc
    return {assignment: {test: int(value) if value.is_integer() else value for test, value in table.items()}
            for assignment, table in tables.items()}


# ---------------------------------------------------------------- the generated tail
def generated_cells(assignment: str, points: dict[str, int]) -> list[NotebookNode]:
    """The cells release appends to a solution notebook, in order."""
    heading = nbformat.v4.new_markdown_cell(
        "## Check your work\n\n"
        "The next cell runs this notebook's grader checks against the functions you wrote, on a "
        "fresh private Redis, and prints one line per check: PASS or FAIL, the points, and a hint "
        "when something is off. Re-run it after every fix. The cells after it are the same checks, "
        "one per cell, as the autograder runs them; leave them as they are.")
    self_check = nbformat.v4.new_code_cell(
        f'from redis_workbook.grading.check import self_check; self_check("{assignment}", globals());')
    _mark(heading, "check-your-work", "check")
    _mark(self_check, "self-check", "check", nbgrader=_nbgrader_meta("self_check", grade=False, locked=True))
    cells = [heading, self_check]
    for test, value in points.items():
        cell = nbformat.v4.new_code_cell(
            f'from redis_workbook.grading.check import require; require("{assignment}", "{test}", globals())')
        _mark(cell, f"grade-{test}"[:64], "test",
              nbgrader=_nbgrader_meta(test, grade=True, locked=True, points=value))
        cells.append(cell)
    return cells


def _nbgrader_meta(grade_id: str, *, grade: bool, locked: bool, points: int | float | None = None) -> dict:
    meta: dict[str, object] = {"grade": grade, "grade_id": grade_id, "locked": locked,
                               "schema_version": NBGRADER_SCHEMA, "solution": False}
    if points is not None:
        meta["points"] = points
    return meta


def _mark(cell: NotebookNode, cell_id: str, kind: str, nbgrader: dict | None = None) -> None:
    cell["id"] = re.sub(r"[^A-Za-z0-9_-]", "-", cell_id)
    cell.metadata[GENERATED] = kind
    if nbgrader is not None:
        cell.metadata["nbgrader"] = nbgrader


def with_tail(nb: NotebookNode, assignment: str, points: dict[str, int]) -> NotebookNode:
    """The notebook with its generated cells (wherever they are) replaced by fresh ones at the end."""
    nb = nbformat.from_dict(nb)
    nb.cells = [cell for cell in nb.cells if GENERATED not in cell.metadata]
    nb.cells += generated_cells(assignment, points)
    return nb


# ---------------------------------------------------------------- normal form
def normalise(nb: NotebookNode) -> NotebookNode:
    """No outputs, no execution counts, no editor metadata, stable unique cell ids."""
    nb = nbformat.from_dict(nb)
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    nb.nbformat, nb.nbformat_minor = 4, 5
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if "attachments" in cell and not cell.attachments:
            del cell["attachments"]
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA})
        cell["id"] = _stable_id(cell, index, seen)
    return nb


def _stable_id(cell: NotebookNode, index: int, seen: set[str]) -> str:
    """Keep a valid id; derive a missing or duplicate one from the cell's source, not at random."""
    cell_id = str(cell.get("id") or "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cell_id) or cell_id in seen:
        digest = hashlib.sha1(f"{cell.source}\0{index}".encode()).hexdigest()[:8]
        cell_id = f"{cell.cell_type[:4]}-{digest}"
    seen.add(cell_id)
    return cell_id


def dumps(nb: NotebookNode) -> str:
    return nbformat.writes(nb, version=4)


# ---------------------------------------------------------------- nbgrader
def nbgrader_environment() -> dict[str, str]:
    """nbgrader runs `alembic` by name: this Python's scripts folder (a venv's bin/) goes first on PATH, so
    `.venv/bin/redis-workbook release` works without the venv activated."""
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def run_generate_assignment(course: Path, use_db: bool) -> None:
    """nbgrader generate_assignment for every assignment under course/source, in one start-up."""
    command = [sys.executable, "-m", "nbgrader", "generate_assignment", "*", "--force",
               f"--CourseDirectory.root={course}"]
    if not use_db:
        command.append("--no-db")
    done = subprocess.run(command, cwd=course, capture_output=True, text=True, env=nbgrader_environment())
    if done.returncode != 0:
        raise SystemExit(f"nbgrader generate_assignment failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def sync_sources(course: Path, sources: dict[str, str]) -> None:
    """course/source/<id>/<id>.ipynb for each solution; folders of deleted solutions removed."""
    source_dir = course / "source"
    source_dir.mkdir(parents=True, exist_ok=True)
    for folder in source_dir.iterdir():
        if folder.is_dir() and folder.name not in sources:
            shutil.rmtree(folder)
    for assignment, text in sources.items():
        folder = source_dir / assignment
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("*.ipynb"):
            if stale.stem != assignment:
                stale.unlink()
        _write_if_changed(folder / f"{assignment}.ipynb", text)
    release = course / "release"
    if release.is_dir():
        for folder in release.iterdir():
            if folder.is_dir() and folder.name not in sources:
                shutil.rmtree(folder)


def released(course: Path, assignment: str) -> str:
    nb = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    return dumps(normalise(nb))


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


# ---------------------------------------------------------------- the command
def build(layout: Layout, course: Path, use_db: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Regenerate everything: ({assignment: solution text}, {assignment: learner text})."""
    per_test = read_points(layout.points)
    solutions = {}
    for path in sorted(layout.solutions.glob(NOTEBOOK_PATTERN)):
        nb = nbformat.read(path, as_version=4)
        solutions[path.stem] = dumps(normalise(with_tail(nb, path.stem, per_test.get(path.stem, {}))))
    if not solutions:
        raise SystemExit(f"No solution notebooks ({NOTEBOOK_PATTERN}) in {layout.solutions}.")
    sync_sources(course, solutions)
    run_generate_assignment(course, use_db)
    return solutions, {assignment: released(course, assignment) for assignment in solutions}


def differences(layout: Layout, solutions: dict[str, str], learners: dict[str, str],
                selected: set[str] | None) -> list[str]:
    """Files whose content on disk is not what the release would write."""
    stale = []
    for assignment in sorted(solutions):
        if selected and assignment not in selected:
            continue
        for folder, text, why in ((layout.solutions, solutions[assignment], "generated check cells or format"),
                                  (layout.notebooks, learners[assignment], "learner notebook")):
            path = folder / f"{assignment}.ipynb"
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(f"{path.relative_to(layout.root)} ({why} out of step)")
    for path in sorted(layout.notebooks.glob(NOTEBOOK_PATTERN)):
        if path.stem not in solutions and (not selected or path.stem in selected):
            stale.append(f"{path.relative_to(layout.root)} (no solutions/{path.name})")
    return stale


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                        help="only write these (e.g. 03_knn); default: every solutions/NN_*.ipynb")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing files out of step with solutions/ (CI)")
    parser.add_argument("--root", type=Path, default=None, help="the repository root (default: found from here)")


def run(args: argparse.Namespace) -> int:
    layout = Layout(find_root(args.root, packaged=args.check))
    selected = set(args.assignments) or None
    if args.check:
        with tempfile.TemporaryDirectory(prefix="redis-workbook-release-") as tmp:
            course = Path(tmp)
            shutil.copy(layout.course / "nbgrader_config.py", course / "nbgrader_config.py")
            solutions, learners = build(layout, course, use_db=False)
        stale = differences(layout, solutions, learners, selected)
        if stale:
            print("Out of step with solutions/ (run `redis-workbook release` and commit the result):")
            print("\n".join(f"  {line}" for line in stale))
            return 1
        print(f"notebooks/ is in step with solutions/ ({len(selected or solutions)} notebooks).")
        return 0
    unknown = (selected or set()) - set(p.stem for p in layout.solutions.glob(NOTEBOOK_PATTERN))
    if unknown:
        print(f"No solutions/ notebook for: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    solutions, learners = build(layout, layout.course, use_db=True)
    written = []
    for assignment in sorted(solutions):
        if selected and assignment not in selected:
            continue
        for path, text in ((layout.solutions / f"{assignment}.ipynb", solutions[assignment]),
                           (layout.notebooks / f"{assignment}.ipynb", learners[assignment])):
            if _write_if_changed(path, text):
                written.append(str(path.relative_to(layout.root)))
    if not selected:
        for path in layout.notebooks.glob(NOTEBOOK_PATTERN):
            if path.stem not in solutions:
                path.unlink()
                written.append(f"{path.relative_to(layout.root)} (removed)")
    print("\n".join(f"wrote {line}" for line in written) or "Nothing changed: notebooks/ was already in step.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redis-workbook release", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
