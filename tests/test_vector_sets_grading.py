"""Notebook 09 graded where learners are graded: Redis 8 vector sets under the restricted learner user, and
`redis-workbook check` (sandboxed) giving the solution full marks and a one-mistake notebook all but one check."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from grader_mutants import MUTANTS
from submissions import REPO, write_notebook
from test_grading_check import run_check

from redis_workbook import datasets
from redis_workbook.grading import backends, points

sys.path.insert(0, str(REPO / "grader"))
import reference  # noqa: E402
from feedback import ShippedModel  # noqa: E402

ASSIGNMENT = "09_vector_sets"
POINTS = points.read(REPO / "grader" / "points.toml")[ASSIGNMENT]
TOTAL = sum(POINTS.values())
SHOWN = points.format_points(TOTAL)
SCORE = re.compile(r"Total: ([0-9.]+)/([0-9.]+) points")


@pytest.fixture(scope="module")
def learner() -> Iterator[redis.Redis]:
    """A client of the grader's Redis logged in as the learner user (LEARNER_RULES), as learner code is."""
    server = backends.start("embedded")
    client = redis.Redis.from_url(server.learner_url)
    yield client
    client.close()
    server.stop()


def test_the_learner_user_may_run_every_vector_set_command(learner: redis.Redis) -> None:
    """Every command notebook 09 and its exercises send, run for real as the learner user."""
    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    attributes = json.dumps({"category": "Home & Kitchen", "price": 12.5})
    assert learner.execute_command("ACL", "WHOAMI").decode().startswith("workbook-learner-")
    assert learner.execute_command("VADD", "v", "FP32", vector.tobytes(), "a", "NOQUANT", "SETATTR", attributes)
    assert learner.execute_command("VADD", "v", "VALUES", 8, *(-vector).tolist(), "b", "NOQUANT")
    pipe = learner.pipeline(transaction=False)
    pipe.vset().vadd("w", vector.tobytes(), "a", attributes={"category": "Audio"})
    assert pipe.execute() == [True]
    assert learner.execute_command("VCARD", "v") == 2 and learner.execute_command("VDIM", "v") == 8
    assert learner.execute_command("VINFO", "v")[b"quant-type"] == b"f32"
    assert len(learner.execute_command("VEMB", "v", "a")) == 8
    assert learner.execute_command("VSETATTR", "v", "b", json.dumps({"category": "Books"}))
    assert learner.execute_command("VGETATTR", "v", "a") == json.loads(attributes)
    assert learner.execute_command("VSIM", "v", "ELE", "a", "COUNT", 2, "EF", 50) == [b"a", b"b"]
    assert learner.execute_command("VSIM", "v", "FP32", vector.tobytes(), "COUNT", 2,
                                   "FILTER", '.category == "Home & Kitchen"') == [b"a"]
    assert learner.vset().vsim("v", "b", count=2, filter='.category == "Books"') == [b"b"]
    assert learner.memory_usage("v", samples=0) > 0
    assert learner.execute_command("VREM", "v", "b") and learner.execute_command("VCARD", "v") == 1


def test_check_gives_the_solution_full_marks() -> None:
    done = run_check(str(REPO / "solutions" / f"{ASSIGNMENT}.ipynb"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and f"Total: {SHOWN}/{SHOWN} points" in done.stdout, done.stdout


def test_check_a_notebook_with_one_mistake_loses_exactly_that_check(tmp_path: Path) -> None:
    mutant = next(m for m in MUTANTS if m.name == "similar_in_category over-fetches and filters in Python")
    done = run_check(str(write_notebook(tmp_path / f"{ASSIGNMENT}.ipynb", mutant.source())))
    assert done.returncode == 1, done.stdout + done.stderr
    failed = re.findall(r"^FAIL  (\S+)", done.stdout, flags=re.MULTILINE)
    assert failed == [mutant.check], done.stdout
    score = SCORE.search(done.stdout)
    assert score is not None, done.stdout
    assert float(score.group(1)) == TOTAL - POINTS[mutant.check] and float(score.group(2)) == TOTAL, done.stdout


def test_vsim_finds_the_exact_neighbours_the_checks_expect(r: redis.Redis) -> None:
    """The 09 similarity checks compare with numpy's exact rankings: on the grader's set (250 products,
    NOQUANT) VSIM must find exactly those, with and without FILTER, for every product."""
    products = datasets.products()
    vectors = np.asarray(datasets.embeddings("products", ShippedModel()), dtype=np.float64)
    reference.load_product_set(r, "vset:products", products, vectors)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [p["id"] for p in products]
    for row, product in enumerate(products):
        cosine = unit @ unit[row]
        for count, expression in ((13, None), (8, f".category == {json.dumps(product['category'])}")):
            allowed = [i for i in range(len(products)) if expression is None or products[i]["category"] ==
                       product["category"]]
            best = sorted(allowed, key=lambda i: -cosine[i])[:count]
            found = [ids.index(e.decode()) for e in r.vset().vsim("vset:products", product["id"], count=count,
                                                                   filter=expression)]
            assert sorted(cosine[found]) == pytest.approx(sorted(cosine[best]), abs=1e-4), (product, expression)
