"""Bulk loading hashes with vectors: validated first, then streamed in batches.

Everything is checked before the first write, so bad input leaves Redis as it
was. Why the write path looks lower-level than `pipe.hset(...)`: profiling
showed that redis-py spends most of a bulk load packing commands (about 40 us
per 6-field HSET, mostly re-encoding every argument), while Redis itself needs
about 4 us to store one. So each HSET is encoded once, by hand, in the same
wire format (RESP) redis-py would send, and a batch goes out as one buffer. The
next batch is encoded and sent before the previous batch's replies are read,
so Python prepares batch k+1 while Redis executes batch k. What ends up in Redis
is byte for byte what `r.hset(key, mapping={...})` would store.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import redis
from tqdm.auto import tqdm

from redis_workbook.vectors import as_matrix, check_lengths

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


def _field_bytes(value: object) -> bytes:
    """A field name or value as redis-py would encode it (str as UTF-8, numbers via repr)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"field values must be str, bytes, int or float, got {type(value).__name__}.")


def _bulk(data: bytes) -> bytes:
    """One RESP bulk string: `$<length>\\r\\n<data>\\r\\n`."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def load_hashes(r: redis.Redis, prefix: str, records: Sequence[Mapping[str, object]],
                embeddings: object, *, id_field: str = "id", vector_field: str = "embedding",
                dim: int | None = None, batch_size: int = DEFAULT_BATCH,
                progress: bool | None = None, desc: str = "loading") -> int:
    """Write `prefix + record[id_field]` hashes with the record's fields and its vector.

    Returns the number of hashes written. Raises ValueError/TypeError before any
    write when lengths, widths, values or ids are wrong.
    """
    if not isinstance(r, redis.Redis):
        raise TypeError(f"r must be a redis.Redis client (e.g. redis_workbook.connect()), got {type(r).__name__}.")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty str such as 'product:', got {prefix!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    records = list(records)
    matrix = as_matrix(embeddings, dim)
    check_lengths(records, matrix, "records")
    keys = [f"{prefix}{_record_id(record, id_field, i)}" for i, record in enumerate(records)]
    if len(set(keys)) != len(keys):
        raise ValueError(f"records contain duplicate {id_field!r} values; each key must be unique.")
    fields = [_encoded_fields(record, vector_field) for record in records]
    # Validation is complete: nothing above wrote to Redis.
    commands = _hset_commands(keys, fields, _bulk(_field_bytes(vector_field)), _row_bytes(matrix))
    show = interactive() if progress is None else progress
    with tqdm(total=len(keys), desc=desc, unit="doc", disable=not show) as bar:
        _stream(r, _batches(commands, batch_size), bar.update)
    return len(keys)


def _record_id(record: Mapping[str, object], id_field: str, position: int) -> str:
    if not isinstance(record, Mapping):
        raise TypeError(f"records[{position}] must be a dict, got {type(record).__name__}.")
    if id_field not in record or record[id_field] in (None, ""):
        raise ValueError(f"records[{position}] has no {id_field!r}; every record needs one.")
    return str(record[id_field])


def _encoded_fields(record: Mapping[str, object], vector_field: str) -> tuple[int, bytes]:
    """How many name/value pairs the record has (all but the vector), and those pairs as RESP bulk strings."""
    pairs = [(name, value) for name, value in record.items() if name != vector_field]
    return len(pairs), b"".join(_bulk(_field_bytes(name)) + _bulk(_field_bytes(value)) for name, value in pairs)


def _row_bytes(matrix: np.ndarray) -> list[bytes]:
    """Each row's float32 bytes, sliced from one buffer instead of packed row by row."""
    buffer = matrix.tobytes()
    width = matrix.shape[1] * 4
    return [buffer[i * width:(i + 1) * width] for i in range(matrix.shape[0])]


def _hset_commands(keys: list[str], fields: list[tuple[int, bytes]], vector_name: bytes,
                   blobs: list[bytes]) -> Iterator[bytes]:
    """`HSET key name value ... vector_field blob` per record, each a RESP array of bulk strings."""
    for key, (pairs, encoded), blob in zip(keys, fields, blobs):
        header = b"*%d\r\n$4\r\nHSET\r\n" % (2 * pairs + 4)  # HSET, key, the pairs, vector name and blob
        yield b"".join((header, _bulk(key.encode()), encoded, vector_name, _bulk(blob)))


def _batches(commands: Iterator[bytes], size: int) -> Iterator[tuple[bytes, int]]:
    """Groups of `size` encoded commands joined into one buffer, with their count."""
    batch: list[bytes] = []
    for command in commands:
        batch.append(command)
        if len(batch) == size:
            yield b"".join(batch), size
            batch = []
    if batch:
        yield b"".join(batch), len(batch)


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
