"""Index building blocks: the vector field as the workbook teaches it, and FT.CREATE for a HASH index.

The exercises' own schemas (notebook 02's product index, notebook 07's post
index) are not here: writing them is the learner's work, and the grader keeps
its reference copies in grader/reference.py. The package builds the product
catalogue for notebooks 03-06 in `datasets.load_catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.search.field import Field, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType

from redis_workbook.report import unknown_index

ALGORITHMS = ("HNSW", "FLAT")
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
DISTANCE_METRIC = "COSINE"
# TAG fields split values on "," by default, so "Clothing, Shoes & Jewelry" would be indexed as two tags
# and no exact category filter could match it. Categories never contain "|".
CATEGORY_SEPARATOR = "|"
# The query engine's default stop words (an index created without STOPWORDS never indexes them). A full-text
# query gains nothing from them, and search 2.10 mishandles them inside an OR list: `what | is | ttl` searches
# only `what`, and two in front (`is | it | ttl`) crash the module (measured on the embedded server, 2.10.5).
STOPWORDS = frozenset("a is the an and are as at be but by for if in into it no not of on or such that their "
                      "then there these they this to was will with".split())


@dataclass(frozen=True)
class IndexSpec:
    """An index name, the key prefix it covers, and its fields."""

    name: str
    prefix: str
    fields: tuple[Field, ...]
    vector_field: str = "embedding"


def check_algorithm(algorithm: str) -> str:
    if not isinstance(algorithm, str) or algorithm.upper() not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
    return algorithm.upper()


def check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int (e.g. 384 for all-MiniLM-L6-v2), got {dim!r}.")
    return dim


def vector_field(dim: int, algorithm: str = "HNSW", name: str = "embedding") -> VectorField:
    algorithm = check_algorithm(algorithm)
    attributes: dict[str, object] = {"TYPE": "FLOAT32", "DIM": check_dim(dim),
                                     "DISTANCE_METRIC": DISTANCE_METRIC}
    if algorithm == "HNSW":
        attributes |= {"M": HNSW_M, "EF_CONSTRUCTION": HNSW_EF_CONSTRUCTION}
    return VectorField(name, algorithm, attributes)


def index_exists(r: redis.Redis, name: str) -> bool:
    try:
        r.ft(name).info()
        return True
    except redis.ResponseError as exc:
        if unknown_index(exc):
            return False
        raise


def create_index(r: redis.Redis, spec: IndexSpec) -> bool:
    """FT.CREATE for a HASH index; False, leaving it untouched, when one of that name exists.

    Create, and catch "Index already exists", as notebook 02 teaches: checking first would leave a
    gap in which another client could create the index between the check and FT.CREATE.
    """
    definition = IndexDefinition(prefix=[spec.prefix], index_type=IndexType.HASH)
    try:
        r.ft(spec.name).create_index(list(spec.fields), definition=definition)
    except redis.ResponseError as exc:
        if "already exists" in str(exc).lower():
            return False
        raise
    return True
