"""Notebook 11 graded where learners are graded: RedisVL under the restricted learner user, on a client (never a URL
of its own), and `redis-workbook check` (sandboxed, Redis over Unix sockets) giving the solution full marks and a
one-mistake notebook all but one check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis
from checked_notebooks import assert_full_marks, assert_loses_exactly_its_check
from redisvl.extensions.cache.llm import SemanticCache
from redisvl.index import SearchIndex
from redisvl.query import RangeQuery, VectorQuery
from redisvl.query.filter import Tag
from redisvl.schema import IndexSchema
from redisvl.utils.vectorize import CustomVectorizer

from redis_workbook.embeddings import HashingEmbedder
from redis_workbook.grading import markers

ASSIGNMENT = "11_redisvl"
SCHEMA = {"index": {"name": "idx:rvl", "prefix": "rvl:", "storage_type": "hash"},
          "fields": [{"name": "category", "type": "tag", "attrs": {"separator": "|"}},
                     {"name": "embedding", "type": "vector",
                      "attrs": {"dims": 8, "algorithm": "flat", "datatype": "float32", "distance_metric": "cosine"}}]}


def test_the_learner_user_may_run_what_redisvl_sends(learner: redis.Redis) -> None:
    """SearchIndex (create, load, queries, info, delete) and SemanticCache, for real as the learner user."""
    assert learner.execute_command("ACL", "WHOAMI").decode().startswith("workbook-learner-")
    index = SearchIndex(IndexSchema.from_dict(SCHEMA), redis_client=learner)
    index.create(overwrite=True)
    vectors = np.eye(8, dtype=np.float32)
    keys = index.load([{"id": str(i), "category": "Home & Kitchen" if i % 2 else "Books", "embedding": v.tobytes()}
                       for i, v in enumerate(vectors)], id_field="id")
    assert keys == [f"rvl:{i}" for i in range(8)] and index.info()["num_docs"] == 8
    near = index.query(VectorQuery(vectors[3], "embedding", num_results=3,
                                   filter_expression=Tag("category") == "Home & Kitchen"))
    assert near[0]["id"] == "rvl:3" and {doc["id"] for doc in near} <= {f"rvl:{i}" for i in (1, 3, 5, 7)}
    assert [doc["id"] for doc in index.query(RangeQuery(vectors[5], "embedding", distance_threshold=0.5))] == ["rvl:5"]
    assert SearchIndex.from_existing("idx:rvl", redis_client=learner).schema.index.prefix == "rvl:"
    embedder = HashingEmbedder(16)
    cache = SemanticCache(name="cache", distance_threshold=0.1, ttl=60, redis_client=learner,
                          vectorizer=CustomVectorizer(embed=lambda text: embedder.embed([text])[0].tolist()))
    key = cache.store(prompt="how do I reset my password", response="Settings.")
    assert 0 < learner.ttl(key) <= 60 and cache.check(prompt="how do I reset my password")[0]["response"] == "Settings."
    cache.delete()
    index.delete(drop=True)
    assert learner.execute_command("FT._LIST") == []


def test_a_search_index_travels_as_its_schema(learner: redis.Redis) -> None:
    """What the grader sends the notebook's process for a SearchIndex: its schema, which rebuilds the same index."""
    index = SearchIndex(IndexSchema.from_dict(SCHEMA), redis_client=learner)
    found = markers.mark(index)
    assert found is not None and markers.mark(learner) is None
    marker, client = found
    assert client is learner  # the engine marks it as a Redis client of its own
    rebuilt = markers.build({**marker, "redis": "the worker's client"}, resolve=lambda _: learner)
    assert rebuilt.schema.to_dict() == index.schema.to_dict() and rebuilt.client is learner


def test_check_gives_the_solution_full_marks() -> None:
    assert_full_marks(ASSIGNMENT)


def test_check_a_notebook_with_one_mistake_loses_exactly_that_check(tmp_path: Path) -> None:
    mutant = "SemanticCache's distance_threshold set to the similarity"
    output = assert_loses_exactly_its_check(ASSIGNMENT, mutant, tmp_path)
    assert "1 - min_similarity" in output, output
