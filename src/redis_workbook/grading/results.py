"""What grading produces: the typed results, Gradescope's results.json, a learner's feedback, the gradebook.

Two small models, each with one reader and one writer (JSON):
- `Results`: one pytest session's outcome per check (`--results-json`, written by the plugin,
  read by `check` and `grade`), like otter-grader's GradingResults but smaller;
- `Record`: what `grade` keeps of one submission, in results.json's `extra_data.redis_workbook`
  (resume, gradebook, summary and merge all read it through `read_record`).
Gradescope's results.json is derived from both (`gradescope`), the feedback page from that.

Status of a submission: "graded" (the score is its grade, possibly 0 with the
reason in the feedback, e.g. a notebook that is not valid JSON) or
"not graded: <reason>" (the grader could not grade it, e.g. Redis died twice:
the gradebook's score stays empty so it is never mistaken for a 0).

Learner text (exception messages, prints, file and folder names) never reaches Markdown
raw: it goes in code blocks it cannot close (`fenced`), titles are escaped (`md_escaped`),
and gradebook cells that a spreadsheet would run as a formula are made text (`cell_safe`).
Folders grading creates are private (0700); the files in them are readable (0644).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from redis_workbook.grading.points import format_points

GRADED = "graded"
NOT_GRADED = "not graded"
GRADEBOOK_COLUMNS = ("student_id", "assignment", "score", "max_score", "status")
OUTPUT_SHOWN = 3000


# ---------------------------------------------------------------------------------------------- the model
@dataclass
class Check:
    """One grader check (a pytest test, or one case of a parametrized test) and how it went."""

    nodeid: str
    name: str
    doc: str = ""  # the first line of the test's docstring
    assignment: str | None = None
    passed: bool = False
    points: float = 0.0
    max_points: float = 0.0
    message: str = "not run"


@dataclass
class NotebookRun:
    """What running the learner's notebook gave: its problems, what it printed, restarts, the sandbox's report."""

    problems: list[str] = field(default_factory=list)
    output: str = ""
    restarts: int = 0
    sandbox: dict = field(default_factory=dict)


@dataclass
class Results:
    """One pytest session's grading of one notebook (the plugin's `--results-json`)."""

    assignment: str | None = None
    submission: str | None = None
    tests: list[Check] = field(default_factory=list)
    score: float = 0.0
    max_score: float = 0.0
    submission_problem: str | None = None  # why the notebook could not be graded at all (the learner's)
    notebook: NotebookRun | None = None
    backend: str | None = None
    infrastructure_error: str | None = None  # why the grader could not grade (never the learner's)
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def all_passed(self) -> bool:
        return bool(self.tests) and not self.infrastructure_error and all(t.passed for t in self.tests)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        notebook = data.get("notebook")
        return cls(**{**_known(cls, data), "tests": [Check(**_known(Check, t)) for t in data.get("tests") or []],
                      "notebook": NotebookRun(**_known(NotebookRun, notebook)) if notebook else None})

    @classmethod
    def read(cls, path: Path) -> Results:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class Record:
    """What `grade` keeps of one submission: results.json's `extra_data.redis_workbook` (see `read_record`)."""

    student_id: str
    assignment: str
    notebook: str = ""  # the notebook's file name
    notebook_sha256: str = ""  # of the bytes graded ("refused:..." when intake refused them)
    tests: str = ""  # the fingerprint of the tests that graded it
    status: str = f"{NOT_GRADED}: no results"
    max_score: float | None = None
    score: float | None = None  # this and the rest only when graded
    backend: str | None = None
    output: str = ""  # what the notebook printed
    warnings: list[str] = field(default_factory=list)

    @property
    def graded(self) -> bool:
        return self.status == GRADED

    def settled(self, status: str, max_score: float | None, results: Results | None) -> Record:
        """This record with its outcome: the status, and when graded the score and what the run reported."""
        if status != GRADED or results is None:
            return replace(self, status=status, max_score=max_score)
        notebook = results.notebook or NotebookRun()
        return replace(self, status=status, max_score=max_score, score=results.score, backend=results.backend,
                       output=notebook.output, warnings=[*results.warnings, *notebook.sandbox.get("warnings", [])])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.graded:
            for key in ("score", "backend", "output", "warnings"):
                del data[key]
        return data


def read_record(path: Path) -> Record | None:
    """The record in a results.json `grade` wrote; None when it is missing or unreadable (grade it again)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))["extra_data"]["redis_workbook"]
        return Record(**_known(Record, data))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
    return {key: value for key, value in data.items() if key in names}


# ---------------------------------------------------------------------------------------------- files
def private_dirs(folder: Path) -> None:
    """Create `folder` and its missing parents, each 0700 (existing folders keep their mode)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        each.mkdir(mode=0o700, exist_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    private_dirs(path.parent)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------- escaping
def fenced(text: str) -> str:
    """`text` as a Markdown code block it cannot close: the fence is one backtick longer than its longest run.

    A backtick fence only ends at a line of at least as many backticks (tildes never end it), so
    nothing inside, ``` or `</details>` or `# heading`, is read as Markdown or HTML.
    """
    fence = "`" * max(3, 1 + max(map(len, re.findall("`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def md_escaped(text: str) -> str:
    """`text` (a student id, a folder name) as literal Markdown inline text: punctuation escaped, no line breaks."""
    text = re.sub(r"[\x00-\x1f\x7f]", "\ufffd", text)
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def cell_safe(cell: object) -> str:
    """A gradebook cell a spreadsheet shows as text: `=HYPERLINK(...)` becomes `'=HYPERLINK(...)`; numbers stay."""
    cell = str(cell)
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def terminal_safe(text: str) -> str:
    """Learner text for the instructor's terminal: no escape sequences or carriage returns (tabs, newlines stay)."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "\ufffd", text)


# ---------------------------------------------------------------------------------------------- check
def check_report(results: Results) -> str:
    """The learner's self-check: notebook problems, then PASS/FAIL per test with points and message, a total."""
    lines = []
    if results.submission_problem:
        lines.append(f"Your notebook cannot be checked: {results.submission_problem}")
    problems = results.notebook.problems if results.notebook else []
    if problems:
        lines.append("While running your notebook:")
        lines += [f"  - {p}" for p in problems]
    for test in results.tests:
        mark = "PASS" if test.passed else "FAIL"
        lines.append(f"{mark}  {test.name}  ({format_points(test.points)}/{format_points(test.max_points)})")
        if not test.passed and test.message:
            lines += [f"      {line}" for line in test.message.splitlines()]
    if results.infrastructure_error:
        lines.append(f"The check itself failed: {results.infrastructure_error}")
    lines.append(f"Total: {format_points(results.score)}/{format_points(results.max_score)} points")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- grade
def status_of(results: Results | None, crash: str | None) -> str:
    if crash:
        return f"{NOT_GRADED}: {crash}"
    if results is None:
        return f"{NOT_GRADED}: the grader produced no results"
    if results.infrastructure_error:
        return f"{NOT_GRADED}: infrastructure failure ({results.infrastructure_error})"
    return GRADED


def gradescope(record: Record, results: Results | None) -> dict:
    """Gradescope's results.json, derived from the record and the results; `extra_data.redis_workbook` is the
    record (what the gradebook and resume need)."""
    extra = {"redis_workbook": record.to_json()}
    if not record.graded or results is None:
        reason = record.status.split(": ", 1)[-1]
        message = ("Your submission was not graded. This is a problem on the grading side, not in your notebook; "
                   "your instructor will grade it again. The reason:")
        return {"score": 0, "execution_time": 0, "output": f"{message}\n\n{fenced(reason)}", "output_format": "md",
                "visibility": "visible", "stdout_visibility": "hidden", "extra_data": extra,
                "tests": [{"name": "grading", "score": 0, "max_score": record.max_score or 0, "status": "failed",
                           "output": f"{message} {reason}", "output_format": "text", "visibility": "visible"}]}
    tests = [{
        "name": test.name + (f": {test.doc}" if test.doc else ""),
        "score": test.points, "max_score": test.max_points,
        "status": "passed" if test.passed else "failed",
        "output": test.message, "output_format": "text", "visibility": "visible",
    } for test in results.tests]
    return {"score": results.score, "execution_time": round(results.duration), "output": _summary(results),
            "output_format": "md", "visibility": "visible", "stdout_visibility": "hidden", "tests": tests,
            "extra_data": extra}


def _summary(results: Results) -> str:
    """Gradescope's top-level output (Markdown): the notebook's problems, each kind in a code block."""
    parts = []
    if results.submission_problem:
        parts.append(fenced(results.submission_problem))
    problems = results.notebook.problems if results.notebook else []
    if problems:
        parts.append("While running your notebook:\n\n" + fenced("\n".join(f"- {p}" for p in problems)))
    return "\n\n".join(parts)


def feedback(record: Record, report: dict) -> str:
    """A Markdown page for the learner, from the record and the Gradescope results.json written with it."""
    title = f"# {md_escaped(record.assignment)}: feedback for {md_escaped(record.student_id)}\n"
    if not record.graded:
        return title + f"\n**Not graded.** {report['output']}\n"
    lines = [title, f"**Score: {format_points(record.score or 0)} / {format_points(record.max_score or 0)}**\n"]
    if report["output"]:
        lines += ["## Your notebook\n", report["output"] + "\n"]
    lines.append("## Checks\n")
    for test in report["tests"]:
        mark = "✅" if test["status"] == "passed" else "❌"
        lines.append(f"### {mark} {test['name']} ({format_points(test['score'])}/{format_points(test['max_score'])})\n")
        if test["output"] and test["output"] not in report["output"]:  # not the whole-notebook problem
            lines.append(fenced(test["output"]) + "\n")
    output = record.output
    if output.strip():
        shown = output if len(output) <= OUTPUT_SHOWN else output[:OUTPUT_SHOWN // 2] + "\n...\n" + output[
            -OUTPUT_SHOWN // 2:]
        lines += ["<details><summary>What your notebook printed while it ran</summary>\n",
                  fenced(shown) + "\n", "</details>\n"]
    return "\n".join(lines)


def gradebook_rows(out_dir: Path) -> list[dict[str, str]]:
    """One row per OUT_DIR/<student>/<assignment>/results.json, sorted by student then assignment."""
    rows = []
    for path in sorted(Path(out_dir).glob("*/*/results.json")):
        record = read_record(path) or Record(path.parent.parent.name, path.parent.name,
                                             status=f"{NOT_GRADED}: unreadable results.json")
        rows.append({
            "student_id": record.student_id, "assignment": record.assignment,
            "score": format_points(record.score or 0) if record.graded else "",
            "max_score": format_points(record.max_score) if isinstance(record.max_score, (int, float)) else "",
            "status": record.status,
        })
    return sorted(rows, key=lambda row: (row["student_id"], row["assignment"]))


def write_gradebook(out_dir: Path) -> Path:
    """OUT_DIR/gradebook.csv rebuilt from every results.json there (so a resumed run ends identical)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=GRADEBOOK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: cell_safe(value) for key, value in row.items()} for row in gradebook_rows(out_dir))
    path = Path(out_dir) / "gradebook.csv"
    write_text_atomic(path, buffer.getvalue())
    return path
