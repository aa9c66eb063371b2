"""The learner contract (docs/learner-api.md) kept true against the solutions and grader/points.toml."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from redis_workbook.grading import points

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "docs" / "learner-api.md"
POINTS = points.read(REPO / "grader" / points.POINTS_FILE)


def sections() -> dict[str, str]:
    """'01_setup' -> the text of its section."""
    parts = re.split(r"(?m)^## ", CONTRACT.read_text())[1:]
    return {part.split()[0]: part for part in parts}


def contract_functions(section: str) -> dict[str, list[str]]:
    """name -> its parameters as written in a function row (`name(a, b=1) -> ...`); methods are left out."""
    found = {}
    for table in re.findall(r"\| function \| behaviour \|\n\|---\|---\|\n((?:\|.*\|\n?)+)", section):
        for name, params in re.findall(r"(?m)^\| `(\w+)\((.*?)\)(?: ->[^`]*)?` \|", table):
            found[name] = [p.strip().replace('"', "'") for p in params.split(",") if p.strip()]
    return found


def contract_checks(section: str) -> dict[str, float]:
    return {name: float(points) for name, points in re.findall(r"(?m)^\| `(test_\w+)` \| ([\d.]+) \|$", section)}


def solution_functions(assignment: str) -> dict[str, list[str]]:
    """Public top-level functions and classes of the solution cells -> parameters (a class: its __init__'s)."""
    notebook = json.loads((REPO / "solutions" / f"{assignment}.ipynb").read_text())
    found = {}
    for cell in notebook["cells"]:
        if not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            continue
        for node in ast.parse("".join(cell["source"])).body:
            if isinstance(node, ast.ClassDef):
                init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
                node_args = init.args if init else ast.arguments([], [], None, [], [], None, [])
                found[node.name] = _parameters(node_args)[1:] if init else []
            elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                found[node.name] = _parameters(node.args)
    return found


def _parameters(args: ast.arguments) -> list[str]:
    names = [a.arg for a in args.args]
    defaults = [None] * (len(names) - len(args.defaults)) + list(args.defaults)
    return [name if default is None else f"{name}={ast.unparse(default)}" for name, default in zip(names, defaults)]


def test_every_assignment_has_a_section() -> None:
    assert sorted(sections()) == sorted(POINTS)


@pytest.mark.parametrize("assignment", sorted(POINTS))
def test_checks_and_points_match_points_toml(assignment: str) -> None:
    section = sections()[assignment]
    assert contract_checks(section) == POINTS[assignment]
    assert f"Checks ({sum(POINTS[assignment].values()):g} points)" in section


@pytest.mark.parametrize("assignment", sorted(POINTS))
def test_functions_match_the_solutions(assignment: str) -> None:
    written = contract_functions(sections()[assignment])
    assert written, f"no function rows for {assignment}"
    assert written == solution_functions(assignment)
