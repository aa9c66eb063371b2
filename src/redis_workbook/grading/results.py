"""What grading produces: Gradescope's results.json, a feedback page a learner reads, the gradebook.

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
from pathlib import Path

from redis_workbook.grading.points import format_points

GRADED = "graded"
NOT_GRADED = "not graded"
GRADEBOOK_COLUMNS = ("student_id", "assignment", "score", "max_score", "status")
OUTPUT_SHOWN = 3000


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
def check_report(results: dict) -> str:
    """The learner's self-check: notebook problems, then PASS/FAIL per test with points and message, a total."""
    lines = []
    if results.get("submission_problem"):
        lines.append(f"Your notebook cannot be checked: {results['submission_problem']}")
    problems = (results.get("notebook") or {}).get("problems") or []
    if problems:
        lines.append("While running your notebook:")
        lines += [f"  - {p}" for p in problems]
    for test in results["tests"]:
        mark = "PASS" if test["passed"] else "FAIL"
        lines.append(f"{mark}  {test['name']}  ({format_points(test['points'])}/{format_points(test['max_points'])})")
        if not test["passed"] and test["message"]:
            lines += [f"      {line}" for line in test["message"].splitlines()]
    if results.get("infrastructure_error"):
        lines.append(f"The check itself failed: {results['infrastructure_error']}")
    lines.append(f"Total: {format_points(results['score'])}/{format_points(results['max_score'])} points")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- grade
def status_of(results: dict | None, crash: str | None) -> str:
    if crash:
        return f"{NOT_GRADED}: {crash}"
    if results is None:
        return f"{NOT_GRADED}: the grader produced no results"
    if results.get("infrastructure_error"):
        return f"{NOT_GRADED}: infrastructure failure ({results['infrastructure_error']})"
    return GRADED


def gradescope(results: dict | None, status: str, meta: dict, max_score: float | None) -> dict:
    """Gradescope's results.json; `extra_data.redis_workbook` holds what the gradebook and resume need."""
    extra = {"redis_workbook": {**meta, "status": status, "max_score": max_score}}
    if status != GRADED or results is None:
        reason = status.split(": ", 1)[-1]
        message = ("Your submission was not graded. This is a problem on the grading side, not in your notebook; "
                   "your instructor will grade it again. The reason:")
        return {"score": 0, "execution_time": 0, "output": f"{message}\n\n{fenced(reason)}", "output_format": "md",
                "visibility": "visible", "stdout_visibility": "hidden", "extra_data": extra,
                "tests": [{"name": "grading", "score": 0, "max_score": max_score or 0, "status": "failed",
                           "output": f"{message} {reason}", "output_format": "text", "visibility": "visible"}]}
    notebook = results.get("notebook") or {}
    warnings = [*results.get("warnings", []), *(notebook.get("sandbox") or {}).get("warnings", [])]
    extra["redis_workbook"].update(score=results["score"], backend=results.get("backend"),
                                   output=notebook.get("output", ""), warnings=warnings)
    tests = [{
        "name": test["name"] + (f": {test['doc']}" if test.get("doc") else ""),
        "score": test["points"], "max_score": test["max_points"],
        "status": "passed" if test["passed"] else "failed",
        "output": test["message"], "output_format": "text", "visibility": "visible",
    } for test in results["tests"]]
    return {"score": results["score"], "execution_time": round(results.get("duration", 0)),
            "output": _summary(results), "output_format": "md", "visibility": "visible",
            "stdout_visibility": "hidden", "tests": tests, "extra_data": extra}


def _summary(results: dict) -> str:
    """Gradescope's top-level output (Markdown): the notebook's problems, each kind in a code block."""
    parts = []
    if results.get("submission_problem"):
        parts.append(fenced(results["submission_problem"]))
    problems = (results.get("notebook") or {}).get("problems") or []
    if problems:
        parts.append("While running your notebook:\n\n" + fenced("\n".join(f"- {p}" for p in problems)))
    return "\n\n".join(parts)


def feedback(gradescope_results: dict) -> str:
    """A Markdown page for the learner, from the results.json we write."""
    meta = gradescope_results["extra_data"]["redis_workbook"]
    title = f"# {md_escaped(meta['assignment'])}: feedback for {md_escaped(meta['student_id'])}\n"
    if meta["status"] != GRADED:
        return title + f"\n**Not graded.** {gradescope_results['output']}\n"
    lines = [title, f"**Score: {format_points(meta['score'])} / {format_points(meta['max_score'])}**\n"]
    if gradescope_results["output"]:
        lines += ["## Your notebook\n", gradescope_results["output"] + "\n"]
    lines.append("## Checks\n")
    for test in gradescope_results["tests"]:
        mark = "✅" if test["status"] == "passed" else "❌"
        lines.append(f"### {mark} {test['name']} ({format_points(test['score'])}/{format_points(test['max_score'])})\n")
        if test["output"] and test["output"] not in gradescope_results["output"]:  # not the whole-notebook problem
            lines.append(fenced(test["output"]) + "\n")
    output = meta.get("output") or ""
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
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))["extra_data"]["redis_workbook"]
        except (OSError, ValueError, KeyError, TypeError):
            meta = {"student_id": path.parent.parent.name, "assignment": path.parent.name,
                    "status": f"{NOT_GRADED}: unreadable results.json", "max_score": ""}
        graded = meta.get("status") == GRADED
        rows.append({
            "student_id": meta["student_id"], "assignment": meta["assignment"],
            "score": format_points(meta["score"]) if graded else "",
            "max_score": format_points(meta["max_score"]) if isinstance(meta.get("max_score"), (int, float)) else "",
            "status": meta["status"],
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
