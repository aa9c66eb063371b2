"""02_indexing: `vector_to_bytes`, `create_product_index`, `load_products`."""

from __future__ import annotations

import numpy as np
import redis
from feedback import Catalog, assert_unchanged, call, expect_error, fail, report_hint, show, snapshot, works_first
from redis.commands.search.query import Query
from reference import load_products, product_index

from redis_workbook.report import as_dict, as_text, field_attributes, ft_info, index_report
from redis_workbook.schema import create_index

DIM = 384


def index_shape(r: redis.Redis, name: str) -> dict[str, object]:
    """What matters in FT.INFO, comparable between two indexes: fields, key type and prefixes."""
    info = ft_info(r, name)
    fields = {}
    for attrs in field_attributes(info):
        kind = as_text(attrs["type"])
        described = [kind] + ["SORTABLE" for flag in attrs["flags"] if flag == "SORTABLE"]  # type: ignore[union-attr]
        if kind == "VECTOR":
            described += [f"{key.upper()} {as_text(attrs[key])}" for key in
                          ("algorithm", "data_type", "dim", "distance_metric", "m", "ef_construction") if key in attrs]
        fields[as_text(attrs["attribute"])] = " ".join(described)
    definition = as_dict(info["index_definition"])
    return {"fields": fields, "key_type": as_text(definition["key_type"]),
            "prefixes": sorted(as_text(p) for p in definition["prefixes"])}


def compare_schema(r: redis.Redis, learner: str, reference: str, what: str) -> None:
    got, want = index_shape(r, learner), index_shape(r, reference)
    problems = []
    if got["key_type"] != want["key_type"]:
        problems.append(f"it indexes {got['key_type']} keys, expected {want['key_type']} (ON HASH)")
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
        fail(f"`{what}` created an index that differs from the contract: " + "; ".join(problems) + ".",
             hint="name TEXT, description TEXT, category TAG, price NUMERIC SORTABLE, embedding VECTOR with TYPE "
                  "FLOAT32, DIM dim, DISTANCE_METRIC COSINE (HNSW: M 16, EF_CONSTRUCTION 200), ON HASH PREFIX 1 "
                  "product:.")


def index_names(r: redis.Redis) -> set[str]:
    return {as_text(n) for n in r.execute_command("FT._LIST")}


# ------------------------------------------------------------------------------------------ vector_to_bytes
def test_vector_to_bytes_is_float32_little_endian(nb) -> None:
    rng = np.random.default_rng(2)
    vector = rng.normal(size=DIM)  # float64, as numpy makes them
    for given, label in ((vector, "a float64 ndarray"), (vector.tolist(), "a list of floats")):
        got = call(f"vector_to_bytes({label}, {DIM})", nb.vector_to_bytes, given, DIM)
        want = np.asarray(vector, dtype="<f4").tobytes()
        if not isinstance(got, bytes):
            fail("`vector_to_bytes` must return bytes.", expected=f"bytes of length {len(want)}",
                 got=f"{type(got).__name__}: {show(got, 120)}",
                 hint="`np.asarray(vector, dtype=np.float32).tobytes()`.")
        if len(got) == 8 * DIM:
            fail("`vector_to_bytes` packed 8 bytes per value: that is float64.", expected=f"{4 * DIM} bytes",
                 got=f"{len(got)} bytes", hint="Convert to float32 first: `np.asarray(vector, dtype=np.float32)`.")
        if got != want:
            hint = ("Those are big-endian float32 bytes: use numpy's native little-endian float32."
                    if got == np.asarray(vector, dtype=">f4").tobytes() else
                    "Pack exactly `np.asarray(vector, dtype=np.float32).tobytes()`: 4 bytes per value, in order.")
            fail(f"`vector_to_bytes({label}, {DIM})` returned other bytes than float32 packing.",
                 expected=f"{len(want)} bytes starting {want[:8]!r}", got=f"{len(got)} bytes starting {got[:8]!r}",
                 hint=hint)


def test_vector_to_bytes_rejects_bad_vectors(nb) -> None:
    good = np.ones(DIM)
    expect_error(f"vector_to_bytes(<{DIM - 1} values>, {DIM})", nb.vector_to_bytes, good[:-1], DIM,
                 kinds=(ValueError,))
    expect_error(f"vector_to_bytes(<{DIM + 1} values>, {DIM})", nb.vector_to_bytes, np.ones(DIM + 1), DIM,
                 kinds=(ValueError,))
    for bad, label in ((np.nan, "NaN"), (np.inf, "inf")):
        vector = good.copy()
        vector[7] = bad
        expect_error(f"vector_to_bytes(<a vector containing {label}>, {DIM})", nb.vector_to_bytes, vector, DIM,
                     kinds=(ValueError,))
    what = f"vector_to_bytes(<{DIM} ones>, {DIM})"
    packed = call(what, nb.vector_to_bytes, good, DIM)
    works_first(what, packed, packed == good.astype("<f4").tobytes(), expected=f"{DIM * 4} bytes of float32 ones")


# ------------------------------------------------------------------------------------------ create_product_index
def test_create_product_index_matches_the_schema(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    created = call(f"create_product_index(r, {DIM})", nb.create_product_index, r, DIM)
    if created is not True:
        fail(f"`create_product_index(r, {DIM})` on an empty Redis must create the index and return True.",
             expected=True, got=created)
    if "idx:products" not in index_names(r):
        fail("No index named `idx:products` exists after `create_product_index(r, 384)`.", expected="idx:products",
             got=sorted(index_names(r)), hint="FT.CREATE idx:products ON HASH PREFIX 1 product: SCHEMA ...")
    load_products(r, shipped_products.products[:20], shipped_products.vectors[:20])
    report = index_report(r, "idx:products", "product:")
    if report.num_docs != 20 or report.failures:
        fail("After loading 20 products into your index, Redis does not index them all.",
             expected="20 documents, 0 indexing failures", got=f"{report.num_docs} documents, "
             f"{report.failures} failures", hint=report_hint(r, "idx:products", "product:") or str(report))
    create_index(r, product_index(DIM, name="idx:grader-reference", prefix="product:"))
    compare_schema(r, "idx:products", "idx:grader-reference", f"create_product_index(r, {DIM})")


def test_create_product_index_flat_with_custom_name_and_prefix(nb, r: redis.Redis) -> None:
    what = "create_product_index(r, 8, algorithm='FLAT', index_name='idx:flat-test', prefix='flat-test:')"
    created = call(what, nb.create_product_index, r, 8, algorithm="FLAT", index_name="idx:flat-test",
                   prefix="flat-test:")
    if created is not True or "idx:flat-test" not in index_names(r):
        fail(f"`{what}` must create `idx:flat-test` and return True.", expected="True and the index",
             got=f"{show(created)}, indexes {sorted(index_names(r))}",
             hint="Use the index_name, prefix and algorithm arguments instead of fixed values.")
    create_index(r, product_index(8, "FLAT", name="idx:grader-reference", prefix="flat-test:"))
    compare_schema(r, "idx:flat-test", "idx:grader-reference", what)


def test_create_product_index_leaves_an_existing_index_alone(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    create_index(r, product_index(DIM, "FLAT"))
    load_products(r, shipped_products.products[:5], shipped_products.vectors[:5])
    again = call(f"create_product_index(r, {DIM}) when idx:products exists", nb.create_product_index, r, DIM)
    if again is not False:
        fail("When an index of that name already exists, `create_product_index` must return False.",
             expected=False, got=again, hint="Check first (FT.INFO raises for an unknown index), then FT.CREATE.")
    shape = index_shape(r, "idx:products")["fields"]
    docs = index_report(r, "idx:products").num_docs
    if "FLAT" not in shape.get("embedding", "") or docs != 5:  # type: ignore[attr-defined]
        fail("`create_product_index` changed an index that already existed.",
             expected="the existing FLAT index with its 5 documents, untouched",
             got=f"embedding {shape.get('embedding')}, {docs} documents",  # type: ignore[attr-defined]
             hint="Do not drop and recreate: return False and leave it alone.")
    what = f"create_product_index(r, {DIM}, index_name='idx:fresh', prefix='fresh:')"
    created = call(what, nb.create_product_index, r, DIM, index_name="idx:fresh", prefix="fresh:")
    works_first(what, created, created is True and "idx:fresh" in index_names(r), expected="True, and the index")


def test_create_product_index_rejects_bad_arguments(nb, r: redis.Redis) -> None:
    expect_error("create_product_index(r, 384, algorithm='IVF')", nb.create_product_index, r, DIM,
                 algorithm="IVF", kinds=(ValueError,))
    expect_error("create_product_index(r, 0)", nb.create_product_index, r, 0, kinds=(ValueError,))
    if index_names(r):
        fail("`create_product_index` created an index although its arguments were invalid.", expected="no index",
             got=sorted(index_names(r)), hint="Validate algorithm and dim before FT.CREATE.")
    what = f"create_product_index(r, {DIM}, algorithm='FLAT')"
    created = call(what, nb.create_product_index, r, DIM, algorithm="FLAT")
    works_first(what, created, created is True and "idx:products" in index_names(r), expected="True, and the index")


def test_category_tag_keeps_commas(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    """A category such as 'Clothing, Shoes & Jewelry' must stay one tag, or no filter can match it."""
    call(f"create_product_index(r, {DIM})", nb.create_product_index, r, DIM)
    product = next(p for p in shipped_products.products if "," in p["category"])
    load_products(r, [product], shipped_products.vector(product["id"])[None, :])
    escaped = "".join("\\" + ch if not ch.isalnum() else ch for ch in product["category"])
    found = r.ft("idx:products").search(Query(f"@category:{{{escaped}}}").dialect(2)).total
    if found != 1:
        fail(f"An exact category filter for {product['category']!r} does not find the product in your index.",
             expected=1, got=found,
             hint="TAG fields split values on ',' unless told otherwise, so that category was indexed as two "
                  "tags. Give the category field another separator: TAG SEPARATOR \"|\" "
                  "(redis-py: `TagField(\"category\", separator=\"|\")`).")


# ------------------------------------------------------------------------------------------ load_products
def test_load_products_writes_every_field_and_exact_vector_bytes(nb, r: redis.Redis,
                                                                 shipped_products: Catalog) -> None:
    create_index(r, product_index(DIM, "FLAT"))
    products, vectors = shipped_products.products, shipped_products.vectors
    what = "load_products(r, products, embeddings, batch_size=64)"
    count = call(what, nb.load_products, r, products, vectors, batch_size=64)
    if count != len(products):
        fail(f"`{what}` must return the number of products written.", expected=len(products), got=count)
    for product, vector in zip(products, vectors):
        stored = r.hgetall(f"product:{product['id']}")
        if not stored:
            fail(f"The key product:{product['id']} does not exist.", expected="one HASH per product",
                 got=f"keys like {[as_text(k) for k in r.scan(0, match='*', count=5)[1]][:5]}",
                 hint="Key = prefix + id: `product:42` for the product with id '42'.")
        fields = {as_text(k): v for k, v in stored.items()}
        missing = sorted({"id", "name", "description", "category", "price", "embedding"} - set(fields))
        if missing:
            fail(f"product:{product['id']} lacks fields {missing}.", got=sorted(fields),
                 hint="Write id, name, description, category, price and embedding.")
        for name in ("id", "name", "description", "category"):
            if as_text(fields[name]) != str(product[name]):
                fail(f"product:{product['id']} field `{name}` is wrong.", expected=product[name],
                     got=as_text(fields[name]))
        if float(as_text(fields["price"])) != product["price"]:
            fail(f"product:{product['id']} has a wrong price.", expected=product["price"], got=as_text(fields["price"]))
        want = np.asarray(vector, dtype="<f4").tobytes()
        if fields["embedding"] != want:
            fail(f"product:{product['id']}'s embedding is not the product's vector as float32 bytes.",
                 expected=f"{len(want)} bytes starting {want[:8]!r}",
                 got=f"{len(fields['embedding'])} bytes starting {fields['embedding'][:8]!r}",
                 hint="Store `np.asarray(vector, dtype=np.float32).tobytes()`: raw bytes, not str() or a list. "
                      + report_hint(r, "idx:products", "product:"))
    report = index_report(r, "idx:products", "product:")
    if report.num_docs != len(products) or report.failures:
        fail("Redis did not index every product you wrote.", expected=f"{len(products)} documents, 0 failures",
             got=f"{report.num_docs} documents, {report.failures} failures", hint=str(report))


def test_load_products_checks_everything_before_writing(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    create_index(r, product_index(DIM, "FLAT"))
    products, vectors = shipped_products.products[:4], shipped_products.vectors[:4]
    before = snapshot(r)
    what = "load_products(r, <4 products>, <3 embeddings>)"
    expect_error(what, nb.load_products, r, products, vectors[:3], kinds=(ValueError,))
    assert_unchanged(before, snapshot(r), what)
    ragged = [row for row in vectors[:3]] + [vectors[3][:-1]]  # the last row is one value short
    what = "load_products(r, products, <last row 383 wide>, batch_size=2)"
    expect_error(what, nb.load_products, r, products, ragged, batch_size=2, kinds=(ValueError,))
    assert_unchanged(before, snapshot(r), what)
    what = "load_products(r, <4 products>, <4 embeddings>)"
    written = call(what, nb.load_products, r, products, vectors)
    works_first(what, written, written == 4 and all(r.exists(f"product:{p['id']}") for p in products),
                expected="4, and the 4 hashes")
