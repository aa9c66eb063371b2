"""Vectors as Redis stores them: float32, little-endian, packed bytes.

Validation lives here so every writer refuses bad vectors the same way, before
anything reaches Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_matrix(embeddings: object, dim: int | None = None, name: str = "embeddings") -> np.ndarray:
    """A C-contiguous little-endian float32 (n, dim) array, or ValueError naming the problem."""
    try:
        matrix = np.asarray(embeddings, dtype="<f4")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 2-D array of numbers (rows of equal width): {exc}") from None
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D (one row per item), got shape {matrix.shape}.")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(
            f"{name} rows have {matrix.shape[1]} values but the index expects dim={dim}. "
            "Embed with the model the index was created for, or recreate the index with that dim."
        )
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} row {int(np.argmax(bad))} contains NaN or inf; Redis cannot index it.")
    return np.ascontiguousarray(matrix)


def as_vector(vector: object, dim: int | None = None, name: str = "vector") -> np.ndarray:
    """One vector as float32 (dim,), validated like a one-row matrix."""
    array = np.asarray(vector, dtype="<f4") if not isinstance(vector, (bytes, str)) else None
    if array is None or array.ndim != 1:
        shape = None if array is None else array.shape
        raise ValueError(f"{name} must be a 1-D list or array of numbers, got {type(vector).__name__} "
                         f"with shape {shape}.")
    return as_matrix(array[None, :], dim, name)[0]


def to_bytes(vector: object, dim: int | None = None) -> bytes:
    """The float32 bytes Redis expects in a HASH field or a KNN query's $vec parameter."""
    return as_vector(vector, dim).tobytes()


def from_bytes(blob: bytes) -> np.ndarray:
    """The inverse of to_bytes; a length that is not a multiple of 4 means the bytes were mangled."""
    if len(blob) % 4:
        raise ValueError(f"{len(blob)} bytes is not a whole number of float32 values; "
                         "was the client created with decode_responses=True?")
    return np.frombuffer(blob, dtype="<f4")


def check_lengths(records: Sequence[object], matrix: np.ndarray, records_name: str) -> None:
    if len(records) != len(matrix):
        raise ValueError(f"len({records_name}) is {len(records)} but there are {len(matrix)} embeddings; "
                         "they must pair up one to one.")
