"""`redis-workbook`: one command per job; each lives in its own module.

Every command module has `add_arguments(parser)` and `run(args) -> int`; they are
imported only when chosen, so `redis-workbook --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "course": ("redis_workbook.coursefolder", "write a fresh course folder: notebooks, solutions, grader"),
    "lab": ("redis_workbook.lab", "start Redis and open JupyterLab on notebooks/"),
    "server": ("redis_workbook.server", "run the embedded Redis in the foreground"),
    "release": ("redis_workbook.release", "generate notebooks/ from solutions/ with nbgrader"),
    "check": ("redis_workbook.grading.check", "self-check one notebook: pass or fail per test"),
    "grade": ("redis_workbook.grading.grade", "grade a folder of submissions into a gradebook"),
    "gradescope": ("redis_workbook.grading.gradescope", "build a Gradescope autograder zip for one assignment"),
    "merge": ("redis_workbook.grading.shards", "join the OUT folders of `grade --shard I/N` runs into one gradebook"),
    "bench": ("redis_workbook.bench", "measure load, KNN latency, recall and memory"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redis-workbook", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.set_defaults(module=module)
        # Arguments come from the command's module; import only the chosen one's.
        if argv_command(argv) == name:
            importlib.import_module(module).add_arguments(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args.module).run(args) or 0)


def argv_command(argv: list[str] | None) -> str | None:
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    return words[0] if words else None


if __name__ == "__main__":
    sys.exit(main())
