"""The local OpenAI-compatible server, driven by the real `openai` client."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from redis_workbook.embeddings import HashingEmbedder, OpenAIEmbedder
from redis_workbook.openai_server import OpenAIServer


@pytest.fixture(scope="module")
def server():
    with OpenAIServer() as running:
        yield running


def test_chat_records_the_prompt_and_replies_deterministically(server: OpenAIServer) -> None:
    server.reset()
    client = server.client()
    messages = [{"role": "system", "content": "Context: LTRIM keeps the newest entries of a list."},
                {"role": "user", "content": "How do I cap a list?"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    other = client.chat.completions.create(model="gpt-4o-mini", messages=messages[1:])
    reply = first.choices[0].message.content
    assert reply == again.choices[0].message.content != other.choices[0].message.content
    assert "How do I cap a list?" in reply and "LTRIM keeps the newest" in reply
    assert server.chat_replies[0] == reply
    assert "LTRIM keeps the newest entries" in server.prompts()[0]
    assert len(server.chat_requests) == 3 and server.chat_requests[0]["model"] == "gpt-4o-mini"


def test_embeddings_match_the_hashing_embedder_in_both_encodings(server: OpenAIServer) -> None:
    client = server.client()
    texts = ["semantic cache", "vector search on Redis"]
    through_openai = OpenAIEmbedder(client=client).embed(texts)  # the client asks for base64
    assert through_openai.shape == (2, 1536)
    np.testing.assert_allclose(through_openai, HashingEmbedder(1536).embed(texts), atol=1e-6)
    floats = client.embeddings.create(model="text-embedding-3-small", input="semantic cache",
                                      dimensions=64, encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, HashingEmbedder(64).embed(["semantic cache"])[0],
                               atol=1e-6)


def test_wrong_key_and_bad_requests_get_openai_errors(server: OpenAIServer) -> None:
    stranger = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        server.client().chat.completions.create(model="gpt-4o-mini", messages=[])
    with pytest.raises(openai.BadRequestError, match="input"):
        server.client().embeddings.create(model="text-embedding-3-small", input=[])


def test_stops_and_frees_its_port() -> None:
    with OpenAIServer() as running:
        base_url = running.base_url
        assert running.client().models.list().data[0].id
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=2).models.list()
    with pytest.raises(RuntimeError, match="not running"):
        _ = running.port
