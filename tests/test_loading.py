"""The catalogue of notebooks 03-06, the streaming writer and index_report against the real query engine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.commands.search.query import Query

from redis_workbook import datasets, index_report
from redis_workbook.embeddings import HashingEmbedder
from redis_workbook.loading import write_hashes
from redis_workbook.report import ft_info, vector_dims
from redis_workbook.schema import create_index, vector_field
from redis_workbook.vectors import from_bytes

GRADER = Path(__file__).resolve().parents[1] / "grader"

PRODUCTS = [
    {"id": "1", "name": "Over-ear headphones", "description": "closed back", "category": "Audio", "price": 99.5},
    {"id": "2", "name": "Chef's knife", "description": "8 inch", "category": "Home & Kitchen", "price": 45.0},
    {"id": "11", "name": "Earbuds", "description": "wireless", "category": "Audio", "price": 59.0},
]


def reference():  # noqa: ANN201 - the grader's module, loaded by path (grader/ is not a package)
    spec = importlib.util.spec_from_file_location("grader_reference", GRADER / "reference.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def product_index(dim: int):  # noqa: ANN201
    return reference().product_index(dim)


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def keys(prefix: str, records: list[dict]) -> list[str]:
    return [f"{prefix}{record['id']}" for record in records]


def test_load_catalog_builds_what_the_grader_checks_against(r: redis.Redis) -> None:
    """datasets.load_catalog and the grader's reference product index are one schema, and the catalogue is whole."""
    embedder = HashingEmbedder(384)
    assert datasets.load_catalog(r, embedder) == len(datasets.products())
    create_index(r, reference().product_index(384, name="idx:reference"))
    assert ft_info(r, "idx:products")["attributes"] == ft_info(r, "idx:reference")["attributes"]
    stored = r.hgetall("product:" + datasets.products()[3]["id"])
    want = np.asarray(datasets.embeddings("products", embedder)[3], dtype="<f4")
    assert np.array_equal(from_bytes(stored[b"embedding"]), want)
    assert datasets.load_catalog(r, embedder) == len(datasets.products())  # again: same index, same documents


def test_reference_range_query_finds_numpys_set_best_first(r: redis.Redis) -> None:
    """The grader's `within` (VECTOR_RANGE, radius 1 - min_similarity) is numpy's exact answer, beyond 10 and at 0."""
    rows = vectors(60, dim=16, seed=3)
    catalog = [{"id": str(i), "name": f"p{i}", "description": "", "category": "A", "price": 1.0} for i in range(60)]
    create_index(r, product_index(16))
    reference().load_products(r, catalog, rows)
    query = rows[0] + rows[1]
    cos = rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query))
    for threshold in (0.2, 0.5, 0.999):
        got = reference().within(r, query.tolist(), threshold)
        want = sorted(((str(i), float(c)) for i, c in enumerate(cos) if c >= threshold), key=lambda p: -p[1])
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert len(reference().within(r, query, 0.2)) > 10  # more than FT.SEARCH's default page
    assert reference().within(r, query, 0.999) == []


def test_load_catalog_refuses_an_index_of_another_dim(r: redis.Redis) -> None:
    create_index(r, reference().product_index(1536))
    with pytest.raises(ValueError, match=r"DIM 1536 .*\(FT.DROPINDEX idx:products\)"):
        datasets.load_catalog(r, HashingEmbedder(384))


def test_flat_and_unknown_algorithms() -> None:
    assert vector_field(4, "flat").args[0] == "VECTOR"
    with pytest.raises(ValueError, match="algorithm must be one of"):
        vector_field(4, "IVF")
    with pytest.raises(ValueError, match="dim must be a positive int"):
        vector_field(0)


def test_write_hashes_writes_fields_and_exact_vector_bytes(r: redis.Redis) -> None:
    create_index(r, product_index(8))
    matrix = vectors(3)
    assert write_hashes(r, keys("product:", PRODUCTS), PRODUCTS, matrix, batch_size=2) is None
    stored = r.hgetall("product:11")
    assert stored[b"category"] == b"Audio" and stored[b"price"] == b"59.0" and stored[b"id"] == b"11"
    assert np.array_equal(from_bytes(stored[b"embedding"]), matrix[2])
    result = r.ft("idx:products").search(
        Query("*=>[KNN 2 @embedding $v AS d]").sort_by("d").dialect(2), {"v": matrix[2].tobytes()})
    assert result.docs[0].id == "product:11"


def test_write_hashes_refuses_what_does_not_pair_up(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="3 keys, 3 records and 2 vectors"):
        write_hashes(r, keys("p:", PRODUCTS), PRODUCTS, vectors(2))
    with pytest.raises(ValueError, match="batch_size"):
        write_hashes(r, keys("p:", PRODUCTS), PRODUCTS, vectors(3), batch_size=0)
    assert r.dbsize() == 0


def test_from_bytes_names_mangled_bytes() -> None:
    with pytest.raises(ValueError, match="not a whole number of float32"):
        from_bytes(b"\x00" * 6)


def test_index_report_explains_each_problem(r: redis.Redis) -> None:
    assert "no index called 'idx:products'" in str(index_report(r, "idx:products"))
    create_index(r, product_index(384))
    empty = index_report(r, "idx:products")
    assert not empty.ok and "0 documents" in str(empty) and "product:" in str(empty)
    r.hset("product:1", mapping={"name": "x", "embedding": np.zeros(1536 // 4 * 4, np.float32).tobytes()})
    broken = index_report(r, "idx:products")
    assert broken.failures == 1
    assert "6144 bytes" in str(broken) and "DIM 384" in str(broken)
    r.flushall()
    create_index(r, product_index(384))
    write_hashes(r, keys("product:", PRODUCTS), PRODUCTS, vectors(3, dim=384))
    healthy = index_report(r, "idx:products")
    assert healthy.ok and healthy.num_docs == 3 and "Looks healthy" in str(healthy)


def test_index_report_reads_resp2_replies(redis_server, r: redis.Redis) -> None:  # noqa: ANN001
    create_index(r, product_index(16))
    resp2 = redis_server.client(protocol=2)
    assert vector_dims(ft_info(resp2, "idx:products")) == {"embedding": 16}
    assert "0 documents" in str(index_report(resp2, "idx:products"))
