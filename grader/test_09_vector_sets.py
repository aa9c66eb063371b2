"""09_vector_sets: `load_vector_set`, `similar_in_set`, `similar_in_category` on the shipped product vectors.

Each function is graded on its own. The loader checks read the set back with VCARD, VDIM,
VEMB, VINFO and VGETATTR. The similarity checks build the set themselves (reference.py:
VADD ... NOQUANT SETATTR {"category": ..., "price": ...}), so the expected answers, exact
cosine rankings from numpy, are not blurred by quantization; on the 250 products VSIM's
HNSW search finds the exact neighbours (checked on every product, with and without FILTER).
"""

from __future__ import annotations

import json

import numpy as np
import redis
import reference
from feedback import (
    Catalog,
    assert_unchanged,
    call,
    check_id_list,
    check_nearest_set,
    endswith_case,
    expect_error,
    fail,
    show,
    snapshot,
    works_first,
)

from redis_workbook.report import as_text

QUANT_TYPES = {"Q8": "int8", "NOQUANT": "f32", "BIN": "bin"}  # VADD's option -> VINFO's quant-type
LOADED = "shop:vectors"
SET_KEY = "vset:products"


def raw(r: redis.Redis, *args: object) -> object:
    """A command's reply as Redis sent it, without redis-py's reply callbacks (VGETATTR's json.loads)."""
    connection = r.connection_pool.get_connection()
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        r.connection_pool.release(connection)


def vinfo(r: redis.Redis, key: str) -> dict[str, str]:
    reply = raw(r, "VINFO", key)
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])  # type: ignore[index]
    return {as_text(name): as_text(value) for name, value in pairs}


def build_set(r: redis.Redis, key: str, catalog: Catalog) -> None:
    """The grader's own set (reference.py): every product, unquantized, with its category and price."""
    reference.load_product_set(r, key, catalog.products, catalog.vectors)


def keys_hint(r: redis.Redis) -> str:
    keys = sorted(as_text(k) for k in r.scan_iter(count=1000))
    return f"Redis holds the keys {show(keys, 200)}."


# ------------------------------------------------------------------------------------------ load_vector_set
def load(nb, r: redis.Redis, key: str, catalog: Catalog, n: int | None = None, **kwargs: object) -> object:
    ids, vectors = catalog.ids[:n], catalog.vectors[:n]
    extra = "".join(f", {name}=..." if name == "attributes" else f", {name}={value!r}"
                    for name, value in kwargs.items())
    what = f"load_vector_set(r, {key!r}, ids, vectors{extra})  # {len(ids)} products"
    return call(what, nb.load_vector_set, r, key, ids, vectors, **kwargs)


def test_load_vector_set_adds_every_id_with_its_vector(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    catalog = shipped_products
    dim, n = catalog.vectors.shape[1], len(catalog.ids)
    added = load(nb, r, LOADED, catalog)
    kind = as_text(r.type(LOADED))
    if kind == "none":
        fail(f"After load_vector_set(r, {LOADED!r}, ...) there is no key {LOADED!r}.", hint=keys_hint(r) +
             " Add every element to the key you are given: VADD key FP32 <float32 bytes> <id>.")
    if kind != "vectorset":
        fail(f"{LOADED!r} must be a vector set.", expected="vectorset (made by VADD)", got=kind,
             hint="A vector set is created by its first VADD; no FT.CREATE, no hashes.")
    width = int(raw(r, "VDIM", LOADED))  # type: ignore[arg-type]
    if width == 2 * dim:
        fail(f"The vectors in {LOADED!r} have {width} dimensions; the products have {dim}.", expected=dim, got=width,
             hint="VADD ... FP32 reads 4 bytes per value: float64 bytes (8 per value) make twice as many "
                  "dimensions. Pack each vector as float32: `np.asarray(vector, dtype=np.float32).tobytes()`.")
    if width != dim:
        fail(f"The vectors in {LOADED!r} have the wrong dimension.", expected=dim, got=width,
             hint="Add each row of `vectors` as it is: VADD key FP32 <float32 bytes of the row> <id>.")
    count = int(raw(r, "VCARD", LOADED))  # type: ignore[arg-type]
    if count != n:
        fail(f"{LOADED!r} must hold one element per id.", expected=f"VCARD {n}", got=count,
             hint="VADD every id, and execute the pipeline once after the loop (a last partial batch is easy "
                  "to forget).")
    for index in (0, n // 2, n - 1):
        element = catalog.ids[index]
        stored = raw(r, "VEMB", LOADED, element)
        if stored is None:
            fail(f"{LOADED!r} has no element {element!r}.", hint="The elements are the ids, as str: VADD key FP32 "
                 "<bytes> <id>.")
        vector = np.asarray([float(v) for v in stored], dtype=np.float64)  # type: ignore[union-attr]
        want = np.asarray(catalog.vectors[index], dtype=np.float64)
        cosine = float(vector @ want / (np.linalg.norm(vector) * np.linalg.norm(want)))
        if cosine < 0.999:
            fail(f"VEMB {LOADED} {element} is not the vector given for id {element!r}.",
                 expected="the same direction (cosine > 0.999; Q8 rounds each value a little)",
                 got=f"cosine {cosine:.3f}", hint="Pair ids[i] with vectors[i]: zip(ids, vectors).")
    if isinstance(added, bool) or not isinstance(added, (int, np.integer)) or added != n:
        fail(f"load_vector_set must return the number of elements it added: {n} into an empty set.", expected=n,
             got=show(added), hint="VADD replies 1 for a new element and 0 for one it updated: sum the replies.")
    again = load(nb, r, LOADED, catalog, 10)
    if again != 0:
        fail("Loading 10 ids that are already in the set adds nothing: load_vector_set must return 0.", expected=0,
             got=show(again), hint="VADD of an existing element updates its vector and replies 0; return the sum "
                                   "of the replies, not len(ids).")


def test_load_vector_set_uses_the_quantization_asked_for(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    for quant in ("NOQUANT", "BIN", "Q8"):
        key = f"quant:{quant.lower()}"
        load(nb, r, key, shipped_products, 20, quant=quant)
        got = vinfo(r, key).get("quant-type") if r.exists(key) else None
        want = QUANT_TYPES[quant]
        if got != want:
            hint = (f"The set was made with the default Q8: pass the option to VADD (`VADD key FP32 <bytes> <id> "
                    f"{quant}`; redis-py: `quantization=QuantizationOptions(quant)`)." if got == "int8" else
                    f"VADD key FP32 <bytes> <id> {quant}: the quantization is fixed by the set's first VADD.")
            fail(f"load_vector_set(..., quant={quant!r}) must make a {quant} vector set.",
                 expected=f"VINFO quant-type {want}", got=f"quant-type {got}", hint=hint)


def test_load_vector_set_stores_the_attributes_as_json(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    products = shipped_products.products[:30]
    attributes = [{"category": p["category"], "price": p["price"]} for p in products]
    load(nb, r, LOADED, shipped_products, 30, attributes=attributes)
    for product, want in zip(products, attributes):
        stored = raw(r, "VGETATTR", LOADED, product["id"])
        if stored is None:
            fail(f"Element {product['id']!r} has no attributes.", expected=json.dumps(want), got="(nil)",
                 hint="Give each element its attributes in the same VADD: VADD ... SETATTR <json> (or VSETATTR).")
        try:
            got = json.loads(stored)  # type: ignore[arg-type]
        except ValueError:
            fail(f"The attributes of element {product['id']!r} are not JSON.", expected=json.dumps(want),
                 got=as_text(stored), hint="That is Python's str() of a dict (single quotes): FILTER can only read "
                                        "JSON. Serialize with json.dumps(attributes).")
        if got != want:
            fail(f"The attributes of element {product['id']!r} are not the ones given for it.", expected=want,
                 got=got, hint="attributes[i] belongs to ids[i]: store it as JSON with SETATTR.")


def test_load_vector_set_refuses_mismatched_lengths_and_writes_nothing(nb, r: redis.Redis,
                                                                        shipped_products: Catalog) -> None:
    ids, vectors = shipped_products.ids, shipped_products.vectors
    before = snapshot(r)
    for what, args in ((f"load_vector_set(r, {LOADED!r}, ids[:10], vectors[:9])", (ids[:10], vectors[:9])),
                       (f"load_vector_set(r, {LOADED!r}, ids[:9], vectors[:10])", (ids[:9], vectors[:10]))):
        expect_error(what, nb.load_vector_set, r, LOADED, *args, kinds=(ValueError,),
                     state=lambda: f"VCARD {raw(r, 'VCARD', LOADED)}",
                     hint="The ids and the vectors do not pair up. A plain zip() stops at the shorter input and loads "
                          "the rest silently: `zip(ids, vectors, strict=True)` raises ValueError when the lengths "
                          "differ, before anything is sent.")
        assert_unchanged(before, snapshot(r), what)
    what = f"load_vector_set(r, {LOADED!r}, ids[:3], vectors[:3])"
    added = call(what, nb.load_vector_set, r, LOADED, ids[:3], vectors[:3])
    works_first(what, added, added == 3 and raw(r, "VCARD", LOADED) == 3, expected="3, and VCARD 3")


# ------------------------------------------------------------------------------------------ similar_in_set
def others(catalog: Catalog, me: str, allowed: object = None) -> list[tuple[str, float]]:
    """(id, distance) of every other product (of the allowed ones), nearest first."""
    return catalog.ranking(catalog.vector(me), lambda p: p["id"] != me and (allowed is None or allowed(p)))


def no_suffix_neighbours(catalog: Catalog, k: int, start: int) -> str:
    """A product from `start` on whose k nearest have no id ending with its own (so only one mistake shows)."""
    for product in catalog.products[start:] + catalog.products[:start]:
        me = product["id"]
        if not any(i.endswith(me) for i, _ in others(catalog, me)[:k + 1]):
            return me
    raise AssertionError("every product has a neighbour whose id ends with its own")


SELF_HINT = ("VSIM key ELE <id> finds the element itself first (score 1): ask for COUNT k + 1, drop the product "
             "by comparing ids exactly (`element != product_id`), keep the first k.")


def test_similar_in_set_never_returns_the_product_itself(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    build_set(r, SET_KEY, shipped_products)
    me, victims = endswith_case(shipped_products, 5)
    what = f"similar_in_set(r, {SET_KEY!r}, {me!r}, k=10)"
    got = check_id_list(call(what, nb.similar_in_set, r, SET_KEY, me, k=10), what)
    if me in got:
        fail(f"`{what}` returned the product itself.", expected="10 other products", got=got, hint=SELF_HINT)
    lost = [i for i in victims if i not in got]
    if lost:
        fail(f"`{what}` dropped {lost}, which are among the nearest, because their ids end with {me!r}.",
             expected=f"{victims} among the results", got=got,
             hint=f"Comparing with `endswith` (or `in`) also excludes '{victims[0]}' when excluding '{me}'. "
                  "Compare ids exactly: `element != product_id`.")


def check_similar(got: object, ranking: list[tuple[str, float]], k: int, what: str, hint: str) -> None:
    ids = check_id_list(got, what)
    want = min(k, len(ranking))
    if len(ids) in (9, 10) and want > 10:
        fail(f"`{what}` returned {len(ids)} results for k={k}.", expected=f"{want} results", got=ids,
             hint="VSIM returns 10 elements unless told otherwise (the product itself among them): add COUNT, "
                  "COUNT k + 1, then drop the product.")
    if len(ids) == want - 1 and ids:
        fail(f"`{what}` returned {len(ids)} results for k={k}: one short.", expected=f"{want} results", got=ids,
             hint="The product itself is among VSIM's COUNT results and you drop it: ask for COUNT k + 1.")
    if not ids and want:
        fail(f"`{what}` returned nothing.", expected=f"{want} ids", got=ids,
             hint="VSIM on a key that does not exist returns an empty list: query the key you are given.")
    check_nearest_set(ids, ranking, k, what, outside=lambda i: "it is the product itself", hint=hint)


def test_similar_in_set_returns_the_k_nearest(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    key = "catalogue:similar"
    build_set(r, key, shipped_products)
    for k, start in ((12, 40), (3, 170)):
        me = no_suffix_neighbours(shipped_products, k, start)
        what = f"similar_in_set(r, {key!r}, {me!r}, k={k})"
        check_similar(call(what, nb.similar_in_set, r, key, me, k=k), others(shipped_products, me), k, what,
                      hint="VSIM key ELE <product_id> COUNT k + 1 on the key you are given, minus the product.")


# ------------------------------------------------------------------------------------------ similar_in_category
def first_of(catalog: Catalog, category: str) -> str:
    return next(p["id"] for p in catalog.products if p["category"] == category)


def outside_category(catalog: Catalog, me: str, category: str):
    def reason(i: str) -> str:
        if i == me:
            return "it is the product itself"
        if i not in catalog.rows:
            return "it is not a product"
        return f"its category is {catalog.product(i)['category']!r}, not {category!r}"
    return reason


FILTER_HINT = ("Let VSIM filter: VSIM key ELE <id> COUNT k + 1 FILTER '.category == \"<category>\"' "
               "(the value quoted: json.dumps(category)), then drop the product and keep k.")


def test_similar_in_category_returns_the_nearest_of_that_category(nb, r: redis.Redis,
                                                                  shipped_products: Catalog) -> None:
    build_set(r, SET_KEY, shipped_products)
    for category, k in (("Home & Kitchen", 5), ("Clothing, Shoes & Jewelry", 7)):
        me = first_of(shipped_products, category)
        what = f"similar_in_category(r, {SET_KEY!r}, {me!r}, {category!r}, k={k})"
        got = check_id_list(call(what, nb.similar_in_category, r, SET_KEY, me, category, k=k), what)
        if me in got:
            fail(f"`{what}` returned the product itself.", expected=f"{k} other products of {category!r}", got=got,
                 hint="The product is in that category, so FILTER keeps it and it comes first: " + SELF_HINT)
        ranking = others(shipped_products, me, lambda p, c=category: p["category"] == c)
        check_nearest_set(got, ranking, k, what, outside=outside_category(shipped_products, me, category),
                          hint=FILTER_HINT)


def test_similar_in_category_from_a_product_of_another_category(nb, r: redis.Redis,
                                                                shipped_products: Catalog) -> None:
    build_set(r, SET_KEY, shipped_products)
    for source, category, k in (("Audio", "Books", 4), ("Pet Supplies", "Garden & Tools", 6)):
        me = first_of(shipped_products, source)
        what = f"similar_in_category(r, {SET_KEY!r}, {me!r}, {category!r}, k={k})  # product {me} is {source}"
        got = check_id_list(call(what, nb.similar_in_category, r, SET_KEY, me, category, k=k), what)
        ranking = others(shipped_products, me, lambda p, c=category: p["category"] == c)
        if len(got) == k + 1:
            fail(f"`{what}` returned {k + 1} results for k={k}.", expected=f"{k} results", got=got,
                 hint="A product of another category is not among the FILTER's results, so nothing was dropped: "
                      "keep the first k.")
        if len(got) < k:
            fail(f"`{what}` returned {len(got)} results for k={k}.", expected=f"the {k} nearest {category!r}",
                 got=got, hint="The nearest products to a product of another category are of its own category: "
                               "filtering VSIM's results afterwards leaves few or none. " + FILTER_HINT)
        check_nearest_set(got, ranking, k, what, outside=outside_category(shipped_products, me, category),
                          hint=FILTER_HINT)
