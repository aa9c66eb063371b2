"""05_semantic_cache: `SemanticCache` put / get / get_or_generate, keys, TTL and the similarity threshold.

The embedder is `HashingEmbedder` (deterministic, shared words = similar); every
expected hit or miss is computed here with numpy from the same embedder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import redis
from feedback import assert_unchanged, call, expect_error, fail, show, snapshot, works_first

from redis_workbook.embeddings import HashingEmbedder
from redis_workbook.grading.remote import Recorder

STORED = "how do I reset my password on the website"
ANSWER = "Open Settings, then Security, then 'Reset password'."
PROBES = {  # query -> what it is, relative to STORED
    STORED: "the same question",
    "how do I reset my password on the website today": "a near paraphrase",
    "how do I reset my password": "a shorter paraphrase",
    "reset my password": "a loosely related question",
    "what is the best espresso machine for a small kitchen": "an unrelated question",
}
RULES: dict[str, Callable[[float, float], bool]] = {
    "correct": lambda s, t: s >= t,
    "distance >= threshold": lambda s, t: 1 - s >= t,
    "distance <= threshold": lambda s, t: 1 - s <= t,
    "similarity <= threshold (flipped)": lambda s, t: s <= t,
}
DIAGNOSES = {
    "distance >= threshold": (
        "Your cache compares the COSINE *distance* Redis returns with a *similarity* threshold "
        "(`float(score) >= threshold`): distance = 1 - similarity, so identical questions (distance 0) miss and "
        "unrelated ones (distance near 1) hit. Convert first: `similarity = 1 - float(doc.distance)`, then hit when "
        "`similarity >= threshold`."),
    "distance <= threshold": (
        "Your cache uses the threshold as a maximum *distance* (`distance <= threshold`), but `threshold` is a "
        "similarity: hit when `1 - float(doc.distance) >= threshold`."),
    "similarity <= threshold (flipped)": (
        "Your threshold comparison is flipped: the cache must hit when the similarity is at least the threshold "
        "(`similarity >= threshold`), not at most."),
}


def similarities(embedder: HashingEmbedder, stored: str, queries: list[str]) -> dict[str, float]:
    vectors = embedder.embed([stored, *queries]).astype(np.float64)
    return dict(zip(queries, (vectors[1:] @ vectors[0]).tolist()))


def new_cache(nb, r: redis.Redis, embedder: HashingEmbedder, **kwargs: object) -> object:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return call(f"SemanticCache(r, embedder{', ' + args if args else ''})", nb.SemanticCache, r, embedder, **kwargs)


def test_put_stores_query_response_and_vector_with_ttl(nb, r: redis.Redis, embedder: HashingEmbedder) -> None:
    for kwargs, ttl, prefix in (({}, 3600, "cache:"), ({"ttl": 120, "prefix": "faq:", "index_name": "idx:faq"},
                                                         120, "faq:")):
        cache = new_cache(nb, r, embedder, **kwargs)
        key = call("cache.put(query, response)", cache.put, STORED, ANSWER)
        if not isinstance(key, str) or not key.startswith(prefix):
            fail(f"`put` must return the key it wrote, a str starting with the prefix {prefix!r}.",
                 expected=f"'{prefix}...'", got=show(key), hint="Build the key as prefix + a digest of the query.")
        if not r.exists(key):
            fail(f"`put` returned {key!r}, but that key does not exist in Redis.", got=sorted(r.keys("*"))[:10])
        remaining = r.ttl(key)
        if remaining < 0:
            fail(f"The cache entry {key!r} never expires.", expected=f"a TTL of about {ttl} s", got=f"TTL {remaining}",
                 hint="Set the TTL when you write: EXPIRE key ttl (redis-py: `r.expire(key, ttl)`, or in a pipeline).")
        if not ttl - 10 < remaining <= ttl:
            fail(f"The cache entry has the wrong TTL for ttl={ttl}.", expected=f"{ttl - 10} < TTL <= {ttl}",
                 got=remaining, hint="Use the `ttl` argument, in seconds.")
        if r.type(key) == b"hash":
            values = list(r.hgetall(key).values())
            vector = embedder.embed([STORED])[0].astype("<f4").tobytes()
            for label, want in (("the query", STORED.encode()), ("the response", ANSWER.encode()),
                                ("the query's float32 embedding", vector)):
                if want not in values:
                    fail(f"The cache entry does not hold {label}.", expected=show(want, 80),
                         got=show(values, 300), hint="Store query, response and `embedding` (float32 bytes).")


def test_get_hits_the_same_question_and_misses_an_unrelated_one(nb, r: redis.Redis,
                                                                embedder: HashingEmbedder) -> None:
    cache = new_cache(nb, r, embedder, threshold=0.9)
    empty = call("cache.get(query) on an empty cache", cache.get, STORED)
    if empty is not None:
        fail("`get` on an empty cache must return None.", expected=None, got=empty)
    call("cache.put(query, response)", cache.put, STORED, ANSWER)
    got = call("cache.get(the same question)", cache.get, STORED)
    unrelated = list(PROBES)[-1]
    far = call("cache.get(an unrelated question)", cache.get, unrelated)
    if got == ANSWER and far is None:
        return
    if got is None and far == ANSWER:
        fail("The cache missed the exact question it stored, and answered an unrelated one.",
             expected=f"get(same) -> {ANSWER!r}, get(unrelated) -> None", got=f"{got!r}, {far!r}",
             hint="The threshold test is backwards. Most often the COSINE distance Redis returns is compared with "
                  "the similarity threshold (`float(score) >= threshold`; distance = 1 - similarity), or the "
                  "comparison is flipped. Hit when `1 - float(doc.distance) >= threshold`.")
    if isinstance(got, bytes):
        fail("`get` returned bytes.", expected=repr(ANSWER), got=show(got), hint="`.decode()` the response.")
    fail("The cache should answer the same question and not an unrelated one.",
         expected=f"get(same) -> {ANSWER!r}, get(unrelated) -> None", got=f"{got!r}, {far!r}",
         hint="Query KNN 1 over the cache index and hit when 1 - distance >= threshold.")


def test_threshold_is_a_cosine_similarity(nb, r: redis.Redis, embedder: HashingEmbedder) -> None:
    sims = similarities(embedder, STORED, list(PROBES))
    for threshold, kwargs in ((0.75, {"threshold": 0.75}), (0.9, {})):  # {}: the default threshold is 0.9
        for s in sims.values():  # the probes keep clear of every rule's boundary
            assert all(abs(s - b) > 0.02 for b in (threshold, 1 - threshold)) or s > 0.999
        cache = new_cache(nb, r, embedder, **kwargs)
        call("cache.put(query, response)", cache.put, STORED, ANSWER)
        hits = {q: call(f"cache.get({q!r})", cache.get, q) == ANSWER for q in PROBES}
        expected = {q: RULES["correct"](sims[q], threshold) for q in PROBES}
        if hits == expected:
            continue
        table = "; ".join(f"{PROBES[q]} (similarity {sims[q]:.2f}): {'hit' if hits[q] else 'miss'}, expected "
                          f"{'hit' if expected[q] else 'miss'}" for q in PROBES)
        rule = next((name for name, test in RULES.items() if name != "correct"
                     and all(test(sims[q], threshold) == hits[q] for q in PROBES)), None)
        hint = DIAGNOSES.get(rule or "", "A hit needs cosine similarity (1 - distance) >= threshold, "
                                         "measured against the nearest stored question.")
        if not kwargs and rule is None:
            hint = "The default threshold must be 0.9. " + hint
        fail(f"With threshold={threshold} the cache hits and misses the wrong questions: {table}.", hint=hint)


def test_get_returns_the_nearest_entry(nb, r: redis.Redis, embedder: HashingEmbedder) -> None:
    entries = {STORED: ANSWER, "what is the best espresso machine for a small kitchen": "The Barista Pro 2."}
    query = "which espresso machine is best for a small kitchen"
    sims = similarities(embedder, query, list(entries))
    nearest = max(sims, key=sims.get)  # type: ignore[arg-type]
    assert sims[nearest] >= 0.6 and min(sims.values()) < 0.3
    cache = new_cache(nb, r, embedder, threshold=0.6)
    for question, answer in entries.items():
        call("cache.put(query, response)", cache.put, question, answer)
    got = call(f"cache.get({query!r})", cache.get, query)
    if got != entries[nearest]:
        fail("`get` must return the response of the nearest stored question.", expected=entries[nearest], got=got,
             hint="KNN 1 sorted by distance finds the nearest entry; return its response when it is similar enough.")


def learner_hash(request: pytest.FixtureRequest) -> Callable[[str], int]:
    """Python's hash() as the learner's process computes it (the plugin knows, in remote mode)."""
    try:
        return request.getfixturevalue("learner_hash")
    except pytest.FixtureLookupError:
        return hash  # local mode: the learner's code runs in this process


def hash_forms(value: int) -> set[str]:
    """The ways people turn hash(query) into text: signed, abs, unsigned 64/32 bit, hex, modulo 10**n."""
    numbers = {value, abs(value), value & (2**64 - 1), value & (2**32 - 1)}
    numbers |= {v % 10**n for v in (value, abs(value)) for n in range(6, 20)}
    return {str(n) for n in numbers} | {format(n, "x") for n in numbers} | {hex(value), hex(abs(value))}


def test_keys_are_stable_across_processes(nb, r: redis.Redis, embedder: HashingEmbedder,
                                          request: pytest.FixtureRequest) -> None:
    """The key must be a function of the query alone, the same in any process.

    Python's hash() of a str is salted per process, so a key built from it is the one thing
    that changes between processes while staying put within one: it is recognised by
    comparing the key with hash(query) as the notebook's own process computes it (this
    process in a self-check; the plugin's `learner_hash` when grading in a worker).
    Keys that change within a process (time, uuid, random) show up as two different keys.
    """
    first = call("cache.put(query, response)", new_cache(nb, r, embedder).put, STORED, ANSWER)
    second = call("put() of the same query from a new SemanticCache", new_cache(nb, r, embedder).put, STORED,
                  "another response")
    other = call("cache.put(another query, response)", new_cache(nb, r, embedder).put, list(PROBES)[-1], ANSWER)
    digits = str(first)[len("cache:"):]
    if any(form == digits or (len(form) > 8 and form in digits) for form in hash_forms(learner_hash(request)(STORED))):
        fail("Your cache key comes from Python's hash(query).",
             expected="the same key for the same query in every process", got=repr(first),
             hint="hash() of a str is salted per process (PYTHONHASHSEED): another process, a restarted kernel or "
                  "another worker computes another key, so the cache never finds its own entries. Use a real "
                  "digest: `hashlib.sha256(query.encode()).hexdigest()`.")
    if first != second:
        fail("The same query got two different keys from two SemanticCache objects.", expected=repr(first),
             got=repr(second), hint="Derive the key from the query alone (a sha256 digest), not from time, a "
                                    "counter, uuid or the response.")
    if first == other:
        fail("Two different queries got the same key.", expected="different keys", got=repr(first),
             hint="The key must depend on the query text.")


def test_get_or_generate_calls_generate_only_on_a_miss(nb, r: redis.Redis, embedder: HashingEmbedder) -> None:
    cache = new_cache(nb, r, embedder)
    generated = "A freshly generated answer."
    miss = Recorder(returns=generated)
    got = call("cache.get_or_generate(query, generate_fn) on a miss", cache.get_or_generate, STORED, miss)
    if got != generated or len(miss.calls) != 1:
        fail("On a miss, `get_or_generate` must call generate_fn once and return its result.",
             expected=f"{generated!r}, 1 call", got=f"{got!r}, {len(miss.calls)} calls {show(miss.calls, 200)}")
    stored = call("cache.get(query) after get_or_generate", cache.get, STORED)
    if stored != generated:
        kept = [key for key in r.scan_iter(count=1000)
                if r.type(key) == b"hash" and r.hget(key, "response") == generated.encode()]
        hint = (f"The response is in Redis ({kept[0]!r}), so put worked, but `get` of the same query does not find "
                "it: `get` must return the response when the similarity, 1 - distance, is at least the threshold "
                "(the same query has similarity 1). Check the direction of that comparison."
                if kept else "Call put(query, response) before returning it.")
        fail("After a miss, `get_or_generate` must store the generated response so `get` finds it.",
             expected=generated, got=stored, hint=hint)
    hit = Recorder(returns="should not be used")
    again = call("cache.get_or_generate(query, generate_fn) on a hit", cache.get_or_generate, STORED, hit)
    if again != generated or hit.calls:
        fail("On a hit, `get_or_generate` must return the cached response without calling generate_fn.",
             expected=f"{generated!r}, 0 calls", got=f"{again!r}, {len(hit.calls)} calls")


def test_put_refuses_bad_input_and_writes_nothing(nb, r: redis.Redis, embedder: HashingEmbedder) -> None:
    cache = new_cache(nb, r, embedder)
    before = snapshot(r)
    for query, response in ((None, ANSWER), (STORED, None)):
        what = f"cache.put({query!r}, {response!r})"
        expect_error(what, cache.put, query, response)
        assert_unchanged(before, snapshot(r), what)
    what = f"cache.put({STORED!r}, {ANSWER!r})"
    call(what, cache.put, STORED, ANSWER)
    works_first(what, "nothing written", snapshot(r) != before, expected="the entry written to Redis")
