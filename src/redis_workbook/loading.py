"""Bulk writing hashes with vectors, streamed in batches (the shipped catalogue, the benchmark).

Why the write path looks lower-level than `pipe.hset(...)`: profiling
showed that redis-py spends most of a bulk load packing commands (about 40 us
per 6-field HSET, mostly re-encoding every argument), while Redis itself needs
about 4 us to store one. So each HSET is encoded once, by hand, in the same
wire format (RESP) redis-py would send, and a batch goes out as one buffer. The
next batch is encoded and sent before the previous batch's replies are read,
so Python prepares batch k+1 while Redis executes batch k: nothing is encoded
ahead of the stream (encoding everything first left Redis idle for the first
quarter of a load), and each vector goes from the matrix's buffer into its
batch's buffer in one copy. What ends up in Redis is byte for byte what
`r.hset(key, mapping={...})` would store.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import redis
from tqdm.auto import tqdm

DEFAULT_BATCH = 500


def interactive() -> bool:
    """True in a notebook or a terminal a person watches; quiet in CI and pipes."""
    try:
        from IPython import get_ipython

        if get_ipython() is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell":
            return True
    except ImportError:
        pass
    return sys.stderr.isatty()


def _encodable(value: object) -> bool:
    """Whether `_field_bytes` encodes it: str, bytes, int or float (not bool, which redis-py refuses too)."""
    return isinstance(value, (str, bytes, int, float)) and not isinstance(value, bool)


def _field_bytes(value: object) -> bytes:
    """A field name or value as redis-py would encode it (str as UTF-8, numbers via repr)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if _encodable(value):
        return repr(value).encode()
    raise TypeError(f"field values must be str, bytes, int or float, got {type(value).__name__}.")


def _bulk(data: bytes) -> bytes:
    """One RESP bulk string: `$<length>\\r\\n<data>\\r\\n`."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def write_hashes(r: redis.Redis, keys: Sequence[str], records: Sequence[Mapping[str, object]],
                 matrix: np.ndarray, *, vector_field: str = "embedding", batch_size: int = DEFAULT_BATCH,
                 progress: bool | None = None, desc: str = "loading") -> None:
    """`HSET keys[i]` with records[i]'s fields and matrix[i] as float32 bytes under `vector_field`, streamed.

    The workbook's own bulk writer, for data the workbook made itself (the shipped catalogue,
    the benchmark's vectors): it checks only that keys, records and rows pair up, and returns
    nothing. Checking a caller's input and counting what was written is notebook 02's
    `load_products`, written by the learner. A field name or value of a type Redis cannot store
    (TypeError) is refused before anything is written; records are then encoded as they are streamed.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    keys, records = list(keys), list(records)
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    if not len(keys) == len(records) == len(matrix):
        raise ValueError(f"{len(keys)} keys, {len(records)} records and {len(matrix)} vectors must pair up one to one.")
    _check_fields(records, vector_field)
    show = interactive() if progress is None else progress
    with tqdm(total=len(keys), desc=desc, unit="doc", disable=not show) as bar:
        _stream(r, _batches(_hset_commands(keys, records, vector_field, matrix), batch_size), bar.update)


def _check_fields(records: list[Mapping[str, object]], vector_field: str) -> None:
    """Every field name and value is one `_field_bytes` encodes: checked before the first write (cheaper than
    encoding them all first, which kept Redis waiting)."""
    for number, record in enumerate(records):
        for name, value in record.items():
            if name == vector_field:
                continue
            for item in (name, value):
                if not _encodable(item):
                    raise TypeError(f"record {number}, field {name!r}: field names and values must be str, bytes, "
                                    f"int or float, got {type(item).__name__}. Nothing was written.")


def _encoded_fields(record: Mapping[str, object], vector_field: str) -> tuple[int, bytes]:
    """How many name/value pairs the record has (all but the vector), and those pairs as RESP bulk strings."""
    pairs = []
    for name, value in record.items():
        if name != vector_field:
            name_bytes, value_bytes = _field_bytes(name), _field_bytes(value)
            pairs.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(name_bytes), name_bytes, len(value_bytes), value_bytes))
    return len(pairs), b"".join(pairs)


def _hset_commands(keys: list[str], records: list[Mapping[str, object]], vector_field: str,
                   matrix: np.ndarray) -> Iterator[tuple[bytes | memoryview, ...]]:
    """`HSET key name value ... vector_field blob` per record, as the pieces of one RESP array of bulk strings.

    Encoded only as the stream asks for them; each blob is a view of its row in the matrix (no copy).
    """
    vector_name = _bulk(_field_bytes(vector_field))
    width = matrix.shape[1] * 4
    blob_header, rows = b"$%d\r\n" % width, memoryview(matrix.reshape(-1).view(np.uint8))
    for i, (key, record) in enumerate(zip(keys, records)):
        pairs, encoded = _encoded_fields(record, vector_field)
        header = b"*%d\r\n$4\r\nHSET\r\n" % (2 * pairs + 4)  # HSET, key, the pairs, vector name and blob
        yield header, _bulk(key.encode()), encoded, vector_name, blob_header, rows[i * width:(i + 1) * width], b"\r\n"


def _batches(commands: Iterator[tuple[bytes | memoryview, ...]], size: int) -> Iterator[tuple[bytes, int]]:
    """Groups of `size` commands joined into one buffer, with their count."""
    pieces: list[bytes | memoryview] = []
    count = 0
    for command in commands:
        pieces += command
        count += 1
        if count == size:
            yield b"".join(pieces), count
            pieces, count = [], 0
    if count:
        yield b"".join(pieces), count


def _stream(r: redis.Redis, batches: Iterator[tuple[bytes, int]], done: Callable[[int], object]) -> None:
    """Send each batch before reading the previous one's replies; raise the first error Redis returned."""
    connection = r.connection or _checkout(r.connection_pool)
    unread = 0
    try:
        for payload, count in batches:
            connection.send_packed_command([payload])
            _read_replies(connection, unread)
            done(unread)
            unread = count
        _read_replies(connection, unread)
        done(unread)
    except BaseException:
        connection.disconnect()  # replies may be left unread: never hand this socket out again
        raise
    finally:
        if r.connection is None:
            r.connection_pool.release(connection)


def _checkout(pool: redis.ConnectionPool) -> redis.connection.AbstractConnection:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        return pool.get_connection("HSET")


def _read_replies(connection: redis.connection.AbstractConnection, count: int) -> None:
    """Read `count` replies like a pipeline does: all of them, then raise the first error."""
    first_error: redis.ResponseError | None = None
    for _ in range(count):
        try:
            connection.read_response()
        except redis.ResponseError as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error
