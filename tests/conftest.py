"""Shared fixtures: one embedded Redis for the session, an empty database for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from docker_engine import docker_engine  # noqa: F401  (session fixture: private dockerd + local Redis images)

from redis_workbook.grading import backends
from redis_workbook.server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def r(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A binary-safe client on an empty database (indexes dropped too)."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="module")
def learner() -> Iterator[redis.Redis]:
    """A client of a grader's Redis logged in as the learner user (backends.LEARNER_RULES), as learner code is."""
    server = backends.start("embedded")
    client = redis.Redis.from_url(server.learner_url)
    yield client
    client.close()
    server.stop()
