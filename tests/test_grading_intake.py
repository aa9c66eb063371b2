"""The grader's intake and output: links, FIFOs and devices as submissions, hostile names and text, SIGTERM.

One real `redis-workbook grade` run (short timeouts, a real embedded Redis per submission)
grades a small class of 06_recommender submissions: an honest one that must keep full
marks, notebooks that are a link to the solution, a FIFO or a link to /dev/zero, student
and assignment folders that are links, student folders named like spreadsheet formulas
or HTML, and a notebook whose exception messages and prints carry Markdown and HTML.
Every hostile entry is graded (never "not graded") with a message saying what to submit;
the class ends, and nothing it started is left running.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mistune
import pytest
from processes import Descendants, descendants
from submissions import GOOD, REPO, write_notebook

from redis_workbook.grading import intake, points, submission

ASSIGNMENT = "06_recommender"
POINTS = points.read(REPO / "grader" / "points.toml")[ASSIGNMENT]
MAX_SCORE = sum(POINTS.values())
OPTIONS = ["--cell-timeout", "4", "--call-timeout", "2", "--memory-mb", "1024", "--jobs", "2"]

HOSTILE = "```\n</details>\n<script>alert('PWNED')</script>\n# PWNED heading\n~~~~\n`````` [x](http://PWNED)"
INJECTION = (GOOD, f"print({HOSTILE!r})\n",
             f"# ``` </details> <script>PWNED</script>\nraise ValueError({HOSTILE!r})\n",
             f"def similar_products(r, product_id, k=5):\n    raise ValueError({HOSTILE!r})\n")
INJECTION_SCORE = MAX_SCORE - sum(v for k, v in POINTS.items() if "similar_products" in k)

HONEST = "a_honest"
FORMULA = '=HYPERLINK("evil.example","click")'
AT_FORMULA = "@SUM(1+1)"
HTML_NAME = "m_<img src=x onerror=alert(1)>"
LINKED_STUDENT = "s_linked_student"
LINKED_NOTEBOOK = "is a link (symlink), not a file, so it scores 0: submit the notebook file itself, not a link"
REFUSED = {  # student -> what their feedback must say (all graded 0)
    "l_link_to_solution": LINKED_NOTEBOOK,
    "f_fifo": "is a named pipe (FIFO), not a notebook file, so it scores 0: submit the notebook file itself",
    "z_link_to_dev_zero": LINKED_NOTEBOOK,
    LINKED_STUDENT: f"Your folder {LINKED_STUDENT} is a link (symlink), not a folder, so it scores 0",
    "k_linked_assignment": f"Your folder k_linked_assignment/{ASSIGNMENT} is a link (symlink), not a folder",
    AT_FORMULA: "is a named pipe (FIFO)",
    "n_no_notebook": f"No notebook named {ASSIGNMENT}.ipynb was submitted",
}


def notebook_path(submitted: Path, student: str) -> Path:
    return submitted / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


def build(submitted: Path, elsewhere: Path) -> None:
    """The class; `elsewhere` is outside SUBMITTED_DIR (the targets of the linked folders)."""
    for student in (HONEST, FORMULA):
        write_notebook(notebook_path(submitted, student), GOOD)
    write_notebook(notebook_path(submitted, HTML_NAME), *INJECTION)
    for student in REFUSED:
        (submitted / student / ASSIGNMENT).mkdir(parents=True)
    os.symlink(REPO / "solutions" / f"{ASSIGNMENT}.ipynb", notebook_path(submitted, "l_link_to_solution"))
    os.mkfifo(notebook_path(submitted, "f_fifo"))
    os.mkfifo(notebook_path(submitted, AT_FORMULA))
    os.symlink("/dev/zero", notebook_path(submitted, "z_link_to_dev_zero"))
    (submitted / LINKED_STUDENT / ASSIGNMENT).rmdir()
    (submitted / LINKED_STUDENT).rmdir()
    write_notebook(notebook_path(elsewhere, "real"), GOOD)
    os.symlink(elsewhere / "real", submitted / LINKED_STUDENT)
    (submitted / "k_linked_assignment" / ASSIGNMENT).rmdir()
    os.symlink(elsewhere / "real" / ASSIGNMENT, submitted / "k_linked_assignment" / ASSIGNMENT)
    (submitted / "n_no_notebook" / ASSIGNMENT / "notes.txt").write_text("I forgot to upload it")


def grade_command(submitted: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "redis_workbook.cli", "grade", str(submitted), "--out", str(out), *OPTIONS, *more]


@dataclass
class Graded:
    submitted: Path
    out: Path
    returncode: int
    stderr: str
    seconds: float
    survivors: list[str]

    def results(self, student: str) -> dict:
        return json.loads((self.out / student / ASSIGNMENT / "results.json").read_text())

    def feedback(self, student: str) -> str:
        return (self.out / student / ASSIGNMENT / "feedback.md").read_text()


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    base = tmp_path_factory.mktemp("intake")
    submitted, out = base / "submitted", base / "new" / "out"  # grade creates OUT and its parent
    build(submitted, base / "elsewhere")
    started = time.monotonic()
    process = subprocess.Popen(grade_command(submitted, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    watch = Descendants(process.pid)
    try:
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    seconds = time.monotonic() - started
    print(f"\ngraded the intake class in {seconds:.1f} s")
    return Graded(submitted, out, process.returncode, stderr, seconds, watch.survivors())


def gradebook(out: Path) -> list[dict[str, str]]:
    with open(out / "gradebook.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------- intake
def test_the_class_ends_with_every_submission_graded(graded: Graded) -> None:
    assert graded.returncode == 0, graded.stderr
    rows = {row["student_id"]: row for row in gradebook(graded.out)}
    expected = {HONEST, FORMULA, HTML_NAME, *REFUSED}
    assert {name.lstrip("'") for name in rows} == expected
    assert all(row["status"] == "graded" for row in rows.values()), rows
    assert graded.survivors == []


def test_the_honest_submission_keeps_full_marks(graded: Graded) -> None:
    for student in (HONEST, FORMULA):
        data = graded.results(student)
        assert data["score"] == MAX_SCORE, data["output"]
        assert all(test["status"] == "passed" for test in data["tests"])


@pytest.mark.parametrize("student", sorted(REFUSED))
def test_a_link_fifo_or_device_scores_zero_with_what_to_submit(graded: Graded, student: str) -> None:
    data = graded.results(student)
    assert data["score"] == 0 and data["extra_data"]["redis_workbook"]["status"] == "graded"
    assert data["extra_data"]["redis_workbook"]["max_score"] == MAX_SCORE
    assert len(data["tests"]) == len(POINTS) and all(REFUSED[student] in t["output"] for t in data["tests"])
    assert REFUSED[student] in data["output"] and REFUSED[student] in graded.feedback(student)


def test_a_link_to_a_solution_gets_nothing_from_it(graded: Graded) -> None:
    data = graded.results("l_link_to_solution")
    assert data["extra_data"]["redis_workbook"]["notebook_sha256"].startswith("refused:")
    assert not any(test["status"] == "passed" for test in data["tests"])


def test_results_are_private_to_the_instructor(graded: Graded) -> None:
    for folder in (graded.out.parent, graded.out, graded.out / HONEST, graded.out / HONEST / ASSIGNMENT):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in (graded.out / "gradebook.csv", graded.out / HONEST / ASSIGNMENT / "results.json"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file


def test_a_rerun_resumes_and_refused_entries_stay_graded(graded: Graded) -> None:
    kept = {path: path.stat().st_mtime_ns for path in graded.out.glob("*/*/results.json")}
    done = subprocess.run(grade_command(graded.submitted, graded.out), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # nothing graded again


# ---------------------------------------------------------------------------------------------- output
def markdown_parts(text: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """(code block contents, HTML blocks and tags, heading texts, every other text) of a Markdown page, as
    a CommonMark renderer with raw HTML on (Gradescope, GitHub) reads it."""
    code, html, headings, other = [], [], [], []

    def text_of(token: dict) -> str:
        return token.get("raw", "") + "".join(text_of(child) for child in token.get("children", []))

    def walk(tokens: list[dict]) -> None:
        for token in tokens:
            kind = token["type"]
            if kind in ("block_code", "codespan"):
                code.append(token["raw"])
            elif kind in ("block_html", "inline_html"):
                html.append(token["raw"])
            elif kind == "heading":
                headings.append(text_of(token))
            else:
                other.append(token.get("raw", ""))
                walk(token.get("children", []))
            if kind == "link":
                other.append(token["attrs"]["url"])

    walk(mistune.create_markdown(escape=False, renderer=None)(text))
    return code, html, headings, other


def assert_learner_text_is_code(markdown: str) -> None:
    code, html, headings, other = markdown_parts(markdown)
    assert any(HOSTILE in block for block in code), code  # whole, unchanged, inside one code block
    assert not [h for h in html if h.strip() not in ("<details><summary>What your notebook printed while it ran"
                                                     "</summary>", "</details>")], html
    assert not [h for h in headings if "PWNED" in h], headings
    assert not [t for t in other if "PWNED" in t or "<script>" in t], other


def test_learner_text_stays_inside_code_blocks_in_feedback(graded: Graded) -> None:
    data = graded.results(HTML_NAME)
    assert data["score"] == INJECTION_SCORE and data["extra_data"]["redis_workbook"]["status"] == "graded"
    page = graded.feedback(HTML_NAME)
    assert_learner_text_is_code(page)
    code, _, headings, _ = markdown_parts(page)
    assert headings[0] == f"{ASSIGNMENT}: feedback for {HTML_NAME}"  # the name, as text: not an <img> tag
    assert sum(HOSTILE in block for block in code) >= 3  # the cell's error, a check's message, the print


def test_learner_text_stays_inside_code_blocks_in_gradescope_output(graded: Graded) -> None:
    data = graded.results(HTML_NAME)
    assert data["output_format"] == "md"
    assert_learner_text_is_code(data["output"])
    failed = [t for t in data["tests"] if t["status"] == "failed"]
    assert failed and all(HOSTILE in t["output"] and t["output_format"] == "text" for t in failed)


def test_gradebook_cells_are_never_formulas(graded: Graded) -> None:
    rows = gradebook(graded.out)
    names = [row["student_id"] for row in rows]
    assert f"'{FORMULA}" in names and f"'{AT_FORMULA}" in names
    assert not [cell for row in rows for cell in row.values() if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert all(float(row["score"]) >= 0 and float(row["max_score"]) == MAX_SCORE for row in rows)  # numbers


# ---------------------------------------------------------------------------------------------- safe read
@pytest.mark.parametrize(("make", "says"), [
    (lambda p: os.symlink(REPO / "solutions" / f"{ASSIGNMENT}.ipynb", p), "is a link (symlink)"),
    (lambda p: os.symlink("/dev/zero", p), "is a link (symlink)"),
    (os.mkfifo, "is a named pipe (FIFO)"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: os.truncate(p.write_bytes(b"") or p, intake.MAX_NOTEBOOK_BYTES + 1), "is larger than 50 MB"),
])
def test_submission_load_reads_only_regular_files(tmp_path: Path, make: object, says: str) -> None:
    path = tmp_path / f"{ASSIGNMENT}.ipynb"
    make(path)  # type: ignore[operator]
    started = time.monotonic()
    assert says in str(submission.load(path).problem)
    assert time.monotonic() - started < 5


def test_a_device_is_not_read() -> None:
    assert "is a device" in str(submission.load(Path("/dev/zero")).problem)


def test_check_refuses_a_linked_notebook(tmp_path: Path) -> None:
    link = tmp_path / f"{ASSIGNMENT}.ipynb"
    os.symlink(REPO / "solutions" / f"{ASSIGNMENT}.ipynb", link)
    done = subprocess.run([sys.executable, "-m", "redis_workbook.cli", "check", str(link)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not a link" in done.stdout and "PASS" not in done.stdout


# ---------------------------------------------------------------------------------------------- SIGTERM
def test_sigterm_ends_grade_within_seconds_and_a_rerun_resumes(tmp_path: Path) -> None:
    """A FIFO first (it used to block a grading thread for ever), one quick notebook graded, one slow one running."""
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    (submitted / "a_fifo" / ASSIGNMENT).mkdir(parents=True)
    os.mkfifo(notebook_path(submitted, "a_fifo"))
    write_notebook(notebook_path(submitted, "b_quick"), GOOD)
    write_notebook(notebook_path(submitted, "c_slow"), GOOD, "import time\n\ntime.sleep(6)\n")
    command = grade_command(submitted, out, "--cell-timeout", "20")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = Descendants(process.pid)
    quick = out / "b_quick" / ASSIGNMENT / "results.json"
    deadline = time.monotonic() + 120
    while not (quick.exists() and len(descendants(process.pid)) > 2) and time.monotonic() < deadline:
        time.sleep(0.05)  # b_quick graded, c_slow's pytest, Redis and notebook running
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stopped = time.monotonic() - sent
    print(f"\ngrade stopped {stopped:.1f} s after SIGTERM")
    assert process.returncode == 130, stderr
    assert stopped < 8, stderr
    assert "Rerun the same command to resume" in stderr
    assert watch.survivors() == []
    assert (out / "gradebook.csv").exists() and not (out / "c_slow" / ASSIGNMENT / "results.json").exists()
    kept = {path: path.stat().st_mtime_ns for path in out.glob("*/*/results.json")}
    assert len(kept) == 2  # a_fifo (0) and b_quick
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # not graded again
    scores = {row["student_id"]: row["score"] for row in gradebook(out)}
    assert scores == {"a_fifo": "0", "b_quick": points.format_points(MAX_SCORE),
                      "c_slow": points.format_points(MAX_SCORE)}
