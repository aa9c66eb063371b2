"""The grader's reference answers: what the checks compare learner code with, kept outside the package.

Learners import `redis_workbook`; nothing in it may pass a graded check (a learner must not be
able to import an answer: tests/test_answers_not_importable.py). So the reference versions of
the exercises whose right answer is Redis state rather than a number the checks compute inline
live here, in plain redis-py, as docs/learner-api.md describes them: the search module's version
(01), the product index and loader (02, and the catalogue the 03/04/06 checks run on), the range
query (03, which the range checks' numpy answers are tested against), the post index and loader
(07), 07's full-text query (text_search, with its scores), the vector-set loader (09, and the set
the 09 similarity checks run on), the JSON product index and loader (10).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
import redis
from redis.commands.search.field import NumericField, TagField, TextField, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query

from redis_workbook.report import as_text
from redis_workbook.schema import (
    CATEGORY_SEPARATOR,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    STOPWORDS,
    IndexSpec,
    create_index,
    vector_field,
)


def search_module_version(r: redis.Redis) -> int | None:
    """`ver` of the MODULE LIST entry named `search` (RESP2 lists or RESP3 dicts), or None."""
    for module in r.execute_command("MODULE", "LIST"):
        fields = module if isinstance(module, dict) else dict(zip(module[::2], module[1::2]))
        fields = {as_text(k): v for k, v in fields.items()}
        if as_text(fields.get("name", b"")).lower() == "search":
            return int(fields["ver"])
    return None


def product_index(dim: int, algorithm: str = "HNSW", name: str = "idx:products",
                  prefix: str = "product:") -> IndexSpec:
    """Notebook 02's product index: name, description TEXT; category TAG SEPARATOR "|"; price NUMERIC SORTABLE."""
    fields = (TextField("name"), TextField("description"), TagField("category", separator=CATEGORY_SEPARATOR),
              NumericField("price", sortable=True), vector_field(dim, algorithm))
    return IndexSpec(name, prefix, fields)


def within(r: redis.Redis, query_vector: Sequence[float] | np.ndarray, min_similarity: float,
           index_name: str = "idx:products") -> list[tuple[str, float]]:
    """(id, similarity) of every product at least min_similarity similar, best first (VECTOR_RANGE).

    COSINE distance is 1 - similarity, so the radius is 1 - min_similarity. A range has no k: count
    the matches first (LIMIT 0 0), then ask for all of them, since FT.SEARCH pages 10 by default.
    """
    query = (Query("@embedding:[VECTOR_RANGE $radius $vec]=>{$YIELD_DISTANCE_AS: dist}")
             .sort_by("dist")
             .return_fields("dist")
             .dialect(2))
    params = {"radius": 1 - min_similarity, "vec": np.asarray(query_vector, dtype=np.float32).tobytes()}
    total = r.ft(index_name).search(query.paging(0, 0), query_params=params).total
    if total == 0:
        return []
    docs = r.ft(index_name).search(query.paging(0, total), query_params=params).docs
    return [(as_text(doc.id).split(":", 1)[1], 1 - float(doc.dist)) for doc in docs]


def post_index(dim: int, algorithm: str = "HNSW", name: str = "idx:posts", prefix: str = "post:") -> IndexSpec:
    """Notebook 07's post index: title, body TEXT; url TAG; the embedding."""
    fields = (TextField("title"), TextField("body"), TagField("url"), vector_field(dim, algorithm))
    return IndexSpec(name, prefix, fields)


def write(r: redis.Redis, keys: Sequence[str], records: Sequence[dict], vectors: np.ndarray) -> int:
    """One HSET per record with its float32 vector as `embedding`, in one pipeline; returns the count."""
    pipe = r.pipeline(transaction=False)
    for key, record, vector in zip(keys, records, np.asarray(vectors, dtype="<f4"), strict=True):
        pipe.hset(key, mapping={**record, "embedding": vector.tobytes()})
    pipe.execute()
    return len(keys)


def load_products(r: redis.Redis, products: Sequence[dict], vectors: np.ndarray, prefix: str = "product:") -> int:
    return write(r, [f"{prefix}{p['id']}" for p in products], products, vectors)


def load_catalog(r: redis.Redis, products: Sequence[dict], vectors: np.ndarray, algorithm: str = "FLAT") -> None:
    """`idx:products` and the `product:` hashes as notebook 02 leaves them (FLAT: exact, like the expected rankings)."""
    create_index(r, product_index(vectors.shape[1], algorithm))
    load_products(r, products, vectors)


def load_posts(r: redis.Redis, posts: Sequence[dict], vectors: np.ndarray, algorithm: str = "FLAT") -> None:
    """`idx:posts` and the `post:<url>` hashes as notebook 07 builds them (FLAT by default: exact)."""
    create_index(r, post_index(vectors.shape[1], algorithm))
    write(r, [f"post:{p['url']}" for p in posts], posts, vectors)


def query_words(question: str) -> list[str]:
    """The question's words as notebook 07 turns them into a query: runs of letters, digits and _, lowercased,
    stop words left out (the index never holds them, and search 2.10 mishandles them inside an OR list)."""
    return [word for word in re.findall(r"\w+", question.lower()) if word not in STOPWORDS]


def text_search(r: redis.Redis, question: str, k: int = 5, scorer: str = "BM25STD",
                index_name: str = "idx:posts") -> list[tuple[str, float]]:
    """(url, score) of the k best posts for the question: its words OR-ed, FT.SEARCH ... SCORER scorer LIMIT 0 k.

    Scores are returned so that checks can accept any order of posts with equal scores.
    """
    words = query_words(question)
    if not words:
        return []
    query = Query(" | ".join(words)).scorer(scorer).with_scores().return_fields("url").paging(0, k).dialect(2)
    return [(as_text(doc.url), float(doc.score)) for doc in r.ft(index_name).search(query).docs]


def load_vector_set(r: redis.Redis, key: str, ids: Sequence[str], vectors: np.ndarray, quant: str = "NOQUANT",
                    attributes: Sequence[dict] | None = None) -> int:
    """VADD key FP32 <float32 bytes> <id> <quant> [SETATTR <json>] per id, in one pipeline; the number added.

    NOQUANT by default here: the 09 checks compare with exact numpy rankings, which 8-bit values would blur.
    """
    extras = [None] * len(ids) if attributes is None else attributes
    pipe = r.pipeline(transaction=False)
    for element, vector, extra in zip(ids, np.asarray(vectors, dtype="<f4"), extras, strict=True):
        pipe.execute_command("VADD", key, "FP32", vector.tobytes(), element, quant,
                             *(("SETATTR", json.dumps(extra)) if extra is not None else ()))
    return sum(int(added) for added in pipe.execute())


def load_product_set(r: redis.Redis, key: str, products: Sequence[dict], vectors: np.ndarray) -> int:
    """Every product in the vector set `key`, unquantized, with its category and price as JSON attributes."""
    attributes = [{"category": p["category"], "price": p["price"]} for p in products]
    return load_vector_set(r, key, [p["id"] for p in products], vectors, attributes=attributes)


# ------------------------------------------------------------------------------------------ 10: JSON documents
JSON_INDEX, JSON_PREFIX = "idx:products_json", "product_json:"
JSON_FIELDS = ("id", "name", "description", "category", "price")


def create_json_index(r: redis.Redis, dim: int, algorithm: str = "HNSW", index_name: str = JSON_INDEX,
                      prefix: str = JSON_PREFIX) -> bool:
    """Notebook 02's product schema ON JSON: each field a JSON path named with AS; False when it exists."""
    attributes: dict[str, object] = {"TYPE": "FLOAT32", "DIM": dim, "DISTANCE_METRIC": "COSINE"}
    if algorithm.upper() == "HNSW":
        attributes |= {"M": HNSW_M, "EF_CONSTRUCTION": HNSW_EF_CONSTRUCTION}
    fields = [TextField("$.name", as_name="name"), TextField("$.description", as_name="description"),
              TagField("$.category", as_name="category", separator=CATEGORY_SEPARATOR),
              NumericField("$.price", as_name="price", sortable=True),
              VectorField("$.embedding", algorithm.upper(), attributes, as_name="embedding")]
    try:
        r.ft(index_name).create_index(fields, definition=IndexDefinition(prefix=[prefix], index_type=IndexType.JSON))
    except redis.ResponseError as exc:
        if "already exists" in str(exc).lower():
            return False
        raise
    return True


def load_products_json(r: redis.Redis, products: Sequence[dict], vectors: np.ndarray,
                       prefix: str = JSON_PREFIX) -> int:
    """One JSON.SET <prefix><id> $ per product, its vector a JSON array of numbers, in one pipeline."""
    pipe = r.pipeline(transaction=False)
    for product, vector in zip(products, np.asarray(vectors, dtype=np.float32), strict=True):
        document = {name: product[name] for name in JSON_FIELDS} | {"embedding": vector.tolist()}
        pipe.json().set(f"{prefix}{product['id']}", "$", document)
    return len(pipe.execute())
