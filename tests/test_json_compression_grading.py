"""Notebook 10 graded where learners are graded: JSON and typed-vector commands under the restricted learner
user, and `redis-workbook check` (sandboxed) giving the solution full marks and a one-mistake notebook all but one
check; the grader's JSON index answers like the HASH index and numpy, and its bfloat16 like ml_dtypes."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from grader_mutants import MUTANTS
from redis.commands.search.field import VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query
from submissions import REPO, write_notebook
from test_grading_check import run_check

from redis_workbook import datasets
from redis_workbook.grading import backends, points
from redis_workbook.report import as_text, ft_info

sys.path.insert(0, str(REPO / "grader"))
import reference  # noqa: E402
import test_10_json_and_compression as checks  # noqa: E402
from feedback import ShippedModel  # noqa: E402

ASSIGNMENT = "10_json_and_compression"
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


def wait_indexed(r: redis.Redis, name: str) -> None:
    while int(as_text(ft_info(r, name)["indexing"])):
        time.sleep(0.01)


def test_the_learner_user_may_run_every_json_and_typed_vector_command(learner: redis.Redis) -> None:
    """Every command notebook 10 and its exercises send, run for real as the learner user."""
    assert learner.execute_command("ACL", "WHOAMI").decode().startswith("workbook-learner-")
    products = datasets.products()[:3]
    vectors = np.eye(3, 8, dtype=np.float32) + 0.1
    assert reference.create_json_index(learner, 8, "FLAT", "idx:j", "j:") is True
    assert reference.create_json_index(learner, 8, "FLAT", "idx:j", "j:") is False
    assert reference.load_products_json(learner, products, vectors, prefix="j:") == 3
    assert learner.execute_command("JSON.SET", "j:demo", "$", '{"embedding": [1, 2]}') in (True, b"OK")
    assert learner.json().get("j:1", "$.embedding[0:2]") == pytest.approx([1.1, 0.1])
    assert learner.json().type("j:1", "$.embedding") == [b"array"]
    assert learner.json().arrlen("j:1", "$.embedding") == [8]
    assert learner.type("j:1") == b"ReJSON-RL" and learner.memory_usage("j:1", samples=0) > 0
    wait_indexed(learner, "idx:j")
    query = Query("*=>[KNN 2 @embedding $vec AS distance]").sort_by("distance").paging(0, 2).dialect(2)
    docs = learner.ft("idx:j").search(query.return_fields("name", "distance"),
                                      query_params={"vec": vectors[1].tobytes()}).docs
    assert docs[0].id == "j:2" and docs[0].name == products[1]["name"]
    for vtype, width in (("FLOAT16", "<f2"), ("BFLOAT16", "<u2")):
        field = VectorField("embedding", "FLAT", {"TYPE": vtype, "DIM": 8, "DISTANCE_METRIC": "COSINE"})
        learner.ft(f"idx:{vtype}").create_index([field], definition=IndexDefinition(prefix=[f"{vtype}:"],
                                                                                    index_type=IndexType.HASH))
        learner.hset(f"{vtype}:1", "embedding", np.ones(8, dtype=width).tobytes())
        assert learner.ft(f"idx:{vtype}").search(query, query_params={"vec": np.ones(8, dtype=width).tobytes()}).total
        learner.ft(f"idx:{vtype}").dropindex(delete_documents=True)
    with pytest.raises(redis.ResponseError, match="Unknown argument"):  # the notebook's probe: refused, not denied
        learner.ft("idx:probe").create_index([VectorField("v", "FLAT", {"TYPE": "INT8", "DIM": 4,
                                                                         "DISTANCE_METRIC": "COSINE"})])
    learner.ft("idx:j").dropindex(delete_documents=True)


def test_check_gives_the_solution_full_marks() -> None:
    done = run_check(str(REPO / "solutions" / f"{ASSIGNMENT}.ipynb"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and f"Total: {SHOWN}/{SHOWN} points" in done.stdout, done.stdout


def test_check_a_notebook_with_one_mistake_loses_exactly_that_check(tmp_path: Path) -> None:
    mutant = next(m for m in MUTANTS if m.name == "BFLOAT16 truncated instead of rounded")
    done = run_check(str(write_notebook(tmp_path / f"{ASSIGNMENT}.ipynb", mutant.source())))
    assert done.returncode == 1, done.stdout + done.stderr
    failed = re.findall(r"^FAIL  (\S+)", done.stdout, flags=re.MULTILINE)
    assert failed == [mutant.check], done.stdout
    score = SCORE.search(done.stdout)
    assert score is not None, done.stdout
    assert float(score.group(1)) == TOTAL - POINTS[mutant.check] and float(score.group(2)) == TOTAL, done.stdout


def test_the_json_index_answers_like_the_hash_index_and_numpy(r: redis.Redis) -> None:
    """What notebook 10 shows: on the grader's JSON index the KNN and hybrid queries of 03/04 find the same ids
    and distances as on the HASH index, and numpy's exact neighbours."""
    products = datasets.products()
    vectors = np.asarray(datasets.embeddings("products", ShippedModel()), dtype=np.float32)
    reference.load_catalog(r, products, vectors)
    assert reference.create_json_index(r, vectors.shape[1], "FLAT") is True
    assert reference.load_products_json(r, products, vectors) == len(products)
    wait_indexed(r, reference.JSON_INDEX)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row in (0, 77, 200):
        for filters, allowed in (("*", lambda p: True),
                                 ("@category:{Audio} @price:[50 150]",
                                  lambda p: p["category"] == "Audio" and 50 <= p["price"] <= 150)):
            query = (Query(f"({filters})=>[KNN 7 @embedding $vec AS distance]").sort_by("distance")
                     .return_fields("distance").paging(0, 7).dialect(2))
            found = {}
            for index in ("idx:products", reference.JSON_INDEX):
                docs = r.ft(index).search(query, query_params={"vec": vectors[row].tobytes()}).docs
                found[index] = [(doc.id.split(":", 1)[1], round(float(doc.distance), 5)) for doc in docs]
            assert found["idx:products"] == found[reference.JSON_INDEX]
            keep = [i for i, p in enumerate(products) if allowed(p)]
            best = sorted(keep, key=lambda i: -float(unit[i] @ unit[row]))[:7]
            assert sorted(1 - float(unit[i] @ unit[row]) for i in best) == pytest.approx(
                [d for _, d in found["idx:products"]], abs=1e-4)


def test_the_checks_bfloat16_is_ml_dtypes_rounding() -> None:
    """The checks' expected bfloat16 bytes (numpy bit arithmetic) are what ml_dtypes, RedisVL's dependency, makes."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    values = (rng.normal(size=20_000) * 10.0 ** rng.integers(-30, 30, 20_000)).astype(np.float32)
    assert checks.bfloat16_rounded(values) == values.astype(ml_dtypes.bfloat16).tobytes()
    assert checks.bfloat16_truncated(values) != checks.bfloat16_rounded(values)
