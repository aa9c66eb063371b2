"""Feedback for the checks, as a teaching assistant would give it: expected answers computed independently, and
readable failures.

Every grader test calls learner code through `call(...)`, so a crash becomes a
message with a hint instead of a traceback into the grader, and every check that
fails goes through `fail(...)`: what was expected, what came back, what to try.
Expected answers come from numpy (exact cosine on the shipped vectors) or plain
Python, never from hard-coded ids, so they stay right when the data changes.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import pytest
import redis

from redis_workbook.embeddings import LOCAL_MODEL_NAME
from redis_workbook.report import as_dict, as_text, field_attributes, ft_info, index_report, unknown_index

TOLERANCE = 1e-4  # float32 distances from Redis vs float64 numpy: agree to ~1e-6; ties closer than this are equal

DECODE_HINT = ("That is what a client created with decode_responses=True does with binary vectors: it tries to "
               "decode float32 bytes as UTF-8 text. Use the `r` your function is given (decode_responses=False) "
               "and decode only the text fields yourself (`value.decode()`).")
NOT_WRITTEN_HINT = "Replace the `raise NotImplementedError()` line with your code, run the cell, then check again."
LIMIT_HINT = ("FT.SEARCH returns 10 results unless you say otherwise, whatever the KNN k is: add `LIMIT 0 k` "
              "(redis-py: `Query(...).paging(0, k)`).")
SORT_HINT = ("KNN finds the k nearest but FT.SEARCH does not return them in distance order by itself: sort by the "
             "distance field you named in `AS distance` (`SORTBY distance`, redis-py: `.sort_by(\"distance\")`).")


# ------------------------------------------------------------------------------------------ messages
def show(value: object, limit: int = 400) -> str:
    """repr() cut to a readable length."""
    if isinstance(value, (bytes, bytearray)) and len(value) > 48:
        return f"{len(value)} bytes starting {bytes(value[:16])!r}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def fail(summary: str, expected: object = None, got: object = None, hint: str | None = None) -> NoReturn:
    """Fail the test with a TA-style message (no grader traceback)."""
    lines = [summary]
    if expected is not None:
        lines.append(f"  Expected: {expected if isinstance(expected, str) else show(expected)}")
    if got is not None:
        lines.append(f"  Got:      {got if isinstance(got, str) else show(got)}")
    if hint:
        lines.append(f"  Hint: {hint}")
    pytest.fail("\n".join(lines), pytrace=False)


def explain_exception(exc: BaseException) -> str:
    """A hint for the usual reasons learner code crashes on Redis."""
    text = f"{type(exc).__name__}: {exc}"
    lower = text.lower()
    rules: list[tuple[bool, str]] = [
        (isinstance(exc, NotImplementedError) or "notimplementederror" in lower, NOT_WRITTEN_HINT),
        ("codec can't decode" in lower or "unicodedecodeerror" in lower, DECODE_HINT),
        (unknown_index(exc),
         "The index does not exist. Create it first (notebook 02) and check the index name you query."),
        ("index already exists" in lower,
         "That index exists already: create it only if it is missing (FT.INFO raises for an unknown index)."),
        ("syntax error in filter expression" in lower,
         "VSIM's FILTER is an expression over the element's JSON attributes: the field with a dot and a string "
         "value in quotes, `.category == \"Home & Kitchen\"` (build it with json.dumps(category))."),
        ("element not found in set" in lower,
         "VSIM ... ELE <id> needs an element of that vector set: check the key you query and that the id is a str."),
        ("syntax error" in lower,
         "Redis could not parse the query string. Print it and read it: tag values with spaces or punctuation "
         "must be escaped (`Home\\ \\&\\ Kitchen`), and the KNN part needs dialect 2 (`Query(...).dialect(2)`)."),
        ("'bytes' object has no attribute" in lower or "a bytes-like object is required" in lower,
         "Redis returns bytes because the client is binary-safe (decode_responses=False): decode text fields with "
         "`value.decode()`, and keep vectors as bytes."),
        ("buffer size must be a multiple" in lower,
         "The vector bytes do not hold a whole number of float32 values: were they decoded as text or stored with "
         "another dtype? Store `np.asarray(v, dtype=np.float32).tobytes()`."),
        ("blob size" in lower or "expected size" in lower,
         "The query vector's bytes do not match the index's DIM x 4: pack it as float32 whatever you are given "
         "(`np.asarray(query_vector, dtype=np.float32).tobytes()`); float64 takes 8 bytes per value."),
        ("wrongtype" in lower, "A key holds another type than the command expects (e.g. a list read as a hash)."),
        ("connection" in lower and "error" in lower,
         "The call lost its connection to Redis: use the client `r` you are given, not a global one."),
    ]
    for matched, hint in rules:
        if matched:
            return hint
    return "Run the same call in your notebook to see the full traceback."


def call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run learner code; a crash fails the test with what was called, the error and a hint."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # learner code may raise anything; builtins keep their type in remote mode
        error = exc
    if isinstance(error, NotImplementedError):
        fail(f"`{what}`: the function is not written yet (it raises NotImplementedError).", hint=NOT_WRITTEN_HINT)
    fail(f"`{what}` raised {type(error).__name__}: {str(error)[:500]}", hint=explain_exception(error))


def expect_error(what: str, fn: Callable[..., Any], *args: Any,
                 kinds: tuple[type[BaseException], ...] = (ValueError, TypeError), hint: str | None = None,
                 state: Callable[[], object] | None = None, **kwargs: Any) -> BaseException:
    """Bad input must raise one of `kinds` with a message; returns the exception.

    `hint`: how to refuse this input, shown when the function returns or raises another error instead.
    `state`: what the function writes, in words (`lambda: f"VCARD {...}"`): shown with what it returned when it
    does not refuse, and it must read the same after the refusal as before the call.
    """
    names = " or ".join(k.__name__ for k in kinds)
    before = None if state is None else str(state())
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        error = exc
    else:
        fail(f"`{what}` should refuse this input with {names}.", expected=names,
             got=f"returned {show(result)}" + ("" if state is None else f", {state()}"),
             hint=hint or "Validate the arguments before doing any work.")
    if isinstance(error, NotImplementedError):
        fail(f"`{what}`: the function is not written yet (it raises NotImplementedError).", hint=NOT_WRITTEN_HINT)
    if not isinstance(error, kinds):
        fail(f"`{what}` should refuse this input with {names}.", expected=names,
             got=f"{type(error).__name__}: {str(error)[:300]}",
             hint=hint or "Check the arguments yourself before using them, and raise a clear error naming the "
                          "argument.")
    after = None if state is None else str(state())
    if after != before:
        fail(f"`{what}` refused bad input, but only after writing: nothing may be written before the input is checked.",
             expected=f"{before}, as before the call", got=after,
             hint="Check the input before the first write: commands queued in a pipeline that is executed after "
                  "the checks (and the loop that queues them) are never sent when one fails.")
    if not str(error).strip():
        fail(f"`{what}` raised {type(error).__name__} without a message.", expected="a message naming the "
             "argument and what was expected", hint=f"raise {type(error).__name__}(\"... must be ..., got ...\")")
    return error


def works_first(what: str, got: object, ok: bool, expected: object) -> None:
    """A check of how a function says no (an error, None, False, []) counts only for a function that also does its
    job on good input: a stub that always says no must not score there. `got` is what `what` returned."""
    if not ok:
        fail(f"This check grades how the function refuses or answers \"nothing\"; it counts once the function also "
             f"works on good input, and `{what}` did not.", expected=expected, got=show(got),
             hint="Write the function's main job first (the other checks say what is missing); then this one counts.")


# ------------------------------------------------------------------------------------------ Redis state
def snapshot(r: redis.Redis) -> dict[bytes, object]:
    """Every key with its type and content, to prove that nothing was written."""
    state: dict[bytes, object] = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"hash":
            state[key] = r.hgetall(key)
        elif kind == b"list":
            state[key] = r.lrange(key, 0, -1)
        elif kind == b"zset":
            state[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"string":
            state[key] = r.get(key)
        else:
            state[key] = kind
    return state


def assert_unchanged(before: dict[bytes, object], after: dict[bytes, object], what: str) -> None:
    if before == after:
        return
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    removed = sorted(set(before) - set(after))
    fail(f"`{what}` refused bad input but still changed Redis: nothing may be written before the input is checked.",
         expected="the database exactly as before the call",
         got=f"added {show(added, 200)}, changed {show(changed, 200)}, removed {show(removed, 200)}",
         hint="Validate every argument first (and check that the product exists) before the first write; "
              "a pipeline that is only executed after validation writes nothing on error.")


def report_hint(r: redis.Redis, index: str, prefix: str | None = None) -> str:
    """index_report in one line when it found a problem, else ''."""
    report = index_report(r, index, prefix)
    return "" if report.ok else "FT.INFO shows: " + " ".join(report.problems)


@contextlib.contextmanager
def recorded_commands(r: redis.Redis) -> Iterator[list[list[bytes]] | None]:
    """Record the commands every client sends while the block runs (through SLOWLOG), or None if not allowed.

    The learner's code may run in another process; SLOWLOG sees its commands too.
    """
    try:
        old = r.config_get("slowlog-*")
        r.config_set("slowlog-max-len", 4096)
        r.config_set("slowlog-log-slower-than", 0)
        r.slowlog_reset()
    except redis.ResponseError:
        yield None
        return
    commands: list[list[bytes]] = []
    try:
        yield commands
    finally:
        entries = r.slowlog_get(4096)
        r.config_set("slowlog-log-slower-than", old.get(b"slowlog-log-slower-than", old.get("slowlog-log-slower-than")))
        r.config_set("slowlog-max-len", old.get(b"slowlog-max-len", old.get("slowlog-max-len")))
        for entry in reversed(entries):
            command = entry["command"]
            commands.append(command.split(b" ") if isinstance(command, bytes) else list(command))


def searches(commands: list[list[bytes]] | None) -> list[list[bytes]]:
    return [c for c in commands or [] if c and c[0].upper() == b"FT.SEARCH"]


# ------------------------------------------------------------------------------------------ the catalogue
class ShippedModel:
    """Names the local model so datasets.embeddings() returns the vectors shipped with the package.

    It never embeds: the grader must not depend on loading the model, and stale shipped
    vectors should fail loudly rather than be recomputed silently.
    """

    name = LOCAL_MODEL_NAME
    dim = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("The package's shipped vectors are missing or stale: "
                           "run `python -m redis_workbook.datasets`.")


@dataclass
class Catalog:
    """The shipped products and their vectors, with exact cosine rankings computed by numpy."""

    products: list[dict]
    vectors: np.ndarray
    rows: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = {p["id"]: i for i, p in enumerate(self.products)}

    @property
    def ids(self) -> list[str]:
        return [p["id"] for p in self.products]

    def vector(self, product_id: str) -> np.ndarray:
        return self.vectors[self.rows[product_id]]

    def product(self, product_id: str) -> dict:
        return self.products[self.rows[product_id]]

    def distances(self, query: np.ndarray) -> dict[str, float]:
        """Exact COSINE distance (1 - cos) from query to every product."""
        return cosine_distances(query, self.vectors, self.ids)

    def ranking(self, query: np.ndarray, allowed: Callable[[dict], bool] | None = None) -> list[tuple[str, float]]:
        """(id, distance) of the allowed products, nearest first."""
        dist = self.distances(query)
        keep = [p["id"] for p in self.products if allowed is None or allowed(p)]
        return sorted(((i, dist[i]) for i in keep), key=lambda pair: (pair[1], pair[0]))


def endswith_case(catalog: Catalog, k: int) -> tuple[str, list[str]]:
    """A product whose k nearest neighbours include ids ending with its own id ('1' -> '11', '21')."""
    for product in catalog.products:
        me = product["id"]
        near = [i for i, _ in catalog.ranking(catalog.vector(me), lambda p, me=me: p["id"] != me)[:k]]
        victims = [i for i in near if i.endswith(me)]
        if victims:
            return me, victims
    raise AssertionError("the shipped catalogue has no product whose neighbours end with its id")


def cosine_distances(query: np.ndarray, matrix: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    cos = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    return dict(zip(ids, (1.0 - cos).tolist()))


# ------------------------------------------------------------------------------------------ result checks
def as_pairs(got: object, what: str, id_name: str = "id", prefix: str = "product:") -> list[tuple[str, float]]:
    """Check the shape list[tuple[str, float]] and return it, or fail saying what is wrong."""
    shape = f"a list of ({id_name}, number) tuples"
    if not isinstance(got, list):
        fail(f"`{what}` must return a list.", expected=shape, got=f"{type(got).__name__}: {show(got, 200)}",
             hint="Build a list: `[(doc_id, float(doc.distance)) for doc in result.docs]`.")
    pairs = []
    for item in got:
        if not isinstance(item, tuple) or len(item) != 2:
            fail(f"`{what}` must return {shape}.", expected="(str, float) tuples",
                 got=f"an item {show(item, 200)}", hint="Return tuples, e.g. `(product_id, distance)`.")
        key, value = item
        if isinstance(key, bytes):
            fail(f"`{what}` returned {id_name}s as bytes.", expected="str", got=show(key),
                 hint="Redis replies are bytes on a binary-safe client: `.decode()` them.")
        if not isinstance(key, str):
            fail(f"`{what}` returned a {id_name} of type {type(key).__name__}.", expected="str", got=show(key))
        if prefix and key.startswith(prefix):
            fail(f"`{what}` returned keys, not {id_name}s.", expected=f"{key[len(prefix):]!r}", got=show(key),
                 hint=f"Strip the prefix: the key `{prefix}42` has the id `'42'`.")
        if isinstance(value, (bytes, str)) or isinstance(value, bool):
            fail(f"`{what}` returned the score as {type(value).__name__}.", expected="a float", got=show(value),
                 hint="Convert it: `float(doc.distance)`.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            fail(f"`{what}` returned a score that is not a number.", expected="a float", got=show(value))
        pairs.append((key, number))
    return pairs


def check_count(got: Sequence[object], want: int, k: int, what: str, hint: str = "") -> None:
    if len(got) == want:
        return
    if len(got) == 10 and want > 10:
        fail(f"`{what}` returned 10 results for k={k}.", expected=f"{want} results", got="10", hint=LIMIT_HINT)
    if len(got) < 10 < want:  # FT.SEARCH's 10, minus what the function dropped afterwards (viewed ids, the product)
        fail(f"`{what}` returned {len(got)} results for k={k}.", expected=f"{want} results", got=f"{len(got)}",
             hint=f"{LIMIT_HINT} {hint or 'Return k results: ask Redis for k, plus as many as you drop afterwards.'}")
    if len(got) > want:
        fail(f"`{what}` returned too many results.", expected=f"{want} (k={k})", got=f"{len(got)}",
             hint=hint or "Return at most k results.")
    fail(f"`{what}` returned too few results.", expected=f"{want} (k={k})", got=f"{len(got)}: {show(got, 300)}",
         hint=hint or "Ask Redis for k results (KNN k ... LIMIT 0 k); only return fewer when fewer exist.")


def check_ranked(got: object, ranking: list[tuple[str, float]], k: int, what: str, *,
                 similarity: bool = False, id_name: str = "id", prefix: str = "product:",
                 outside: Callable[[str], str] | None = None, hint: str = "") -> list[tuple[str, float]]:
    """got must be the k best of `ranking` (exact distances), best first, with the right scores.

    Ties closer than TOLERANCE may come in any order. `similarity=True`: scores are 1 - distance,
    best (highest) first. `outside(id)` explains why an id is not allowed (filters), if it is not.
    """
    pairs = as_pairs(got, what, id_name, prefix)
    exact = dict(ranking)
    want = min(k, len(ranking))
    for key, _ in pairs:
        if key not in exact:
            reason = outside(key) if outside else f"{key!r} is not a {id_name} in the index"
            fail(f"`{what}` returned {key!r}, which should not be there: {reason}.", got=pairs, hint=hint or None)
    check_count(pairs, want, k, what, hint)
    if len({i for i, _ in pairs}) != len(pairs):
        fail(f"`{what}` returned the same {id_name} twice.", got=pairs)
    check_scores(pairs, exact, what, similarity)
    check_order(pairs, what, similarity)
    best = [d for _, d in ranking[:want]]
    found = sorted(exact[key] for key, _ in pairs)
    if any(abs(a - b) > TOLERANCE for a, b in zip(found, best)):
        missing = [i for i, d in ranking[:want] if i not in dict(pairs) and d < found[-1] - TOLERANCE]
        fail(f"`{what}` did not return the {want} nearest.",
             expected=[(i, round(score(d, similarity), 4)) for i, d in ranking[:want]],
             got=[(i, round(s, 4)) for i, s in pairs],
             hint=hint or f"Nearer ones are missing: {missing[:5]}. Query the vector you were given with KNN over "
                          "the whole index (or the filtered set) and keep Redis's order.")
    return pairs


def score(distance: float, similarity: bool) -> float:
    return 1.0 - distance if similarity else distance


def check_scores(pairs: list[tuple[str, float]], exact: dict[str, float], what: str, similarity: bool) -> None:
    name = "similarity" if similarity else "distance"
    for key, value in pairs:
        want = score(exact[key], similarity)
        if abs(value - want) <= TOLERANCE:
            continue
        if abs(value - score(exact[key], not similarity)) <= TOLERANCE:
            if similarity:
                fail(f"`{what}` returned COSINE distances where similarities were asked for.",
                     expected=f"{key!r} with similarity {want:.4f}", got=f"{value:.4f}",
                     hint="Redis returns the distance 1 - cos; the similarity is 1 - distance.")
            fail(f"`{what}` returned similarities where COSINE distances were asked for.",
                 expected=f"{key!r} with distance {want:.4f}", got=f"{value:.4f}",
                 hint="Return the distance Redis gives (`float(doc.distance)`); 0 means identical.")
        fail(f"`{what}` returned a wrong {name} for {key!r}.", expected=f"{want:.4f}", got=f"{value:.4f}",
             hint=f"Return the {name} Redis computes for that document (`AS distance` in the KNN clause"
                  f"{', then 1 - distance' if similarity else ''}), paired with the right id.")


def check_order(pairs: list[tuple[str, float]], what: str, similarity: bool) -> None:
    values = [v for _, v in pairs]
    steps = [b - a for a, b in zip(values, values[1:])]
    wrong = [s for s in steps if (s > TOLERANCE if similarity else s < -TOLERANCE)]
    if wrong:
        order = "descending similarity (best first)" if similarity else "ascending distance (nearest first)"
        fail(f"`{what}` returned results out of order.", expected=order, got=[round(v, 4) for v in values],
             hint=SORT_HINT)


def check_nearest_set(got: object, ranking: list[tuple[str, float]], k: int, what: str,
                      outside: Callable[[str], str], hint: str) -> list[str]:
    """got must be a list of the ids of the k best of `ranking` (any order; ties within TOLERANCE)."""
    ids = check_id_list(got, what)
    exact = dict(ranking)
    want = min(k, len(ranking))
    for key in ids:
        if key not in exact:
            fail(f"`{what}` returned {key!r}, which should not be there: {outside(key)}.", got=ids, hint=hint)
    check_count(ids, want, k, what, hint)
    if len(set(ids)) != len(ids):
        fail(f"`{what}` returned an id twice.", got=ids)
    best = [d for _, d in ranking[:want]]
    found = sorted(exact[key] for key in ids)
    if any(abs(a - b) > TOLERANCE for a, b in zip(found, best)):
        fail(f"`{what}` did not return the {want} nearest.", expected=sorted(i for i, _ in ranking[:want]),
             got=sorted(ids), hint=hint)
    return ids


@dataclass(frozen=True)
class Listed:
    """What a function returns a list of, in the words its failures use (check_id_list)."""

    one: str  # "an id": the noun with its article
    many: str  # "product ids": what the list holds
    example: str  # a right answer's start
    prefix: str  # the key prefix a learner returns by mistake
    key_hint: str  # how to return the thing instead of its key
    decode: str = "them"  # what to `.decode()`

    @property
    def noun(self) -> str:
        return self.one.split(" ", 1)[1]


PRODUCT_IDS = Listed("an id", "product ids", "['12', '7', ...]", "product:",
                     "Strip the prefix: the key `product:42` has the id `'42'`.")


def check_id_list(got: object, what: str, listed: Listed = PRODUCT_IDS) -> list[str]:
    """got must be a list of str (product ids unless `listed` says otherwise), not bytes, pairs or keys."""
    noun = listed.noun
    if not isinstance(got, list):
        fail(f"`{what}` must return a list of {listed.many}.", expected="list[str]",
             got=f"{type(got).__name__}: {show(got, 200)}")
    for item in got:
        if isinstance(item, bytes):
            fail(f"`{what}` returned {noun}s as bytes.", expected="str", got=show(item),
                 hint=f"Redis replies are bytes on a binary-safe client: `.decode()` {listed.decode}.")
        if isinstance(item, tuple):
            fail(f"`{what}` must return {noun}s only, not ({noun}, score) pairs.", expected=listed.example,
                 got=show(got, 300))
        if not isinstance(item, str):
            fail(f"`{what}` returned {listed.one} of type {type(item).__name__}.", expected="str", got=show(item))
        if item.startswith(listed.prefix):
            fail(f"`{what}` returned keys, not {noun}s.", expected=repr(item[len(listed.prefix):]), got=repr(item),
                 hint=listed.key_hint)
    return list(got)  # type: ignore[arg-type]


def close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=tol)


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


# ------------------------------------------------------------------------------------------ index schemas
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


def schema_differences(r: redis.Redis, learner: str, reference: str, storage: str,
                       only: tuple[str, ...] | None = None) -> list[str]:
    """How the learner's index differs from the grader's reference one, field by field, in words (only the fields
    `only` names, when given); `storage` says how to ask for the reference's key type."""
    got, want = index_shape(r, learner), index_shape(r, reference)
    if only is not None:
        for shape in (got, want):
            shape["fields"] = {k: v for k, v in shape["fields"].items() if k in only}  # type: ignore[attr-defined]
    problems = []
    if got["key_type"] != want["key_type"]:
        problems.append(f"it indexes {got['key_type']} keys, expected {want['key_type']} ({storage})")
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
    return problems
