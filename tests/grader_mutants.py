"""Mutants for tests/test_grader_suite.py: correct templates of the learner functions, and one-mistake edits.

Each TEMPLATE is a small, self-contained correct implementation of one notebook's
functions (learner-api.md), written for this suite so the mutants do not depend on
the wording of the solution notebooks. The suite checks that every template passes
its notebook's grader tests, so a mutant that fails does so because of its one edit.

A MUTANT is (assignment, old text, new text, keyword): the edit replaces `old`
(which must occur exactly once in the template) by `new`; the grader must fail at
least one test, and the failure message must contain `keyword`, so it names the
mistake for the learner.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON = '''
import hashlib

import numpy as np
import redis
from redis.commands.search.field import NumericField, TagField, TextField, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _escape(value):
    return "".join(ch if ch.isalnum() or ch == "_" else "\\\\" + ch for ch in value)


def _knn(r, vector, k, index_name="idx:products", filters="*", fields=("distance",)):
    query = (Query(f"({filters})=>[KNN {k} @embedding $vec AS distance]")
             .sort_by("distance").return_fields(*fields).paging(0, k).dialect(2))
    blob = np.asarray(vector, dtype=np.float32).tobytes()
    return r.ft(index_name).search(query, query_params={"vec": blob}).docs
'''

TEMPLATES = {
    "01_setup": '''
def search_module_version(r):
    for module in r.execute_command("MODULE", "LIST"):
        fields = module if isinstance(module, dict) else dict(zip(module[::2], module[1::2]))
        fields = {_text(k): v for k, v in fields.items()}
        if _text(fields.get("name")) == "search":
            return int(fields["ver"])
    return None
''',
    "02_indexing": '''
def vector_to_bytes(vector, dim):
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise ValueError(f"vector must have dim={dim} values, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("vector contains NaN or inf")
    return array.tobytes()


def create_product_index(r, dim, algorithm="HNSW", index_name="idx:products", prefix="product:"):
    algorithm = str(algorithm).upper()
    if algorithm not in ("HNSW", "FLAT"):
        raise ValueError(f"algorithm must be HNSW or FLAT, got {algorithm!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    try:
        r.ft(index_name).info()
        return False
    except redis.ResponseError:
        pass
    attributes = {"TYPE": "FLOAT32", "DIM": dim, "DISTANCE_METRIC": "COSINE"}
    if algorithm == "HNSW":
        attributes.update({"M": 16, "EF_CONSTRUCTION": 200})
    schema = [TextField("name"), TextField("description"), TagField("category", separator="|"),
              NumericField("price", sortable=True), VectorField("embedding", algorithm, attributes)]
    r.ft(index_name).create_index(schema, definition=IndexDefinition(prefix=[prefix], index_type=IndexType.HASH))
    return True


def load_products(r, products, embeddings, prefix="product:", batch_size=500):
    if len(products) != len(embeddings):
        raise ValueError(f"{len(products)} products but {len(embeddings)} embeddings")
    rows = [np.asarray(row, dtype=np.float32) for row in embeddings]
    if len({row.shape for row in rows}) > 1:
        raise ValueError("every embedding row must have the same width")
    pipe = r.pipeline(transaction=False)
    for n, (product, row) in enumerate(zip(products, rows), start=1):
        pipe.hset(f"{prefix}{product['id']}", mapping={
            "id": product["id"], "name": product["name"], "description": product["description"],
            "category": product["category"], "price": product["price"], "embedding": row.tobytes()})
        if n % batch_size == 0:
            pipe.execute()
    pipe.execute()
    return len(products)
''',
    "03_knn": '''
def knn_search(r, query_vector, k=5, index_name="idx:products", ef_runtime=None):
    ef = f" EF_RUNTIME {int(ef_runtime)}" if ef_runtime is not None else ""
    query = (Query(f"*=>[KNN {k} @embedding $vec{ef} AS distance]")
             .sort_by("distance").return_fields("distance").paging(0, k).dialect(2))
    blob = np.asarray(query_vector, dtype=np.float32).tobytes()
    docs = r.ft(index_name).search(query, query_params={"vec": blob}).docs
    return [(_text(doc.id).split(":", 1)[1], float(doc.distance)) for doc in docs]


def distance_to_similarity(distance):
    return 1.0 - float(distance)


def within(r, query_vector, min_similarity, index_name="idx:products"):
    query = (Query("@embedding:[VECTOR_RANGE $radius $vec]=>{$YIELD_DISTANCE_AS: dist}")
             .sort_by("dist").return_fields("dist").dialect(2))
    params = {"radius": 1 - min_similarity, "vec": np.asarray(query_vector, dtype="<f4").tobytes()}
    total = r.ft(index_name).search(query.paging(0, 0), query_params=params).total
    docs = r.ft(index_name).search(query.paging(0, total), query_params=params).docs
    return [(_text(doc.id).partition(":")[2], 1 - float(doc.dist)) for doc in docs]
''',
    "04_hybrid": '''
def hybrid_search(r, query_vector, k=5, category=None, price_range=None, text=None, index_name="idx:products"):
    filters = []
    if category is not None:
        filters.append("@category:{" + _escape(category) + "}")
    if price_range is not None:
        low, high = price_range
        filters.append(f"@price:[{'-inf' if low is None else low} {'+inf' if high is None else high}]")
    if text:
        filters.append(f"@name|description:({text})")
    docs = _knn(r, query_vector, k, index_name, " ".join(filters) or "*")
    return [(_text(doc.id).split(":", 1)[1], float(doc.distance)) for doc in docs]
''',
    "05_semantic_cache": '''
class SemanticCache:
    def __init__(self, r, embedder, threshold=0.9, ttl=3600, index_name="idx:cache", prefix="cache:"):
        self.r, self.embedder, self.threshold, self.ttl = r, embedder, threshold, ttl
        self.index_name, self.prefix = index_name, prefix
        try:
            r.ft(index_name).info()
        except redis.ResponseError:
            schema = [TextField("query"), TextField("response"), VectorField(
                "embedding", "FLAT", {"TYPE": "FLOAT32", "DIM": embedder.dim, "DISTANCE_METRIC": "COSINE"})]
            r.ft(index_name).create_index(schema, definition=IndexDefinition(prefix=[prefix],
                                                                             index_type=IndexType.HASH))

    def key(self, query):
        return self.prefix + hashlib.sha256(query.encode()).hexdigest()

    def put(self, query, response):
        if not isinstance(query, str) or not isinstance(response, str):
            raise TypeError("query and response must be str")
        key = self.key(query)
        vector = np.asarray(self.embedder.embed([query])[0], dtype=np.float32)
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"query": query, "response": response, "embedding": vector.tobytes()})
        pipe.expire(key, self.ttl)
        pipe.execute()
        return key

    def get(self, query):
        docs = _knn(self.r, self.embedder.embed([query])[0], 1, self.index_name, fields=("response", "distance"))
        if not docs:
            return None
        similarity = 1 - float(docs[0].distance)
        return _text(docs[0].response) if similarity >= self.threshold else None

    def get_or_generate(self, query, generate_fn):
        cached = self.get(query)
        if cached is not None:
            return cached
        response = generate_fn(query)
        self.put(query, response)
        return response
''',
    "06_recommender": '''
def track_view(r, user_id, product_id, max_views=10, ttl=3600):
    if not r.exists(f"product:{product_id}"):
        raise KeyError(f"unknown product {product_id!r}")
    key = f"user:{user_id}:views"
    pipe = r.pipeline()
    pipe.lpush(key, product_id)
    pipe.ltrim(key, 0, max_views - 1)
    pipe.expire(key, ttl)
    pipe.zincrby("popular:products", 1, product_id)
    pipe.execute()


def _vector(r, product_id):
    return np.frombuffer(r.hget(f"product:{product_id}", "embedding"), dtype=np.float32)


def get_recommendations(r, user_id, k=5):
    viewed = [_text(v) for v in r.lrange(f"user:{user_id}:views", 0, -1)]
    if not viewed:
        return [_text(m) for m in r.zrange("popular:products", 0, k - 1, desc=True)]
    mean = np.mean([_vector(r, pid) for pid in viewed], axis=0)
    ids = [_text(doc.id).split(":", 1)[1] for doc in _knn(r, mean, k + len(set(viewed)))]
    return [i for i in ids if i not in set(viewed)][:k]


def similar_products(r, product_id, k=5):
    ids = [_text(doc.id).split(":", 1)[1] for doc in _knn(r, _vector(r, product_id), k + 1)]
    return [i for i in ids if i != str(product_id)][:k]
''',
    "07_rag": '''
def load_posts(r, posts, embeddings, prefix="post:"):
    if len(posts) != len(embeddings):
        raise ValueError("posts and embeddings must pair up")
    matrix = np.asarray(embeddings, dtype=np.float32)
    try:
        r.ft("idx:posts").info()
    except redis.ResponseError:
        schema = [TextField("title"), TextField("body"), TagField("url"), VectorField(
            "embedding", "HNSW", {"TYPE": "FLOAT32", "DIM": matrix.shape[1], "DISTANCE_METRIC": "COSINE"})]
        r.ft("idx:posts").create_index(schema, definition=IndexDefinition(prefix=[prefix], index_type=IndexType.HASH))
    pipe = r.pipeline(transaction=False)
    for post, vector in zip(posts, matrix):
        key = prefix + hashlib.sha256(post["url"].encode()).hexdigest()[:16]
        pipe.hset(key, mapping={"url": post["url"], "title": post["title"], "body": post["body"],
                                "embedding": vector.tobytes()})
    pipe.execute()
    return len(posts)


def search_posts(r, query_vector, k=5):
    docs = _knn(r, query_vector, k, "idx:posts", fields=("url", "distance"))
    return [(_text(doc.url), 1 - float(doc.distance)) for doc in docs]


def answer(question, r, embedder, chat, model="gpt-4o-mini"):
    url, _ = search_posts(r, embedder.embed([question])[0], k=1)[0]
    doc = r.ft("idx:posts").search(Query("@url:{" + _escape(url) + "}").return_fields("title", "body")
                                   .dialect(2)).docs[0]
    context = _text(doc.title) + "\\n\\n" + _text(doc.body)
    reply = chat.chat.completions.create(model=model, messages=[
        {"role": "system", "content": "Answer using only this blog post:\\n\\n" + context},
        {"role": "user", "content": question}])
    return reply.choices[0].message.content


import re

from redis_workbook.schema import STOPWORDS


def text_search(r, question, k=5, scorer="BM25STD"):
    words = [word for word in re.findall(r"\\w+", question.lower()) if word not in STOPWORDS]
    if not words:
        return []
    query = Query(" | ".join(words)).scorer(scorer).return_fields("url").paging(0, k).dialect(2)
    return [_text(doc.url) for doc in r.ft("idx:posts").search(query).docs]


def reciprocal_rank_fusion(rankings, k=60, top=None):
    scores = {}
    for ranking in rankings:
        for rank, url in enumerate(ranking, start=1):
            scores[url] = scores.get(url, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=scores.get, reverse=True)[:top]


def evaluate(rankings, relevant, k=5):
    hits, reciprocal = [], []
    for ranking, answers in zip(rankings, relevant, strict=True):
        hits.append(any(url in answers for url in ranking[:k]))
        first = next((rank for rank, url in enumerate(ranking[:k], start=1) if url in answers), None)
        reciprocal.append(1 / first if first else 0.0)
    return {"hit@k": sum(hits) / len(hits), "mrr": sum(reciprocal) / len(reciprocal)}
''',
    "08_performance": '''
def recall_at_k(approx_ids, exact_ids):
    exact = set(exact_ids)
    return len(set(approx_ids) & exact) / len(exact)
''',
    "09_vector_sets": '''
import json


def load_vector_set(r, key, ids, vectors, quant="Q8", attributes=None):
    rows = np.asarray(vectors, dtype=np.float32)
    extras = [None] * len(ids) if attributes is None else attributes
    pipe = r.pipeline(transaction=False)
    for element, row, extra in zip(ids, rows, extras, strict=True):
        args = ["VADD", key, "FP32", row.tobytes(), element, quant]
        if extra is not None:
            args += ["SETATTR", json.dumps(extra)]
        pipe.execute_command(*args)
    return sum(int(added) for added in pipe.execute())


def similar_in_set(r, key, product_id, k=5):
    found = [_text(e) for e in r.execute_command("VSIM", key, "ELE", product_id, "COUNT", k + 1)]
    return [e for e in found if e != product_id][:k]


def similar_in_category(r, key, product_id, category, k=5):
    expression = f".category == {json.dumps(category)}"
    found = r.execute_command("VSIM", key, "ELE", product_id, "COUNT", k + 1, "FILTER", expression)
    return [e for e in map(_text, found) if e != product_id][:k]
''',
    "10_json_and_compression": '''
import json


def load_products_json(r, products, embeddings, prefix="product_json:"):
    rows = np.asarray(embeddings, dtype=np.float32)
    pipe = r.pipeline(transaction=False)
    for product, row in zip(products, rows, strict=True):
        doc = {name: product[name] for name in ("id", "name", "description", "category", "price")}
        doc["embedding"] = row.tolist()
        pipe.json().set(f"{prefix}{product['id']}", "$", doc)
    return len(pipe.execute())


def create_json_index(r, dim, algorithm="HNSW", index_name="idx:products_json", prefix="product_json:"):
    params = {"TYPE": "FLOAT32", "DIM": dim, "DISTANCE_METRIC": "COSINE"}
    if algorithm.upper() == "HNSW":
        params.update(M=16, EF_CONSTRUCTION=200)
    fields = [TextField("$.name", as_name="name"), TextField("$.description", as_name="description"),
              TagField("$.category", as_name="category", separator="|"),
              NumericField("$.price", as_name="price", sortable=True),
              VectorField("$.embedding", algorithm.upper(), params, as_name="embedding")]
    definition = IndexDefinition(prefix=[prefix], index_type=IndexType.JSON)
    try:
        r.ft(index_name).create_index(fields, definition=definition)
    except redis.ResponseError as exc:
        if "already exists" in str(exc).lower():
            return False
        raise
    return True


def to_vector_bytes(vector, dtype="FLOAT32"):
    name = dtype.upper()
    values = np.asarray(vector, dtype=np.float32)
    if name == "FLOAT32":
        return values.tobytes()
    if name == "FLOAT16":
        return values.astype(np.float16).tobytes()
    if name == "BFLOAT16":
        bits = values.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype("<u2").tobytes()
    raise ValueError(f"dtype must be FLOAT32, FLOAT16 or BFLOAT16, got {dtype!r}")
''',
    # ---- 11_redisvl (RedisVL): the same index and FT.SEARCH through RedisVL's classes
    "11_redisvl": '''
from redisvl.extensions.cache.llm import SemanticCache
from redisvl.query import RangeQuery, VectorQuery
from redisvl.query.filter import FilterExpression, Num, Tag, Text
from redisvl.schema import IndexSchema
from redisvl.utils.vectorize import CustomVectorizer


def product_schema(dim, algorithm="HNSW", index_name="idx:products", prefix="product:"):
    attrs = {"dims": dim, "algorithm": algorithm.lower(), "datatype": "float32", "distance_metric": "cosine"}
    if algorithm.upper() == "HNSW":
        attrs.update({"m": 16, "ef_construction": 200})
    return IndexSchema.from_dict({
        "index": {"name": index_name, "prefix": prefix, "storage_type": "hash"},
        "fields": [{"name": "name", "type": "text"}, {"name": "description", "type": "text"},
                   {"name": "category", "type": "tag", "attrs": {"separator": "|"}},
                   {"name": "price", "type": "numeric", "attrs": {"sortable": True}},
                   {"name": "embedding", "type": "vector", "attrs": attrs}]})


def index_products(index, products, vectors):
    rows = np.asarray(vectors, dtype=np.float32)
    records = [dict(product, embedding=row.tobytes()) for product, row in zip(products, rows, strict=True)]
    return index.load(records, id_field="id")


def find_products(index, vector, k=5, category=None, price_range=None, text=None):
    filters = []
    if category is not None:
        filters.append(Tag("category") == category)
    low, high = price_range or (None, None)
    if low is not None:
        filters.append(Num("price") >= low)
    if high is not None:
        filters.append(Num("price") <= high)
    if text:
        filters.append(Text("description") % text)
    expression = None
    for part in filters:
        expression = part if expression is None else expression & part
    query = VectorQuery(vector, "embedding", num_results=k, filter_expression=expression)
    return [_text(doc["id"]).split(":", 1)[1] for doc in index.query(query)]


def products_within(index, vector, min_similarity):
    total = int(index.info()["num_docs"])
    query = RangeQuery(vector, "embedding", distance_threshold=1 - min_similarity, num_results=max(total, 1))
    docs = index.query(query)
    return [(_text(doc["id"]).split(":", 1)[1], 1 - float(doc["vector_distance"])) for doc in docs]


def llm_cache(r, embedder, min_similarity=0.9, ttl=3600, name="llmcache"):
    vectorizer = CustomVectorizer(embed=lambda text: [float(x) for x in embedder.embed([text])[0]])
    return SemanticCache(name=name, distance_threshold=1 - min_similarity, ttl=ttl, vectorizer=vectorizer,
                         redis_client=r)
''',
}


@dataclass(frozen=True)
class Mutant:
    name: str
    assignment: str
    old: str
    new: str
    keyword: str  # the failure message must contain this (case-insensitive): it names the mistake
    more: tuple[tuple[str, str], ...] = ()  # further (old, new) edits of the same mistake
    check: str | None = None  # when given, the one grader test that fails: the mistake costs exactly its points

    def source(self) -> str:
        text = TEMPLATES[self.assignment]
        for old, new in ((self.old, self.new), *self.more):
            count = text.count(old)
            if count != 1:
                raise AssertionError(f"mutant {self.name!r}: {old!r} occurs {count} times in the template")
            text = text.replace(old, new)
        return COMMON + text


MUTANTS = [
    # ---- the classic mistakes of the seed material (issue 4)
    Mutant("cache compares the COSINE distance with the threshold", "05_semantic_cache",
           "similarity = 1 - float(docs[0].distance)", "similarity = float(docs[0].distance)", "distance"),
    Mutant("cache key from Python's hash()", "05_semantic_cache",
           "return self.prefix + hashlib.sha256(query.encode()).hexdigest()",
           "return f'{self.prefix}{hash(query)}'", "hash("),
    Mutant("similar_products excludes the product with endswith", "06_recommender",
           "return [i for i in ids if i != str(product_id)][:k]",
           "return [i for i in ids if not i.endswith(str(product_id))][:k]", "endswith"),
    Mutant("decode_responses=True client reads the binary vectors", "06_recommender",
           "def _vector(r, product_id):\n",
           "def _vector(r, product_id):\n"
           "    kw = r.connection_pool.connection_kwargs\n"
           "    r = redis.Redis(host=kw['host'], port=kw['port'], username=kw.get('username'),\n"
           "                    password=kw.get('password'), decode_responses=True)\n",
           "decode_responses"),
    Mutant("KNN without sorting by the distance field", "03_knn",
           '.sort_by("distance").return_fields("distance").paging(0, k)', '.return_fields("distance").paging(0, k)',
           "SORTBY"),
    Mutant("KNN without LIMIT: only 10 results come back", "03_knn",
           '.return_fields("distance").paging(0, k).dialect(2))', '.return_fields("distance").dialect(2))',
           "LIMIT"),
    # ---- more mistakes
    Mutant("LTRIM off by one", "06_recommender", "pipe.ltrim(key, 0, max_views - 1)", "pipe.ltrim(key, 0, max_views)",
           "LTRIM"),
    Mutant("no EXPIRE on the recent-views list", "06_recommender", "    pipe.expire(key, ttl)\n", "", "EXPIRE"),
    Mutant("recommendations do not exclude viewed items", "06_recommender",
           "return [i for i in ids if i not in set(viewed)][:k]", "return ids[:k]", "viewed"),
    Mutant("recommendations ask KNN for only k, then drop the viewed", "06_recommender",
           "_knn(r, mean, k + len(set(viewed)))", "_knn(r, mean, k)", "k + len(viewed)"),
    Mutant("cold start takes the least popular", "06_recommender",
           'r.zrange("popular:products", 0, k - 1, desc=True)', 'r.zrange("popular:products", 0, k - 1)',
           "least popular"),
    Mutant("ZADD instead of ZINCRBY for popularity", "06_recommender",
           'pipe.zincrby("popular:products", 1, product_id)', 'pipe.zadd("popular:products", {product_id: 1})',
           "ZINCRBY"),
    Mutant("track_view writes before checking the product", "06_recommender",
           '    if not r.exists(f"product:{product_id}"):\n        raise KeyError(f"unknown product {product_id!r}")\n',
           '    r.zincrby("popular:products", 1, product_id)\n'
           '    if not r.exists(f"product:{product_id}"):\n        raise KeyError(f"unknown product {product_id!r}")\n',
           "nothing may be written"),
    Mutant("views pushed at the tail (RPUSH)", "06_recommender", "pipe.lpush(key, product_id)",
           "pipe.rpush(key, product_id)", "LPUSH"),
    Mutant("tag value escapes only spaces", "04_hybrid", '"@category:{" + _escape(category) + "}"',
           '"@category:{" + category.replace(" ", "\\\\ ") + "}"', "escape"),
    Mutant("price range with exclusive bounds", "04_hybrid",
           "filters.append(f\"@price:[{'-inf' if low is None else low} {'+inf' if high is None else high}]\")",
           "filters.append(f\"@price:[({'-inf' if low is None else low} ({'+inf' if high is None else high}]\")",
           "inclusive"),
    Mutant("price range with None replaced by 0", "04_hybrid",
           "{'-inf' if low is None else low} {'+inf' if high is None else high}", "{low or 0} {high or 0}",
           "unbounded"),
    Mutant("text filter ignored", "04_hybrid", '        filters.append(f"@name|description:({text})")\n',
           "        pass\n", "mentions"),
    Mutant("cache threshold comparison flipped", "05_semantic_cache",
           "if similarity >= self.threshold else None", "if similarity <= self.threshold else None", "flipped"),
    Mutant("cache entries without TTL", "05_semantic_cache", "        pipe.expire(key, self.ttl)\n", "",
           "never expires"),
    Mutant("cache key from hash() modulo 10**8", "05_semantic_cache",
           "return self.prefix + hashlib.sha256(query.encode()).hexdigest()",
           "return f'{self.prefix}{hash(query) % 10**8}'", "hash("),
    Mutant("cache key with a random part", "05_semantic_cache",
           "hashlib.sha256(query.encode()).hexdigest()",
           "hashlib.sha256(query.encode() + np.random.bytes(4)).hexdigest()",
           "two different keys"),
    Mutant("get_or_generate always generates", "05_semantic_cache",
           "        if cached is not None:\n            return cached\n", "", "without calling generate_fn"),
    Mutant("knn_search returns similarities", "03_knn", "float(doc.distance)) for doc in docs]",
           "1 - float(doc.distance)) for doc in docs]", "similarities where COSINE distances"),
    Mutant("knn_search ignores ef_runtime", "03_knn", ' EF_RUNTIME {int(ef_runtime)}" if ef_runtime', '" if ef_runtime',
           "EF_RUNTIME"),
    Mutant("knn_search packs the query as float64", "03_knn", "np.asarray(query_vector, dtype=np.float32).tobytes()",
           "np.asarray(query_vector).tobytes()", "float32"),
    Mutant("knn_search returns keys with the prefix", "03_knn", '_text(doc.id).split(":", 1)[1]', "_text(doc.id)",
           "prefix"),
    Mutant("distance_to_similarity returns the distance", "03_knn", "return 1.0 - float(distance)",
           "return float(distance)", "distance unchanged"),
    # ---- 03 range queries: each mistake but the radius costs exactly one named check
    Mutant("within passes min_similarity as the radius", "03_knn", '"radius": 1 - min_similarity',
           '"radius": min_similarity', "1 - min_similarity"),
    Mutant("within returns distances", "03_knn", "1 - float(doc.dist)) for doc in docs]",
           "float(doc.dist)) for doc in docs]", "distances where similarities",
           check="test_within_returns_similarities_best_first"),
    Mutant("within without LIMIT: FT.SEARCH's first 10", "03_knn",
           "    total = r.ft(index_name).search(query.paging(0, 0), query_params=params).total\n"
           "    docs = r.ft(index_name).search(query.paging(0, total), query_params=params).docs\n",
           "    docs = r.ft(index_name).search(query, query_params=params).docs\n", "LIMIT",
           check="test_within_finds_every_product_above_the_threshold"),
    Mutant("within as a KNN 10 filtered by similarity", "03_knn",
           "    total = r.ft(index_name).search(query.paging(0, 0), query_params=params).total\n"
           "    docs = r.ft(index_name).search(query.paging(0, total), query_params=params).docs\n",
           "    knn = Query(\"*=>[KNN 10 @embedding $vec AS dist]\").sort_by(\"dist\").paging(0, 10).dialect(2)\n"
           "    docs = [doc for doc in r.ft(index_name).search(knn, query_params={\"vec\": params[\"vec\"]}).docs\n"
           "            if 1 - float(doc.dist) >= min_similarity]\n", "fixed k",
           check="test_within_finds_every_product_above_the_threshold"),
    Mutant("within returns None when nothing is close enough", "03_knn",
           "    return [(_text(doc.id).partition(",
           "    if not docs:\n        return None\n    return [(_text(doc.id).partition(",
           "empty list", check="test_within_returns_an_empty_list_when_nothing_is_close_enough"),
    Mutant("vector_to_bytes keeps float64", "02_indexing", "return array.tobytes()",
           "return np.asarray(vector, dtype=np.float64).tobytes()", "float64"),
    Mutant("vector_to_bytes accepts NaN", "02_indexing", "    if not np.isfinite(array).all():\n", "    if False:\n",
           "NaN"),
    Mutant("create_product_index recreates an existing index", "02_indexing",
           "        r.ft(index_name).info()\n        return False\n",
           "        r.ft(index_name).info()\n        r.ft(index_name).dropindex()\n", "already exists"),
    Mutant("category TAG with the default ',' separator", "02_indexing", 'TagField("category", separator="|")',
           'TagField("category")', "SEPARATOR"),
    Mutant("create_product_index ignores dim (OpenAI's 1536)", "02_indexing",
           'attributes = {"TYPE": "FLOAT32", "DIM": dim,', 'attributes = {"TYPE": "FLOAT32", "DIM": 1536,',
           "expects DIM 1536"),
    Mutant("price not SORTABLE", "02_indexing", 'NumericField("price", sortable=True)', 'NumericField("price")',
           "SORTABLE"),
    Mutant("load_products checks row widths batch by batch", "02_indexing",
           '    if len({row.shape for row in rows}) > 1:\n        raise ValueError("every embedding row must have '
           'the same width")\n', "", "nothing may be written",
           more=(("        pipe.hset(f\"{prefix}", "        if row.shape != rows[0].shape:\n"
                  "            raise ValueError('every embedding row must have the same width')\n"
                  "        pipe.hset(f\"{prefix}"),)),
    Mutant("load_products stores the vector as text", "02_indexing", '"embedding": row.tobytes()})',
           '"embedding": str(row.tolist())})', "float32 bytes"),
    Mutant("search_module_version returns a str", "01_setup", 'return int(fields["ver"])',
           'return str(fields["ver"])', "as an int"),
    Mutant("search_module_version misses the RESP2 reply shape", "01_setup",
           "fields = module if isinstance(module, dict) else dict(zip(module[::2], module[1::2]))",
           "fields = module if isinstance(module, dict) else {}", "RESP2"),
    Mutant("search_module_version assumes a search module", "01_setup", "    return None\n",
           "    raise RuntimeError('no search module')\n", "must return None"),
    Mutant("search_posts returns distances", "07_rag", "(_text(doc.url), 1 - float(doc.distance))",
           "(_text(doc.url), float(doc.distance))", "distances where similarities"),
    Mutant("answer leaves the post out of the prompt", "07_rag",
           '"Answer using only this blog post:\\n\\n" + context', '"Answer briefly."', "best post's text"),
    Mutant("answer returns the whole reply object", "07_rag", "return reply.choices[0].message.content",
           "return str(reply)", "reply.choices[0].message.content"),
    Mutant("answer ignores the model argument", "07_rag", "create(model=model,", 'create(model="gpt-4o-mini",',
           "model=model"),
    Mutant("load_posts always creates the index", "07_rag", '        r.ft("idx:posts").info()\n',
           '        raise redis.ResponseError("pretend it is missing")\n', "only if it is missing"),
    Mutant("recall divides by the approximate count", "08_performance", "/ len(exact)", "/ len(set(approx_ids))",
           "precision"),
    # ---- 07's retrieval evaluation: each mistake costs exactly one named check
    Mutant("text_search without SCORER (TFIDF on search 2.x)", "07_rag", ".scorer(scorer)", "", "SCORER",
           check="test_text_search_ranks_by_the_scorer_asked_for"),
    Mutant("text_search with the older BM25 scorer", "07_rag", 'k=5, scorer="BM25STD"', 'k=5, scorer="BM25"',
           "BM25STD", check="test_text_search_ranks_by_the_scorer_asked_for"),
    Mutant("text_search without LIMIT: FT.SEARCH's first 10", "07_rag", '.return_fields("url").paging(0, k)',
           '.return_fields("url")', "LIMIT 0 k", check="test_text_search_returns_k_results"),
    Mutant("text_search keeps the stop words", "07_rag", " if word not in STOPWORDS]", "]", "STOPWORDS",
           check="test_text_search_leaves_the_stop_words_out"),
    Mutant("text_search splits the question on spaces, punctuation and all", "07_rag",
           're.findall(r"\\w+", question.lower())', "question.lower().split()", "Punctuation is query syntax",
           check="test_text_search_survives_punctuation"),
    Mutant("text_search sends '*' for a question without words", "07_rag", "        return []\n",
           '        words = ["*"]\n', "without words", check="test_text_search_survives_punctuation"),
    Mutant("RRF ranks start at 0", "07_rag", "enumerate(ranking, start=1)", "enumerate(ranking)", "start at 1",
           check="test_reciprocal_rank_fusion_sums_one_over_k_plus_rank"),
    Mutant("RRF adds up ranks instead of reciprocal ranks", "07_rag",
           "scores.get(url, 0.0) + 1.0 / (k + rank)", "scores.get(url, 0.0) - rank", "RECIPROCAL",
           check="test_reciprocal_rank_fusion_sums_one_over_k_plus_rank"),
    Mutant("RRF ignores k (1 / rank)", "07_rag", "1.0 / (k + rank)", "1.0 / rank", "k you are given",
           check="test_reciprocal_rank_fusion_sums_one_over_k_plus_rank"),
    Mutant("RRF breaks ties through a set", "07_rag", "return sorted(scores, key=scores.get, reverse=True)[:top]",
           "return sorted(set(scores), key=scores.get, reverse=True)[:top]", "first appear",
           check="test_reciprocal_rank_fusion_breaks_ties_by_first_appearance"),
    Mutant("RRF ignores top", "07_rag", "reverse=True)[:top]", "reverse=True)", "[:top]",
           check="test_reciprocal_rank_fusion_returns_each_id_once_and_cuts_at_top"),
    Mutant("hit@k looks at one result too many", "07_rag", "for url in ranking[:k]))", "for url in ranking[:k + 1]))",
           "rank k + 1", check="test_evaluate_hit_at_k_looks_at_the_first_k"),
    Mutant("MRR counts only answers at rank 1", "07_rag", "reciprocal.append(1 / first if first else 0.0)",
           "reciprocal.append(1.0 if first == 1 else 0.0)", "hit@1",
           check="test_evaluate_mrr_is_the_mean_reciprocal_rank_of_the_first_relevant"),
    Mutant("evaluate pairs rankings and relevant with a plain zip", "07_rag",
           "zip(rankings, relevant, strict=True)", "zip(rankings, relevant)", "ValueError",
           check="test_evaluate_refuses_lists_of_different_lengths"),
    # ---- 09: each mistake costs exactly one named check
    Mutant("vector set loaded from float64 bytes", "09_vector_sets", "rows = np.asarray(vectors, dtype=np.float32)",
           "rows = np.asarray(vectors, dtype=np.float64)", "float32",
           check="test_load_vector_set_adds_every_id_with_its_vector"),
    Mutant("load_vector_set returns len(ids), not what VADD added", "09_vector_sets",
           "return sum(int(added) for added in pipe.execute())", "pipe.execute()\n    return len(ids)",
           "sum of the replies", check="test_load_vector_set_adds_every_id_with_its_vector"),
    Mutant("load_vector_set ignores quant", "09_vector_sets",
           'args = ["VADD", key, "FP32", row.tobytes(), element, quant]',
           'args = ["VADD", key, "FP32", row.tobytes(), element]', "default Q8",
           check="test_load_vector_set_uses_the_quantization_asked_for"),
    Mutant("attributes stored as Python's str(dict)", "09_vector_sets", 'args += ["SETATTR", json.dumps(extra)]',
           'args += ["SETATTR", str(extra)]', "json.dumps", check="test_load_vector_set_stores_the_attributes_as_json"),
    Mutant("load_vector_set pairs ids and vectors with a plain zip", "09_vector_sets",
           "zip(ids, rows, extras, strict=True)", "zip(ids, rows, extras)", "strict=True",
           check="test_load_vector_set_refuses_mismatched_lengths_and_writes_nothing"),
    Mutant("load_vector_set sends each VADD as it goes, not in a pipeline", "09_vector_sets",
           "pipe = r.pipeline(transaction=False)", "added = 0", "only after writing",
           more=(("pipe.execute_command(*args)", "added += int(r.execute_command(*args))"),
                 ("return sum(int(added) for added in pipe.execute())", "return added")),
           check="test_load_vector_set_refuses_mismatched_lengths_and_writes_nothing"),
    Mutant("similar_in_set drops the product with endswith", "09_vector_sets",
           "return [e for e in found if e != product_id][:k]",
           "return [e for e in found if not e.endswith(product_id)][:k]", "endswith",
           check="test_similar_in_set_never_returns_the_product_itself"),
    Mutant("similar_in_set asks VSIM for COUNT k", "09_vector_sets",
           '"VSIM", key, "ELE", product_id, "COUNT", k + 1)', '"VSIM", key, "ELE", product_id, "COUNT", k)',
           "COUNT k + 1", check="test_similar_in_set_returns_the_k_nearest"),
    Mutant("similar_in_set without COUNT (VSIM's 10)", "09_vector_sets",
           '"VSIM", key, "ELE", product_id, "COUNT", k + 1)', '"VSIM", key, "ELE", product_id)',
           "unless told otherwise", check="test_similar_in_set_returns_the_k_nearest"),
    Mutant("similar_in_category keeps the product itself", "09_vector_sets",
           "return [e for e in map(_text, found) if e != product_id][:k]", "return list(map(_text, found))[:k]",
           "product itself", check="test_similar_in_category_returns_the_nearest_of_that_category"),
    Mutant("similar_in_category returns k + 1 when the product is of another category", "09_vector_sets",
           "return [e for e in map(_text, found) if e != product_id][:k]",
           "return [e for e in map(_text, found) if e != product_id]", "keep the first k",
           check="test_similar_in_category_from_a_product_of_another_category"),
    Mutant("similar_in_category over-fetches and filters in Python", "09_vector_sets",
           'found = r.execute_command("VSIM", key, "ELE", product_id, "COUNT", k + 1, "FILTER", expression)',
           'found = [e for e in r.execute_command("VSIM", key, "ELE", product_id, "COUNT", 4 * (k + 1))\n'
           '             if r.vset().vgetattr(key, e)["category"] == category]',
           "FILTER", check="test_similar_in_category_from_a_product_of_another_category"),
    # ---- 10: JSON documents and compression
    Mutant("JSON documents written as strings with SET", "10_json_and_compression",
           'pipe.json().set(f"{prefix}{product[\'id\']}", "$", doc)',
           'pipe.set(f"{prefix}{product[\'id\']}", json.dumps(doc))', "JSON.SET",
           check="test_load_products_json_writes_documents_with_float_arrays"),
    Mutant("embedding stored as a JSON string", "10_json_and_compression", 'doc["embedding"] = row.tolist()',
           'doc["embedding"] = json.dumps(row.tolist())', "is a string",
           check="test_load_products_json_writes_documents_with_float_arrays"),
    Mutant("load_products_json ignores the prefix", "10_json_and_compression",
           'pipe.json().set(f"{prefix}{product[\'id\']}", "$", doc)',
           'pipe.json().set(f"product_json:{product[\'id\']}", "$", doc)', "prefix",
           check="test_load_products_json_writes_documents_with_float_arrays"),
    Mutant("load_products_json pairs with a plain zip", "10_json_and_compression",
           "zip(products, rows, strict=True)", "zip(products, rows)", "strict=True",
           check="test_load_products_json_refuses_mismatched_lengths_and_writes_nothing"),
    Mutant("load_products_json sends each JSON.SET as it goes, not in a pipeline", "10_json_and_compression",
           "pipe = r.pipeline(transaction=False)", "written = 0", "only after writing",
           more=(('pipe.json().set(f"{prefix}{product[\'id\']}", "$", doc)',
                  'written += bool(r.json().set(f"{prefix}{product[\'id\']}", "$", doc))'),
                 ("return len(pipe.execute())", "return written")),
           check="test_load_products_json_refuses_mismatched_lengths_and_writes_nothing"),
    Mutant("JSON index created ON HASH", "10_json_and_compression", "index_type=IndexType.JSON",
           "index_type=IndexType.HASH", "ON JSON", check="test_create_json_index_matches_the_schema"),
    Mutant("JSON index's category TAG without SEPARATOR", "10_json_and_compression",
           'TagField("$.category", as_name="category", separator="|")', 'TagField("$.category", as_name="category")',
           "SEPARATOR", check="test_create_json_index_matches_the_schema"),
    Mutant("JSON index fields without AS names", "10_json_and_compression",
           'TextField("$.name", as_name="name")', 'TextField("$.name")', "as_name",
           more=(('TextField("$.description", as_name="description")', 'TextField("$.description")'),
                 ('TagField("$.category", as_name="category", separator="|")',
                  'TagField("$.category", separator="|")'),
                 ('NumericField("$.price", as_name="price", sortable=True)', 'NumericField("$.price", sortable=True)'),
                 ('params, as_name="embedding")', "params)")),
           check="test_create_json_index_names_the_fields_for_queries"),
    Mutant("create_json_index recreates an existing index", "10_json_and_compression",
           "            return False\n        raise",
           "            r.ft(index_name).dropindex(delete_documents=False)\n"
           "            r.ft(index_name).create_index(fields, definition=definition)\n"
           "            return False\n        raise", "untouched",
           check="test_create_json_index_leaves_an_existing_index_alone"),
    Mutant("create_json_index raises when the index exists", "10_json_and_compression",
           '        if "already exists" in str(exc).lower():\n            return False\n', "", "already exists",
           check="test_create_json_index_leaves_an_existing_index_alone"),
    Mutant("FLOAT16 packed big-endian", "10_json_and_compression", "values.astype(np.float16)",
           'values.astype(">f2")', "big-endian", check="test_to_vector_bytes_float32_and_float16"),
    Mutant("BFLOAT16 truncated instead of rounded", "10_json_and_compression",
           "rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16", "rounded = bits >> 16", "round",
           check="test_to_vector_bytes_bfloat16_rounds_to_nearest"),
    Mutant("BFLOAT16 packed as IEEE half (float16)", "10_json_and_compression",
           'return rounded.astype("<u2").tobytes()', "return values.astype(np.float16).tobytes()", "IEEE half"),
    Mutant("BFLOAT16 keeps the low 16 bits", "10_json_and_compression",
           "rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16", "rounded = bits & 0xFFFF", "low 16 bits"),
    Mutant("BFLOAT16 packed big-endian", "10_json_and_compression", 'rounded.astype("<u2")', 'rounded.astype(">u2")',
           "big-endian"),
    Mutant("to_vector_bytes compares dtype case-sensitively", "10_json_and_compression", "name = dtype.upper()",
           "name = dtype", "case insensitive", check="test_to_vector_bytes_reads_the_type_name"),
    Mutant("to_vector_bytes packs an unknown dtype as float32", "10_json_and_compression",
           '    raise ValueError(f"dtype must be FLOAT32, FLOAT16 or BFLOAT16, got {dtype!r}")',
           "    return values.tobytes()", "ValueError", check="test_to_vector_bytes_reads_the_type_name"),
    # ---- 11 (RedisVL): each mistake costs exactly one named check
    Mutant("RedisVL schema: category TAG with the default ',' separator", "11_redisvl",
           '{"name": "category", "type": "tag", "attrs": {"separator": "|"}}', '{"name": "category", "type": "tag"}',
           "separator", check="test_product_schema_matches_notebook_02s_index"),
    Mutant("RedisVL schema: price not sortable", "11_redisvl",
           '{"name": "price", "type": "numeric", "attrs": {"sortable": True}}', '{"name": "price", "type": "numeric"}',
           "SORTABLE", check="test_product_schema_matches_notebook_02s_index"),
    Mutant("RedisVL schema always HNSW", "11_redisvl", '"algorithm": algorithm.lower()', '"algorithm": "hnsw"',
           "FLAT", check="test_product_schema_flat_with_custom_name_and_prefix"),
    Mutant("RedisVL schema with dims fixed at 384", "11_redisvl", 'attrs = {"dims": dim,', 'attrs = {"dims": 384,',
           "DIM 8", check="test_product_schema_flat_with_custom_name_and_prefix"),
    Mutant("SearchIndex.load without id_field: ULID keys", "11_redisvl", 'return index.load(records, id_field="id")',
           "return index.load(records)", "id_field",
           check="test_index_products_writes_float32_vectors_under_the_product_ids"),
    Mutant("index_products stores float64 bytes (dtype mismatch)", "11_redisvl",
           "rows = np.asarray(vectors, dtype=np.float32)", "rows = np.asarray(vectors, dtype=np.float64)", "float64",
           check="test_index_products_writes_float32_vectors_under_the_product_ids"),
    Mutant("VectorQuery without num_results: 10 results", "11_redisvl",
           'VectorQuery(vector, "embedding", num_results=k, filter_expression=expression)',
           'VectorQuery(vector, "embedding", filter_expression=expression)', "num_results",
           check="test_find_products_returns_the_k_nearest"),
    Mutant("category filter as a hand-written, unescaped tag string", "11_redisvl",
           'filters.append(Tag("category") == category)',
           'filters.append(FilterExpression("@category:{" + category + "}"))', "escape",
           check="test_find_products_category_with_comma_and_ampersand"),
    Mutant("Num filters with exclusive bounds", "11_redisvl", 'filters.append(Num("price") >= low)',
           'filters.append(Num("price") > low)', "inclusive",
           more=(('filters.append(Num("price") <= high)', 'filters.append(Num("price") < high)'),),
           check="test_find_products_price_range_is_inclusive"),
    Mutant("find_products ignores the text filter", "11_redisvl",
           '        filters.append(Text("description") % text)\n', "        pass\n", "mention",
           check="test_find_products_combines_text_with_the_other_filters"),
    Mutant("RangeQuery with the similarity as distance_threshold", "11_redisvl",
           "distance_threshold=1 - min_similarity, num_results", "distance_threshold=min_similarity, num_results",
           "1 - min_similarity", check="test_products_within_finds_every_product_above_the_threshold"),
    Mutant("RangeQuery's first page of 10 only", "11_redisvl",
           "distance_threshold=1 - min_similarity, num_results=max(total, 1))",
           "distance_threshold=1 - min_similarity)", "paginate",
           check="test_products_within_finds_every_product_above_the_threshold"),
    Mutant("products_within returns distances", "11_redisvl", '1 - float(doc["vector_distance"])) for doc in docs]',
           'float(doc["vector_distance"])) for doc in docs]', "distances where similarities",
           check="test_products_within_returns_similarities_best_first"),
    Mutant("products_within returns None when nothing is close enough", "11_redisvl",
           "    docs = index.query(query)\n", "    docs = index.query(query)\n    if not docs:\n        return None\n",
           "empty list", check="test_products_within_returns_similarities_best_first"),
    Mutant("SemanticCache's distance_threshold set to the similarity", "11_redisvl",
           "SemanticCache(name=name, distance_threshold=1 - min_similarity,",
           "SemanticCache(name=name, distance_threshold=min_similarity,", "1 - min_similarity",
           check="test_llm_cache_hits_by_similarity_and_expires"),
    Mutant("SemanticCache without ttl", "11_redisvl", "ttl=ttl, vectorizer=vectorizer", "vectorizer=vectorizer",
           "ttl=ttl", check="test_llm_cache_hits_by_similarity_and_expires"),
]
