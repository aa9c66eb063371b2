"""The grader <-> worker wire: one JSON object per line, with tags for what JSON lacks.

JSON, not pickle: the grader decodes what a learner's process sends, and
unpickling that would run the learner's code in the grader. Decoding here builds
only plain values (None, bool, int, float, str, bytes, list, tuple, dict, set,
numpy arrays and scalars of plain dtypes); anything else is a tag that the caller
resolves (`resolve`), or an error.
"""

from __future__ import annotations

import base64
import json
import os
import select
import time
from collections.abc import Callable
from typing import Any

import numpy as np

TAG = "__t"
MAX_MESSAGE = 32 * 1024 * 1024
MAX_DEPTH = 100
PLAIN_DTYPE_KINDS = "biufcSU"


class WireError(Exception):
    """A message that cannot be encoded, decoded or framed."""


class ChannelClosed(WireError):
    """The other side closed its end (it exited or crashed)."""


class ChannelTimeout(WireError):
    """No complete message within the time limit."""


Hook = Callable[[Any], Any]


def encode(value: Any, hook: Hook | None = None, depth: int = 0) -> Any:
    """A JSON-able form of `value`; `hook(obj)` encodes what is not a plain value (or raises)."""
    if depth > MAX_DEPTH:
        raise WireError(f"the value is nested more than {MAX_DEPTH} levels deep (a cycle?)")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in PLAIN_DTYPE_KINDS:
        return {TAG: "np", "dtype": value.dtype.str, "v": _b64(value.tobytes())}
    if isinstance(value, np.ndarray) and value.dtype.kind in PLAIN_DTYPE_KINDS:
        data = np.ascontiguousarray(value)
        return {TAG: "nd", "dtype": data.dtype.str, "shape": list(data.shape), "v": _b64(data.tobytes())}
    if type(value) in (bytes, bytearray):
        return {TAG: "bytes", "v": _b64(bytes(value))}
    if type(value) is list:
        return [encode(item, hook, depth + 1) for item in value]
    if type(value) in (tuple, set, frozenset):
        return {TAG: type(value).__name__, "v": [encode(item, hook, depth + 1) for item in value]}
    if type(value) is dict:
        return {TAG: "dict", "v": [[encode(k, hook, depth + 1), encode(v, hook, depth + 1)] for k, v in value.items()]}
    if hook is None:
        raise WireError(f"cannot send a {type(value).__name__} value")
    return hook(value)


def decode(data: Any, resolve: Hook | None = None, depth: int = 0) -> Any:
    """The value `encode` was given; `resolve(tagged_dict)` builds the caller's own tags."""
    if depth > MAX_DEPTH:
        raise WireError("message nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(item, resolve, depth + 1) for item in data]
    if not isinstance(data, dict) or not isinstance(data.get(TAG), str):
        raise WireError(f"unexpected {type(data).__name__} in message")
    tag = data[TAG]
    try:
        if tag in ("tuple", "set", "frozenset"):
            items = [decode(item, resolve, depth + 1) for item in _field(data, "v", list)]
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
        if tag == "dict":
            return {decode(k, resolve, depth + 1): decode(v, resolve, depth + 1) for k, v in _field(data, "v", list)}
        if tag == "bytes":
            return _unb64(_field(data, "v", str))
        if tag in ("nd", "np"):
            return _decode_numpy(data)
    except (TypeError, ValueError) as exc:
        raise WireError(f"malformed {tag!r} value: {exc}") from None
    if resolve is None:
        raise WireError(f"unknown tag {tag!r}")
    return resolve(data)


def _decode_numpy(data: dict) -> Any:
    dtype = np.dtype(_field(data, "dtype", str))
    if dtype.kind not in PLAIN_DTYPE_KINDS or dtype.fields is not None:
        raise ValueError(f"dtype {dtype} is not a plain dtype")
    raw = _unb64(_field(data, "v", str))
    if data[TAG] == "np":
        return np.frombuffer(raw, dtype=dtype, count=1)[0]
    shape = tuple(_field(data, "shape", list))
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"bad shape {shape}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _field(data: dict, name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise TypeError(f"field {name!r} must be {kind.__name__}")
    return value


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def dumps(message: dict) -> bytes:
    """One framed message; WireError when it is larger than MAX_MESSAGE."""
    line = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
    if len(line) > MAX_MESSAGE:
        raise WireError(f"a message of {len(line) // 1_000_000} MB is over the {MAX_MESSAGE // 1_000_000} MB limit")
    return line


class Channel:
    """Newline-framed JSON over two pipe file descriptors, with deadlines on both directions."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self._buffer = bytearray()

    def send(self, message: dict, timeout: float | None = None, alive: Callable[[], bool] | None = None) -> None:
        data = memoryview(dumps(message))
        deadline = None if timeout is None else time.monotonic() + timeout
        while data:
            self._wait(select_write=True, deadline=deadline, alive=alive)
            try:
                sent = os.write(self.write_fd, data[:65536])
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError) as exc:
                raise ChannelClosed(f"the other side closed the channel ({exc})") from None
            data = data[sent:]

    def receive(self, timeout: float | None = None, alive: Callable[[], bool] | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_MESSAGE:
                raise WireError(f"message larger than the {MAX_MESSAGE // 1_000_000} MB limit")
            self._wait(select_write=False, deadline=deadline, alive=alive)
            try:
                chunk = os.read(self.read_fd, 1 << 20)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ChannelClosed(f"cannot read from the other side ({exc})") from None
            if not chunk:
                raise ChannelClosed("the other side closed the channel")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise WireError(f"not a JSON message: {str(exc)[:200]}") from None
        if not isinstance(message, dict):
            raise WireError("a message must be a JSON object")
        return message

    def _wait(self, select_write: bool, deadline: float | None, alive: Callable[[], bool] | None) -> None:
        """Block until the fd is ready; poll `alive` a few times a second so a dead peer is noticed."""
        fd = self.write_fd if select_write else self.read_fd
        while True:
            wait = 0.1 if alive is not None else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChannelTimeout("no answer in time")
                wait = left if wait is None else min(wait, left)
            ready = select.select([], [fd], [], wait) if select_write else select.select([fd], [], [], wait)
            if ready[0] or ready[1]:
                return
            if alive is not None and not alive():
                raise ChannelClosed("the other side exited")
