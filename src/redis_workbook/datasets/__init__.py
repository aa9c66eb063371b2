"""The shipped datasets, and their embeddings computed once per model.

Products, blog posts, labelled questions over the posts and labelled query pairs are JSON files inside the package
(written for this project; nothing is downloaded). Their embeddings for the
local model ship too, so notebooks start in a second; any other embedder's
vectors are computed once and cached under ~/.cache/redis-workbook.
Run `python -m redis_workbook.datasets` after editing the data to refresh the
shipped vectors (a test fails while they are stale).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import redis
from redis.commands.search.field import NumericField, TagField, TextField

from redis_workbook.embeddings import Embedder

DATA = Path(str(resources.files(__package__) / "data"))
DATASETS = ("products", "posts")


@cache
def _read(name: str) -> tuple[dict, ...]:
    return tuple(json.loads((DATA / f"{name}.json").read_text(encoding="utf-8")))


def products() -> list[dict]:
    """At least 200 products: id, name, description, category, price."""
    return [dict(p) for p in _read("products")]


def posts() -> list[dict]:
    """At least 50 blog posts: url, title, body."""
    return [dict(p) for p in _read("posts")]


def post_questions() -> list[dict]:
    """Questions a reader might ask, each with the urls of the posts that answer it: question, urls.

    Notebook 07 measures retrieval on them (hit@k, MRR); they are embedded when used, not shipped as vectors.
    """
    return [{"question": q["question"], "urls": list(q["urls"])} for q in _read("post_questions")]


def query_pairs() -> list[dict]:
    """Labelled question pairs (a, b, same_intent) for measuring a semantic cache."""
    return [dict(p) for p in _read("query_pairs")]


def product_text(product: dict) -> str:
    """What gets embedded for a product: its name and description."""
    return f"{product['name']}. {product['description']}"


def post_text(post: dict) -> str:
    return f"{post['title']}. {post['body']}"


def texts(name: str) -> list[str]:
    if name == "products":
        return [product_text(p) for p in products()]
    if name == "posts":
        return [post_text(p) for p in posts()]
    raise ValueError(f"name must be one of {DATASETS}, got {name!r}.")


def fingerprint(lines: list[str]) -> str:
    """Short digest of the texts, so cached vectors go stale when the data changes."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "redis-workbook"


def vector_file(name: str, embedder: Embedder, folder: Path) -> Path:
    return folder / f"{name}.{embedder.name}.{fingerprint(texts(name))}.npy"


def embeddings(name: str, embedder: Embedder) -> np.ndarray:
    """The dataset's vectors for this embedder: shipped, cached, or computed and cached."""
    for folder in (DATA, cache_dir()):
        path = vector_file(name, embedder, folder)
        if path.exists():
            return np.load(path)
    vectors = embedder.embed(texts(name))
    path = vector_file(name, embedder, cache_dir())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    except OSError:
        pass  # a read-only home only costs the re-embedding next time
    return vectors


CATALOG_INDEX = "idx:products"
CATALOG_PREFIX = "product:"


def load_catalog(r: redis.Redis, embedder: Embedder, timeout: float = 60.0) -> int:
    """Notebook 02's end state, for notebooks 03-06: the shipped products in `idx:products`.

    Runs `FT.CREATE idx:products ON HASH PREFIX 1 product: SCHEMA name TEXT description TEXT
    category TAG SEPARATOR "|" price NUMERIC SORTABLE embedding VECTOR HNSW ... DIM <embedder's>`
    unless that index exists, writes one `HSET product:<id>` per product with its vector, waits
    until the index holds them all and returns how many documents it holds. Writing that schema
    and loader yourself is notebook 02's exercise; this builds the same thing so that later
    notebooks do not depend on your notebook-02 code.
    """
    from redis_workbook.loading import write_hashes
    from redis_workbook.report import ft_info, vector_dims, wait_indexed
    from redis_workbook.schema import CATEGORY_SEPARATOR, IndexSpec, create_index, index_exists, vector_field

    catalog, vectors = products(), np.asarray(embeddings("products", embedder), dtype=np.float32)
    dim = vectors.shape[1]
    if index_exists(r, CATALOG_INDEX):
        indexed = vector_dims(ft_info(r, CATALOG_INDEX)).get("embedding")
        if indexed != dim:
            raise ValueError(f"{CATALOG_INDEX} exists with DIM {indexed} but {embedder.name} makes {dim}-dim vectors: "
                             f"drop it first (FT.DROPINDEX {CATALOG_INDEX}) or use the embedder it was made for.")
    else:
        fields = (TextField("name"), TextField("description"), TagField("category", separator=CATEGORY_SEPARATOR),
                  NumericField("price", sortable=True), vector_field(dim, "HNSW"))
        create_index(r, IndexSpec(CATALOG_INDEX, CATALOG_PREFIX, fields))
    write_hashes(r, [f"{CATALOG_PREFIX}{p['id']}" for p in catalog], catalog, vectors, progress=False)
    return wait_indexed(r, CATALOG_INDEX, len(catalog), timeout)


def rebuild_shipped() -> list[Path]:
    """Recompute the local model's vectors that ship in the package."""
    from redis_workbook.embeddings import LocalEmbedder

    embedder = LocalEmbedder()
    written = []
    for old in DATA.glob("*.npy"):
        old.unlink()
    for name in DATASETS:
        path = vector_file(name, embedder, DATA)
        np.save(path, embedder.embed(texts(name)))
        written.append(path)
    return written
