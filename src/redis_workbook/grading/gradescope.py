"""`redis-workbook gradescope ASSIGNMENT --out autograder.zip`: a Gradescope autograder for one assignment.

The zip holds (Gradescope's autograder specification: setup.sh and run_autograder at its root):

- `setup.sh`: run once by Gradescope, as root, on its Ubuntu base image with internet, to build the
  image: Python from apt, a venv in /opt/redis-workbook, this project's wheel (also in the zip) with its
  dependencies from PyPI; the package's own copy of the course (grader and solutions) made root-only; a
  check that the embedded Redis starts.
- `run_autograder`: run for every submission, as root, in /autograder. It calls `main` below:
  /autograder is made root-only first (so learner code can neither read /autograder/source, the
  grader's checks and reference answers, nor write /autograder/results/results.json, a forged grade),
  the learner's notebook is found in /autograder/submission and graded by `redis-workbook grade`
  itself (the embedded backend and the same sandbox), and its results.json, Gradescope's format,
  is copied to /autograder/results/results.json.
- `grader/`: the checks, points.toml and reference answers of the grader this command found (the
  repository's, a course folder's, or REDIS_WORKBOOK_GRADER).
- the wheel: built from the checkout (`pip wheel --no-deps`) when this package runs from one, else
  rebuilt from the installed package's own files (its RECORD), or the one given with `--wheel`.

The sandbox on Gradescope: a default Docker container (root without CAP_SYS_ADMIN, Docker's seccomp
profile) forbids every namespace, so `grade`'s namespaces cannot be entered there (checked in a
container here). Then learner code runs in the "uid" mode (sandbox.py): a uid of its own with no
capabilities, a system-call filter, Unix sockets only (no network: Redis through the gateway), and
only after checking, as that uid, that the grader's files are out of its reach; /autograder is
root-only by then. Where namespaces work, `grade` uses them as everywhere. Without root and without
namespaces nothing is safe: no learner code runs and results.json says why (not a 0 in disguise:
the output says it was not graded).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from redis_workbook import coursefolder
from redis_workbook.grading import intake, options, points, sandbox
from redis_workbook.grading.results import NOT_GRADED, Record, gradescope, private_dirs, write_json_atomic

VENV = "/opt/redis-workbook"
STUDENT = "submission"  # the one student folder run_autograder grades
GRADESCOPE_LIMIT_S = 600  # Gradescope's default autograder timeout (10 minutes), settable per assignment
SUBMISSION_TIMEOUT_S = 420.0  # + grade's 120 s grace for its own work stays within that limit
PASSED_ON = ("submission_timeout", "cell_timeout", "call_timeout")  # grade's options the zip sets
SKIPPED_FOLDERS = {".ipynb_checkpoints", "__MACOSX", "__pycache__"}

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu base image (with internet) to build the autograder.
# Built by `redis-workbook gradescope {assignment}` (redis-workbook {version}).
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
python3 -m venv {venv}
{venv}/bin/python -m pip install --quiet --upgrade pip
{venv}/bin/python -m pip install --quiet ./{wheel}
# Learner code must not read the package's own copy of the course (grader, solutions): root only.
package=$({venv}/bin/python -I -c 'import os, redis_workbook; print(os.path.dirname(redis_workbook.__file__))')
chmod -R go-rwx "$package/course"
chmod 700 /autograder /autograder/source
# Fails the build here, not at the first submission, if the embedded Redis cannot start on this image.
{venv}/bin/python -I -m redis_workbook.grading.gradescope --self-test
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission, as root, in /autograder; it writes /autograder/results/results.json.
# Built by `redis-workbook gradescope {assignment}` (redis-workbook {version}).
cd /
exec {venv}/bin/python -I -m redis_workbook.grading.gradescope {arguments}
"""


class BuildProblem(Exception):
    """The zip cannot be built; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------- building the zip
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("assignment", metavar="ASSIGNMENT", help="the assignment id, e.g. 06_recommender")
    parser.add_argument("--out", required=True, metavar="ZIP", help="the autograder to write, e.g. autograder.zip")
    parser.add_argument("--wheel", metavar="WHEEL", help="the redis-workbook wheel to install on Gradescope (default: "
                        "built from the checkout, or rebuilt from the installed package)")
    options.add(parser, *PASSED_ON, defaults={"submission_timeout": SUBMISSION_TIMEOUT_S},
                notes={"submission_timeout": f"(default here {SUBMISSION_TIMEOUT_S:g}: with the grader's own 120 s it "
                       f"stays within Gradescope's default {GRADESCOPE_LIMIT_S // 60}-minute limit; raise both "
                       "together)"})


def run(args: argparse.Namespace) -> int:
    try:
        grader = points.grader_dir()
        if args.assignment not in points.assignments(grader):
            raise BuildProblem(f"unknown assignment {args.assignment!r}: {grader / points.POINTS_FILE} knows "
                               f"{', '.join(points.assignments(grader))}.")
        passed = options.passed_on(args, *PASSED_ON)
        with tempfile.TemporaryDirectory(prefix="redis-workbook-gradescope-") as work:
            wheel = Path(args.wheel) if args.wheel else find_wheel(Path(work))
            if not wheel.is_file() or not wheel.name.endswith(".whl"):
                raise BuildProblem(f"--wheel {wheel} is not a wheel file (.whl).")
            out = build_zip(Path(args.out), args.assignment, grader, wheel, passed)
    except (BuildProblem, points.GraderNotFound) as exc:
        print(f"redis-workbook gradescope: {exc}", file=sys.stderr)
        return 2
    size = out.stat().st_size / 1e6
    print(f"Wrote {out} ({size:.1f} MB): upload it as the autograder of a Gradescope programming assignment "
          f"(base image Ubuntu 22.04 or later) whose learners submit {args.assignment}.ipynb. See the README, "
          "section Gradescope.")
    return 0


def build_zip(out: Path, assignment: str, grader: Path, wheel: Path, passed: list[str]) -> Path:
    """The autograder zip: setup.sh and run_autograder (executable), the wheel, grader/."""
    version = importlib.metadata.version("redis-workbook")
    arguments = " ".join(shlex.quote(word) for word in [assignment, *passed])
    texts = {"setup.sh": SETUP_SH.format(assignment=assignment, version=version, venv=VENV, wheel=wheel.name),
             "run_autograder": RUN_AUTOGRADER.format(assignment=assignment, version=version, venv=VENV,
                                                     arguments=arguments)}
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in texts.items():
            _add(archive, name, text.encode(), 0o755)
        _add(archive, wheel.name, wheel.read_bytes(), 0o644)
        for relative in coursefolder.files(grader.parent):
            if relative.parts[0] == "grader" and relative.parts[:2] != ("grader", "course"):
                _add(archive, relative.as_posix(), (grader.parent / relative).read_bytes(), 0o644)
    os.replace(temporary, out)
    return out


def _add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # the same inputs give the same zip
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def find_wheel(work: Path) -> Path:
    """This package as a wheel: built from the checkout it runs from, else rebuilt from the installed files."""
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "redis_workbook").is_dir():
        return build_from_checkout(checkout, work)
    return rebuild_installed(work)


def build_from_checkout(checkout: Path, work: Path) -> Path:
    """`pip wheel --no-deps` of the checkout: with this environment's setuptools when it has a recent one (offline),
    else in pip's build isolation (downloads setuptools)."""
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(checkout)]
    try:
        from setuptools import __version__ as setuptools_version

        isolated = int(setuptools_version.split(".")[0]) < 77
    except ImportError:
        isolated = True
    done = subprocess.run(command if isolated else [*command, "--no-build-isolation"], capture_output=True, text=True)
    wheels = sorted(work.glob("redis_workbook-*.whl"))
    if done.returncode != 0 or not wheels:
        raise BuildProblem(f"building the wheel from {checkout} failed ({done.stderr.strip()[-1500:]}); build one "
                           "with `pip wheel --no-deps .` and pass it with --wheel.")
    return wheels[0]


def rebuild_installed(work: Path) -> Path:
    """A wheel of the installed distribution, from the files its RECORD lists (the package, its course copy and
    dist-info), with a fresh RECORD; pip's own INSTALLER, REQUESTED and direct_url.json left out."""
    dist = importlib.metadata.distribution("redis-workbook")
    files = [f for f in dist.files or [] if not f.as_posix().startswith("..") and "__pycache__" not in f.parts]
    info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info is None or not any(f.parts[0] == "redis_workbook" for f in files):
        raise BuildProblem("this redis-workbook is not installed from a wheel (an editable install outside its "
                           "checkout?): pass the wheel with --wheel.")
    version = dist.version
    wheel = work / f"redis_workbook-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(files, key=lambda f: f.as_posix()):
            name = file.as_posix()
            if name.endswith(("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")) and file.parts[0] == info:
                continue
            data = Path(dist.locate_file(file)).read_bytes()
            archive.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


# ---------------------------------------------------------------------------------------------- on Gradescope
class NoSafeSandbox(Exception):
    """Neither namespaces nor root: learner code cannot be confined here."""


def choose_sandbox() -> str:
    """grade's --sandbox: namespaces where they work (auto), else the uid mode as root; NoSafeSandbox otherwise."""
    mode, why = sandbox.mode()
    if mode != "none":
        return "auto"
    if os.geteuid() == 0:
        print(f"No namespaces in this container ({why}): grading in the sandbox's uid mode.", flush=True)
        return "uid"
    raise NoSafeSandbox(f"the autograder runs as uid {os.geteuid()}, not root, and cannot use namespaces ({why}), so "
                        "the learner's code cannot be confined and was not run")


def gather(submission: Path, target: Path, assignment: str) -> None:
    """Every notebook of the submission, at any depth, into `target` (grade's <student>/<assignment>/ folder).

    Nothing is followed: a regular file is copied (one bounded read), a link is copied as a link so that
    grade's intake refuses it with its message (a link to the reference answers scores 0). Of two with one
    name the shallowest wins. grade then takes `<assignment>.ipynb`, or the only notebook there is.
    """
    private_dirs(target)
    candidates = []
    for folder, folders, names in os.walk(submission):  # links to folders are listed, never entered
        folders[:] = [f for f in folders if not f.startswith(".") and f not in SKIPPED_FOLDERS]
        candidates += [Path(folder) / n for n in names if n.endswith(".ipynb") and not n.startswith(".")]
    found: dict[str, Path] = {}
    for path in sorted(candidates, key=lambda p: (len(p.parts), str(p))):
        found.setdefault(path.name, path)
    for name, path in found.items():
        if path.is_symlink():
            os.symlink(os.readlink(path), target / name)
            continue
        try:
            data = intake.read_regular(path, intake.MAX_NOTEBOOK_BYTES)
        except (intake.Refused, OSError):
            continue  # a FIFO or device: not a notebook (grade then says which notebook it expected)
        (target / name).write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    """run_autograder's work: grade /autograder/submission, write /autograder/results/results.json."""
    parser = argparse.ArgumentParser(prog="python -m redis_workbook.grading.gradescope")
    parser.add_argument("assignment", nargs="?")
    parser.add_argument("--root", default="/autograder", help="Gradescope's folder (tests use another)")
    options.add(parser, *PASSED_ON, defaults={"submission_timeout": SUBMISSION_TIMEOUT_S})
    parser.add_argument("--self-test", action="store_true", help="check that the embedded Redis starts (setup.sh)")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.assignment:
        parser.error("name the assignment, e.g. 06_recommender")
    root = Path(args.root)
    grader = root / "source" / "grader"
    started = time.monotonic()
    try:
        os.chmod(root, 0o700)  # before any learner code: /autograder/source and results are the grader's alone
        report = grade_submission(args, root, grader)
    except NoSafeSandbox as exc:
        report = not_graded(args.assignment, grader, str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever broke, the learner gets a results.json that says so
        report = not_graded(args.assignment, grader, f"the autograder failed ({type(exc).__name__}: {exc})")
    report["execution_time"] = round(time.monotonic() - started)
    write_json_atomic(root / "results" / "results.json", report)
    state = report["extra_data"]["redis_workbook"]["status"]
    print(f"results.json written: {state}, score {report['score']} "
          f"in {report['execution_time']} s", flush=True)
    return 0


def grade_submission(args: argparse.Namespace, root: Path, grader: Path) -> dict:
    """`redis-workbook grade` on a class of one; its results.json, or a not-graded one saying why."""
    mode = choose_sandbox()
    with tempfile.TemporaryDirectory(prefix="redis-workbook-gradescope-") as work:
        submitted, out = Path(work) / "submitted", Path(work) / "out"
        gather(root / "submission", submitted / STUDENT / args.assignment, args.assignment)
        command = [sys.executable, "-I", "-m", "redis_workbook.cli", "grade", str(submitted), "--out", str(out),
                   "--sandbox", mode, *options.passed_on(args, *PASSED_ON)]
        env = {**os.environ, points.GRADER_ENV: str(grader)}
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        print(done.stdout[-20000:], flush=True)  # run_autograder's stdout: the instructor's log on Gradescope
        results = out / STUDENT / args.assignment / "results.json"
        if results.is_file():
            return json.loads(results.read_text(encoding="utf-8"))
        tail = done.stdout.strip().splitlines()[-5:]
        return not_graded(args.assignment, grader, f"grade ended with exit code {done.returncode} and wrote no "
                                                   f"results: {' / '.join(tail)}")


def not_graded(assignment: str | None, grader: Path, reason: str) -> dict:
    """Gradescope's results.json for a submission the grader could not grade (0 shown, saying it is not a grade)."""
    try:
        max_score = sum(points.read(grader / points.POINTS_FILE).get(assignment or "", {}).values())
    except (OSError, ValueError):
        max_score = None
    print(f"NOT GRADED: {reason}", flush=True)
    return gradescope(Record(STUDENT, assignment or "", status=f"{NOT_GRADED}: {reason}", max_score=max_score), None)


def self_test() -> int:
    """setup.sh's last step: the embedded Redis starts with the query engine on this image; the sandbox mode."""
    from redis_workbook.server import EmbeddedRedis

    with EmbeddedRedis() as server:
        modules = {m["name"] for m in server.client(decode_responses=True).module_list()}
    mode, why = sandbox.mode()
    print(f"redis-workbook autograder ready: embedded Redis with {', '.join(sorted(modules))}; sandbox: "
          + (mode if mode != "none" else f"uid mode as root (no namespaces here: {why})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
