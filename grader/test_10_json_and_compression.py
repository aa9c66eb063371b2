"""10_json_and_compression: `load_products_json`, `create_json_index`, `to_vector_bytes`.

Each function is graded on its own. The loader checks read the documents back with JSON.GET
(through redis-py's `r.json()`), the index checks read FT.INFO and compare it with the grader's
reference index (reference.py) field by field, keyed by JSON path. The byte checks compute the
expected bytes with numpy here: float32 and IEEE half with `astype`, bfloat16 from float32's bits.
"""

from __future__ import annotations

import numpy as np
import redis
import reference
from feedback import Catalog, assert_unchanged, call, expect_error, fail, show, snapshot, works_first

from redis_workbook.report import as_text, field_attributes, ft_info, index_report

DIM = 384
DEFAULT_INDEX, DEFAULT_PREFIX = reference.JSON_INDEX, reference.JSON_PREFIX


# ------------------------------------------------------------------------------------------ load_products_json
def documents(r: redis.Redis, keys: list[str]) -> list[object]:
    """Each key's whole JSON document (JSON.GET key $ -> [document]), or its TYPE when it is not JSON."""
    found = []
    for key in keys:
        kind = as_text(r.type(key))
        found.append(r.json().get(key, "$")[0] if kind == "ReJSON-RL" else f"a {kind} key" if kind != "none" else None)
    return found


def test_load_products_json_writes_documents_with_float_arrays(nb, r: redis.Redis,
                                                               shipped_products: Catalog) -> None:
    products, vectors = shipped_products.products, shipped_products.vectors
    for prefix, n in ((DEFAULT_PREFIX, len(products)), ("shop:", 12)):
        extra = "" if prefix == DEFAULT_PREFIX else f", prefix={prefix!r}"
        what = f"load_products_json(r, products[:{n}], embeddings[:{n}]{extra})"
        kwargs = {} if prefix == DEFAULT_PREFIX else {"prefix": prefix}
        count = call(what, nb.load_products_json, r, products[:n], vectors[:n], **kwargs)
        keys = [f"{prefix}{p['id']}" for p in products[:n]]
        for index in (0, n // 2, n - 1):
            product, key = products[index], keys[index]
            got = documents(r, [key])[0]
            if got is None:
                stored = sorted(as_text(k) for k in r.scan_iter(count=1000))
                fail(f"After `{what}` there is no key {key!r}.", expected=f"a JSON document at {key!r}",
                     got=f"the keys {show(stored, 200)}",
                     hint="The key of a product is the prefix you are given followed by its id: f\"{prefix}{id}\".")
            if isinstance(got, str):
                fail(f"{key!r} is {got}, not a JSON document.", expected="TYPE ReJSON-RL (made by JSON.SET)",
                     got=got, hint="A string holding json.dumps(...) is text to Redis: no index ON JSON can read "
                                   "it. Write documents with JSON.SET (redis-py: `pipe.json().set(key, \"$\", doc)`).")
            if not isinstance(got, dict):
                fail(f"{key!r} holds {type(got).__name__}, not a JSON object.", expected="an object with the "
                     "product's fields", got=show(got, 200), hint="JSON.SET key $ <the product as a dict>.")
            want = {name: product[name] for name in reference.JSON_FIELDS}
            wrong = {name: got.get(name) for name, value in want.items() if got.get(name) != value}
            if wrong:
                fail(f"The document {key!r} does not hold the product's fields as they were given.",
                     expected={name: want[name] for name in wrong}, got=wrong,
                     hint="Keep id, name, description, category and price as they are (price a number: a NUMERIC "
                          "field cannot index a string), and add the embedding.")
            embedding = got.get("embedding")
            if isinstance(embedding, str):
                fail(f"The embedding of {key!r} is a string.", expected=f"a JSON array of {DIM} numbers",
                     got=show(embedding, 120),
                     hint="A vector field ON JSON reads an array of numbers: store `row.tolist()` itself, not "
                          "json.dumps of it (JSON.SET encodes the whole document once).")
            if not isinstance(embedding, list) or not all(isinstance(v, (int, float)) for v in embedding):
                fail(f"The embedding of {key!r} is not an array of numbers.", expected=f"a JSON array of {DIM} "
                     "numbers", got=show(embedding, 120), hint="Store the row as a list of floats: `row.tolist()`.")
            if len(embedding) != DIM or not np.allclose(embedding, vectors[index], rtol=0, atol=1e-6):
                fail(f"The embedding of {key!r} is not the vector given for product {product['id']!r}.",
                     expected=f"{DIM} numbers starting {np.round(vectors[index][:3], 6).tolist()}",
                     got=f"{len(embedding)} numbers starting {np.round(embedding[:3], 6).tolist()}",
                     hint="Pair products[i] with embeddings[i] (zip) and store that row's values.")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count != n:
            fail(f"`{what}` must return the number of documents written.", expected=n, got=show(count),
                 hint="Return how many JSON.SET commands you sent (or len() of the pipeline's replies).")


def documents_written(r: redis.Redis) -> str:
    return f"{len(list(r.scan_iter(match=f'{DEFAULT_PREFIX}*', count=1000)))} documents written"


def test_load_products_json_refuses_mismatched_lengths_and_writes_nothing(nb, r: redis.Redis,
                                                                          shipped_products: Catalog) -> None:
    products, vectors = shipped_products.products, shipped_products.vectors
    before = snapshot(r)
    for what, args in (("load_products_json(r, products[:10], embeddings[:9])", (products[:10], vectors[:9])),
                       ("load_products_json(r, products[:9], embeddings[:10])", (products[:9], vectors[:10]))):
        expect_error(what, nb.load_products_json, r, *args, kinds=(ValueError,), state=lambda: documents_written(r),
                     hint="The products and the embeddings do not pair up. A plain zip() stops at the shorter input "
                          "and loads the rest silently: `zip(products, embeddings, strict=True)` raises ValueError "
                          "when the lengths differ; a pipeline sends nothing before execute().")
        assert_unchanged(before, snapshot(r), what)
    what = "load_products_json(r, products[:3], embeddings[:3])"
    written = call(what, nb.load_products_json, r, products[:3], vectors[:3])
    works_first(what, written, written == 3 and r.exists(*(f"{DEFAULT_PREFIX}{p['id']}" for p in products[:3])) == 3,
                expected="3, and the 3 documents")


# ------------------------------------------------------------------------------------------ create_json_index
def attributes(r: redis.Redis, name: str) -> list[dict[str, str]]:
    """FT.INFO's attributes as str dicts: identifier (the path), attribute (the name), type and options."""
    found = []
    for attrs in field_attributes(ft_info(r, name)):
        flags = attrs.pop("flags")
        described = {key: as_text(value) for key, value in attrs.items() if key != "weight"}
        described["sortable"] = str("SORTABLE" in flags)
        found.append(described)
    return found


def definition(r: redis.Redis, name: str) -> tuple[str, list[str]]:
    raw = ft_info(r, name)["index_definition"]
    if not isinstance(raw, dict):
        items = list(raw)  # type: ignore[call-overload]
        raw = {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)}
    info = {as_text(k): v for k, v in raw.items()}
    return as_text(info["key_type"]), sorted(as_text(p) for p in info["prefixes"])


def index_names(r: redis.Redis) -> set[str]:
    return {as_text(n) for n in r.execute_command("FT._LIST")}


SCHEMA_HINT = ("FT.CREATE <name> ON JSON PREFIX 1 <prefix> SCHEMA $.name AS name TEXT $.description AS description "
               "TEXT $.category AS category TAG SEPARATOR | $.price AS price NUMERIC SORTABLE $.embedding AS "
               "embedding VECTOR <algorithm> ... TYPE FLOAT32 DIM <dim> DISTANCE_METRIC COSINE (HNSW: M 16 "
               "EF_CONSTRUCTION 200). redis-py: `IndexDefinition(prefix=[prefix], index_type=IndexType.JSON)`.")
OPTIONS = ("type", "separator", "sortable", "algorithm", "data_type", "dim", "distance_metric", "m",
           "ef_construction")


def compare_schema(r: redis.Redis, learner: str, grader: str, what: str) -> None:
    """The learner's index against the grader's: key type, prefixes, and each JSON path's type and options."""
    problems = []
    (got_type, got_prefixes), (want_type, want_prefixes) = definition(r, learner), definition(r, grader)
    if got_type != want_type:
        problems.append(f"it indexes {got_type} keys, expected JSON (ON JSON: IndexType.JSON in redis-py)")
    if got_prefixes != want_prefixes:
        problems.append(f"its prefixes are {got_prefixes}, expected {want_prefixes}")
    got = {a["identifier"]: a for a in attributes(r, learner)}
    for want in attributes(r, grader):
        path = want["identifier"]
        have = got.pop(path, None)
        if have is None:
            problems.append(f"no field reads the path {path} (the path, with `$.`, is the field; AS names it)")
            continue
        for option in OPTIONS:
            if have.get(option) != want.get(option):
                problems.append(f"{path} has {option.upper()} {have.get(option)}, expected {want.get(option)}")
    if got:
        problems.append(f"unexpected fields {sorted(got)}")
    if problems:
        hint = SCHEMA_HINT
        if any("SEPARATOR" in p for p in problems):
            hint = ("TAG fields split values on ',' by default, which cuts 'Clothing, Shoes & Jewelry' in two: "
                    "the category needs SEPARATOR | (`TagField(\"$.category\", as_name=\"category\", "
                    "separator=\"|\")`). " + hint)
        fail(f"`{what}` created an index that differs from the contract: " + "; ".join(problems) + ".", hint=hint)


def test_create_json_index_matches_the_schema(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    for dim, kwargs in ((DIM, {}), (8, {"algorithm": "FLAT", "index_name": "idx:json-test", "prefix": "json-test:"})):
        name, prefix = kwargs.get("index_name", DEFAULT_INDEX), kwargs.get("prefix", DEFAULT_PREFIX)
        what = f"create_json_index(r, {dim}" + "".join(f", {k}={v!r}" for k, v in kwargs.items()) + ")"
        created = call(what, nb.create_json_index, r, dim, **kwargs)
        if name not in index_names(r):
            fail(f"No index named {name!r} exists after `{what}`.", expected=name, got=sorted(index_names(r)),
                 hint="Use the index_name, prefix and algorithm you are given: " + SCHEMA_HINT)
        if created is not True:
            fail(f"`{what}` on a Redis without that index must create it and return True.", expected=True,
                 got=show(created))
        reference.create_json_index(r, dim, kwargs.get("algorithm", "HNSW"), "idx:grader-reference", prefix)
        compare_schema(r, name, "idx:grader-reference", what)
        r.ft("idx:grader-reference").dropindex(delete_documents=False)
    reference.load_products_json(r, shipped_products.products[:20], shipped_products.vectors[:20])
    report = index_report(r, DEFAULT_INDEX, DEFAULT_PREFIX)
    if report.num_docs != 20 or report.failures:
        fail("After 20 products are written as JSON documents, your index does not hold them all.",
             expected="20 documents, 0 indexing failures", got=f"{report.num_docs} documents, {report.failures} "
             "failures", hint=" ".join(report.problems) or SCHEMA_HINT)


def test_create_json_index_names_the_fields_for_queries(nb, r: redis.Redis) -> None:
    call(f"create_json_index(r, {DIM})", nb.create_json_index, r, DIM)
    if DEFAULT_INDEX not in index_names(r):
        fail(f"No index named {DEFAULT_INDEX!r} after `create_json_index(r, {DIM})`.", expected=DEFAULT_INDEX,
             got=sorted(index_names(r)))
    names = {a["identifier"]: a["attribute"] for a in attributes(r, DEFAULT_INDEX)}
    want = {f"$.{field}": field for field in ("name", "description", "category", "price", "embedding")}
    wrong = {path: name for path, name in names.items() if want.get(path, name) != name}
    if wrong:
        fail("The fields of your JSON index are not named for the queries of notebooks 03 and 04.",
             expected={path: want[path] for path in wrong}, got=wrong,
             hint="Without AS, a field ON JSON is named by its path, and a query would have to say "
                  "`@$.embedding`. Name each one: `$.embedding AS embedding` (redis-py: `as_name=\"embedding\"`), "
                  "so `*=>[KNN 5 @embedding $vec]` and `@category:{...}` run unchanged on both indexes.")


def test_create_json_index_leaves_an_existing_index_alone(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    reference.create_json_index(r, DIM, "FLAT")
    reference.load_products_json(r, shipped_products.products[:5], shipped_products.vectors[:5])
    what = f"create_json_index(r, {DIM}) when {DEFAULT_INDEX} exists"
    again = call(what, nb.create_json_index, r, DIM)
    if again is not False:
        fail("When an index of that name already exists, `create_json_index` must return False.", expected=False,
             got=show(again), hint="FT.CREATE fails with 'Index already exists': catch that redis.ResponseError "
                                   "and return False.")
    algorithm = next(a.get("algorithm") for a in attributes(r, DEFAULT_INDEX) if a["type"] == "VECTOR")
    docs = index_report(r, DEFAULT_INDEX).num_docs
    if algorithm != "FLAT" or docs != 5:
        fail("`create_json_index` changed an index that already existed.",
             expected="the existing FLAT index with its 5 documents, untouched",
             got=f"a {algorithm} index with {docs} documents",
             hint="Do not drop and recreate it: return False and leave it alone.")
    what = f"create_json_index(r, {DIM}, index_name='idx:fresh', prefix='fresh:')"
    created = call(what, nb.create_json_index, r, DIM, index_name="idx:fresh", prefix="fresh:")
    works_first(what, created, created is True and "idx:fresh" in index_names(r),
                expected="True, and the index")


# ------------------------------------------------------------------------------------------ to_vector_bytes
def bfloat16_truncated(values: np.ndarray) -> bytes:
    return (np.asarray(values, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()


def bfloat16_rounded(values: np.ndarray) -> bytes:
    bits = np.asarray(values, dtype="<f4").view("<u4").astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()


def packed(nb, vector: object, dtype: str, label: str) -> bytes:
    what = f"to_vector_bytes({label}, {dtype!r})"
    got = call(what, nb.to_vector_bytes, vector, dtype)
    if not isinstance(got, bytes):
        fail(f"`{what}` must return bytes.", expected="bytes", got=f"{type(got).__name__}: {show(got, 120)}",
             hint="End with numpy's `.tobytes()`.")
    return got


def explain_bfloat16(got: bytes, values: np.ndarray) -> str:
    """What those bytes are, when they are not bfloat16's."""
    n = len(values)
    if len(got) == 4 * n:
        return "That is 4 bytes per value: float32 itself. BFLOAT16 keeps 2 of float32's 4 bytes."
    if got == np.asarray(values, dtype="<f2").tobytes():
        return ("Those are IEEE half floats (numpy's float16: 5 exponent bits, 10 mantissa bits). BFLOAT16 is "
                "another format: float32's sign, its 8 exponent bits and the first 7 mantissa bits, i.e. the top "
                "16 bits of the float32: `values.view(np.uint32) >> 16`.")
    bits = np.asarray(values, dtype="<f4").view("<u4")
    if got == (bits & 0xFFFF).astype("<u2").tobytes():
        return ("Those are the low 16 bits of each float32 (its last mantissa bits): BFLOAT16 is the top 16 bits, "
                "`bits >> 16`.")
    if got in (bfloat16_truncated(values)[::-1], (bits >> 16).astype(">u2").tobytes(),
               ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(">u2").tobytes()):
        return "Those are big-endian: Redis reads every vector type little-endian. Use `.astype('<u2')`."
    return ("BFLOAT16 is the top 16 bits of each float32 (`values.view(np.uint32)`), rounded to nearest, as "
            "uint16 little-endian bytes.")


def test_to_vector_bytes_float32_and_float16(nb) -> None:
    vector = np.random.default_rng(10).normal(size=DIM) / 20  # float64, as numpy makes them
    for dtype, width, numpy_type in (("FLOAT32", 4, "<f4"), ("FLOAT16", 2, "<f2")):
        for given, label in ((vector, "a float64 ndarray"), (vector.tolist(), "a list of floats")):
            got = packed(nb, given, dtype, label)
            want = np.asarray(vector, dtype=numpy_type).tobytes()
            if got in (want, np.asarray(vector, dtype="<f4").astype(numpy_type).tobytes()):
                continue  # float64 -> float16 directly, or through float32 (which may round a tie differently)
            if len(got) != len(want):
                hint = (f"{dtype} takes {width} bytes per value, {width * DIM} for {DIM} values"
                        + ("; 8 per value is float64: convert first" if len(got) == 8 * DIM else "") +
                        f": `np.asarray(vector, dtype=np.{'float32' if width == 4 else 'float16'}).tobytes()`.")
            elif got == np.asarray(vector, dtype=numpy_type.replace("<", ">")).tobytes():
                hint = "Those are big-endian bytes: Redis reads vectors little-endian (numpy's native order here)."
            else:
                hint = (f"{dtype} is numpy's {'float32' if width == 4 else 'float16 (IEEE half)'}: "
                        f"`np.asarray(vector, dtype='{numpy_type}').tobytes()`.")
            fail(f"`to_vector_bytes({label}, {dtype!r})` returned other bytes than {dtype} packing.",
                 expected=f"{len(want)} bytes starting {want[:8]!r}", got=f"{len(got)} bytes starting {got[:8]!r}",
                 hint=hint)


def test_to_vector_bytes_bfloat16_is_the_top_half_of_float32(nb) -> None:
    # Values bfloat16 holds exactly (the low 16 bits of their float32 are 0): rounding cannot matter here.
    raw = np.random.default_rng(11).normal(size=DIM).astype("<f4") / 20
    raw[:8] = (1.0, -2.5, 0.15625, 3.0e38, 0.1, -0.001, 42.0, 7e-20)
    exact = (raw.view("<u4") & 0xFFFF0000).view("<f4")
    for given, label in ((exact, "a float32 ndarray"), (exact.astype(np.float64).tolist(), "a list of floats")):
        got = packed(nb, given, "BFLOAT16", label)
        want = bfloat16_truncated(exact)
        if got != want:
            fail(f"`to_vector_bytes({label}, 'BFLOAT16')` returned other bytes than bfloat16 packing "
                 "(values bfloat16 holds exactly, so no rounding is involved).",
                 expected=f"{len(want)} bytes starting {want[:8]!r} (1.0 is 0x3F80: b'\\x80?')",
                 got=f"{len(got)} bytes starting {got[:8]!r}", hint=explain_bfloat16(got, exact))


def test_to_vector_bytes_bfloat16_rounds_to_nearest(nb) -> None:
    # The kept part + a dropped part clearly above (or below) one half of the last kept bit: no ties.
    # 1 + 2**-8 + 2**-11 is over half of bfloat16's step at 1 (2**-7): it rounds up, where truncation keeps 1.0;
    # 1.9999999 rounds up into the next exponent: 2.0.
    values = np.array([1 + 2**-8 + 2**-11, -(1 + 2**-9 + 2**-12), 1.9999999, 0.1, -0.3, 3.14159, 2**-8 + 2**-17,
                       -(1 + 2**-7 + 2**-8 + 2**-20)], dtype="<f4")
    got = packed(nb, values, "BFLOAT16", f"{values.tolist()}")
    want = bfloat16_rounded(values)
    if got == want:
        return
    decoded = (np.frombuffer(got, dtype="<u2").astype(np.uint32) << 16).view("<f4") if len(got) == 2 * len(
        values) else None
    if got == bfloat16_truncated(values):
        fail("`to_vector_bytes(..., 'BFLOAT16')` truncates: it drops float32's low 16 bits instead of rounding.",
             expected=[float(v) for v in (np.frombuffer(want, "<u2").astype(np.uint32) << 16).view("<f4")],
             got=[float(v) for v in decoded] if decoded is not None else show(got),
             hint="Truncation always rounds toward zero, which biases every value. Round to nearest: add 0x7FFF "
                  "plus the lowest kept bit ((bits >> 16) & 1, ties to even) to the uint32 bits before `>> 16` "
                  "(a carry into the exponent is right: 1.9999999 becomes 2.0).")
    fail("`to_vector_bytes(..., 'BFLOAT16')` does not round float32 to the nearest bfloat16.",
         expected=f"{len(want)} bytes starting {want[:8]!r}", got=f"{len(got)} bytes starting {got[:8]!r}",
         hint=explain_bfloat16(got, values))


def test_to_vector_bytes_reads_the_type_name(nb) -> None:
    vector = np.linspace(-1, 1, 16)
    for dtype in ("float16", "Float32", "bfloat16"):
        what = f"to_vector_bytes(vector, {dtype!r})"
        want = packed(nb, vector, dtype.upper(), "vector")  # the function's own packing: only the name differs
        try:
            got = nb.to_vector_bytes(vector, dtype)
        except Exception as exc:
            got = f"{type(exc).__name__}: {str(exc)[:200]}"
        if got != want:
            fail(f"`{what}` must pack like `to_vector_bytes(vector, {dtype.upper()!r})`: the type name is case "
                 "insensitive, as FT.CREATE's TYPE is.", expected=f"the same {show(want, 60)}", got=show(got, 200),
                 hint="Compare `dtype.upper()` with the names.")
    for dtype in ("FP16", "INT4", "FLOAT8"):
        what = f"to_vector_bytes(vector, {dtype!r})"
        try:
            result = nb.to_vector_bytes(vector, dtype)
        except ValueError as exc:
            if "dtype" not in str(exc).lower():
                fail(f"`{what}` raised ValueError, but its message does not name `dtype`.",
                     expected="a message naming dtype and the types it accepts", got=str(exc)[:300],
                     hint="raise ValueError(f\"dtype must be FLOAT32, FLOAT16 or BFLOAT16, got {dtype!r}\").")
            continue
        except NotImplementedError:
            fail(f"`{what}`: the function is not written yet (it raises NotImplementedError).")
        except Exception as exc:
            fail(f"`{what}` should raise ValueError naming dtype.", expected="ValueError",
                 got=f"{type(exc).__name__}: {str(exc)[:300]}", hint="Check the type name before packing.")
        else:
            fail(f"`{what}` should refuse a type it does not know with ValueError.", expected="ValueError naming "
                 "dtype", got=f"returned {show(result)}",
                 hint="Bytes of the wrong width are stored happily and only fail when the index reads them: "
                      "refuse anything but FLOAT32, FLOAT16 and BFLOAT16 (any case).")
