"""The Redis a submission is graded on, and the restricted user its notebook connects as.

`--backend embedded` starts a private EmbeddedRedis, `testcontainers` a container
(redis_workbook.containers), `url` uses a server someone else runs. On servers it
starts itself the grader then creates two ACL users: an admin for the trusted
tests and a learner user without FLUSHALL, CONFIG, SHUTDOWN and the other
server-wide commands; and it switches the default user off, so the password on
redis-server's command line opens nothing.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from redis_workbook.connection import redact

BACKENDS = ("embedded", "testcontainers", "url")
ADMIN_USER = "workbook-grader"
# Everything except commands that reach beyond the learner's own keys or could stop or reconfigure the server.
# Everything but Redis's own @dangerous category (RESTORE of hand-made payloads, SORT, DEBUG, CONFIG, ...) and
# commands that reach beyond the learner's own keys or could stop or reconfigure the server; then the few
# harmless @dangerous reads the notebooks teach (INFO, KEYS, SLOWLOG GET, MODULE LIST, ACL WHOAMI).
LEARNER_RULES = (
    "+@all", "-@dangerous", "-flushall", "-flushdb", "-config", "-shutdown", "-debug", "-module", "-acl", "-monitor",
    "-save", "-bgsave", "-bgrewriteaof", "-replicaof", "-slaveof", "-failover", "-swapdb", "-migrate", "-sync",
    "-psync", "-client|kill", "-client|pause", "-script", "-eval", "-evalsha", "-eval_ro", "-evalsha_ro",
    "-function", "-fcall", "-fcall_ro", "+info", "+keys", "+slowlog|get", "+slowlog|len", "+module|list",
    "+acl|whoami",
)
# Every server the grader starts: no payload from RESTORE unchecked, bounded client buffers, bounded values.
SERVER_SETTINGS = {"sanitize-dump-payload": "yes", "client-query-buffer-limit": "16mb",
                   "proto-max-bulk-len": "16mb", "maxmemory-clients": "64mb"}
# Search-module settings are server-wide too (only where the module is loaded); reading them is what 03 teaches.
MODULE_RULES = ("-ft.config", "+ft.config|get")


@dataclass
class RedisUnderTest:
    """A running Redis with an admin URL (trusted tests) and a learner URL (the notebook's process)."""

    kind: str
    admin_url: str
    learner_url: str
    address: tuple[str, int]
    stop: Callable[[], None]
    warnings: list[str] = field(default_factory=list)
    pid: int | None = None  # the server's process, when the grader started it on this machine

    def admin(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.admin_url, **kwargs)  # type: ignore[arg-type]

    def alive(self) -> bool:
        try:
            client = self.admin(socket_timeout=3, socket_connect_timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False


def with_user(url: str, username: str, password: str) -> str:
    """`url` (redis://, rediss:// or unix://) with other credentials."""
    parts = urllib.parse.urlsplit(url)
    netloc = f"{urllib.parse.quote(username, safe='')}:{urllib.parse.quote(password, safe='')}@"
    if parts.scheme == "unix":
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    host = parts.hostname or "127.0.0.1"
    netloc += f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/0", parts.query, parts.fragment))


def address_of(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host in ("localhost", "::1") else host), parts.port or 6379


def start(kind: str, url: str | None = None, *, maxmemory_mb: int | None = None, unix_socket: Path | None = None,
          folder: Path | None = None) -> RedisUnderTest:
    """A fresh Redis of `kind` (or the one at `url`), with its admin and learner users ready.

    Servers started here get `maxmemory_mb` (noeviction: a learner who fills Redis gets OOM errors,
    the grader's FLUSHALL still works). An embedded one may listen on `unix_socket` instead of TCP,
    with its files below `folder`.
    """
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {kind!r}.")
    if kind == "url":
        if not url:
            raise ValueError("--backend url needs --redis-url redis://[user:password@]host:port "
                             "(that Redis is emptied with FLUSHALL before every test).")
        return _secure(kind, url, stop=lambda: None, own=False)
    if kind == "embedded":
        from redis_workbook.server import EmbeddedRedis

        server = EmbeddedRedis(unix_socket=unix_socket, parent=folder, extra_args=_server_args(maxmemory_mb))
        server.start()
        under_test = _secure(kind, server.url, stop=server.stop, own=True)
        under_test.pid = server.process.pid if server.process else None
        return under_test
    try:
        from redis_workbook.grading.containers import RedisContainerProvider
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"--backend testcontainers needs the `containers` extra ({exc.name} is not installed): "
                           "pip install 'redis-workbook[containers]', or grade with the embedded backend.") from None

    container = RedisContainerProvider().start()
    under_test = _secure(kind, container.url, stop=container.stop, own=True)
    with under_test.admin() as client:
        for name, value in _settings(maxmemory_mb).items():
            client.config_set(name, value)
    return under_test


def _settings(maxmemory_mb: int | None) -> dict[str, str]:
    memory = {"maxmemory": f"{maxmemory_mb}mb", "maxmemory-policy": "noeviction"} if maxmemory_mb else {}
    return {**SERVER_SETTINGS, **memory}


def _server_args(maxmemory_mb: int | None) -> tuple[str, ...]:
    return tuple(arg for name, value in _settings(maxmemory_mb).items() for arg in (f"--{name}", value))


def _secure(kind: str, url: str, stop: Callable[[], None], own: bool) -> RedisUnderTest:
    """Create the learner user (and on our own servers the admin user, then switch `default` off)."""
    client = redis.Redis.from_url(url)
    warnings: list[str] = []
    try:
        admin_url = url
        if own:
            admin_password = secrets.token_hex(16)
            client.acl_setuser(ADMIN_USER, enabled=True, passwords=[f"+{admin_password}"], keys=["*"],
                               channels=["*"], commands=["+@all"])
            admin_url = with_user(url, ADMIN_USER, admin_password)
        learner = f"workbook-learner-{secrets.token_hex(4)}"
        learner_password = secrets.token_hex(16)
        try:
            client.execute_command("ACL", "SETUSER", learner, "reset", "on", f">{learner_password}", "~*", "&*",
                                   *LEARNER_RULES)
            for rule in MODULE_RULES:
                try:
                    client.execute_command("ACL", "SETUSER", learner, rule)
                except redis.ResponseError:
                    pass
            learner_url = with_user(url, learner, learner_password)
        except redis.ResponseError as exc:
            learner_url = url
            warnings.append(f"could not create a restricted Redis user on {redact(url)} ({exc}): learner code "
                            "runs with the grader's Redis rights there")
        if own:
            client.acl_setuser("default", enabled=False)
    finally:
        client.close()
    if not own and learner_url != url:
        stop = _deleting_user(url, learner, stop)
    return RedisUnderTest(kind, admin_url, learner_url, address_of(url), stop, warnings)


def _deleting_user(url: str, user: str, stop: Callable[[], None]) -> Callable[[], None]:
    def cleanup() -> None:
        try:
            client = redis.Redis.from_url(url, socket_timeout=5)
            client.acl_deluser(user)
            client.close()
        except (redis.RedisError, OSError):
            pass
        stop()

    return cleanup
