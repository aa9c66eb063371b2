"""03_knn: `knn_search` against exact cosine rankings, `distance_to_similarity`, and the range query `within`."""

from __future__ import annotations

import numpy as np
import redis
from feedback import (
    Catalog,
    as_pairs,
    call,
    check_ranked,
    check_scores,
    close,
    fail,
    recorded_commands,
    searches,
    show,
    works_first,
)
from reference import load_products, product_index

from redis_workbook.report import wait_indexed
from redis_workbook.schema import create_index


def blend(catalog: Catalog) -> np.ndarray:
    """A query between two products of different categories: its neighbours mix, so order matters."""
    first = catalog.products[0]
    other = next(p for p in catalog.products if p["category"] != first["category"])
    return (catalog.vector(first["id"]) + catalog.vector(other["id"])).astype(np.float32)


def test_knn_search_returns_nearest_ids_and_distances(nb, r: redis.Redis, catalog: Catalog) -> None:
    product = catalog.products[0]
    query = catalog.vector(product["id"])
    got = call("knn_search(r, <product vector>, k=5)", nb.knn_search, r, query, k=5)
    pairs = check_ranked(got, catalog.ranking(query), 5, "knn_search(r, query, k=5)")
    if pairs[0][0] != product["id"]:
        fail("Searching with a product's own vector must find that product first, at distance 0.",
             expected=(product["id"], 0.0), got=pairs[0])


def test_knn_search_sorts_by_distance(nb, r: redis.Redis, catalog: Catalog) -> None:
    query = blend(catalog)
    got = call("knn_search(r, query, k=8)", nb.knn_search, r, query, k=8)
    check_ranked(got, catalog.ranking(query), 8, "knn_search(r, query, k=8)")


def test_knn_search_returns_k_beyond_ten(nb, r: redis.Redis, catalog: Catalog) -> None:
    query = catalog.vector(catalog.products[-1]["id"])
    got = call("knn_search(r, query, k=15)", nb.knn_search, r, query, k=15)
    check_ranked(got, catalog.ranking(query), 15, "knn_search(r, query, k=15)")


def test_knn_search_returns_fewer_when_the_index_holds_fewer(nb, r: redis.Redis, shipped_products: Catalog) -> None:
    create_index(r, product_index(384, "FLAT", name="idx:knn-small", prefix="knn-small:"))
    small = Catalog(shipped_products.products[:3], shipped_products.vectors[:3])
    load_products(r, small.products, small.vectors, prefix="knn-small:")
    query = shipped_products.vectors[3]
    what = "knn_search(r, query, k=5, index_name='idx:knn-small')"
    got = call(what, nb.knn_search, r, query, k=5, index_name="idx:knn-small")
    check_ranked(got, small.ranking(query), 5, what, prefix="knn-small:",
                 hint="Use the index_name you are given, and return what Redis found (3 documents here).")


def test_knn_search_passes_ef_runtime(nb, r: redis.Redis, catalog: Catalog) -> None:
    create_index(r, product_index(384, "HNSW", name="idx:knn-hnsw"))
    wait_indexed(r, "idx:knn-hnsw")
    query = blend(catalog)
    what = "knn_search(r, query, k=5, index_name='idx:knn-hnsw', ef_runtime=200)"
    with recorded_commands(r) as commands:
        got = call(what, nb.knn_search, r, query, k=5, index_name="idx:knn-hnsw", ef_runtime=200)
    check_ranked(got, catalog.ranking(query), 5, what)
    if commands is None:
        return  # this Redis does not let the grader read SLOWLOG: the results above are all we can check
    sent = [b" ".join(c).decode(errors="replace") for c in searches(commands)]
    if not any("EF_RUNTIME" in s.upper() and "200" in s for s in sent):
        fail(f"`{what}` did not pass EF_RUNTIME 200 to Redis.", expected="EF_RUNTIME 200 in the KNN clause",
             got=show([s[:160] for s in sent], 600),
             hint="`*=>[KNN 5 @embedding $vec EF_RUNTIME 200 AS distance]` when ef_runtime is given.")


def test_knn_search_accepts_lists_and_float64(nb, r: redis.Redis, catalog: Catalog) -> None:
    query = blend(catalog).astype(np.float64)
    for given, label in ((query, "a float64 ndarray"), (query.tolist(), "a list of floats")):
        what = f"knn_search(r, <{label}>, k=5)"
        check_ranked(call(what, nb.knn_search, r, given, k=5), catalog.ranking(query), 5, what)


def test_distance_to_similarity(nb) -> None:
    for distance, want in ((0.0, 1.0), (0.25, 0.75), (1.0, 0.0), (1.6, -0.6), (np.float32(0.5), 0.5)):
        got = call(f"distance_to_similarity({distance!r})", nb.distance_to_similarity, distance)
        if isinstance(got, (str, bytes, bool)) or not isinstance(got, (int, float, np.floating)):
            fail("`distance_to_similarity` must return a number.", expected=want, got=show(got))
        if not close(float(got), want):
            hint = "The similarity is 1 - distance (Redis's COSINE distance is 1 - cos)."
            if close(float(got), float(distance)):
                hint = "You returned the distance unchanged. " + hint
            elif close(float(got), 1 / (1 + float(distance))):
                hint = "1 / (1 + d) is a similarity for L2 distances, not for COSINE. " + hint
            fail(f"`distance_to_similarity({distance!r})` is wrong.", expected=want, got=got, hint=hint)


# ------------------------------------------------------------------------------------------ within (VECTOR_RANGE)
MARGIN = 2e-3  # no product's similarity this close to a threshold: float32 rounding cannot move it across
RADIUS_HINT = ("VECTOR_RANGE's radius is a COSINE distance, and distance = 1 - similarity: pass "
               "`1 - min_similarity` as the radius, not `min_similarity` itself.")
RANGE_HINT = ("A range query has no k: `@embedding:[VECTOR_RANGE $radius $vec]=>{$YIELD_DISTANCE_AS: dist}` "
              "finds every product within the radius, and FT.SEARCH returns only the first 10 of them unless you "
              "say `LIMIT 0 n` (redis-py `.paging(0, n)`): count them first with `LIMIT 0 0` (`result.total`).")


def similarities(catalog: Catalog, query: np.ndarray) -> list[tuple[str, float]]:
    """(id, exact similarity) of every product, best first."""
    return [(i, 1.0 - d) for i, d in catalog.ranking(query)]


def clear_of(sims: list[tuple[str, float]], threshold: float) -> bool:
    return all(abs(s - threshold) > MARGIN for _, s in sims)


def wide_range(catalog: Catalog) -> tuple[np.ndarray, float, set[str]]:
    """A category's mean vector and a threshold above 0.5 that more than 10 products pass, none of them by a hair."""
    for category in sorted({p["category"] for p in catalog.products}):
        query = np.mean([catalog.vector(p["id"]) for p in catalog.products if p["category"] == category], axis=0)
        sims = similarities(catalog, query)
        for n in range(11, 41):
            threshold = round((sims[n - 1][1] + sims[n][1]) / 2, 4)
            if threshold > 0.52 and clear_of(sims, threshold) and clear_of(sims, 1 - threshold):
                return query.astype(np.float32), threshold, {i for i, _ in sims[:n]}
    raise AssertionError("no category of the shipped catalogue has 11-40 products clear of a threshold above 0.52")


def narrow_range(catalog: Catalog) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """A product's vector with 3-9 products at least 0.5 similar, none of them by a hair: (id, distance) pairs."""
    for product in catalog.products:
        query = catalog.vector(product["id"])
        sims = similarities(catalog, query)
        inside = [(i, 1.0 - s) for i, s in sims if s >= 0.5]
        if 3 <= len(inside) <= 9 and clear_of(sims, 0.5):
            return query, inside
    raise AssertionError("no product of the shipped catalogue has 3-9 neighbours at least 0.5 similar")


def range_hint(ids: set[str], catalog: Catalog, query: np.ndarray, min_similarity: float, want: set[str]) -> str:
    """The likely mistake behind a wrong set of ids."""
    sims = dict(similarities(catalog, query))
    if ids == {i for i, s in sims.items() if s >= 1 - min_similarity}:
        return RADIUS_HINT
    if ids < want and len(ids) == 10:
        return ("You returned 10 of them: a KNN with a fixed k (KNN 10) finds at most k, and FT.SEARCH returns a "
                "page of 10 unless told otherwise. " + RANGE_HINT)
    if ids < want:
        return ("The ones you returned are the nearest, but not all of them: a KNN with a fixed k finds at most k. "
                + RANGE_HINT)
    if ids - want:
        return ("Some you returned are less similar than min_similarity. " + RADIUS_HINT
                + " Keep Redis's answer as it is, without adding to it.")
    return RANGE_HINT


def test_within_finds_every_product_above_the_threshold(nb, r: redis.Redis, catalog: Catalog) -> None:
    query, threshold, want = wide_range(catalog)
    what = f"within(r, <a category's mean vector>, min_similarity={threshold})"
    pairs = as_pairs(call(what, nb.within, r, query, threshold), what)
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
             hint=range_hint(set(ids), catalog, query, threshold, want))


def test_within_returns_similarities_best_first(nb, r: redis.Redis, catalog: Catalog) -> None:
    query, inside = narrow_range(catalog)
    what = "within(r, <product vector>, min_similarity=0.5)"
    pairs = as_pairs(call(what, nb.within, r, query, 0.5), what)
    distances = catalog.distances(query)
    for key, _ in pairs:
        if key not in distances:
            fail(f"`{what}` returned {key!r}, which is not an id in the index.", got=pairs,
                 hint="Return the id after the key's prefix (`doc.id.split(\":\", 1)[1]`).")
    check_scores(pairs, distances, what, similarity=True)
    values = [s for _, s in pairs]
    if any(b - a > 1e-4 for a, b in zip(values, values[1:])):
        fail(f"`{what}` returned results out of order.", expected="descending similarity (best first)",
             got=[round(v, 4) for v in values],
             hint="FT.SEARCH does not sort a range by itself: `SORTBY dist` (redis-py `.sort_by(\"dist\")`) on the "
                  "distance named in `$YIELD_DISTANCE_AS`; ascending distance is descending similarity.")
    check_ranked(pairs, inside, len(inside), what, similarity=True,
                 outside=lambda i: f"its similarity is {1 - distances[i]:.3f}, below 0.5",
                 hint="Return every product within the radius 1 - min_similarity, and only those.")


def test_within_returns_an_empty_list_when_nothing_is_close_enough(nb, r: redis.Redis, catalog: Catalog) -> None:
    unrelated = np.random.default_rng(11).standard_normal(catalog.vectors.shape[1]).astype(np.float32)
    cases = [(unrelated, 0.5, "<a random vector>"), (blend(catalog), 0.999, "<a blend of two products>")]
    for query, threshold, label in cases:
        best_id, best = similarities(catalog, query)[0]
        assert best < threshold - MARGIN, f"the grader's {label} is {best:.4f} similar to {best_id}"
        what = f"within(r, {label}, min_similarity={threshold})"
        got = call(what, nb.within, r, query, threshold)
        if got is None:
            fail(f"`{what}` returned None.", expected="[] (an empty list)", got="None",
                 hint="Nothing close enough is an answer, not a missing one: return an empty list, the same type "
                      "as when something matches, so callers can loop over it and test it with `if not found:`.")
        pairs = as_pairs(got, what)
        if pairs:
            sims = dict(similarities(catalog, query))
            hint = (RADIUS_HINT if len(pairs) > 1 else
                    "KNN 1 always answers with the nearest product, however far it is; VECTOR_RANGE answers "
                    "\"nothing close enough\" with no results.")
            fail(f"`{what}` found products although none is {threshold} similar (the best is {best:.3f}).",
                 expected="[]", got=[(i, round(sims.get(i, float("nan")), 3)) for i, _ in pairs[:5]], hint=hint)
    me = catalog.ids[0]
    what = f"within(r, <the vector of product {me}>, min_similarity=0.99)"
    got = call(what, nb.within, r, catalog.vector(me), 0.99)
    works_first(what, got, me in [i for i, _ in as_pairs(got, what)], expected=f"a list holding ({me!r}, 1.0)")
