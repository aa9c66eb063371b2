"""Vectors as Redis stores them: float32, little-endian, packed bytes.

Validation lives here so every writer refuses bad vectors the same way, before
anything reaches Redis.
"""

from __future__ import annotations

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


def from_bytes(blob: bytes) -> np.ndarray:
    """float32 values from the bytes Redis stores; a length not a multiple of 4 means the bytes were mangled."""
    if len(blob) % 4:
        raise ValueError(f"{len(blob)} bytes is not a whole number of float32 values; "
                         "was the client created with decode_responses=True?")
    return np.frombuffer(blob, dtype="<f4")
