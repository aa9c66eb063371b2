"""The testcontainers provider on a real Docker engine, with both locally built stand-in images.

The `docker_engine` fixture (tests/docker_engine.py) starts a private dockerd and
builds `redis-workbook/redis:8.2-local` (official redis:8 start convention) and
`redis-workbook/redis-stack-server:7.4.0-v1-local` (REDIS_ARGS convention).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import docker
import numpy as np
import pytest
import redis
from docker_engine import DockerEngine
from docker_image import REDIS_LOCAL_TAG, build_image, redis_recipe
from dockerd import PrivateDockerd
from redis.backoff import NoBackoff
from redis.commands.search.query import Query
from redis.retry import Retry
from testcontainers.core.config import ConnectionMode
from testcontainers.core.config import testcontainers_config as tc_config

from redis_workbook.errors import RedisUnavailable
from redis_workbook.grading import containers
from redis_workbook.grading.containers import (
    DEFAULT_IMAGE,
    IMAGE_ENV,
    OWNER_LABEL,
    STACK_IMAGE,
    TESTCONTAINERS_DEFAULTS,
    DockerUnavailable,
    RedisContainerProvider,
    configure_testcontainers,
    docker_available,
    image_convention,
    image_setting,
    start_container,
)
from redis_workbook.loading import write_hashes
from redis_workbook.schema import IndexSpec, create_index, vector_field

CONVENTIONS = ["redis", "redis-stack"]
MODULE_DIRS = {"redis": "/usr/local/lib/redis/modules/", "redis-stack": "/opt/redis-stack/lib/"}


def probe(port: int, password: str | None = None) -> redis.Redis:
    """A client that fails at once (redis-py 8 otherwise retries a refused connection with backoff)."""
    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0))


def knn_ids(r: redis.Redis, vector: np.ndarray, k: int) -> list[str]:
    query = (Query(f"*=>[KNN {k} @embedding $v AS score]").sort_by("score").return_fields("score")
             .paging(0, k).dialect(2))
    return [doc.id for doc in r.ft("idx:products").search(query, {"v": vector.tobytes()}).docs]


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_container_serves_knn_queries(docker_engine: DockerEngine, convention: str) -> None:
    image = docker_engine.images[convention].tag
    with RedisContainerProvider(image) as provider:
        assert provider.convention == convention
        r = provider.client()
        modules = {m[b"name"]: m[b"path"].decode() for m in r.execute_command("MODULE", "LIST")}
        # The image's own entrypoint loaded the module from its own folder: the options did not replace it.
        assert modules[b"search"].startswith(MODULE_DIRS[convention])
        assert create_index(r, IndexSpec("idx:products", "product:", (vector_field(8),)))
        vectors = np.random.default_rng(7).normal(size=(20, 8)).astype(np.float32)
        records = [{"id": str(i), "name": f"item {i}", "description": "", "category": "Audio", "price": float(i)}
                   for i in range(20)]
        write_hashes(r, [f"product:{i}" for i in range(20)], records, vectors, progress=False)
        target = 13
        nearby = vectors[target] + np.float32(0.01) * vectors[5]
        assert knn_ids(r, nearby, 3)[0] == f"product:{target}"
        config = r.config_get("*")
        assert (config["bind"], config["port"], config["save"]) == ("127.0.0.1", str(provider.port), "")


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_password_is_required(docker_engine: DockerEngine, convention: str) -> None:
    with RedisContainerProvider(docker_engine.images[convention].tag, password="s3cret-Pass.word") as provider:
        assert provider.url == f"redis://:s3cret-Pass.word@127.0.0.1:{provider.port}/0"
        for password in (None, "wrong"):
            with pytest.raises(redis.AuthenticationError):
                probe(provider.port, password).ping()
        assert redis.Redis.from_url(provider.url).ping()


def test_container_is_gone_after_the_block(docker_engine: DockerEngine) -> None:
    with RedisContainerProvider() as provider:  # the image setting: REDIS_WORKBOOK_IMAGE from the fixture
        assert provider.image == os.environ[IMAGE_ENV]
        container_id, port = provider.container_id, provider.port
        with contextlib.closing(docker_engine.client()) as client:
            attrs = client.containers.get(container_id).attrs
        assert attrs["HostConfig"]["NetworkMode"] == "host"
        assert not attrs["HostConfig"]["PortBindings"]
    with contextlib.closing(docker_engine.client()) as client:
        assert client.containers.list(all=True, filters={"id": container_id}) == []
    with pytest.raises(redis.ConnectionError):
        probe(port).ping()


def test_start_container_yields_a_url(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TESTCONTAINERS_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    with start_container(docker_engine.stack_image) as url:
        assert url.startswith("redis://:") and "@127.0.0.1:" in url
        assert redis.Redis.from_url(url).execute_command("FT._LIST") == []
    # Ryuk would be pulled from a registry: the provider turned it off because nobody chose.
    assert {name: os.environ[name] for name in TESTCONTAINERS_DEFAULTS} == TESTCONTAINERS_DEFAULTS
    assert tc_config.ryuk_disabled is True


def test_the_users_testcontainers_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "false")
    monkeypatch.setenv("TESTCONTAINERS_CONNECTION_MODE", "gateway_ip")
    configure_testcontainers()
    assert tc_config.ryuk_disabled is False
    assert tc_config.connection_mode_override == ConnectionMode.gateway_ip
    for name, value in TESTCONTAINERS_DEFAULTS.items():  # leave testcontainers' config as the other tests expect
        monkeypatch.setenv(name, value)
    configure_testcontainers()


def test_wrong_convention_is_a_clear_error(docker_engine: DockerEngine) -> None:
    # The stack image ignores a command's options: given them as a command, it cannot even start.
    with pytest.raises(RedisUnavailable, match="convention='redis-stack'"):
        RedisContainerProvider(docker_engine.stack_image, convention="redis").start()
    with contextlib.closing(docker_engine.client()) as client:
        assert client.containers.list(all=True, filters={"label": OWNER_LABEL}) == []


def test_containers_of_a_killed_process_are_removed_at_next_start(docker_engine: DockerEngine) -> None:
    script = textwrap.dedent(f"""
        import os
        from redis_workbook.grading.containers import RedisContainerProvider
        provider = RedisContainerProvider({docker_engine.redis_image!r}).start()
        print(provider.container_id, flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    orphan = out.stdout.split()[0]
    with contextlib.closing(docker_engine.client()) as client:
        assert client.containers.get(orphan).status == "running"
        with RedisContainerProvider(docker_engine.redis_image):
            with pytest.raises(docker.errors.NotFound):
                client.containers.get(orphan)


def dead_socket(folder: Path) -> str:
    """A unix socket file that nothing listens on any more."""
    path = folder / "docker.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    return f"unix://{path}"


@pytest.mark.parametrize("kind", ["dead socket", "no socket"])
def test_clear_error_when_no_docker_engine_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   kind: str) -> None:
    host = dead_socket(tmp_path) if kind == "dead socket" else f"unix://{tmp_path}/missing.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    assert docker_available() is False
    with pytest.raises(DockerUnavailable) as caught:
        with start_container(REDIS_LOCAL_TAG):
            pass
    message = str(caught.value)
    assert host in message and "Start Docker" in message and "--backend embedded" in message


def test_a_remote_docker_engine_is_refused_before_any_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://build-box.example:2376")
    with pytest.raises(DockerUnavailable, match="host networking"):
        RedisContainerProvider(REDIS_LOCAL_TAG).start()


def test_a_port_taken_before_redis_binds_it_is_retried(docker_engine: DockerEngine,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))  # bound, not listening: redis-server cannot bind it, PING is refused
        ports = iter([squatter.getsockname()[1]])
        real_free_port = containers.free_port
        monkeypatch.setattr(containers, "free_port", lambda: next(ports, None) or real_free_port())
        with RedisContainerProvider(docker_engine.redis_image) as provider:
            assert provider.port != squatter.getsockname()[1]
            assert provider.client().ping()


def test_image_setting_argument_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    assert image_setting() == DEFAULT_IMAGE == "redis:8.2"
    monkeypatch.setenv(IMAGE_ENV, STACK_IMAGE)
    assert image_setting() == STACK_IMAGE
    assert image_setting("redis:8.2.1") == "redis:8.2.1"
    with pytest.raises(ValueError, match="image"):
        image_setting("redis 8")


def test_each_image_family_gets_its_convention() -> None:
    assert image_convention("redis:8.2") == "redis"
    assert image_convention("docker.io/library/redis:8.2-bookworm") == "redis"
    assert image_convention(STACK_IMAGE) == "redis-stack"
    assert image_convention("redis-workbook/redis-stack-server:7.4.0-v1-local") == "redis-stack"
    assert image_convention(REDIS_LOCAL_TAG) == "redis"


@pytest.mark.parametrize("password", ["two words", "--requirepass", "", "quote'd", "x" * 129])
def test_unsafe_passwords_are_refused_before_anything_starts(password: str) -> None:
    with pytest.raises(ValueError, match="password"):
        RedisContainerProvider(STACK_IMAGE, password=password)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status waits for init here, but it runs no more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_private_dockerd_leaves_nothing_behind(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = PrivateDockerd().start()
    root = engine.root
    assert root is not None
    try:
        with contextlib.closing(engine.client()) as client:
            build_image(redis_recipe(), client)
        monkeypatch.setenv("DOCKER_HOST", engine.host)
        provider = RedisContainerProvider(REDIS_LOCAL_TAG).start()  # left running on purpose
        running = engine.leftovers()
        assert engine.pid in running and len(running) >= 4  # dockerd, containerd, shim, redis-server
    finally:
        engine.stop()
    assert engine.leftovers() == []
    assert [pid for pid in running if is_running(pid)] == []
    assert not root.exists()
    assert str(root) not in Path("/proc/self/mounts").read_text()
    with pytest.raises(redis.ConnectionError):
        probe(provider.port).ping()
    provider.stop()  # the engine is gone: a no-op, not an error
