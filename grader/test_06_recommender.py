"""06_recommender: `track_view`, `get_recommendations`, `similar_products` on the shipped catalogue.

Keys (learner-api.md): `user:{user_id}:views` (list of product ids, newest first)
and `popular:products` (sorted set, score = views). Tests that only read those
keys write them directly, so each function is graded on its own.
"""

from __future__ import annotations

import numpy as np
import redis
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
)

POPULAR = "popular:products"


def views_key(user: str) -> str:
    return f"user:{user}:views"


def stored_views(r: redis.Redis, user: str) -> list[str]:
    return [v.decode() for v in r.lrange(views_key(user), 0, -1)]


def same_category(catalog: Catalog, n: int, start: int = 0) -> list[str]:
    """n product ids of one category: views with a clear common taste."""
    category = catalog.products[start]["category"]
    return [p["id"] for p in catalog.products if p["category"] == category][:n]


def record_views(r: redis.Redis, user: str, ids: list[str]) -> None:
    """Write a user's recent views as track_view would: oldest pushed first, so the newest is at the head."""
    for product_id in ids:
        r.lpush(views_key(user), product_id)


def track(nb, r: redis.Redis, user: str, product_id: str, **kwargs: object) -> None:
    extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    call(f"track_view(r, {user!r}, {product_id!r}{extra})", nb.track_view, r, user, product_id, **kwargs)


def missing_list_hint(r: redis.Redis, user: str) -> str:
    keys = sorted(k.decode() for k in r.scan_iter(match="*", count=1000) if not k.startswith(b"product:"))
    return f"The views must be in the list `{views_key(user)}`; Redis holds {keys[:8]}."


# ------------------------------------------------------------------------------------------ track_view
def test_track_view_newest_first(nb, r: redis.Redis, catalog: Catalog) -> None:
    viewed = same_category(catalog, 3)
    for product_id in viewed:
        track(nb, r, "alice", product_id)
    got = stored_views(r, "alice")
    want = viewed[::-1]
    if got == want:
        return
    if not got:
        fail("After three views, the user's recent-views list is empty or missing.", expected=want, got=[],
             hint=missing_list_hint(r, "alice"))
    hint = ("That is oldest first: RPUSH appends at the tail. Push views at the head with LPUSH."
            if got == viewed else "LPUSH each product id onto user:{user_id}:views, so the newest is first.")
    fail("The recent-views list must hold the product ids, newest first.", expected=want, got=got, hint=hint)


def test_track_view_keeps_at_most_max_views(nb, r: redis.Redis, catalog: Catalog) -> None:
    ids = catalog.ids
    for user, n, max_views in (("bob", 7, 5), ("carol", 12, None)):
        kwargs = {} if max_views is None else {"max_views": max_views}
        for product_id in ids[:n]:
            track(nb, r, user, product_id, **kwargs)
        cap = max_views or 10
        got, want = stored_views(r, user), ids[:n][::-1][:cap]
        if got == want:
            continue
        label = f"max_views={cap}" + (" (the default)" if max_views is None else "")
        hint = "Trim after each push: LTRIM key 0 max_views-1."
        if len(got) == cap + 1:
            hint = ("One too many: LTRIM's stop index is inclusive, so keeping max_views items is "
                    "`LTRIM key 0 max_views-1`, not `0 max_views`.")
        elif len(got) == cap - 1:
            hint = "One too few: `LTRIM key 0 max_views-1` keeps exactly max_views items."
        elif len(got) == n:
            hint = "The list is never trimmed: add LTRIM key 0 max_views-1 after the LPUSH."
        fail(f"After {n} views with {label}, the list must hold the {cap} newest.", expected=want, got=got,
             hint=hint)


def test_track_view_sets_the_ttl(nb, r: redis.Redis, catalog: Catalog) -> None:
    for user, kwargs, ttl in (("dave", {"ttl": 120}, 120), ("erin", {}, 3600)):
        track(nb, r, user, catalog.ids[0], **kwargs)
        remaining = r.ttl(views_key(user))
        if remaining == -2:
            fail("The recent-views list does not exist after a view.", hint=missing_list_hint(r, user))
        if remaining == -1:
            fail("The recent-views list never expires.", expected=f"a TTL of about {ttl} s", got="no TTL (-1)",
                 hint=f"Set it on every view: EXPIRE {views_key(user)} ttl (in the same pipeline as the LPUSH).")
        if not ttl - 10 < remaining <= ttl:
            label = f"ttl={ttl}" if kwargs else f"the default ttl ({ttl} s)"
            fail(f"The recent-views list has the wrong TTL for {label}.", expected=f"{ttl - 10} < TTL <= {ttl}",
                 got=remaining, hint="EXPIRE takes seconds: pass the ttl argument as is.")


def test_track_view_counts_popularity(nb, r: redis.Redis, catalog: Catalog) -> None:
    a, b = catalog.ids[:2]
    for user, product_id in (("frank", a), ("frank", b), ("frank", a), ("grace", a)):
        track(nb, r, user, product_id, max_views=1)
    if not r.exists(POPULAR):
        fail(f"No sorted set `{POPULAR}` after four views.", hint=f"ZINCRBY {POPULAR} 1 product_id on every view.")
    got = {member: r.zscore(POPULAR, member) for member in (a, b)}
    want = {a: 3.0, b: 1.0}
    if got != want:
        hint = f"Count every view, by every user: ZINCRBY {POPULAR} 1 product_id (ZADD would overwrite the count)."
        fail(f"`{POPULAR}` must count views per product id.", expected=want, got=got, hint=hint)


def test_track_view_unknown_product_writes_nothing(nb, r: redis.Redis, catalog: Catalog) -> None:
    track(nb, r, "heidi", catalog.ids[0])
    unknown = str(max(int(i) for i in catalog.ids) + 1000)
    before = snapshot(r)
    for user in ("heidi", "ivan"):
        what = f"track_view(r, {user!r}, {unknown!r}) for a product that does not exist"
        expect_error(what, nb.track_view, r, user, unknown, kinds=(KeyError, ValueError))
        assert_unchanged(before, snapshot(r), what)


# ------------------------------------------------------------------------------------------ get_recommendations
def recommendation_ranking(catalog: Catalog, viewed: list[str]) -> list[tuple[str, float]]:
    mean = np.mean([catalog.vector(i) for i in viewed], axis=0)
    return catalog.ranking(mean, lambda p: p["id"] not in viewed)


VIEWED_HINT = ("Ask KNN for k + len(viewed) candidates around the mean of the viewed vectors, drop every id the "
               "user viewed (compare ids exactly), and keep the first k.")


def test_recommendations_never_include_viewed_items(nb, r: redis.Redis, catalog: Catalog) -> None:
    viewed = same_category(catalog, 3)
    record_views(r, "judy", viewed)
    got = check_id_list(call("get_recommendations(r, 'judy', k=5)", nb.get_recommendations, r, "judy", k=5),
                        "get_recommendations(r, 'judy', k=5)")
    seen = [i for i in got if i in viewed]
    if seen:
        fail(f"`get_recommendations` recommended products the user has already viewed: {seen}.",
             expected=f"5 products, none of {viewed}", got=got,
             hint="The nearest products to the mean of the viewed vectors are the viewed products themselves: "
                  "exclude every viewed id from the results. " + VIEWED_HINT)
    check_nearest_set(got, recommendation_ranking(catalog, viewed), 5, "get_recommendations(r, 'judy', k=5)",
                      outside=lambda i: "the user viewed it", hint=VIEWED_HINT)


def test_recommendations_are_nearest_to_the_mean_of_recent_views(nb, r: redis.Redis, catalog: Catalog) -> None:
    viewed = same_category(catalog, 2, start=4) + same_category(catalog, 2, start=7)  # two tastes, one mean
    record_views(r, "ken", viewed)
    what = "get_recommendations(r, 'ken', k=6)"
    got = call(what, nb.get_recommendations, r, "ken", k=6)
    check_nearest_set(got, recommendation_ranking(catalog, viewed), 6, what,
                      outside=lambda i: "the user viewed it",
                      hint="Average the embeddings of every product in the user's recent-views list "
                           "(np.mean over the float32 vectors) and search KNN around that mean. " + VIEWED_HINT)


def test_recommendations_beyond_ten(nb, r: redis.Redis, catalog: Catalog) -> None:
    viewed = same_category(catalog, 2, start=3)
    record_views(r, "liz", viewed)
    what = "get_recommendations(r, 'liz', k=12)"
    check_nearest_set(call(what, nb.get_recommendations, r, "liz", k=12), recommendation_ranking(catalog, viewed),
                      12, what, outside=lambda i: "the user viewed it", hint=VIEWED_HINT)


def test_recommendations_for_a_new_user_are_the_most_popular(nb, r: redis.Redis, catalog: Catalog) -> None:
    counts = {product_id: float(n) for n, product_id in enumerate(catalog.ids[10:19], start=1)}
    r.zadd(POPULAR, counts)
    got = check_id_list(call("get_recommendations(r, 'newcomer', k=5)", nb.get_recommendations, r, "newcomer", k=5),
                        "get_recommendations(r, 'newcomer', k=5)")
    want = sorted(counts, key=counts.get, reverse=True)[:5]  # type: ignore[arg-type]
    if sorted(got) != sorted(want):
        least = sorted(counts, key=counts.get)[:5]  # type: ignore[arg-type]
        hint = ("Those are the least popular: read the sorted set from the highest score: ZRANGE ... REV "
                "(redis-py: `r.zrange(key, 0, k - 1, desc=True)`)." if sorted(got) == sorted(least) else
                f"A user with no views gets the k highest-scored members of `{POPULAR}`.")
        fail("A user with no views must get the k most popular products.", expected=want, got=got, hint=hint)


# ------------------------------------------------------------------------------------------ similar_products
def test_similar_products_never_return_the_product_itself(nb, r: redis.Redis, catalog: Catalog) -> None:
    me, victims = endswith_case(catalog, 5)
    what = f"similar_products(r, {me!r}, k=5)"
    got = check_id_list(call(what, nb.similar_products, r, me, k=5), what)
    if me in got:
        fail(f"`{what}` returned the product itself.", expected="5 other products", got=got,
             hint="Its own vector is at distance 0, so KNN always finds it first: ask for k + 1 and drop it.")
    lost = [i for i in victims if i not in got]
    if lost:
        fail(f"`{what}` dropped {lost}, which are among the nearest, because their ids end with {me!r}.",
             expected=f"{victims} among the results", got=got,
             hint=f"Comparing with `endswith` (or `in`) also excludes '{victims[0]}' when excluding '{me}'. "
                  "Compare ids exactly: `doc_id != product_id` (after stripping the `product:` prefix).")
    ranking = catalog.ranking(catalog.vector(me), lambda p: p["id"] != me)
    check_nearest_set(got, ranking, 5, what, outside=lambda i: "it is the product itself",
                      hint="KNN around the product's own stored vector, k + 1 results, minus the product itself.")


def test_similar_products_are_the_nearest(nb, r: redis.Redis, catalog: Catalog) -> None:
    for product, k in ((catalog.products[-1], 6), (catalog.products[len(catalog.products) // 2], 11)):
        me = product["id"]
        what = f"similar_products(r, {me!r}, k={k})"
        got = call(what, nb.similar_products, r, me, k=k)
        ranking = catalog.ranking(catalog.vector(me), lambda p, me=me: p["id"] != me)
        check_nearest_set(got, ranking, k, what, outside=lambda i, me=me: "it is the product itself",
                          hint="Read the product's `embedding` from its hash (bytes) and run KNN with it; "
                               f"got {show(got, 200)}.")
