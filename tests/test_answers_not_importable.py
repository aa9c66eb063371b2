"""Issue 8, "answers importable": the package learners import holds no graded function, under any name.

The names come from the solutions (every function or class a solution cell defines) and the
grader's points file; the reference answers the checks compare with live in grader/reference.py.
The hostile notebooks import the package's former twins, as a learner would have, and must score 0.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import nbformat
import pytest
from submissions import REPO, write_notebook

import redis_workbook
from redis_workbook.grading import points

# Functions the package once held that passed graded checks (directly or with the arguments reordered).
FORMER_TWINS = ("loaded_search_version", "recall_at_k", "mean_recall", "to_bytes", "as_vector", "load_hashes",
                "product_index", "post_index", "vector_bytes")


@cache
def graded_by_assignment() -> dict[str, frozenset[str]]:
    """Per assignment in grader/points.toml, every function or class its solution cells define (the learner's)."""
    found = {}
    for assignment in points.read(REPO / "grader" / "points.toml"):
        names: set[str] = set()
        for cell in nbformat.read(REPO / "solutions" / f"{assignment}.ipynb", as_version=4).cells:
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
                names |= {node.name for node in ast.parse(cell.source).body
                          if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        found[assignment] = frozenset(names)
    return found


def graded_names() -> set[str]:
    return set().union(*graded_by_assignment().values())


def package_modules() -> list[str]:
    found = [redis_workbook.__name__]
    for module in pkgutil.walk_packages(redis_workbook.__path__, prefix="redis_workbook."):
        if not module.name.endswith("__main__"):
            found.append(module.name)
    return found


def test_the_graded_names_are_the_learner_contract() -> None:
    names = graded_names()
    assert {"search_module_version", "vector_to_bytes", "create_product_index", "load_products", "knn_search",
            "distance_to_similarity", "hybrid_search", "SemanticCache", "track_view", "get_recommendations",
            "similar_products", "load_posts", "search_posts", "answer", "recall_at_k"} <= names
    assert all(graded_by_assignment().values()), "every graded notebook's solution defines the learner's functions"


@pytest.mark.parametrize("module_name", package_modules())
def test_no_graded_name_is_importable_from_the_package(module_name: str) -> None:
    module = importlib.import_module(module_name)
    present = sorted(name for name in graded_names() | set(FORMER_TWINS) if hasattr(module, name))
    assert not present, (f"{module_name} defines {present}: a learner could import the answer. Keep the reference "
                         "in grader/reference.py and give the package's own code another contract.")


HOSTILE = {
    "01_setup": "from redis_workbook.connection import loaded_search_version as search_module_version\n",
    "08_performance": "from redis_workbook.perf import recall_at_k\n",
}


@pytest.mark.parametrize("assignment", sorted(HOSTILE))
def test_importing_a_former_twin_scores_nothing(tmp_path: Path, assignment: str) -> None:
    total = points.format_points(sum(points.read(REPO / "grader" / "points.toml")[assignment].values()))
    notebook = write_notebook(tmp_path / f"{assignment}.ipynb", "import redis\n", HOSTILE[assignment])
    done = subprocess.run([sys.executable, "-m", "redis_workbook.cli", "check", str(notebook)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"Total: 0/{total} points" in done.stdout, done.stdout
    assert "PASS" not in done.stdout, done.stdout
