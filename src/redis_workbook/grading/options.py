"""The grading options, each declared once: flag, type, default and help.

`redis-workbook check`, `grade` and `gradescope` and the pytest plugin that grades one notebook
take the ones they need (`add`, on an argparse parser or a pytest option group alike), and a command
hands its values on to the plugin's pytest run by the same flags (`passed_on`). The defaults come
from `workerprocess.Settings`, the one place the engine's limits are set.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis_workbook.grading import backends, workerprocess

# What a command hands the plugin's pytest process in its environment, not on a command line others can read.
ADMIN_URL_ENV = "REDIS_WORKBOOK_ADMIN_URL"  # --redis-url, with its password
PARENT_ENV = "REDIS_WORKBOOK_PARENT_PID"  # the process whose death ends the grading process


class UsageProblem(Exception):
    """Bad arguments or input from the person running a command: one line, exit code 2."""


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    type: type | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


_DEFAULTS = workerprocess.Settings()
OPTIONS = {option.dest: option for option in (
    Option("--backend", "the Redis to test against: a fresh embedded server per submission (default), a container "
           "per submission (the containers extra), or --redis-url", choices=backends.BACKENDS, default="embedded"),
    Option("--redis-url", "with --backend url: that Redis (emptied with FLUSHALL before every test)"),
    Option("--cell-timeout", "seconds per notebook cell", float, _DEFAULTS.cell_timeout),
    Option("--notebook-timeout", "seconds for all of a notebook's cells", float, _DEFAULTS.notebook_timeout),
    Option("--call-timeout", "seconds per call into the notebook", float, _DEFAULTS.call_timeout),
    Option("--memory-mb", "memory (address space) of each notebook process; its cgroup box adds its Redis servers",
           int, _DEFAULTS.limits.memory_mb),
    Option("--submission-timeout", "seconds the learner's code of one submission may take in all, cells and calls "
           "together (the grader's own work gets a fixed grace on top)", float, _DEFAULTS.budget),
    Option("--hide", "another path learner code must not see (repeatable)", metavar="PATH", repeatable=True),
)}


def add(parser: Any, *names: str, defaults: dict[str, Any] | None = None, notes: dict[str, str] | None = None) -> None:
    """Declare the options `names` on an argparse parser or a pytest option group; `defaults` override theirs,
    `notes` add to their help (why a command's default differs)."""
    declare = parser.addoption if hasattr(parser, "addoption") else parser.add_argument
    defaults, notes = defaults or {}, notes or {}
    for name in names:
        option = OPTIONS[name]
        kwargs: dict[str, Any] = {"help": " ".join(filter(None, (option.help, notes.get(name)))),
                                  "default": defaults.get(name, [] if option.repeatable else option.default)}
        kwargs |= {key: value for key, value in (("type", option.type), ("choices", option.choices),
                                                 ("metavar", option.metavar)) if value is not None}
        if option.repeatable:
            kwargs["action"] = "append"
        elif kwargs["default"] is not None:
            kwargs["help"] += " (default: %(default)s)"
        declare(option.flag, **kwargs)


def passed_on(args: argparse.Namespace, *names: str) -> list[str]:
    """The pytest arguments that hand these options' values on to the plugin (a None value: its default)."""
    found = []
    for name in names:
        option, value = OPTIONS[name], getattr(args, name, None)
        for one in (value or []) if option.repeatable else [] if value is None else [value]:
            found.append(f"{option.flag}={one:g}" if isinstance(one, float) else f"{option.flag}={one}")
    return found


def pytest_base(rootdir: Path) -> list[str]:
    """What every grading pytest run starts with, in-process (check) or a process per submission (grade): our
    plugin, no cache, unique module names, and without pytest's unraisable-exception plugin, whose clean-up runs
    gc.collect() several times per session (in a notebook's kernel, with its large heap, that was most of each
    check cell's time)."""
    return ["-p", "redis_workbook.grading.plugin", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
            "--rootdir", str(rootdir), "--import-mode=importlib"]
