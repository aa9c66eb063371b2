"""Finding Redis: `REDIS_URL` when set, else an embedded server this process starts.

Every client the workbook hands out is binary-safe (`decode_responses=False`):
vectors are raw float32 bytes, and a decoding client corrupts them on read.
"""

from __future__ import annotations

import os
import re

import redis

from redis_workbook.errors import RedisUnavailable, SearchModuleMissing
from redis_workbook.server import EmbeddedRedis

_embedded: EmbeddedRedis | None = None

_SEARCH_HELP = (
    "Use a Redis with the query engine: Redis 8 (e.g. `docker run -p 6379:6379 redis:8.2`), "
    "Redis Stack (`docker run -p 6379:6379 redis/redis-stack-server`), Redis Cloud, or unset "
    "REDIS_URL so the workbook starts its embedded Redis 8 with the search module."
)


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe to print."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def embedded_server() -> EmbeddedRedis:
    """This process's embedded server, started on first use and stopped at exit."""
    global _embedded
    if _embedded is None or not _embedded.alive():
        _embedded = EmbeddedRedis().start()
    return _embedded


def redis_url() -> str:
    """Where the workbook's Redis is: REDIS_URL, or the embedded server's URL."""
    return os.environ.get("REDIS_URL") or embedded_server().url


def has_search(r: redis.Redis) -> bool:
    """True when Redis answers FT._LIST, the query engine's cheapest command; False on `unknown command`.

    A yes/no probe on purpose: reading the module's version from MODULE LIST is notebook 01's exercise.
    """
    try:
        r.execute_command("FT._LIST")
    except redis.ResponseError as exc:
        if "unknown command" in str(exc).lower():
            return False
        raise
    return True


def require_search(r: redis.Redis, where: str) -> None:
    """Raise SearchModuleMissing, with the fix, when Redis has no query engine."""
    if not has_search(r):
        raise SearchModuleMissing(
            f"Redis at {where} answers but has no search module (FT._LIST is an unknown command there), so "
            f"FT.CREATE and vector queries will fail. {_SEARCH_HELP}"
        )


def connect(url: str | None = None, *, decode_responses: bool = False,
            require_search_module: bool = True, **kwargs: object) -> redis.Redis:
    """A checked client: `url`, else REDIS_URL, else the embedded server.

    Raises RedisUnavailable or SearchModuleMissing with the fix in the message.
    """
    url = url or os.environ.get("REDIS_URL")
    if url:
        client = redis.Redis.from_url(url, decode_responses=decode_responses, **kwargs)
        where = redact(url)
    else:
        client = embedded_server().client(decode_responses=decode_responses, **kwargs)
        where = f"the embedded server (127.0.0.1:{embedded_server().port})"
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {where} refused the password ({exc}). Put the right one in the URL: "
            "redis://:PASSWORD@host:port or redis://USER:PASSWORD@host:port."
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"Could not reach Redis at {where}: {exc}. Start that server, fix REDIS_URL, or "
            "unset REDIS_URL to let the workbook start its embedded Redis."
        ) from None
    if require_search_module:
        require_search(client, where)
    return client
