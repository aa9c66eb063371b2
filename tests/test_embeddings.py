"""Embedders: shapes, determinism, meaning (local model) and clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from redis_workbook.embeddings import HashingEmbedder, LocalEmbedder, default_embedder


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()


def test_local_model_gives_unit_float32_rows(local: LocalEmbedder) -> None:
    vectors = local.embed(["a red apple", "", "x" * 5000])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_local_model_knows_headphones_from_shoes(local: LocalEmbedder) -> None:
    head, buds, shoes = local.embed(["over-ear headphones", "wireless earbuds", "running shoes"])
    assert head @ buds > 0.5 > 0.3 > head @ shoes


def test_local_model_batches_do_not_change_results(local: LocalEmbedder) -> None:
    texts = ["short", "a much longer sentence about kitchen knives and cutting boards", "medium text"]
    together = local.embed(texts)
    alone = np.vstack([local.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-4)


def test_hashing_embedder_is_stable_across_processes() -> None:
    here = HashingEmbedder(64).embed(["stable keys please"])[0]
    code = ("from redis_workbook.embeddings import HashingEmbedder;"
            "print(HashingEmbedder(64).embed(['stable keys please'])[0].tolist())")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout
    assert np.allclose(here, np.array(eval(there), dtype=np.float32))


def test_hashing_embedder_similarity_follows_shared_words() -> None:
    a, b, c = HashingEmbedder().embed(["reset my password", "reset my password now", "weather in paris"])
    assert a @ b > 0.5 and abs(a @ c) < 0.3


@pytest.mark.parametrize("embedder", [HashingEmbedder(), None], ids=["hashing", "local"])
def test_embedders_reject_a_bare_string(embedder: object, local: LocalEmbedder) -> None:
    embedder = embedder or local
    with pytest.raises(TypeError, match=r"pass \[text\]"):
        embedder.embed("one string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embedder.embed(["ok", 3])


def test_default_embedder_is_local_without_a_key(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    embedder = default_embedder()
    assert isinstance(embedder, LocalEmbedder)
    assert "all-MiniLM-L6-v2" in capsys.readouterr().out


def test_openai_embedder_goes_through_the_real_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_API_KEY set: default_embedder() is OpenAI's, and the real openai client does the HTTP."""
    from redis_workbook.embeddings import OpenAIEmbedder
    from redis_workbook.openai_server import OpenAIServer

    with OpenAIServer(api_key="sk-test-key") as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        embedder = default_embedder(verbose=False)
        assert isinstance(embedder, OpenAIEmbedder) and embedder.dim == 1536
        OpenAIEmbedder.batch_size = 2  # force batching: 3 texts -> 2 requests, order kept
        try:
            vectors = embedder.embed(["alpha", "beta", "alpha"])
        finally:
            OpenAIEmbedder.batch_size = 256
    assert vectors.shape == (3, 1536) and vectors.dtype == np.float32
    assert np.allclose(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert [r["input"] for r in server.embedding_requests] == [["alpha", "beta"], ["alpha"]]
    assert all(r["model"] == "text-embedding-3-small" for r in server.embedding_requests)


def test_openai_embedder_reports_a_wrong_width() -> None:
    from redis_workbook.embeddings import OpenAIEmbedder
    from redis_workbook.openai_server import OpenAIServer

    with OpenAIServer(embedding_dim=64) as server:
        embedder = OpenAIEmbedder(base_url=server.base_url, api_key=server.api_key)
        with pytest.raises(ValueError, match="returned 64 dims, expected dim=1536"):
            embedder.embed(["x"])
