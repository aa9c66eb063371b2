"""Redis with the query engine in a Docker container, through testcontainers.

The grader uses this where a Docker engine answers; learners with Docker can
too. The image is a setting: the `image` argument, else env REDIS_WORKBOOK_IMAGE,
else the official `redis:8.2` (Redis 8 bundles the query engine). Redis Stack,
`redis/redis-stack-server:7.4.0-v1`, is the documented alternative.

Why it does not use testcontainers' RedisContainer as is:

- Host networking on a free loopback port passed to `redis-server --port`:
  no port publishing (host mode refuses port bindings, so `self.ports` stays
  empty and `get_exposed_port()` is never called), no bridge network, and the
  server listens on 127.0.0.1 only.
- The password: RedisContainer replaces the command with `redis-server
  --requirepass ...`, which on Redis Stack skips the module loading. Each image
  family gets it its own way instead. The official `redis:8.x` image takes
  redis-server arguments as the command (its docker-entrypoint.sh appends
  `--loadmodule` for the bundled modules); `redis/redis-stack-server`'s command
  is its `/entrypoint.sh`, which loads the modules and appends `REDIS_ARGS` from
  the environment, so the options go there and the command stays untouched.
- Readiness: PING polled every 0.05 s (testcontainers' default 1 s poll makes a
  130 ms start take 1-3 s), then a check that the search module is loaded.
- Ryuk (testcontainers' reaper) is disabled when the user did not choose: its
  image is pulled from a registry, which offline machines cannot reach. In its
  place the container is removed when the context exits or the interpreter
  exits, and containers left by a killed process are removed at the next start.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import redis
import requests.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry
from testcontainers.core.config import ConnectionMode
from testcontainers.core.config import testcontainers_config as tc_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import get_docker_host

from redis_workbook.connection import redact, require_search
from redis_workbook.errors import RedisUnavailable
from redis_workbook.server import free_port

DEFAULT_IMAGE = "redis:8.2"
STACK_IMAGE = "redis/redis-stack-server:7.4.0-v1"
IMAGE_ENV = "REDIS_WORKBOOK_IMAGE"
CONVENTIONS = ("redis", "redis-stack")
READY_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3
POLL_INTERVAL_S = 0.05
OWNER_LABEL = "org.redis-workbook.owner"
TESTCONTAINERS_DEFAULTS = {"TESTCONTAINERS_RYUK_DISABLED": "true", "TESTCONTAINERS_CONNECTION_MODE": "docker_host"}
_PASSWORD = re.compile(r"[A-Za-z0-9._~+=-]{1,128}")
_HOST_NETWORK_HINT = (
    "On Docker Desktop, host networking must be switched on (Settings > Resources > Network > Enable host "
    "networking, Docker Desktop 4.34+); otherwise use REDIS_URL or `--backend embedded`. "
)
_DOCKER_FIX = (
    "Start Docker (Docker Desktop, or `sudo systemctl start docker`), point DOCKER_HOST at a running "
    "engine, or grade without Docker: `--backend embedded`."
)


class DockerUnavailable(RedisUnavailable):
    """No Docker engine answered (or not one on this machine), so no container can be started."""


class PortTaken(RedisUnavailable):
    """Another process bound the free port first; start() retries on a new one."""


def require_local_engine() -> None:
    """Host networking puts Redis on the engine's own loopback: the engine must run on this machine."""
    host = docker_host()
    if host.startswith(("tcp://", "http://", "https://", "ssh://")):
        name = urllib.parse.urlparse(host).hostname or ""
        if name not in ("localhost", "127.0.0.1", "::1"):
            raise DockerUnavailable(
                f"DOCKER_HOST={host} is another machine, but the container's Redis listens on that engine's "
                f"127.0.0.1 (host networking). Use a local Docker engine, REDIS_URL, or `--backend embedded`."
            )


def configure_testcontainers() -> None:
    """Ryuk off and docker_host connection mode unless the user chose otherwise (env wins)."""
    for name, value in TESTCONTAINERS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # testcontainers reads some settings once at import: keep its config object in step with the env.
    tc_config.ryuk_disabled = os.environ["TESTCONTAINERS_RYUK_DISABLED"].lower() in ("yes", "true", "t", "y", "1")
    tc_config.connection_mode_override = ConnectionMode(os.environ["TESTCONTAINERS_CONNECTION_MODE"])


def image_setting(image: str | None = None) -> str:
    """The image to run: the argument, else REDIS_WORKBOOK_IMAGE, else redis:8.2."""
    chosen = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    if not isinstance(chosen, str) or not chosen.strip() or any(c.isspace() for c in chosen):
        raise ValueError(f"image must be an image name such as {DEFAULT_IMAGE!r} or {STACK_IMAGE!r}, got {chosen!r}.")
    return chosen


def image_convention(image: str) -> str:
    """How the image takes server options: "redis-stack" (REDIS_ARGS env) or "redis" (the command)."""
    repository = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return "redis-stack" if repository.startswith("redis-stack") else "redis"


def docker_host() -> str:
    """The engine testcontainers will use: DOCKER_HOST, its properties file, the docker context, or the default."""
    return os.environ.get("DOCKER_HOST") or get_docker_host() or "unix:///var/run/docker.sock"


def docker_client(timeout: float = 60.0) -> docker.DockerClient:
    """A client to a Docker engine that answered, or DockerUnavailable with the fix."""
    host = docker_host()
    if host.startswith("unix://") and not os.path.exists(host[len("unix://"):]):
        raise DockerUnavailable(f"No Docker engine: the socket {host} does not exist. {_DOCKER_FIX}")
    try:
        if os.environ.get("DOCKER_HOST"):
            client = docker.from_env(timeout=timeout)  # also honours DOCKER_TLS_VERIFY / DOCKER_CERT_PATH
        else:
            client = docker.DockerClient(base_url=host, version="auto", timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise DockerUnavailable(f"No Docker engine answered at {host}: {exc}. {_DOCKER_FIX}") from None
    return client


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within `timeout` seconds."""
    try:
        docker_client(timeout=timeout).close()
    except DockerUnavailable:
        return False
    return True


def check_password(password: str, convention: str) -> str:
    """Reject passwords the image would split or misread, before anything starts."""
    if not isinstance(password, str) or not _PASSWORD.fullmatch(password) or password.startswith("--"):
        raise ValueError(
            "password must be 1-128 characters from A-Z a-z 0-9 . _ ~ + = - and must not start with '--': "
            f"the {convention} image passes it on redis-server's command line"
            + (" through REDIS_ARGS, which its entrypoint splits on whitespace" if convention == "redis-stack" else "")
            + ". Omit it to get a random one."
        )
    return password


def server_options(port: int, password: str) -> list[str]:
    """redis-server options: loopback only, the password, no persistence."""
    return ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
            "--save", "", "--appendonly", "no"]


class HostNetworkRedis(DockerContainer):
    """A Redis container on the host network: no port bindings, the port passed to redis-server."""

    def __init__(self, image: str, port: int, password: str, convention: str) -> None:
        owner = f"{socket.gethostname()}:{os.getpid()}"
        super().__init__(image, labels={OWNER_LABEL: owner}, name=f"redis-workbook-{port}-{secrets.token_hex(3)}")
        # `network` (not network_mode) also stops testcontainers from guessing a network of its own.
        self._kwargs = {**self._kwargs, "network": "host"}
        self.ports.clear()
        self.port = port
        options = server_options(port, password)
        if convention == "redis-stack":
            # The stack entrypoint word-splits REDIS_ARGS, so an empty value cannot be passed: a bare
            # `--save` followed by another option is Redis's own spelling of `save ""` (7.0.1+).
            stack_options = [o for o in options if o != ""]
            self.with_env("REDIS_ARGS", " ".join(stack_options))
        else:
            self.with_command(["redis-server", *options])

    def get_exposed_port(self, port: int) -> int:  # pragma: no cover - guard, never called
        raise RuntimeError("Host networking: connect to 127.0.0.1 on the port passed to redis-server.")


class RedisContainerProvider:
    """One Redis container. Use as a context manager (yields itself; `.url`) or call start()/stop()."""

    def __init__(self, image: str | None = None, password: str | None = None, *,
                 convention: str | None = None, ready_timeout: float = READY_TIMEOUT_S) -> None:
        self.image = image_setting(image)
        self.convention = convention or image_convention(self.image)
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}.")
        self.password = check_password(password, self.convention) if password is not None else secrets.token_hex(16)
        if not isinstance(ready_timeout, (int, float)) or ready_timeout <= 0:
            raise ValueError(f"ready_timeout must be a positive number of seconds, got {ready_timeout!r}.")
        self.ready_timeout = float(ready_timeout)
        self.port: int | None = None
        self.container: HostNetworkRedis | None = None
        self.ready_seconds: float | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RedisUnavailable("The container is not started: call start() or use `with`.")
        return f"redis://:{urllib.parse.quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def container_id(self) -> str | None:
        return self.container.get_container_id() if self.container is not None else None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client for this container; binary-safe unless told otherwise."""
        kwargs.setdefault("decode_responses", False)
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self) -> RedisContainerProvider:
        if self.container is not None:
            return self
        configure_testcontainers()
        require_local_engine()
        client = docker_client()
        try:
            reap_orphans(client)
            _ensure_image(client, self.image)
        finally:
            client.close()
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start_on_free_port()
            except PortTaken:
                if attempt == PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_on_free_port(self) -> RedisContainerProvider:
        """One try: another process may take the free port before redis-server binds it."""
        started = time.perf_counter()
        self.port = free_port()
        self.container = HostNetworkRedis(self.image, self.port, self.password, self.convention)
        atexit.register(self.stop)
        try:
            self._start_container()
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_container(self) -> None:
        assert self.container is not None
        try:
            self.container.start()
        except docker.errors.DockerException as exc:
            raise RedisUnavailable(
                f"Docker could not start {self.image} with the {self.convention!r} convention: {exc}. "
                f"If this image takes redis-server options the other way, pass convention="
                f"{'redis' if self.convention == 'redis-stack' else 'redis-stack'!r}."
            ) from None

    def _wait_ready(self, started: float) -> None:
        assert self.container is not None and self.port is not None
        where = f"the {self.image} container (127.0.0.1:{self.port})"
        # No retries: redis-py 8 retries a refused connection 10 times with backoff, which hides our 0.05 s poll.
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                             socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0))
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.AuthenticationError as exc:
                    raise RedisUnavailable(
                        f"{where} refused the password ({exc}): the image did not take the server options the "
                        f"{self.convention!r} way. Pass convention='redis' (options as the command, official "
                        "redis:8 images) or convention='redis-stack' (REDIS_ARGS, redis/redis-stack-server)."
                    ) from None
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    self._check_running(where, started)
                    time.sleep(POLL_INTERVAL_S)
            require_search(client, where)
            self.ready_seconds = time.perf_counter() - started
        finally:
            client.close()

    def _check_running(self, where: str, started: float) -> None:
        assert self.container is not None
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            logs = self.logs()
            error = PortTaken if "Address already in use" in logs else RedisUnavailable
            raise error(f"{where} exited before answering PING. Its log:\n{logs}")
        if time.perf_counter() - started > self.ready_timeout:
            raise RedisUnavailable(f"{where} did not answer PING within {self.ready_timeout:.0f} s. "
                                   f"{_HOST_NETWORK_HINT if sys.platform != 'linux' else ''}Its log:\n{self.logs()}")

    def logs(self) -> str:
        """The container's output, for error messages (the password redacted)."""
        if self.container is None:
            return "(no container)"
        try:
            out, err = self.container.get_logs()
        except docker.errors.DockerException as exc:
            return f"(logs unavailable: {exc})"
        text = (out + err).decode(errors="replace").strip() or "(empty log)"
        return text.replace(self.password, "***")

    def stop(self) -> None:
        """Remove the container (killed, then deleted with its volumes). Safe to call twice."""
        container, self.container = self.container, None
        atexit.unregister(self.stop)
        if container is not None and container._container is not None:
            # NotFound: already removed; the others: the engine itself is gone, and the container with it.
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                container.stop()

    def __enter__(self) -> RedisContainerProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = redact(self.url) if self.port is not None else "not started"
        return f"RedisContainerProvider(image={self.image!r}, convention={self.convention!r}, {where})"


@contextlib.contextmanager
def start_container(image: str | None = None, password: str | None = None) -> Iterator[str]:
    """A Redis container for the duration of the block; yields its URL (password included)."""
    with RedisContainerProvider(image, password) as provider:
        yield provider.url


def _ensure_image(client: docker.DockerClient, image: str) -> None:
    """Pull only a missing image, and say clearly what to do when the pull fails."""
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except docker.errors.DockerException as exc:
        raise RedisUnavailable(
            f"The image {image} is not on this Docker engine and pulling it failed: {exc}. Pull it yourself "
            f"(`docker pull {image}`), or set {IMAGE_ENV} to an image the engine has (e.g. the locally built "
            "redis-workbook/redis:8.2-local from tests/docker_image.py)."
        ) from None


def reap_orphans(client: docker.DockerClient) -> list[str]:
    """Remove containers this provider started from processes on this machine that no longer exist."""
    removed = []
    host = socket.gethostname()
    for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
        owner_host, _, pid = container.labels.get(OWNER_LABEL, "").rpartition(":")
        if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed.append(container.id)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
