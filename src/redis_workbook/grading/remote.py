"""The grader's side of a submission: a sandboxed worker runs the notebook, `nb` calls into it.

`Notebook` starts the worker (worker.py), runs the code cells one by one with a
time limit each, and restarts the worker without a cell that hung or killed it
(a bounded number of times). Then `RemoteNamespace` (the `nb` fixture) turns
attribute access and calls into requests; objects that are not plain values
stay in the worker and come back as `RemoteHandle`s. A call that hangs or kills
the worker fails the test with a message; the next test gets a fresh worker.

In-process self-checks use `LocalNamespace` over the notebook's globals() instead. The worker's
process itself (starting, limits, output, ending it) is `workerprocess`; what a check may hand it
besides plain values and Redis clients is `markers`.
"""

from __future__ import annotations

import builtins
import time
import urllib.parse
import uuid
from typing import Any, NoReturn

import pytest
import redis

from redis_workbook.grading import backends, markers, wire
from redis_workbook.grading.enclosure import LOOPBACK, Enclosure, SandboxUnavailable
from redis_workbook.grading.submission import Submission
from redis_workbook.grading.workerprocess import (
    CappedOutput,
    InfrastructureError,
    Settings,
    WorkerGone,
    WorkerProcess,
)


class MissingDefinition(AttributeError):
    """The notebook does not define a name a test asked for."""


class LearnerError(Exception):
    """Base of exceptions rebuilt from learner code whose own type is not re-created here."""


class Recorder:
    """A callable test double that records its calls; in remote mode it lives in the worker.

    `.calls` is the list of positional-argument tuples and `.kwargs` the matching
    keyword dicts; in remote mode both are brought up to date after each call into
    the notebook. `returns` must be a plain value (it is sent to the worker).
    """

    def __init__(self, returns: Any = None) -> None:
        self.returns = returns
        self.calls: list[tuple] = []
        self.kwargs: list[dict] = []
        self.id = uuid.uuid4().hex

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        self.kwargs.append(kwargs)
        return self.returns

    def __repr__(self) -> str:
        return f"Recorder(returns={self.returns!r}, {len(self.calls)} calls)"


# ---------------------------------------------------------------------------------------------- notebook
def _first_line(source: str) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


class Notebook:
    """A submission's notebook in a sandboxed worker: cells run once, then the tests' calls."""

    def __init__(self, submission: Submission, redis_url: str, settings: Settings | None = None,
                 hide: list[str] | None = None, grading_address: tuple[str, int] | None = None,
                 notebook_redis_url: str | None = None, enclosure: Enclosure | None = None) -> None:
        """`redis_url`: the Redis under test, for the clients the tests pass in. `notebook_redis_url`: the
        notebook's own REDIS_URL (`redis_workbook.connect()` in its cells), by default the same server.
        `enclosure`: the submission's folder, gateway and box (made here, and closed by close(), if not given)."""
        self.submission = submission
        self.settings = settings or Settings()
        self.owns_enclosure = enclosure is None
        if enclosure is None:
            try:
                enclosure = Enclosure(self.settings.limits, self.settings.sandbox_mode)
            except SandboxUnavailable as exc:
                raise InfrastructureError(str(exc)) from None
        self.enclosure = enclosure
        reach = self.enclosure.reach
        self.output = CappedOutput(self.settings.output_bytes)
        self.init = {"op": "init", "redis_url": reach(redis_url),
                     "notebook_redis_url": reach(notebook_redis_url or redis_url),
                     "notebook_name": submission.name,
                     "notebook_text": submission.text,
                     "sandbox": {"mode": self.enclosure.mode, "limits": vars(self.settings.limits),
                                 "hide": list(hide or []), "expose": [str(self.enclosure.sockets)],
                                 "folder": str(self.enclosure.folder)}}
        self.grading_address = grading_address
        self.worker: WorkerProcess | None = None
        self.generation = 0
        self.restarts = 0
        self.skipped: dict[int, str] = {}  # cell index -> why it was skipped
        self.errors: dict[int, str] = {}  # cell index -> the error it raised (first run)
        self.not_run: str | None = None
        self.lost: str | None = None  # set when the worker was lost during the current test
        self.recorders: dict[str, Recorder] = {}
        self.sandbox_report: dict = {}
        self.deadline: float | None = None  # the end of the submission's time budget, from the first start
        self.oom_kills = 0
        self.startup: list[tuple[str, float]] = []  # the first worker's start-up phases, for timings

    def time_left(self) -> float:
        """Seconds left of the submission's time budget (counted from the first worker start)."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.settings.budget
        return self.deadline - time.monotonic()

    def budget_spent(self) -> str:
        return (f"your notebook used up the {self.settings.budget:g} s its whole submission may take "
                "(all cells and checks together)")

    def why_gone(self, gone: WorkerGone) -> str:
        """How the worker ended; 'ran out of memory' when the box's memory limit killed it."""
        kills = self.enclosure.box.oom_kills()
        if kills > self.oom_kills:
            self.oom_kills = kills
            return (f"ran out of memory (the submission's limit is {self.settings.limits.box_mb} MiB for all "
                    "of its processes together)")
        return gone.description

    # ------------------------------------------------------------------ cells
    def start(self) -> None:
        """Run every code cell, restarting without cells that hang or crash. InfrastructureError if it can't."""
        while self.worker is None:
            if self.restarts > self.settings.max_restarts:
                self.not_run = (f"the notebook process was restarted {self.settings.max_restarts} times; "
                                "the remaining calls cannot run")
                return
            self.time_left()  # the budget starts with the first worker
            self.worker = WorkerProcess(self.init, self.settings, self.output, self.enclosure.box)
            self.generation += 1
            self.startup = self.startup or self.worker.startup
            report = self.worker.report
            if report.get("uid") and self.enclosure.gateway is not None:  # before any cell runs
                self.enclosure.gateway.admit_only(report["uid"])
            self.sandbox_report = {**report, "isolation": [*report.get("isolation", []), *self.enclosure.isolation],
                                   "warnings": [*report.get("warnings", []), *self.enclosure.warnings]}
            if not self._run_cells():
                self.worker = None
                self.restarts += 1
                self.output.add(b"\n[--- the notebook process was restarted ---]\n")

    def _run_cells(self) -> bool:
        """Run the cells in this worker; False when a cell took it down (it is then skipped next time)."""
        assert self.worker is not None
        deadline = time.monotonic() + self.settings.notebook_timeout
        for index, source in self.submission.cells:
            if index in self.skipped or not source.strip():
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self.not_run = (f"cells from cell {index + 1} on did not run: the notebook used up its "
                                f"{self.settings.notebook_timeout:g} s time limit")
                return True
            if self.time_left() <= 0:
                self.not_run = f"cells from cell {index + 1} on did not run: {self.budget_spent()}"
                return True
            timeout = min(self.settings.cell_timeout, left, self.time_left())
            try:
                reply = self.worker.request({"op": "run_cell", "index": index, "source": source}, timeout)
            except WorkerGone as gone:
                self._skip(index, source, f"it {self.why_gone(gone)}")
                return False
            error = reply.get("ok", {}).get("error") if isinstance(reply.get("ok"), dict) else None
            if isinstance(error, dict) and error.get("type") == "MemoryError":
                self.worker.kill()
                self._skip(index, source, f"it ran out of memory (limit {self.settings.limits.memory_mb} MiB)")
                return False
            if isinstance(error, dict):
                self.errors.setdefault(index, _cell_error_text(index, source, error))
        return True

    def _skip(self, index: int, source: str, why: str) -> None:
        self.skipped[index] = f"cell {index + 1} (`{_first_line(source)}`) was skipped: {why}"

    def problems(self) -> list[str]:
        """What went wrong while running the notebook, in cell order, for the learner."""
        found = {**self.errors, **self.skipped}
        lines = [found[i] for i in sorted(found)]
        if after := self.submission.after_checks:
            lines.append(f"cell{'s' if len(after) > 1 else ''} {', '.join(str(i + 1) for i in after[:10])} "
                         "below the autograded check cells did not run (nbgrader does not count them either): "
                         "move your code above the checks")
        return lines + ([self.not_run] if self.not_run else [])

    # ------------------------------------------------------------------ per test
    def prepare_for_test(self) -> None:
        """Called before each test: a worker lost in the previous test is replaced (cells run again)."""
        self.lost = None
        if self.worker is None:
            self.start()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None
        if self.owns_enclosure:
            self.enclosure.close()

    # ------------------------------------------------------------------ requests
    def request(self, message: dict, what: str, result_name: str | None = None) -> Any:
        if self.lost:
            pytest.fail(f"`{what}` cannot run: {self.lost}", pytrace=False)
        if self.worker is None:
            pytest.fail(f"`{what}` cannot run: {self.not_run or 'the notebook process is not running'}.",
                        pytrace=False)
        if self.time_left() <= 0:
            pytest.fail(f"`{what}` cannot run: {self.budget_spent()}.", pytrace=False)
        timeout = min(self.settings.call_timeout, self.time_left())
        try:
            reply = self.worker.request(message, timeout)
        except WorkerGone as gone:
            self.worker = None
            self.restarts += 1
            description = self.why_gone(gone)
            if "timed out" in description and self.time_left() <= 0:
                text = f"`{what}` did not finish: {self.budget_spent()}."
            elif "timed out" in description:
                text = f"`{what}` did not finish: it {description} (the time limit per call). An endless loop?"
            else:
                text = f"`{what}` {description}."
            self.lost = f"the notebook process was stopped earlier in this test ({text})"
            pytest.fail(text, pytrace=False)
        self._sync_recorders(reply.get("recorders"))
        if "raised" in reply:
            raise rebuild_exception(reply["raised"])
        if "missing" in reply:
            return MISSING
        if "imported" in reply:
            pytest.fail(f"`{what}` comes from {str(reply['imported'])[:100]}, not from your notebook: the grader "
                        f"counts only code you write. Define `{what}` yourself in a cell of the notebook.",
                        pytrace=False)
        if "ok" not in reply:
            pytest.fail(f"`{what}`: {str(reply.get('error', 'no answer'))[:2000]}", pytrace=False)
        try:
            return wire.decode(reply["ok"], lambda data: self._handle(data, result_name or what))
        except wire.WireError as exc:
            pytest.fail(f"`{what}` returned something the grader cannot read ({exc}).", pytrace=False)

    def get(self, name: str) -> Any:
        value = self.request({"op": "get", "name": name}, name)
        if value is MISSING:
            raise MissingDefinition(missing_message(name, self.problems()))
        return value

    def encode_args(self, value: Any) -> Any:
        return wire.encode(value, self._marker)

    def _handle(self, data: dict, what: str) -> RemoteHandle:
        if data.get(wire.TAG) != "handle" or not isinstance(data.get("id"), int):
            raise wire.WireError(f"unknown tag {data.get(wire.TAG)!r}")
        type_name = str(data.get("type", "object"))[:100]
        return RemoteHandle(self, data["id"], self.generation, type_name, bool(data.get("callable")), what)

    def _sync_recorders(self, updates: Any) -> None:
        if not isinstance(updates, dict):
            return
        for rid, calls in updates.items():
            recorder = self.recorders.get(rid)
            if recorder is None:
                continue
            try:
                decoded = wire.decode(calls, lambda data: self._handle(data, "a recorded argument"))
                recorder.calls = [tuple(args) for args, _ in decoded]
                recorder.kwargs = [dict(kwargs) for _, kwargs in decoded]
            except (wire.WireError, TypeError, ValueError):
                continue

    def _marker(self, value: Any) -> dict:
        """Grader objects the worker rebuilds on its side (it never gets the grader's credentials)."""
        if isinstance(value, RemoteHandle):
            if value._generation != self.generation:
                pytest.fail("An object from your notebook was used after the notebook process was restarted.",
                            pytrace=False)
            return {wire.TAG: "ref", "id": value._id}
        if isinstance(value, Recorder):
            self.recorders[value.id] = value
            return {wire.TAG: "recorder", "id": value.id, "returns": wire.encode(value.returns)}
        if isinstance(value, redis.Redis):
            return self._redis_marker(value)
        found = markers.mark(value)
        if found is None:
            raise TypeError(f"the grader cannot pass a {type(value).__name__} to the notebook process")
        marker, client = found
        if client is not None:  # the worker's own client, built from the Redis marker
            marker["redis"] = self._redis_marker(client)
        if marker.get("base_url") and self.enclosure.gateway is not None:
            url = urllib.parse.urlsplit(marker["base_url"])
            host = "127.0.0.1" if url.hostname in LOOPBACK else str(url.hostname)
            port = url.port or (443 if url.scheme == "https" else 80)
            marker["socket"] = self.enclosure.gateway.expose((host, port))
        return marker

    def _redis_marker(self, client: redis.Redis) -> dict:
        """The worker rebuilds the client: on the gateway's socket, as the learner user on the Redis under test;
        a client of another server only when it already is a learner user's."""
        kw = client.connection_pool.connection_kwargs
        host = "127.0.0.1" if kw.get("host") in LOOPBACK else kw.get("host")
        options = {"decode_responses": bool(kw.get("decode_responses")), "protocol": kw.get("protocol")}
        if self.grading_address is not None and (host, kw.get("port")) == self.grading_address:
            return {wire.TAG: "redis", "grading": True, **options}
        if not str(kw.get("username") or "").startswith(backends.LEARNER_PREFIX):
            # Any other user has the grader's rights there (CONFIG, REPLICAOF to any address, SHUTDOWN...).
            raise RuntimeError(f"a check handed learner code a client of {host}:{kw.get('port')} as user "
                               f"{kw.get('username') or 'default'!r}: give it a client of that server's learner "
                               "user (backends.secure(...).learner_url), never the grader's own rights")
        fields = {k: kw.get(k) for k in ("host", "port", "db", "username", "password")}
        fields["unix_socket_path"] = kw.get("path")
        if not fields["unix_socket_path"] and self.enclosure.gateway is not None:
            fields["unix_socket_path"] = self.enclosure.gateway.expose((str(host), int(kw.get("port") or 6379)))
        if fields["unix_socket_path"]:
            fields.update(host=None, port=None)
        return {wire.TAG: "redis", **fields, **options}


MISSING = object()


def missing_message(name: str, problems: list[str]) -> str:
    text = (f"Your notebook does not define `{name}`. Write it in the notebook with exactly this name "
            "and make sure its cell runs without errors.")
    if problems:
        text += " While running your notebook:\n" + "\n".join(f"  - {p}" for p in problems[:8])
    return text


def _cell_error_text(index: int, source: str, error: dict) -> str:
    message = str(error.get("message") or "")[:300]
    text = f"cell {index + 1} (`{_first_line(source)}`) raised {error.get('type')}"
    text += f": {message}" if message else ""
    if error.get("type") == "NoPermissionError":
        text += (" (the grader's Redis does not allow FLUSHALL, FLUSHDB, CONFIG, SHUTDOWN, DEBUG, ACL, scripts and "
                 "other server-wide commands: delete only the keys your notebook made)")
    return text


_REBUILT: dict[str, type] = {}


def rebuild_exception(info: Any) -> BaseException:
    """The learner's exception as the same builtin (or redis) type with the same message, else a look-alike."""
    if not isinstance(info, dict):
        return LearnerError("your code raised an exception the grader could not read")
    name, module = str(info.get("type", "Exception"))[:100], str(info.get("module", ""))
    message = str(info.get("message", ""))[:5000]
    cls = _known_exception(name, module)
    try:
        args = wire.decode(info.get("args")) if info.get("args") is not None else (message,)
        exc = cls(*args) if isinstance(args, tuple) else cls(message)
    except Exception:  # noqa: BLE001 - odd constructor signatures: fall back to the message
        exc = cls(message) if cls is not LearnerError else LearnerError(message)
    trace = str(info.get("traceback") or "")[:4000]
    if trace:  # an attribute, not a note: pytest.raises(match=...) must see exactly the learner's message
        exc.learner_traceback = trace  # type: ignore[attr-defined]
    return exc


def _known_exception(name: str, module: str) -> type:
    if module == "builtins":
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, StopIteration):
            return cls
    if module.startswith("redis"):
        cls = getattr(redis.exceptions, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls
    if not name.isidentifier():
        return LearnerError
    if name not in _REBUILT:
        _REBUILT[name] = type(name, (LearnerError,), {"__module__": "notebook"})
    return _REBUILT[name]


# ---------------------------------------------------------------------------------------------- proxies
class RemoteHandle:
    """An object that lives in the worker: calls, attribute reads and writes become requests."""

    __slots__ = ("_notebook", "_id", "_generation", "_type", "_callable", "_what")

    def __init__(self, notebook: Notebook, handle_id: int, generation: int, type_name: str, is_callable: bool,
                 what: str) -> None:
        for name, value in zip(self.__slots__, (notebook, handle_id, generation, type_name, is_callable, what)):
            object.__setattr__(self, name, value)

    def _check(self) -> None:
        if self._generation != self._notebook.generation:
            pytest.fail(f"`{self._what}` came from your notebook before its process was restarted, "
                        "so it no longer exists.", pytrace=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        message = {"op": "call", "target": self._id, "args": self._notebook.encode_args(list(args)),
                   "kwargs": self._notebook.encode_args(dict(kwargs))}
        return self._notebook.request(message, self._what, f"{self._what}(...)")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        self._check()
        return self._notebook.request({"op": "getattr", "target": self._id, "name": name}, f"{self._what}.{name}")

    def __setattr__(self, name: str, value: Any) -> None:
        self._check()
        message = {"op": "setattr", "target": self._id, "name": name, "value": self._notebook.encode_args(value)}
        self._notebook.request(message, f"{self._what}.{name} = ...")

    def __repr__(self) -> str:
        return f"<{self._type} from the notebook: {self._what}>"


class RemoteNamespace:
    """`nb` in remote mode: `nb.knn_search` is the notebook's function, called in the worker."""

    def __init__(self, notebook: Notebook) -> None:
        object.__setattr__(self, "_notebook", notebook)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._notebook.get(name)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("the grader's tests may not change the notebook's namespace")


class LocalNamespace:
    """`nb` in local mode (the notebook's own self-check): attribute access on its globals()."""

    def __init__(self, namespace: dict) -> None:
        object.__setattr__(self, "_namespace", namespace)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        try:
            return self._namespace[name]
        except KeyError:
            raise MissingDefinition(missing_message(name, [])) from None

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("the grader's tests may not change the notebook's namespace")
