"""The package reads as layers: the library notebooks import, the commands, and the grader.

- library: what a notebook imports (finding Redis, embeddings, schemas, loading, reports, datasets,
  the local OpenAI-compatible server, perf) and where the course's files are (coursefolder). It imports
  no command and nothing of grading/.
- commands: one module per `redis-workbook` command (cli, lab, release, bench with bench_grading; `server`
  and `course` are the library modules server and coursefolder). They may import the library and grading/.
- grading/: the autograder. It imports the library, never a command. Its learner side (worker, sandbox,
  wire) imports nothing of the grader's side: the two share only `wire` and `markers` (codecs).

Test infrastructure (a private Docker engine, images, throwaway users) lives in tests/, not in the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "redis_workbook"
COMMANDS = {"cli", "lab", "release", "bench", "bench_grading"}
LEARNER_SIDE = {"grading.worker", "grading.sandbox", "grading.wire"}
SHARED = LEARNER_SIDE | {"grading", "grading.markers"}  # the package's __init__ imports nothing; markers: a codec


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] in ("__init__", "__main__") else parts) or "redis_workbook"


def imports(path: Path) -> set[str]:
    """The package's modules `path` imports (as `grading.box`, `schema`, ...), at any depth in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("redis_workbook"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith("redis_workbook."):
                found.add(name.removeprefix("redis_workbook."))
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def test_the_library_imports_no_command_and_no_grading() -> None:
    library = {m for m in graph() if m not in COMMANDS and not m.startswith("grading")}
    assert "server" in library and "schema" in library  # the split is real
    bad = {m: sorted(d for d in deps if d in COMMANDS or d.startswith("grading"))
           for m, deps in graph().items() if m in library}
    assert {m: d for m, d in bad.items() if d} == {}


def test_grading_imports_no_command() -> None:
    bad = {m: sorted(deps & COMMANDS) for m, deps in graph().items() if m.startswith("grading")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_learner_side_shares_only_wire_with_the_graders_side() -> None:
    bad = {m: sorted(d for d in deps if d.startswith("grading") and d not in SHARED)
           for m, deps in graph().items() if m in LEARNER_SIDE}
    assert {m: d for m, d in bad.items() if d} == {}


def test_test_infrastructure_is_not_in_the_package() -> None:
    tests = Path(__file__).resolve().parent
    for name in ("dockerd.py", "docker_image.py", "ordinary_user.py"):
        assert (tests / name).exists() and not list(PACKAGE.rglob(name))
