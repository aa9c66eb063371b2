"""What a check may hand learner code besides plain values and Redis clients: the course's own objects.

Embedders, OpenAI clients and RedisVL indexes cannot cross into the notebook's process as they are;
each travels as a marker, plain data the worker turns back into the same object on its side. Every
kind is one entry of `KINDS`: `mark` (grader's side: the value's marker, or None when it is not of
this kind) and `build` (worker's side: the object again). The engine (remote, worker) knows only this
registry: a new kind of object for a new notebook is one entry here. Redis clients are the engine's
own (remote._redis_marker, worker.build_redis): their rights decide what learner code may do.

A marker with `base_url` reaches a server over HTTP: the grader exposes it through the gateway and
adds `socket`; one with `redis` names a Redis client the engine marks and `resolve` rebuilds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis_workbook.grading import wire

Resolve = Callable[[dict], Any]  # the worker's own decoder of a nested marker (a Redis client)


@dataclass(frozen=True)
class Kind:
    tag: str
    mark: Callable[[Any], dict | None]
    build: Callable[[dict, Resolve], Any]
    client: Callable[[Any], Any] | None = None  # the value's Redis client, which travels marked by the engine


def _mark_embedder(value: Any) -> dict | None:
    from redis_workbook.embeddings import HashingEmbedder, LocalEmbedder, OpenAIEmbedder

    if isinstance(value, (HashingEmbedder, LocalEmbedder)):
        return {"cls": type(value).__name__, "dim": value.dim}
    if isinstance(value, OpenAIEmbedder):
        return {"cls": "OpenAIEmbedder", "dim": value.dim, "model": value.model,
                **(_mark_openai(value.client) or {"base_url": None, "api_key": None})}
    return None


def _build_embedder(data: dict, resolve: Resolve) -> Any:
    from redis_workbook import embeddings

    kind = data.get("cls")
    if kind == "HashingEmbedder":
        return embeddings.HashingEmbedder(dim=int(data["dim"]))
    if kind == "LocalEmbedder":
        return embeddings.LocalEmbedder()
    if kind == "OpenAIEmbedder":
        return embeddings.OpenAIEmbedder(model=str(data["model"]), dim=int(data["dim"]),
                                         client=_build_openai(data, resolve))
    raise wire.WireError(f"unknown embedder {kind!r}")


def _mark_openai(value: Any) -> dict | None:
    openai = sys.modules.get("openai")
    if openai is None or not isinstance(value, openai.OpenAI):
        return None
    timeout = value.timeout if isinstance(value.timeout, (int, float)) else 60
    return {"base_url": str(value.base_url), "api_key": value.api_key, "max_retries": value.max_retries,
            "timeout": timeout}


def _build_openai(data: dict, resolve: Resolve) -> Any:
    """The grader's OpenAI client; on the gateway's Unix socket when the notebook has no network."""
    import httpx
    import openai

    timeout = float(data.get("timeout") or 60)
    http_client = httpx.Client(transport=httpx.HTTPTransport(uds=str(data["socket"])), timeout=timeout) \
        if data.get("socket") else None
    return openai.OpenAI(base_url=data.get("base_url"), api_key=data.get("api_key") or "unused",
                         max_retries=int(data.get("max_retries") or 0), timeout=timeout, http_client=http_client)


def _mark_search_index(value: Any) -> dict | None:
    """A RedisVL SearchIndex travels as its schema; the worker rebuilds it on its own client (a Unix socket)."""
    module = sys.modules.get("redisvl.index")
    if module is None or not isinstance(value, module.SearchIndex):
        return None
    return {"schema": value.schema.to_dict()}


def _build_search_index(data: dict, resolve: Resolve) -> Any:
    from redisvl.index import SearchIndex

    return SearchIndex.from_dict(data["schema"], redis_client=resolve(data["redis"]))


KINDS = (
    Kind("embedder", _mark_embedder, _build_embedder),
    Kind("openai", _mark_openai, _build_openai),
    Kind("searchindex", _mark_search_index, _build_search_index, client=lambda index: index.client),
)
TAGS = {kind.tag: kind for kind in KINDS}


def mark(value: Any) -> tuple[dict, Any] | None:
    """(the value's marker, its Redis client or None) when it is of a registered kind, else None."""
    for kind in KINDS:
        marker = kind.mark(value)
        if marker is not None:
            return {wire.TAG: kind.tag, **marker}, kind.client(value) if kind.client else None
    return None


def build(data: dict, resolve: Resolve) -> Any:
    return TAGS[data[wire.TAG]].build(data, resolve)
