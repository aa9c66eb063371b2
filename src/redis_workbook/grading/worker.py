"""The learner's side: run a notebook's code cells with IPython, then answer the grader's calls.

Started by `workerprocess.WorkerProcess` as
`python -s -B -u -m redis_workbook.grading.worker REQUEST_FD REPLY_FD GRADER_PID`.
It reads one init message, enters the sandbox, builds an IPython shell (so magics
work) and then serves requests until the grader closes the channel:

- run_cell {index, source} -> {"ok": {"error": null | {...}}}
- get {name}               -> {"ok": value} | {"missing": true}
- call {target, args, kwargs}, getattr {target, name}, setattr {target, name, value}
  -> {"ok": value} | {"raised": exception}

Values travel as `wire` JSON; objects that are not plain values stay here and go
back as handles ({"__t": "handle", "id": n}) the grader can call or read.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import time
import traceback
from typing import Any

from redis_workbook.grading import markers, sandbox, wire
from redis_workbook.server import die_with_parent

CELL_FILE_PREFIX = "<ipython-input-"
MAX_TEXT = 2000


def safe_text(value: Any, limit: int = MAX_TEXT) -> str:
    """str() of learner objects, which may raise or be huge."""
    try:
        text = str(value)
    except BaseException:  # noqa: BLE001 - a learner's __str__ can raise anything
        try:
            text = object.__repr__(value)
        except BaseException:  # noqa: BLE001
            text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class WorkerRecorder:
    """The worker's twin of remote.Recorder: records calls here, the grader reads them after each request."""

    def __init__(self, returns: Any) -> None:
        self.returns = returns
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return copy.deepcopy(self.returns)


class Server:
    """The request loop, with the learner's namespace, handles and rebuilt grader objects."""

    def __init__(self, channel: wire.Channel, init: dict) -> None:
        self.channel = channel
        self.main_pid = os.getpid()
        self.redis_url = init["redis_url"]
        self.handles: dict[int, Any] = {}
        self.handle_ids: dict[int, int] = {}
        self.recorders: dict[str, WorkerRecorder] = {}
        self.synced: dict[str, int] = {}
        self.cache: dict[str, Any] = {}
        self.cells: dict[int, int] = {}  # IPython execution count -> notebook cell index
        self.shell = make_shell()

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        while True:
            try:
                request = self.channel.receive()
            except wire.WireError:
                os._exit(0)  # the grader is gone or closed the channel: nothing left to do
            try:
                reply = self.handle(request)
            finally:
                self.after_learner_code()
            self.send(reply)

    def send(self, reply: dict) -> None:
        try:
            self.channel.send(reply)
        except wire.ChannelClosed:
            os._exit(0)
        except (wire.WireError, TypeError, ValueError) as exc:
            self.channel.send({"error": f"the reply could not be sent back to the grader: {exc}"})

    def after_learner_code(self) -> None:
        """A fork()ed copy of this process must never answer the grader; PID 1 reaps orphans."""
        if os.getpid() != self.main_pid:
            os._exit(0)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - learner code may have replaced or closed them
                pass
        if self.main_pid == 1:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        try:
            if op == "run_cell":
                return {"ok": {"error": self.run_cell(int(request["index"]), str(request["source"]))}}
            if op == "get":
                name = str(request["name"])
                if name not in self.shell.user_ns:
                    return {"missing": True}
                value = self.shell.user_ns[name]
                if (module := imported_from_package(value)) is not None:
                    return {"imported": module}
                return self.reply(value)
            target = self.handles.get(request.get("target"))  # type: ignore[arg-type]
            if target is None and op in ("call", "getattr", "setattr"):
                return {"error": "this object no longer exists in the notebook process"}
            if op == "call":
                args = self.decode(request.get("args", []))
                kwargs = self.decode(request.get("kwargs", {wire.TAG: "dict", "v": []}))
                return self.reply(target(*args, **kwargs))
            if op == "getattr":
                return self.reply(getattr(target, str(request["name"])))
            if op == "setattr":
                setattr(target, str(request["name"]), self.decode(request["value"]))
                return self.reply(None)
        except wire.WireError as exc:
            return {"error": f"the grader's request could not be decoded: {exc}"}
        except BaseException as exc:  # noqa: BLE001 - learner code raised: report it, keep serving
            return {"raised": self.describe(exc), **self.recorder_updates()}
        return {"error": f"unknown request {op!r}"}

    def reply(self, value: Any) -> dict:
        try:
            encoded = wire.encode(value, self.make_handle)
        except wire.WireError as exc:
            return {"error": f"the return value could not be sent back: {exc}"}
        return {"ok": encoded, **self.recorder_updates()}

    # ------------------------------------------------------------------ cells
    def run_cell(self, index: int, source: str) -> dict | None:
        self.cells[self.shell.execution_count] = index
        result = self.shell.run_cell(source, store_history=True)
        error = result.error_before_exec or result.error_in_exec
        return None if error is None else self.describe(error)

    def describe(self, exc: BaseException) -> dict:
        """An exception as the grader rebuilds it: type, message, args if plain, and where in the notebook."""
        try:
            args = wire.encode(exc.args)
        except wire.WireError:
            args = None
        message = f"{exc.msg} (line {exc.lineno})" if isinstance(exc, SyntaxError) else safe_text(exc)
        return {"type": type(exc).__name__, "module": type(exc).__module__, "message": message,
                "args": args, "traceback": self.learner_traceback(exc)}

    def learner_traceback(self, exc: BaseException) -> str:
        """The frames in the learner's cells, plus the innermost library frame: short and readable."""
        try:
            frames = traceback.extract_tb(exc.__traceback__)
        except BaseException:  # noqa: BLE001
            return ""
        lines = []
        for i, frame in enumerate(frames):
            in_cell = frame.filename.startswith(CELL_FILE_PREFIX)
            if in_cell:
                count = int(frame.filename[len(CELL_FILE_PREFIX):].split("-")[0])
                where = f"cell {self.cells.get(count, -1) + 1}, line {frame.lineno}"
            elif i == len(frames) - 1:
                where = f"{_short_path(frame.filename)}, line {frame.lineno}"
            else:
                continue
            lines.append(f"  {where}, in {frame.name}" + (f": {frame.line.strip()}" if frame.line else ""))
        if isinstance(exc, SyntaxError) and exc.lineno:
            count = _cell_count(exc.filename or "")
            lines.append(f"  cell {self.cells.get(count, -1) + 1}, line {exc.lineno}: {(exc.text or '').strip()}")
        return "\n".join(lines[-12:])

    # ------------------------------------------------------------------ values
    def make_handle(self, value: Any) -> dict:
        handle_id = self.handle_ids.get(id(value))  # the same object keeps its handle (and stays alive)
        if handle_id is None:
            handle_id = self.handle_ids[id(value)] = len(self.handles) + 1
            self.handles[handle_id] = value
        return {wire.TAG: "handle", "id": handle_id, "type": type(value).__name__, "callable": callable(value)}

    def decode(self, data: Any) -> Any:
        return wire.decode(data, self.resolve)

    def resolve(self, data: dict) -> Any:
        tag = data[wire.TAG]
        if tag == "ref":
            if data.get("id") not in self.handles:
                raise wire.WireError("unknown object reference")
            return self.handles[data["id"]]
        if tag == "recorder":
            rid = str(data["id"])
            if rid not in self.recorders:
                self.recorders[rid] = WorkerRecorder(self.decode(data.get("returns")))
                self.synced[rid] = 0
            return self.recorders[rid]
        if tag == "redis" or tag in markers.TAGS:
            key = repr(sorted(data.items()))
            if key not in self.cache:
                self.cache[key] = self.build_redis(data) if tag == "redis" else markers.build(data, self.resolve)
            return self.cache[key]
        raise wire.WireError(f"unknown tag {tag!r}")

    def build_redis(self, data: dict) -> Any:
        import redis

        options: dict[str, Any] = {"decode_responses": bool(data.get("decode_responses"))}
        if data.get("protocol") is not None:  # None means redis-py's default (RESP3 with Result objects)
            options["protocol"] = data["protocol"]
        if data.get("grading"):
            return redis.Redis.from_url(self.redis_url, **options)
        fields = ("host", "port", "db", "username", "password", "unix_socket_path")
        return redis.Redis(**{k: data[k] for k in fields if data.get(k) is not None}, **options)

    def recorder_updates(self) -> dict:
        """Calls recorded since the last reply, as {id: [[args, kwargs], ...]} (the whole list)."""
        changed = {}
        for rid, recorder in self.recorders.items():
            if len(recorder.calls) != self.synced[rid]:
                self.synced[rid] = len(recorder.calls)
                try:
                    changed[rid] = wire.encode([list(call) for call in recorder.calls], self.make_handle)
                except wire.WireError as exc:
                    changed[rid] = wire.encode([[("(could not send the arguments back)", str(exc)), {}]])
        return {"recorders": changed} if changed else {}



def imported_from_package(value: Any) -> str | None:
    """The redis_workbook module a function or class comes from: a graded answer must be written, not imported."""
    if not callable(value) or not (isinstance(value, type) or hasattr(value, "__code__") or
                                   type(value).__name__ in ("builtin_function_or_method", "partial")):
        return None
    target = getattr(value, "func", value)  # functools.partial
    module = getattr(target, "__module__", None)
    return module if isinstance(module, str) and module.split(".")[0] == "redis_workbook" else None


def _short_path(path: str) -> str:
    marker = "site-packages/"
    return path.split(marker, 1)[1] if marker in path else os.path.basename(path)


def _cell_count(filename: str) -> int:
    try:
        return int(filename[len(CELL_FILE_PREFIX):].split("-")[0])
    except ValueError:
        return -1


def make_shell() -> Any:
    """A plain IPython shell: magics and display work, no history database, no colours."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.xmode = "Plain"
    shell = InteractiveShell.instance(config=config)
    full = shell.showtraceback

    def showtraceback(*args: Any, **kwargs: Any) -> None:
        # Formatting a traceback with the memory still full can take seconds of failing allocations:
        # after a MemoryError one line is enough (the grader reports the cell anyway).
        if isinstance(sys.exc_info()[1], MemoryError):
            print("MemoryError", file=sys.stderr)
            return
        full(*args, **kwargs)

    shell.showtraceback = showtraceback
    return shell


def main(argv: list[str]) -> None:
    startup = {"worker process and imports": time.time()}  # for the grader's timings (remote.WORKER_PHASES)
    request_fd, reply_fd, grader_pid = (int(a) for a in argv[1:4])
    die_with_parent(signal.SIGKILL)
    if os.getppid() != grader_pid:
        os._exit(3)  # the grader died before we got here
    sys.path[:] = [p for p in sys.path if p not in ("", "/", os.getcwd())]
    channel = wire.Channel(request_fd, reply_fd)
    try:
        init = channel.receive()
        report = sandbox.enter(init["sandbox"], init["notebook_name"], init["notebook_text"],
                               announce=lambda pid: channel.send({"namespace_init": pid}))
        startup["sandbox"] = time.time()
        server = Server(channel, init)
        startup["IPython shell"] = time.time()
    except BaseException as exc:  # noqa: BLE001 - tell the grader why, then stop
        channel.send({"fatal": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"})
        os._exit(4)
    channel.send({"ready": sandbox.as_dict(report), "python": sys.version.split()[0], "startup": startup})
    server.serve()


if __name__ == "__main__":
    main(sys.argv)
