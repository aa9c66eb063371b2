"""Bulk loading hashes with vectors: validated first, then pipelined in batches.

Everything is checked before the first write, so bad input leaves Redis as it
was. Writes go through non-transactional pipelines (`transaction=False`): one
round trip per batch instead of per key, without MULTI/EXEC's overhead.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

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


def _field_bytes(value: object) -> bytes | str | int | float:
    if isinstance(value, (bytes, str, int, float)) and not isinstance(value, bool):
        return value
    raise TypeError(f"field values must be str, bytes, int or float, got {type(value).__name__}.")


def load_hashes(r: redis.Redis, prefix: str, records: Sequence[Mapping[str, object]],
                embeddings: object, *, id_field: str = "id", vector_field: str = "embedding",
                dim: int | None = None, batch_size: int = DEFAULT_BATCH,
                progress: bool | None = None, desc: str = "loading") -> int:
    """Write `prefix + record[id_field]` hashes with the record's fields and its vector.

    Returns the number of hashes written. Raises ValueError/TypeError before any
    write when lengths, widths, values or ids are wrong.
    """
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
    mappings = [{k: _field_bytes(v) for k, v in record.items() if k != vector_field}
                for record in records]
    blobs = _row_bytes(matrix)
    show = interactive() if progress is None else progress
    with tqdm(total=len(keys), desc=desc, unit="doc", disable=not show) as bar:
        for start in range(0, len(keys), batch_size):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(start + batch_size, len(keys))):
                pipe.hset(keys[i], mapping={**mappings[i], vector_field: blobs[i]})
            pipe.execute()
            bar.update(min(batch_size, len(keys) - start))
    return len(keys)


def _record_id(record: Mapping[str, object], id_field: str, position: int) -> str:
    if not isinstance(record, Mapping):
        raise TypeError(f"records[{position}] must be a dict, got {type(record).__name__}.")
    if id_field not in record or record[id_field] in (None, ""):
        raise ValueError(f"records[{position}] has no {id_field!r}; every record needs one.")
    return str(record[id_field])


def _row_bytes(matrix: np.ndarray) -> list[bytes]:
    """Each row's float32 bytes, sliced from one buffer instead of packed row by row."""
    buffer = matrix.tobytes()
    width = matrix.shape[1] * 4
    return [buffer[i * width:(i + 1) * width] for i in range(matrix.shape[0])]
