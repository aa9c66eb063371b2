"""Schemas, the bulk loader and index_report against the real query engine."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from redis.commands.search.query import Query

from redis_workbook import index_report, load_hashes
from redis_workbook.report import ft_info, vector_dims
from redis_workbook.schema import create_index, product_index
from redis_workbook.vectors import from_bytes, to_bytes

PRODUCTS = [
    {"id": "1", "name": "Over-ear headphones", "description": "closed back", "category": "Audio", "price": 99.5},
    {"id": "2", "name": "Chef's knife", "description": "8 inch", "category": "Home & Kitchen", "price": 45.0},
    {"id": "11", "name": "Earbuds", "description": "wireless", "category": "Audio", "price": 59.0},
]


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_product_index_matches_the_contract(r: redis.Redis) -> None:
    assert create_index(r, product_index(8)) is True
    assert create_index(r, product_index(8)) is False
    info = ft_info(r, "idx:products")
    kinds = {a[b"attribute"].decode(): a[b"type"].decode() for a in info["attributes"]}
    assert kinds == {"name": "TEXT", "description": "TEXT", "category": "TAG", "price": "NUMERIC",
                     "embedding": "VECTOR"}
    vector = next(a for a in info["attributes"] if a[b"type"] == b"VECTOR")
    assert (vector[b"algorithm"], vector[b"dim"], vector[b"distance_metric"], vector[b"M"],
            vector[b"ef_construction"]) == (b"HNSW", 8, b"COSINE", 16, 200)
    assert vector_dims(info) == {"embedding": 8}


def test_flat_and_unknown_algorithms(r: redis.Redis) -> None:
    assert create_index(r, product_index(4, "flat", name="idx:flat"))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        product_index(4, "IVF")
    with pytest.raises(ValueError, match="dim must be a positive int"):
        product_index(0)


def test_load_hashes_writes_fields_and_exact_vector_bytes(r: redis.Redis) -> None:
    create_index(r, product_index(8))
    matrix = vectors(3)
    assert load_hashes(r, "product:", PRODUCTS, matrix, batch_size=2) == 3
    stored = r.hgetall("product:11")
    assert stored[b"category"] == b"Audio" and stored[b"price"] == b"59.0" and stored[b"id"] == b"11"
    assert np.array_equal(from_bytes(stored[b"embedding"]), matrix[2])
    result = r.ft("idx:products").search(
        Query("*=>[KNN 2 @embedding $v AS d]").sort_by("d").dialect(2), {"v": to_bytes(matrix[2])})
    assert result.docs[0].id == "product:11"


@pytest.mark.parametrize("embeddings, message", [
    (vectors(2), "len\\(records\\) is 3 but there are 2"),
    (np.vstack([vectors(2), [[np.nan] * 8]]), "row 2 contains NaN or inf"),
    (np.vstack([vectors(2), [[np.inf] * 8]]), "row 2 contains NaN or inf"),
    (vectors(3, dim=4), "rows have 4 values but the index expects dim=8"),
    ([[0.0] * 8, [0.0] * 8, [0.0] * 7], "2-D array of numbers"),
])
def test_bad_input_is_refused_before_any_write(r: redis.Redis, embeddings: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_hashes(r, "product:", PRODUCTS, embeddings, dim=8)
    assert r.dbsize() == 0


def test_duplicate_or_missing_ids_are_refused(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        load_hashes(r, "p:", [PRODUCTS[0], PRODUCTS[0]], vectors(2))
    with pytest.raises(ValueError, match="has no 'id'"):
        load_hashes(r, "p:", [{"name": "x"}], vectors(1))
    with pytest.raises(ValueError, match="batch_size"):
        load_hashes(r, "p:", PRODUCTS, vectors(3), batch_size=0)
    assert r.dbsize() == 0


def test_to_bytes_checks_width_and_values() -> None:
    assert len(to_bytes([1, 2, 3], 3)) == 12
    with pytest.raises(ValueError, match="dim=4"):
        to_bytes([1, 2, 3], 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        to_bytes([1, float("nan")], 2)
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
    load_hashes(r, "product:", PRODUCTS, vectors(3, dim=384))
    healthy = index_report(r, "idx:products")
    assert healthy.ok and healthy.num_docs == 3 and "Looks healthy" in str(healthy)


def test_index_report_reads_resp2_replies(redis_server, r: redis.Redis) -> None:  # noqa: ANN001
    create_index(r, product_index(16))
    resp2 = redis_server.client(protocol=2)
    assert vector_dims(ft_info(resp2, "idx:products")) == {"embedding": 16}
    assert "0 documents" in str(index_report(resp2, "idx:products"))
