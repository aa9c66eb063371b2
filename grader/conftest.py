"""Grader-only fixtures. `nb`, `r` and `redis_url` come from the grading plugin.

The product catalogue is loaded with the grader's reference schema and loader
(reference.py), so the 03, 04 and 06 checks do not depend on the learner's
notebook-02 code. It uses a
FLAT (exact) index: the expected answers are exact cosine rankings from numpy,
and an approximate HNSW index could legitimately differ from them.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import feedback` whatever pytest's import mode

import reference  # noqa: E402
from feedback import Catalog, ShippedModel  # noqa: E402

from redis_workbook import datasets  # noqa: E402
from redis_workbook.embeddings import HashingEmbedder  # noqa: E402
from redis_workbook.openai_server import OpenAIServer  # noqa: E402
from redis_workbook.server import EmbeddedRedis, find_server_files  # noqa: E402

pytest_plugins = ["redis_workbook.grading.plugin"]


@pytest.fixture(scope="session")
def shipped_products() -> Catalog:
    """The shipped products with their shipped all-MiniLM-L6-v2 vectors (no model is loaded)."""
    vectors = np.asarray(datasets.embeddings("products", ShippedModel()), dtype=np.float32)
    return Catalog(datasets.products(), vectors)


@pytest.fixture
def catalog(r: redis.Redis, shipped_products: Catalog) -> Catalog:
    """The products in Redis as notebook 02 leaves them: `product:<id>` hashes and `idx:products` (FLAT)."""
    reference.load_catalog(r, shipped_products.products, shipped_products.vectors)
    return shipped_products


@pytest.fixture
def embedder() -> HashingEmbedder:
    """A fast deterministic embedder for checks where meaning does not matter (the cache)."""
    return HashingEmbedder(384)


@pytest.fixture
def chat_server() -> Iterator[OpenAIServer]:
    """A local OpenAI-compatible server that records every prompt it gets; its key is this test's own."""
    with OpenAIServer(api_key=f"sk-{secrets.token_urlsafe(16)}") as server:
        yield server


class PlainRedis(EmbeddedRedis):
    """The embedded redis-server without the query-engine modules: a Redis that cannot FT.SEARCH."""

    def command(self, files: object) -> list[str]:
        args = super().command(files)  # type: ignore[arg-type]
        keep = []
        skip = False
        for arg in args:
            if skip:
                skip = False
            elif arg == "--loadmodule":
                skip = True
            else:
                keep.append(arg)
        return keep


@pytest.fixture(scope="session")
def plain_redis_server() -> Iterator[EmbeddedRedis]:
    find_server_files()  # says what to install when the server binary is missing
    with PlainRedis() as server:
        yield server


@pytest.fixture
def plain_r(plain_redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = plain_redis_server.client()
    yield client
    client.close()
