"""11_redisvl: `product_schema`, `index_products`, `find_products`, `products_within`, `llm_cache` with RedisVL.

RedisVL writes the same FT.CREATE and FT.SEARCH as notebooks 02-05, so these checks compare with the same
answers: the schema with the index reference.py makes from notebook 02's contract (FT.INFO, field by field);
searches with numpy's exact rankings on the grader's FLAT catalogue. The SearchIndex the checks pass in is
RedisVL's view of that catalogue index (`SearchIndex.from_existing`), rebuilt in the notebook's process on its
own client; the cache is the learner's, driven through its `store` and `check`.
"""

from __future__ import annotations

import numpy as np
import redis
from feedback import (
    TOLERANCE,
    Catalog,
    as_pairs,
    call,
    check_id_list,
    check_nearest_set,
    check_scores,
    fail,
    show,
)
from redis.commands.search.query import Query
from redisvl.index import SearchIndex
from redisvl.schema import IndexSchema
from reference import load_products, product_index
from test_02_indexing import index_shape
from test_03_knn import MARGIN, narrow_range, similarities, wide_range
from test_05_semantic_cache import ANSWER, PROBES, STORED
from test_05_semantic_cache import similarities as cache_similarities

from redis_workbook.embeddings import HashingEmbedder
from redis_workbook.report import as_text, index_report, wait_indexed
from redis_workbook.schema import create_index

DIM = 384
SCHEMA_HINT = ("IndexSchema.from_dict({'index': {'name': index_name, 'prefix': prefix, 'storage_type': 'hash'}, "
               "'fields': [name text, description text, category tag with attrs {'separator': '|'}, price numeric "
               "with {'sortable': True}, embedding vector with {'dims': dim, 'datatype': 'float32', "
               "'distance_metric': 'cosine', 'algorithm': 'hnsw', 'm': 16, 'ef_construction': 200} (or 'flat')]}).")
NUM_RESULTS_HINT = ("A RedisVL query returns 10 results unless told otherwise (it ends with `LIMIT 0 10`, like "
                    "FT.SEARCH): pass `num_results=k` to VectorQuery.")
ESCAPE_HINT = ("Let RedisVL write the filter: `Tag(\"category\") == category` escapes the comma, spaces and `&` "
               "(`@category:{Clothing\\,\\ Shoes\\ \\&\\ Jewelry}`); a filter string written by hand must escape "
               "them itself. Print `str(query)` to see what Redis received.")
RANGE_HINT = ("The price range is inclusive: `Num(\"price\") >= low` and `Num(\"price\") <= high` (`>`/`<` write "
              "`(` before the bound, which excludes it), and a None side is no bound (`Num(...) >= None` is `*`).")
TEXT_HINT = ("Match the text on description with `Text(\"description\") % text` and combine every filter with `&`; "
             "a filter given None (`Text(\"description\") % None`) matches everything.")
RADIUS_HINT = ("RangeQuery's distance_threshold is a COSINE distance, and distance = 1 - similarity: pass "
               "`distance_threshold=1 - min_similarity`, not `min_similarity` itself.")
PAGE_HINT = ("A range has no k, but `index.query(range_query)` returns one page of `num_results` (10 by default): "
             "read every page with `index.paginate(range_query, page_size=...)`, or ask for as many as the index "
             "holds.")
THRESHOLD_HINT = ("SemanticCache's distance_threshold is a COSINE distance (\"Redis COSINE units [0-2]\"): a hit is "
                  "a stored prompt within that distance. A similarity threshold s is the distance threshold 1 - s: "
                  "`SemanticCache(..., distance_threshold=1 - min_similarity)`.")


def catalog_index(r: redis.Redis, name: str = "idx:products") -> SearchIndex:
    """RedisVL's view of an index made with FT.CREATE (reference.py): the schema it reads back from FT.INFO."""
    return SearchIndex.from_existing(name, redis_client=r)


# ------------------------------------------------------------------------------------------ product_schema
def schema_of(got: object, what: str) -> IndexSchema:
    """The learner's IndexSchema (in remote mode an object of the notebook's process) as one of the grader's."""
    if isinstance(got, dict):
        fail(f"`{what}` returned a dict, not an IndexSchema.", expected="IndexSchema", got=show(got, 200),
             hint="Wrap the dict: `IndexSchema.from_dict({...})`.")
    kind = getattr(got, "_type", type(got).__name__)
    if kind != "IndexSchema":
        fail(f"`{what}` must return a RedisVL IndexSchema.", expected="IndexSchema", got=f"{kind}: {show(got, 200)}",
             hint=SCHEMA_HINT)
    return IndexSchema.from_dict(got.to_dict())  # type: ignore[attr-defined]


def compare_with_reference(r: redis.Redis, learner: str, reference: str, what: str,
                           only: tuple[str, ...] | None = None) -> None:
    """The learner's index against reference.py's, field by field (only the fields `only` names, when given)."""
    got, want = index_shape(r, learner), index_shape(r, reference)
    if only is not None:
        for shape in (got, want):
            shape["fields"] = {k: v for k, v in shape["fields"].items() if k in only}  # type: ignore[attr-defined]
    problems = []
    if got["key_type"] != want["key_type"]:
        problems.append(f"it indexes {got['key_type']} keys, expected {want['key_type']} (storage_type 'hash')")
    if got["prefixes"] != want["prefixes"]:
        problems.append(f"its prefixes are {got['prefixes']}, expected {want['prefixes']}")
    got_fields, want_fields = got["fields"], want["fields"]  # type: ignore[assignment]
    for name, spec in want_fields.items():  # type: ignore[attr-defined]
        if name not in got_fields:  # type: ignore[operator]
            problems.append(f"field `{name}` is missing (expected {spec})")
        elif got_fields[name] != spec:  # type: ignore[index]
            problems.append(f"field `{name}` is {got_fields[name]}, expected {spec}")  # type: ignore[index]
    extra = sorted(set(got_fields) - set(want_fields))  # type: ignore[arg-type]
    if extra:
        problems.append(f"unexpected fields {extra}")
    if problems:
        separator = next((p for p in problems if p.startswith("field `category`")), None)
        hint = ("The category tag needs `'attrs': {'separator': '|'}`: with the default ',' RedisVL's FT.CREATE "
                "splits 'Clothing, Shoes & Jewelry' into two tags (notebook 02). " if separator else "") + SCHEMA_HINT
        fail(f"The index made from `{what}` differs from notebook 02's: " + "; ".join(problems) + ".", hint=hint)


def create_learner_index(r: redis.Redis, schema: IndexSchema, what: str) -> None:
    try:
        SearchIndex(schema, redis_client=r).create(overwrite=True, drop=True)
    except Exception as exc:  # RedisVL or Redis refusing the schema: the learner's to fix
        fail(f"RedisVL could not create the index of `{what}`: {type(exc).__name__}: {str(exc)[:300]}",
             hint=SCHEMA_HINT)


def test_product_schema_matches_notebook_02s_index(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    what = f"product_schema({DIM})"
    schema = schema_of(call(what, nb.product_schema, DIM), what)
    if schema.index.name != "idx:products" or schema.index.prefix != "product:":
        fail(f"`{what}` must describe `idx:products` over the keys `product:`.",
             expected="name 'idx:products', prefix 'product:'",
             got=f"name {schema.index.name!r}, prefix {schema.index.prefix!r}",
             hint="Use index_name and prefix in the 'index' part; their defaults are notebook 02's.")
    create_learner_index(r, schema, what)
    rows = list(range(20)) + [next(i for i, p in enumerate(shipped_products.products) if "," in p["category"])]
    load_products(r, [shipped_products.products[i] for i in rows], shipped_products.vectors[rows])
    wait_indexed(r, "idx:products")
    report = index_report(r, "idx:products", "product:")
    count = len(set(rows))
    if report.num_docs != count or report.failures:
        fail(f"After loading {count} products (float32 vectors) into your index, Redis does not index them all.",
             expected=f"{count} documents, 0 indexing failures",
             got=f"{report.num_docs} documents, {report.failures} failures",
             hint="The vector field must be 'datatype': 'float32' with 'dims': dim. " + SCHEMA_HINT)
    category = shipped_products.products[rows[-1]]["category"]
    escaped = "".join(ch if ch.isalnum() else "\\" + ch for ch in category)
    found = r.ft("idx:products").search(Query(f"@category:{{{escaped}}}").dialect(2)).total
    if found != sum(shipped_products.products[i]["category"] == category for i in set(rows)):
        fail(f"An exact category filter for {category!r} does not find its products in your index.",
             expected=f"{sum(shipped_products.products[i]['category'] == category for i in set(rows))} products",
             got=found, hint="RedisVL's tag fields split values on ',' unless told otherwise (its FT.CREATE says "
                             "SEPARATOR ','), so that category was indexed as two tags. Give the category field "
                             "`'attrs': {'separator': '|'}`, as notebook 02 did.")
    create_index(r, product_index(DIM, name="idx:grader-reference", prefix="product:"))
    compare_with_reference(r, "idx:products", "idx:grader-reference", what)


def test_product_schema_flat_with_custom_name_and_prefix(nb, r: redis.Redis) -> None:
    what = "product_schema(8, algorithm='FLAT', index_name='idx:flat-test', prefix='flat-test:')"
    schema = schema_of(call(what, nb.product_schema, 8, algorithm="FLAT", index_name="idx:flat-test",
                            prefix="flat-test:"), what)
    if schema.index.name != "idx:flat-test" or schema.index.prefix != "flat-test:":
        fail(f"`{what}` must use the index name and prefix it is given.",
             expected="name 'idx:flat-test', prefix 'flat-test:'",
             got=f"name {schema.index.name!r}, prefix {schema.index.prefix!r}",
             hint="Use the index_name, prefix and algorithm arguments instead of fixed values.")
    create_learner_index(r, schema, what)
    create_index(r, product_index(8, "FLAT", name="idx:grader-reference", prefix="flat-test:"))
    compare_with_reference(r, "idx:flat-test", "idx:grader-reference", what, only=("embedding",))


# ------------------------------------------------------------------------------------------ index_products
def test_index_products_writes_float32_vectors_under_the_product_ids(nb, r: redis.Redis,
                                                                      shipped_products: Catalog) -> None:
    create_index(r, product_index(DIM, "FLAT"))
    index = catalog_index(r)
    products, vectors = shipped_products.products[:30], shipped_products.vectors[:30]
    what = "index_products(index, products, vectors)  # 30 products, index idx:products over product:"
    got = call(what, nb.index_products, index, products, vectors)
    want = [f"product:{p['id']}" for p in products]
    keys = sorted(as_text(k) for k in r.scan_iter(match="product:*", count=1000))
    if keys != sorted(want):
        stray = [k for k in keys if k not in want]
        hint = ("Without id_field RedisVL makes up a key for each record (a ULID). Load with `id_field=\"id\"` so "
                "the key is the prefix plus the product's id." if stray else
                "Load every product (`zip(products, vectors, strict=True)`) with "
                "`index.load(records, id_field=\"id\")`.")
        fail(f"After `{what}` the keys are not `product:<id>` for each product.", expected=f"{want[:3]} ... (30)",
             got=f"{show(keys[:3], 200)} ... ({len(keys)})", hint=hint)
    if not isinstance(got, list) or sorted(map(as_text, got)) != sorted(want):
        fail(f"`{what}` must return the keys it wrote (what `index.load` returns).", expected=f"{want[:3]} ...",
             got=show(got, 200), hint="Return `index.load(...)`'s result.")
    for product, vector in zip(products[:3], vectors[:3]):
        stored = r.hget(f"product:{product['id']}", "embedding")
        expected = np.asarray(vector, dtype="<f4").tobytes()
        if stored != expected:
            twice = stored is not None and len(stored) == 2 * len(expected)
            fail(f"The `embedding` of product:{product['id']} is not the product's vector as float32 bytes.",
                 expected=f"{len(expected)} bytes (float32)", got=show(stored),
                 hint=("Those are float64 bytes (8 per value): the index reads float32 and refuses the document. "
                       "Pack with `array_to_buffer(vector, dtype=\"float32\")`." if twice else
                       "Store `array_to_buffer(vector, dtype=\"float32\")` in the `embedding` field."))
        fields = {as_text(k) for k in r.hkeys(f"product:{product['id']}")}
        missing = {"id", "name", "description", "category", "price"} - fields
        if missing:
            fail(f"product:{product['id']} lacks the fields {sorted(missing)}.", got=sorted(fields),
                 hint="Load each product's own dict plus its `embedding`: `{**product, \"embedding\": ...}`.")
    wait_indexed(r, "idx:products")
    report = index_report(r, "idx:products", "product:")
    if report.num_docs != 30 or report.failures:
        fail("Redis does not index every product that was loaded.", expected="30 documents, 0 failures",
             got=f"{report.num_docs} documents, {report.failures} failures", hint=str(report))


# ------------------------------------------------------------------------------------------ find_products
def check_ids_ranked(got: object, ranking: list[tuple[str, float]], k: int, what: str,
                     outside: object, hint: str) -> list[str]:
    """got must be the ids of the k best of `ranking`, nearest first (ties within TOLERANCE in any order)."""
    ids = check_id_list(got, what)
    if len(ids) == 10 and min(k, len(ranking)) > 10:
        fail(f"`{what}` returned 10 results for k={k}.", expected=f"{min(k, len(ranking))} results", got=ids,
             hint=NUM_RESULTS_HINT)
    check_nearest_set(ids, ranking, k, what, outside=outside, hint=hint)  # type: ignore[arg-type]
    exact = dict(ranking)
    values = [exact[i] for i in ids]
    if any(a - b > TOLERANCE for a, b in zip(values, values[1:])):
        fail(f"`{what}` returned the right products in the wrong order.", expected="nearest first",
             got=[(i, round(exact[i], 4)) for i in ids],
             hint="Keep the order of `index.query(query)`: RedisVL sorts by vector_distance, nearest first.")
    return ids


def test_find_products_returns_the_k_nearest(nb, r: redis.Redis, catalog: Catalog) -> None:
    index = catalog_index(r)
    for k, row in ((12, 0), (3, 120)):
        query = catalog.vectors[row]
        what = f"find_products(index, <product {catalog.ids[row]}'s vector>, k={k})"
        check_ids_ranked(call(what, nb.find_products, index, query, k=k), catalog.ranking(query), k, what,
                         outside=lambda i: "it is not a product",
                         hint="No filter at all is plain KNN: `VectorQuery(vector, \"embedding\", num_results=k)`, and "
                              "the ids are the keys without the prefix (`product:42` -> '42').")


def test_find_products_category_with_comma_and_ampersand(nb, r: redis.Redis, catalog: Catalog) -> None:
    index = catalog_index(r)
    for category, k in (("Clothing, Shoes & Jewelry", 10), ("Home & Kitchen", 10)):
        start = next(p for p in catalog.products if p["category"] != category)
        query = catalog.vector(start["id"])
        what = f"find_products(index, query, k={k}, category={category!r})"
        got = call(what, nb.find_products, index, query, k=k, category=category)
        if got == []:
            fail(f"`{what}` found nothing, but {category!r} has products.", expected=f"{k} ids", got=[],
                 hint=ESCAPE_HINT)
        check_ids_ranked(got, catalog.ranking(query, lambda p, c=category: p["category"] == c), k, what,
                         outside=lambda i: f"it is in {catalog.product(i)['category']!r}", hint=ESCAPE_HINT)


def test_find_products_price_range_is_inclusive(nb, r: redis.Redis, catalog: Catalog) -> None:
    index = catalog_index(r)
    prices = sorted({p["price"] for p in catalog.products})
    middle = len(prices) // 2
    query = catalog.vectors[0]
    window = next((prices[i], prices[i + 2]) for i in range(middle, len(prices) - 2)
                  if sum(prices[i] <= p["price"] <= prices[i + 2] for p in catalog.products) <= 7)
    for low, high in (window, (None, prices[len(prices) // 10]), (prices[-len(prices) // 10], None)):
        def allowed(p: dict, low: float | None = low, high: float | None = high) -> bool:
            return (low is None or p["price"] >= low) and (high is None or p["price"] <= high)

        k = 10  # more than fit in the window: every product in it, bounds included, must come back
        what = f"find_products(index, query, k={k}, price_range=({low}, {high}))"
        got = call(what, nb.find_products, index, query, k=k, price_range=(low, high))
        check_ids_ranked(got, catalog.ranking(query, allowed), k, what,
                         outside=lambda i: f"its price {catalog.product(i)['price']} is outside the range",
                         hint=RANGE_HINT)


def test_find_products_combines_text_with_the_other_filters(nb, r: redis.Redis, catalog: Catalog) -> None:
    index = catalog_index(r)
    word = "leather"
    # Redis's own full-text answer (stemming included) for the text part: the numpy ranking does the rest.
    found = r.ft("idx:products").search(Query(f"@description:({word})").no_content().paging(0, 1000))
    ids = {as_text(doc.id).split(":", 1)[1] for doc in found.docs}
    assert ids, f"the grader's catalogue has no description with {word!r}"
    # A price range that leaves out the cheapest and the dearest of them, with bounds between prices (the price
    # check is the one about inclusive bounds), and a category in plain words where one has enough of them (the
    # category check is the one about escaping).
    prices = sorted({catalog.product(i)["price"] for i in ids})
    low, high = (prices[0] + prices[1]) / 2, (prices[-2] + prices[-1]) / 2
    plain = [c for c in sorted({catalog.product(i)["category"] for i in ids}) if c.replace(" ", "").isalnum()]
    category = max(plain, key=lambda c: sum(catalog.product(i)["category"] == c for i in ids), default=None)

    def allowed(p: dict) -> bool:
        return p["id"] in ids and low <= p["price"] <= high and category in (None, p["category"])

    query = catalog.vectors[5]
    combined = {"text": word, "price_range": (low, high)} | ({"category": category} if category else {})
    for kwargs in ({"text": word}, combined):
        ranking = catalog.ranking(query, (lambda p: p["id"] in ids) if len(kwargs) == 1 else allowed)
        args = ", ".join(f"{name}={value!r}" for name, value in kwargs.items())
        what = f"find_products(index, query, k=10, {args})"
        got = call(what, nb.find_products, index, query, k=10, **kwargs)
        check_ids_ranked(got, ranking, 10, what, hint=TEXT_HINT,
                         outside=lambda i: f"its description does not mention {word!r}" if i not in ids else
                         f"it is {catalog.product(i)['category']!r} at {catalog.product(i)['price']}")


# ------------------------------------------------------------------------------------------ products_within
def within_hint(ids: set[str], sims: dict[str, float], min_similarity: float, want: set[str]) -> str:
    if ids == {i for i, s in sims.items() if s >= 1 - min_similarity}:
        return RADIUS_HINT
    if ids < want and len(ids) == 10:
        return "You returned 10 of them, one page. " + PAGE_HINT
    if ids < want:
        return "The ones you returned are the nearest, but not all of them. " + PAGE_HINT
    return RADIUS_HINT


def test_products_within_finds_every_product_above_the_threshold(nb, r: redis.Redis, catalog: Catalog) -> None:
    index = catalog_index(r)
    query, threshold, want = wide_range(catalog)
    what = f"products_within(index, <a category's mean vector>, min_similarity={threshold})"
    pairs = as_pairs(call(what, nb.products_within, index, query, threshold), what)
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        fail(f"`{what}` returned the same id twice.", got=ids)
    if set(ids) != want:
        sims = dict(similarities(catalog, query))
        missing = sorted(want - set(ids), key=lambda i: -sims[i])
        extra = sorted(set(ids) - want, key=lambda i: -sims.get(i, -1.0))
        fail(f"`{what}` did not return exactly the {len(want)} products at least {threshold} similar.",
             expected=f"{len(want)} ids (numpy's exact cosine), e.g. {sorted(want, key=lambda i: -sims[i])[:5]}",
             got=f"{len(ids)} ids; missing {[(i, round(sims[i], 3)) for i in missing[:5]]}, "
                 f"extra {[(i, round(sims[i], 3)) for i in extra[:5] if i in sims]}",
             hint=within_hint(set(ids), sims, threshold, want))


def test_products_within_returns_similarities_best_first(nb, r: redis.Redis, catalog: Catalog) -> None:
    index = catalog_index(r)
    query, inside = narrow_range(catalog)
    what = "products_within(index, <product vector>, min_similarity=0.5)"
    pairs = as_pairs(call(what, nb.products_within, index, query, 0.5), what)
    distances = catalog.distances(query)
    for key, _ in pairs:
        if key not in distances:
            fail(f"`{what}` returned {key!r}, which is not a product id.", got=pairs,
                 hint="`doc[\"id\"]` is the key: strip the index's prefix (`product:42` -> '42').")
    if {i for i, _ in pairs} != {i for i, _ in inside}:
        fail(f"`{what}` did not return exactly the products at least 0.5 similar.",
             expected=sorted(i for i, _ in inside), got=sorted(i for i, _ in pairs), hint=RADIUS_HINT)
    check_scores(pairs, distances, what, similarity=True)
    values = [s for _, s in pairs]
    if any(b - a > TOLERANCE for a, b in zip(values, values[1:])):
        fail(f"`{what}` returned results out of order.", expected="descending similarity (best first)",
             got=[round(v, 4) for v in values], hint="Keep RedisVL's order: it sorts by vector_distance, ascending.")
    unrelated = np.random.default_rng(11).standard_normal(catalog.vectors.shape[1]).astype(np.float32)
    best = similarities(catalog, unrelated)[0][1]
    assert best < 0.5 - MARGIN, f"the grader's random vector is {best:.3f} similar to a product"
    what = "products_within(index, <a random vector>, min_similarity=0.5)"
    got = call(what, nb.products_within, index, unrelated, 0.5)
    if got != []:
        fail(f"`{what}` must return an empty list: no product is 0.5 similar (the best is {best:.3f}).",
             expected="[]", got=show(got, 200),
             hint="Nothing close enough is an answer: return the empty list RedisVL gives, not None.")


# ------------------------------------------------------------------------------------------ llm_cache
def hits_of(cache: object, prompts: list[str]) -> dict[str, bool]:
    found = {}
    for prompt in prompts:
        got = call(f"cache.check(prompt={prompt!r})", cache.check, prompt=prompt)  # type: ignore[attr-defined]
        found[prompt] = bool(got) and any(isinstance(hit, dict) and hit.get("response") == ANSWER for hit in got)
    return found


def test_llm_cache_hits_by_similarity_and_expires(nb, r: redis.Redis, embedder: HashingEmbedder) -> None:
    sims = cache_similarities(embedder, STORED, list(PROBES))
    for min_similarity, kwargs in ((0.75, {"min_similarity": 0.75, "ttl": 120, "name": "faq"}), (0.9, {})):
        for s in sims.values():  # the probes keep clear of both readings of the threshold
            assert all(abs(s - b) > 0.02 for b in (min_similarity, 1 - min_similarity)) or s > 0.999
        args = "".join(f", {name}={value!r}" for name, value in kwargs.items())
        what = f"llm_cache(r, embedder{args})"
        cache = call(what, nb.llm_cache, r, embedder, **kwargs)
        kind = getattr(cache, "_type", type(cache).__name__)
        if kind != "SemanticCache":
            fail(f"`{what}` must return RedisVL's SemanticCache.", expected="SemanticCache", got=kind,
                 hint="`SemanticCache(name=name, distance_threshold=..., ttl=ttl, vectorizer=..., redis_client=r)`.")
        key = as_text(call("cache.store(prompt, response)", cache.store, prompt=STORED, response=ANSWER))
        hits = hits_of(cache, list(PROBES))
        expected = {q: sims[q] >= min_similarity for q in PROBES}
        if hits != expected:
            table = "; ".join(f"{PROBES[q]} (similarity {sims[q]:.2f}): {'hit' if hits[q] else 'miss'}, expected "
                              f"{'hit' if expected[q] else 'miss'}" for q in PROBES)
            as_distance = {q: 1 - sims[q] <= min_similarity for q in PROBES}
            hint = THRESHOLD_HINT if hits == as_distance else (
                ("The default min_similarity must be 0.9. " if not kwargs else "") + THRESHOLD_HINT)
            fail(f"`{what}` hits and misses the wrong prompts: {table}.", hint=hint)
        ttl = r.ttl(key)
        want = kwargs.get("ttl", 3600)
        if not 0 < ttl <= want or ttl < want - 60:
            fail(f"The entry `{what}` stored does not expire after ttl={want} seconds.", expected=f"TTL {want}",
                 got=f"TTL {ttl}" + (" (no expiry)" if ttl == -1 else ""),
                 hint="Pass `ttl=ttl` to SemanticCache: it sets the EXPIRE of every entry it stores.")
