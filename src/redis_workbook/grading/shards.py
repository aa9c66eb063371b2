"""Grading a class in shards: `grade --shard I/N` grades a stable part of it, `merge` joins the parts.

A student belongs to shard `sha256(student_id) mod N` (0-based, so a Kubernetes indexed Job's
JOB_COMPLETION_INDEX is I), with all their assignments: the split does not depend on the
machine, the order or on which other students submitted. A shard run that finishes writes
OUT/shard.json: which shard it is, the class it was cut from (a digest of every student id
in SUBMITTED_DIR), the tests' fingerprint and the submissions it graded.

`redis-workbook merge OUT_0 OUT_1 ... --out OUT` checks that the folders are the N shards of
one class graded with the same tests, each once, and only then writes OUT: every shard's
<student>/<assignment>/ folders and the gradebook rebuilt from them, the same as one
`grade` of the whole class. Merging again replaces a previous merge's OUT; anything wrong
(a shard missing, given twice, unfinished, from another class or tests) is an error that
says what to do, and nothing is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from redis_workbook.grading.results import private_dirs, write_gradebook, write_json_atomic

SHARD_FILE = "shard.json"
MERGED_FILE = "merged.json"
MARKER_KEYS = {"shard", "of", "class", "tests", "submissions"}


class ShardProblem(Exception):
    """Shards that do not add up to one class, or an OUT that holds another shard (exit code 2, nothing written)."""


def parse(text: str) -> tuple[int, int]:
    """'1/3' -> (1, 3); argparse's type for --shard."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: give I/N with 0 <= I < N, e.g. 0/3 (in a Kubernetes indexed Job: "
                                         "$(JOB_COMPLETION_INDEX)/N)")
    return index, count


def shard_of(student: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(student.encode()).digest()[:8], "big") % count


def class_digest(students: set[str]) -> str:
    return hashlib.sha256("\0".join(sorted(students)).encode()).hexdigest()[:16]


def check_out(out: Path, shard: tuple[int, int] | None) -> None:
    """A shard's OUT must not hold another shard's results (their gradebooks would mix): ShardProblem if it does."""
    try:
        found = json.loads((out / SHARD_FILE).read_text(encoding="utf-8"))
    except OSError:
        return
    except ValueError:
        raise ShardProblem(f"{out / SHARD_FILE} is not valid JSON; remove it or use another --out.") from None
    spec = f"{found.get('shard')}/{found.get('of')}"
    if shard is None or (found.get("shard"), found.get("of")) != shard:
        wanted = f"shard {shard[0]}/{shard[1]}" if shard else "the whole class"
        raise ShardProblem(f"--out {out} holds the results of shard {spec}; grade {wanted} into another --out.")


def write_marker(out: Path, shard: tuple[int, int], students: set[str], tests: str,
                 submissions: list[tuple[str, str]]) -> None:
    marker = {"shard": shard[0], "of": shard[1], "class": class_digest(students), "tests": tests,
              "submissions": sorted(map(list, submissions))}
    assert marker.keys() == MARKER_KEYS
    write_json_atomic(out / SHARD_FILE, marker)


def plan(folders: list[Path]) -> list[tuple[Path, str, str]]:
    """(shard OUT, student, assignment) for every submission of the class; ShardProblem when they do not add up."""
    markers: list[tuple[Path, dict]] = []  # a list: the same folder given twice counts twice
    for folder in folders:
        try:
            marker = json.loads((folder / SHARD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            marker = None
        if not isinstance(marker, dict) or not MARKER_KEYS <= marker.keys():
            raise ShardProblem(f"{folder} has no readable {SHARD_FILE}: it is not the OUT of a finished "
                               "`grade --shard I/N` run. Rerun that shard (it resumes) and merge again.")
        markers.append((folder, marker))
    first, marker = markers[0]
    for key, what in (("of", "split into different numbers of shards"), ("class", "cut from different classes "
                      "(SUBMITTED_DIR differed)"), ("tests", "graded with different tests")):
        other = next((f for f, m in markers if m.get(key) != marker.get(key)), None)
        if other is not None:
            raise ShardProblem(f"{first} and {other} were {what}; grade every shard of one class with the same "
                               "tests and --shard I/N.")
    count = marker["of"]
    by_index: dict[int, list[Path]] = {}
    for folder, each in markers:
        by_index.setdefault(each["shard"], []).append(folder)
    twice = {i: f for i, f in by_index.items() if len(f) > 1}
    if twice:
        i, given = min(twice.items())
        raise ShardProblem(f"shard {i}/{count} given twice: {', '.join(map(str, given))}; pass each shard's OUT once.")
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise ShardProblem(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{i}/{count}' for i in missing)} "
                           f"missing: grade {'them' if len(missing) > 1 else 'it'} with --shard I/{count} and pass "
                           "every shard's OUT.")
    todo, seen = [], {}
    for folder, each in sorted(markers, key=lambda item: item[1]["shard"]):
        for student, assignment in each["submissions"]:
            if (student, assignment) in seen:
                raise ShardProblem(f"{student}/{assignment} is in both {seen[student, assignment]} and {folder}.")
            if not (folder / student / assignment / "results.json").is_file():
                raise ShardProblem(f"{folder / student / assignment / 'results.json'} is missing: rerun that shard "
                                   "(it resumes) and merge again.")
            seen[student, assignment] = folder
            todo.append((folder, student, assignment))
    return todo


def merge(folders: list[Path], out: Path) -> Path:
    """Check the shards, then write OUT (replacing a previous merge's); the gradebook's path."""
    if out.exists() and any(out.iterdir()) and not (out / MERGED_FILE).is_file():
        raise ShardProblem(f"--out {out} exists and is not the output of a merge; name a new folder.")
    if out.resolve() in {f.resolve() for f in folders}:
        raise ShardProblem(f"--out {out} is one of the shards; name a new folder.")
    todo = plan(folders)
    private_dirs(out.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # 0700, next to OUT: one rename
    try:
        for folder, student, assignment in todo:
            private_dirs(staging / student)
            shutil.copytree(folder / student / assignment, staging / student / assignment)
        write_json_atomic(staging / MERGED_FILE, {"shards": [str(f.resolve()) for f in folders]})
        write_gradebook(staging)
        if out.exists():
            previous = out.with_name(f".{out.name}.previous-{os.getpid()}")
            out.rename(previous)
            staging.rename(out)
            shutil.rmtree(previous)
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "gradebook.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", metavar="SHARD_OUT", help="the OUT folder of each `grade --shard I/N`")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="where the merged results and gradebook go")


def run(args: argparse.Namespace) -> int:
    try:
        gradebook = merge([Path(f) for f in args.shards], Path(args.out))
    except ShardProblem as exc:
        print(f"redis-workbook merge: {exc} Nothing was written.", file=sys.stderr)
        return 2
    print(f"merged {len(args.shards)} shards; gradebook: {gradebook}")
    return 0
