"""Reading a submitted notebook without trusting it: plain JSON, no nbformat validation, clear problems.

The bytes come from `intake.read_notebook`: one bounded read of a regular file (never a
link, FIFO or device), so what is parsed is what `grade` hashed.

Only the code cells above nbgrader's first autograded test cell run: nbgrader
scores each test cell with what the cells above it defined, and the generated
test cells come last, so code a learner adds below them counts in neither grader.

A notebook that cannot be graded at all (not JSON, empty, no code cells, made
for another assignment) is not an error of the grader: every test fails with
the `problem` text and the learner reads why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from redis_workbook.grading import intake

MAX_TEXT_SENT = 8 * 1024 * 1024  # larger notebooks reach the worker without their outputs
_CLAIM = re.compile(r"""\b(?:self_check|require)\(\s*["']([0-9]{2}_[a-z_]+)["']""")


@dataclass
class Submission:
    """A notebook's code cells (index among all cells, source) or the reason it cannot be graded."""

    path: Path
    cells: list[tuple[int, str]] = field(default_factory=list)
    after_checks: list[int] = field(default_factory=list)  # code cells below the first autograded test cell
    text: str = ""
    problem: str | None = None
    claims: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.path.name


def load(path: Path, assignment: str | None = None, known: tuple[str, ...] = ()) -> Submission:
    """Read `path`; when `assignment` is given, a notebook that says it is for another one is a problem."""
    sub = Submission(Path(path))
    try:
        raw = intake.read_notebook(sub.path)  # never a link, FIFO or device; at most MAX_NOTEBOOK_BYTES
    except intake.Refused as exc:
        sub.problem = str(exc)
        return sub
    sub.problem = _parse(sub, raw)
    if sub.problem is None and assignment is not None:
        sub.problem = _wrong_assignment(sub, assignment, known)
    return sub


def _parse(sub: Submission, raw: bytes) -> str | None:
    name = sub.path.name
    if not raw.strip():
        return f"Your notebook {name} is empty ({len(raw)} bytes): save it in Jupyter and submit the saved file."
    try:
        notebook = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return (f"Your notebook {name} is not valid JSON ({str(exc)[:120]}), so it cannot be run. "
                "Open it in Jupyter (or restore it from a checkpoint), save it, and submit again.")
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        return f"{name} is JSON but not a Jupyter notebook (it has no list of `cells`)."
    checks_seen = False
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        sub.claims.update(_CLAIM.findall(source))
        checks_seen = checks_seen or _autograded_test(cell)
        if not checks_seen:
            sub.cells.append((index, source))
        elif source.strip() and not _autograded_test(cell):
            sub.after_checks.append(index)
    meta = notebook.get("metadata", {}).get("redis_workbook", {}) if isinstance(notebook.get("metadata"), dict) else {}
    if isinstance(meta, dict) and isinstance(meta.get("assignment"), str):
        sub.claims.add(meta["assignment"])
    sub.text = raw.decode("utf-8") if len(raw) <= MAX_TEXT_SENT else _without_outputs(notebook)
    if not any(source.strip() for _, source in sub.cells):
        return f"Your notebook {name} has no code in it: did you submit the right file?"
    return None


def _autograded_test(cell: dict) -> bool:
    """nbgrader's test cells: the grade stops running the notebook where they start, as nbgrader scores there."""
    meta = cell.get("metadata", {})
    grading = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return isinstance(grading, dict) and grading.get("grade") is True and not grading.get("solution")


def _wrong_assignment(sub: Submission, assignment: str, known: tuple[str, ...]) -> str | None:
    claims = set(sub.claims)
    if sub.path.stem in known:
        claims.add(sub.path.stem)
    claims &= set(known) if known else claims
    if not claims or assignment in claims:
        return None
    other = ", ".join(sorted(claims))
    return (f"This notebook is for {other}, not {assignment}: its file name or its check cells say so. "
            f"Submit your {assignment}.ipynb for {assignment}.")


def _without_outputs(notebook: dict) -> str:
    for cell in notebook.get("cells", []):
        if isinstance(cell, dict) and "outputs" in cell:
            cell["outputs"] = []
    return json.dumps(notebook)
