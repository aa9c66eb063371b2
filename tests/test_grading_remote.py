"""The grader <-> notebook process round trip: every value type, marker, handle and failure, on a real Redis.

A notebook runs in the sandboxed worker exactly as when grading; the tests call into
it through the same `Notebook`/`RemoteNamespace` the `nb` fixture uses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import redis
from submissions import write_notebook

from redis_workbook.embeddings import HashingEmbedder, LocalEmbedder, OpenAIEmbedder
from redis_workbook.grading import backends, remote, sandbox, submission, wire, workerprocess
from redis_workbook.openai_server import OpenAIServer
from redis_workbook.server import EmbeddedRedis

HELPERS = '''
import ctypes
import os
import time

import numpy as np
import redis


def ident(value):
    return value


def same(a, b):
    return a is b


def whoami(r):
    opts = r.connection_pool.connection_kwargs
    return r.acl_whoami(), r.get("greeting"), opts.get("protocol"), type(r.ft("nope")).__name__


def set_key(r, key, value):
    r.set(key, value)


def embed(embedder, texts):
    return embedder.embed(texts), embedder.dim


def ask(chat):
    reply = chat.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "ping?"}])
    return reply.choices[0].message.content


def call_back(fn):
    first = fn("a", 1)
    second = fn("b", flag=True)
    return first, second


class Counter:
    def __init__(self, start):
        self.count = start

    def bump(self, by=1):
        self.count += by
        return self


class MyError(Exception):
    pass


def raise_(kind):
    if kind == "value":
        raise ValueError("dim must be positive, got -1")
    if kind == "key":
        raise KeyError("product:99")
    if kind == "mine":
        raise MyError("custom trouble")
    if kind == "exit":
        raise SystemExit(3)
    if kind == "redis":
        redis.Redis.from_url(os.environ["REDIS_URL"]).execute_command("FT.SEARCH", "no-such-index", "*")


def cycle():
    a = []
    a.append(a)
    return a


def spin():
    while True:
        pass


def crash():
    ctypes.string_at(0)
'''


@pytest.fixture(scope="module")
def under_test() -> Iterator[backends.RedisUnderTest]:
    server = backends.start("embedded")
    yield server
    server.stop()


def start_notebook(path: Path, under_test: backends.RedisUnderTest, *cells: str, **settings: float) -> remote.Notebook:
    sub = submission.load(write_notebook(path, *cells))
    notebook = remote.Notebook(sub, under_test.learner_url, workerprocess.Settings(**settings),
                               hide=[str(path.parent)], grading_address=under_test.address)
    notebook.prepare_for_test()
    return notebook


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory,
             under_test: backends.RedisUnderTest) -> Iterator[remote.Notebook]:
    notebook = start_notebook(tmp_path_factory.mktemp("nb") / "helpers.ipynb", under_test, HELPERS, call_timeout=10)
    yield notebook
    notebook.close()


@pytest.fixture
def nb(notebook: remote.Notebook) -> remote.RemoteNamespace:
    notebook.prepare_for_test()
    return remote.RemoteNamespace(notebook)


PLAIN = [None, True, False, 0, -7, 2**80, 1.5, -0.0, math.inf, "", "héllo\n\t\u2603", b"", b"\x00\xff\r\n",
         [], [1, [2, [3]]], (), (1, ("x", b"y")), {}, {"a": 1, b"k": (1, 2), 3: None, (1, 2): [b"v"]},
         {1, 2, 3}, frozenset({"a"}), np.float32(1.25), np.int64(-3), np.bool_(True), np.uint8(255)]
ARRAYS = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2.5]), np.array([], dtype=np.int64),
          np.array([True, False]), np.array([1 + 2j]), np.array(["ab", "c"]), np.array([b"x", b"yz"]),
          np.arange(4, dtype=">i4"), np.zeros((2, 0, 3), dtype=np.uint16)]


@pytest.mark.parametrize("value", PLAIN, ids=lambda v: type(v).__name__)
def test_plain_values_come_back_with_their_types(nb: remote.RemoteNamespace, value: object) -> None:
    got = nb.ident(value)
    assert type(got) is type(value)
    assert got == value
    if isinstance(value, (list, tuple, dict)):
        assert repr(got) == repr(value)  # nested types too: tuples stay tuples, bytes stay bytes


def test_nan_and_arrays_keep_dtype_and_shape(nb: remote.RemoteNamespace) -> None:
    assert math.isnan(nb.ident(math.nan))
    for array in ARRAYS:
        got = nb.ident(array)
        assert isinstance(got, np.ndarray) and got.dtype == array.dtype and got.shape == array.shape
        assert np.array_equal(got, array)
        assert got.flags.writeable


def test_keyword_arguments_and_objects_become_handles(nb: remote.RemoteNamespace) -> None:
    counter = nb.Counter(start=5)
    assert isinstance(counter, remote.RemoteHandle) and "Counter" in repr(counter)
    assert counter.count == 5
    assert counter.bump(by=2) is not None and counter.count == 7
    counter.count = 40
    assert counter.bump().count == 41
    assert nb.same(counter, counter) is True
    with pytest.raises(AttributeError, match="no_such"):
        counter.no_such  # noqa: B018 - the attribute read is the test


def test_a_value_that_cannot_be_sent_fails_clearly(nb: remote.RemoteNamespace) -> None:
    with pytest.raises(pytest.fail.Exception, match="could not be sent back.*nested"):
        nb.cycle()
    with pytest.raises(TypeError, match="cannot pass a object"):
        nb.ident(object())


def test_redis_clients_reach_the_same_server_as_the_learner_user(nb: remote.RemoteNamespace,
                                                                 under_test: backends.RedisUnderTest) -> None:
    admin = under_test.admin()
    admin.set("greeting", "hi")
    user, greeting, protocol, ft_type = nb.whoami(admin)
    assert user.startswith("workbook-learner-") and greeting == b"hi" and protocol is None
    assert ft_type == "Search"
    decoding = redis.Redis.from_url(under_test.admin_url, decode_responses=True, protocol=2)
    user, greeting, protocol, _ = nb.whoami(decoding)
    assert user.startswith("workbook-learner-") and greeting == "hi" and protocol == 2
    with EmbeddedRedis() as other:  # a client of another server, as its learner user: the worker connects there
        secured = backends.secure("embedded", other.url, stop=lambda: None, own=True)
        nb.set_key(redis.Redis.from_url(secured.learner_url), "from-notebook", "yes")
        assert secured.admin().get("from-notebook") == b"yes"
        assert admin.get("from-notebook") is None
        # With any other user's rights learner code could CONFIG SET, REPLICAOF to any address, SHUTDOWN: refused.
        for client in (secured.admin(), redis.Redis(port=other.port, password=other.password)):
            with pytest.raises(RuntimeError, match="never the grader's own rights"):
                nb.set_key(client, "from-notebook", "no")


def test_embedders_are_rebuilt_in_the_notebook_process(nb: remote.RemoteNamespace) -> None:
    texts = ["wireless headphones", "trail running shoes"]
    for embedder in (HashingEmbedder(64), LocalEmbedder()):
        vectors, dim = nb.embed(embedder, texts)
        assert dim == embedder.dim
        assert np.allclose(vectors, embedder.embed(texts), atol=1e-5)
    with OpenAIServer() as server:
        embedder = OpenAIEmbedder(client=server.client())
        vectors, dim = nb.embed(embedder, texts)
        assert dim == 1536 and np.allclose(vectors, embedder.embed(texts), atol=1e-6)


def test_openai_client_is_rebuilt_with_its_base_url(nb: remote.RemoteNamespace) -> None:
    with OpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-local-test")
        reply = nb.ask(client)
        assert "ping?" in server.prompts()[-1]
        assert reply == client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "ping?"}]).choices[0].message.content


def test_recorder_sees_every_call_made_in_the_notebook(nb: remote.RemoteNamespace) -> None:
    recorder = remote.Recorder(returns={"answer": (1, b"x")})
    first, second = nb.call_back(recorder)
    assert first == second == {"answer": (1, b"x")}
    assert recorder.calls == [("a", 1), ("b",)]
    assert recorder.kwargs == [{}, {"flag": True}]


def test_exceptions_keep_their_type_and_message(nb: remote.RemoteNamespace) -> None:
    with pytest.raises(ValueError, match="^dim must be positive, got -1$") as info:
        nb.raise_("value")
    assert "cell 1" in info.value.learner_traceback and "raise_" in info.value.learner_traceback
    with pytest.raises(KeyError) as key_error:
        nb.raise_("key")
    assert str(key_error.value) == "'product:99'"
    with pytest.raises(redis.ResponseError, match="no-such-index|no such index"):
        nb.raise_("redis")
    with pytest.raises(remote.LearnerError, match="custom trouble") as mine:
        nb.raise_("mine")
    assert type(mine.value).__name__ == "MyError"
    with pytest.raises(remote.LearnerError) as exit_:  # never a real SystemExit in the grader
        nb.raise_("exit")
    assert type(exit_.value).__name__ == "SystemExit" and not isinstance(exit_.value, SystemExit)


def test_a_missing_name_says_so(nb: remote.RemoteNamespace) -> None:
    with pytest.raises(remote.MissingDefinition, match="does not define `knn_search`"):
        nb.knn_search  # noqa: B018
    assert not hasattr(nb, "knn_search")


def test_hang_and_crash_in_a_call_fail_that_test_and_the_next_one_gets_a_fresh_process(
        tmp_path: Path, under_test: backends.RedisUnderTest) -> None:
    notebook = start_notebook(tmp_path / "calls.ipynb", under_test, HELPERS, call_timeout=1.5)
    try:
        nb = remote.RemoteNamespace(notebook)
        counter = nb.Counter(1)
        with pytest.raises(pytest.fail.Exception, match=r"`spin` did not finish: it timed out after 1.5 s"):
            nb.spin()
        with pytest.raises(pytest.fail.Exception, match="stopped earlier in this test"):
            nb.ident(1)
        notebook.prepare_for_test()  # the next test
        assert nb.ident(2) == 2
        with pytest.raises(pytest.fail.Exception, match="before its process was restarted"):
            counter.bump()
        with pytest.raises(pytest.fail.Exception, match=r"`crash` killed the process \(SIGSEGV"):
            nb.crash()
        notebook.prepare_for_test()
        assert nb.ident(3) == 3 and notebook.restarts == 2
    finally:
        notebook.close()


def test_cells_that_hang_exit_crash_or_exhaust_memory_are_skipped(tmp_path: Path,
                                                                  under_test: backends.RedisUnderTest) -> None:
    cells = ["first = 1\n", "while True:\n    pass\n", "import os\nos._exit(9)\n", "import sys\nsys.exit(4)\n",
             "import ctypes\nctypes.string_at(0)\n", "hog = bytearray(8 * 1024 ** 3)\n", "1 / 0\n",
             "def broken(:\n", "last = first + 1\n"]
    notebook = start_notebook(tmp_path / "cells.ipynb", under_test, *cells, cell_timeout=1.5, max_restarts=4)
    try:
        problems = notebook.problems()
        assert problems == [
            "cell 2 (`while True:`) was skipped: it timed out after 1.5 s",
            "cell 3 (`import os`) was skipped: it ended the process (exit code 9)",
            "cell 4 (`import sys`) raised SystemExit: 4",
            "cell 5 (`import ctypes`) was skipped: it killed the process (SIGSEGV, a crash in native code)",
            "cell 6 (`hog = bytearray(8 * 1024 ** 3)`) was skipped: it ran out of memory (limit 2048 MiB)",
            "cell 7 (`1 / 0`) raised ZeroDivisionError: division by zero",
            "cell 8 (`def broken(:`) raised SyntaxError: invalid syntax (line 1)",
        ]
        assert remote.RemoteNamespace(notebook).last == 2
        assert notebook.restarts == 4
    finally:
        notebook.close()


def test_sandbox_confines_the_notebook_process(tmp_path: Path, under_test: backends.RedisUnderTest) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "answers.txt").write_text("42")
    probe = f'''
import os
uid = os.getuid()
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
cwd, files = os.getcwd(), sorted(os.listdir("."))
try:
    leaked = open({str(secret / "answers.txt")!r}).read()
except OSError as exc:
    leaked = type(exc).__name__
print("x" * 5_000_000)
'''
    notebook = remote.Notebook(submission.load(write_notebook(tmp_path / "probe.ipynb", probe)),
                               under_test.learner_url, workerprocess.Settings(output_bytes=1000), hide=[str(secret)])
    try:
        notebook.prepare_for_test()
        nb = remote.RemoteNamespace(notebook)
        assert nb.files == ["probe.ipynb"]
        output = notebook.output.text()
        assert len(output) < 2200 and "bytes of output left out" in output
        report = notebook.sandbox_report
        assert report["mode"] == ("root" if os.geteuid() == 0 else "user")
        if os.geteuid() == 0:
            assert nb.uid >= sandbox.UID_BASE
        assert nb.leaked == "FileNotFoundError"  # not on the notebook's allow-list of folders
        assert nb.pids[0] == 1 and len(nb.pids) < 10  # its own PID namespace: the grader's processes are invisible
        assert nb.cwd == "/tmp/work"
        warnings = [w for w in report["warnings"] if not (os.geteuid() != 0 and w.startswith("no cgroup"))]
        assert not warnings, warnings
    finally:
        notebook.close()


def test_wire_refuses_what_a_hostile_worker_could_send() -> None:
    bad = [{"__t": "nd", "dtype": "O", "shape": [1], "v": ""}, {"__t": "nd", "dtype": "<f4", "shape": [2], "v": "AAAA"},
           {"__t": "bytes", "v": "!!"}, {"__t": "pickle", "v": ""}, {"__t": "dict", "v": [[[1], 2]]}, {"x": 1}]
    nested: object = 1
    for _ in range(wire.MAX_DEPTH + 5):
        nested = [nested]
    for data in [*bad, nested]:
        with pytest.raises(wire.WireError):
            wire.decode(data)


def test_url_backend_adds_and_removes_a_restricted_learner_user() -> None:
    with EmbeddedRedis() as server:
        under_test = backends.start("url", server.url)
        learner = redis.Redis.from_url(under_test.learner_url)
        learner.set("mine", "ok")
        for command in (("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "1mb"), ("SHUTDOWN",),
                        ("ACL", "LIST"), ("EVAL", "return 1", "0"), ("SCRIPT", "FLUSH"),
                        ("FT.CONFIG", "SET", "TIMEOUT", "1"), ("RESTORE", "k", "0", b"\x00"), ("SORT", "mine")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                learner.execute_command(*command)
        assert learner.execute_command("MODULE", "LIST")
        assert learner.execute_command("FT.CONFIG", "GET", "TIMEOUT") and learner.keys("mine") == [b"mine"]
        assert learner.info("memory")["used_memory"] > 0  # the harmless @dangerous reads the notebooks teach
        user = learner.acl_whoami()
        under_test.stop()
        assert user not in server.client().acl_users() and server.client().get("mine") == b"ok"
