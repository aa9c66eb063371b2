"""04_hybrid: `hybrid_search` = KNN restricted by category tag, inclusive price range and full-text match."""

from __future__ import annotations

import re

import numpy as np
import redis
from feedback import Catalog, call, check_ranked, fail

ESCAPE_HINT = ("Tag values with spaces or punctuation must be escaped inside {...}: every character that is not a "
               "letter, digit or underscore gets a backslash (`@category:{Home\\ \\&\\ Kitchen}`), or quote the "
               "value with dialect 2. Print your query string to see what Redis received.")
RANGE_HINT = ("The range is inclusive on both sides: `@price:[low high]` (a `(` before a bound would exclude it), "
              "and a None side means unbounded: `-inf` / `+inf`.")
TEXT_HINT = "Match the text on name and description: `@name|description:(waterproof)`, combined with the KNN part."


def run_category(nb, r: redis.Redis, catalog: Catalog, category: str, k: int) -> None:
    """KNN from a product of another category, restricted to `category`: only that category may come back."""
    start = next(p for p in catalog.products if p["category"] != category)
    query = catalog.vector(start["id"])
    what = f"hybrid_search(r, query, k={k}, category={category!r})"
    got = call(what, nb.hybrid_search, r, query, k=k, category=category)
    if got == []:
        fail(f"`{what}` found nothing, but {category!r} has products.", expected=f"{k} results", got=[],
             hint=ESCAPE_HINT)
    check_ranked(got, catalog.ranking(query, lambda p: p["category"] == category), k, what,
                 outside=lambda i: f"it is in {catalog.product(i)['category']!r}", hint=ESCAPE_HINT)


def test_hybrid_without_filters_is_plain_knn(nb, r: redis.Redis, catalog: Catalog) -> None:
    query = catalog.vector(catalog.products[0]["id"])
    got = call("hybrid_search(r, query, k=6)", nb.hybrid_search, r, query, k=6)
    check_ranked(got, catalog.ranking(query), 6, "hybrid_search(r, query, k=6)",
                 hint="With no category, price_range or text, the query is plain KNN over everything: `*=>[KNN ...]`.")


def test_hybrid_category_with_spaces_and_ampersand(nb, r: redis.Redis, catalog: Catalog) -> None:
    category = next(c for c in (p["category"] for p in catalog.products) if " & " in c and "," not in c)
    run_category(nb, r, catalog, category, 12)


def test_hybrid_category_with_comma(nb, r: redis.Redis, catalog: Catalog) -> None:
    category = next(c for c in (p["category"] for p in catalog.products) if "," in c)
    run_category(nb, r, catalog, category, 7)


def price_window(catalog: Catalog, size: int) -> tuple[float, float]:
    """A (low, high) range whose two bounds are exact prices of products, holding about `size` products."""
    prices = sorted({p["price"] for p in catalog.products})
    middle = len(prices) // 2
    return prices[middle], prices[middle + size // 2]


def test_hybrid_price_range_is_inclusive(nb, r: redis.Redis, catalog: Catalog) -> None:
    low, high = price_window(catalog, 8)
    inside = [p for p in catalog.products if low <= p["price"] <= high]
    k = len(inside) + 3  # more than fit: every product in the range, bounds included, must come back
    query = catalog.vector(catalog.products[0]["id"])
    what = f"hybrid_search(r, query, k={k}, price_range=({low}, {high}))"
    got = call(what, nb.hybrid_search, r, query, k=k, price_range=(low, high))
    check_ranked(got, catalog.ranking(query, lambda p: low <= p["price"] <= high), k, what,
                 outside=lambda i: f"its price {catalog.product(i)['price']} is outside [{low}, {high}]",
                 hint=RANGE_HINT)


def test_hybrid_price_range_with_open_sides(nb, r: redis.Redis, catalog: Catalog) -> None:
    prices = sorted(p["price"] for p in catalog.products)
    cheap, dear = prices[len(prices) // 10], prices[-len(prices) // 10]
    query = catalog.vector(catalog.products[-1]["id"])
    for low, high in ((None, cheap), (dear, None)):
        def allowed(p: dict, low: float | None = low, high: float | None = high) -> bool:
            return (low is None or p["price"] >= low) and (high is None or p["price"] <= high)

        what = f"hybrid_search(r, query, k=9, price_range=({low}, {high}))"
        got = call(what, nb.hybrid_search, r, query, k=9, price_range=(low, high))
        check_ranked(got, catalog.ranking(query, allowed), 9, what,
                     outside=lambda i: f"its price {catalog.product(i)['price']} is outside the range",
                     hint=RANGE_HINT)


def mentions(product: dict, word: str) -> bool:
    return re.search(rf"\b{word}", f"{product['name']} {product['description']}".lower()) is not None


def test_hybrid_full_text_match(nb, r: redis.Redis, catalog: Catalog) -> None:
    word = "waterproof"
    matching = [p for p in catalog.products if mentions(p, word)]
    query = np.mean([catalog.vector(p["id"]) for p in catalog.products[:3]], axis=0).astype(np.float32)
    k = len(matching) + 2
    what = f"hybrid_search(r, query, k={k}, text={word!r})"
    got = call(what, nb.hybrid_search, r, query, k=k, text=word)
    check_ranked(got, catalog.ranking(query, lambda p: mentions(p, word)), k, what,
                 outside=lambda i: f"neither its name nor its description mentions {word!r}", hint=TEXT_HINT)


def test_hybrid_combines_all_filters(nb, r: redis.Redis, catalog: Catalog) -> None:
    word = "waterproof"
    product = next(p for p in catalog.products if mentions(p, word))
    category, low, high = product["category"], product["price"] * 0.5, None

    def allowed(p: dict) -> bool:
        return p["category"] == category and p["price"] >= low and mentions(p, word)

    query = catalog.vector(catalog.products[0]["id"])
    what = f"hybrid_search(r, query, k=5, category={category!r}, price_range=({low}, None), text={word!r})"
    got = call(what, nb.hybrid_search, r, query, k=5, category=category, price_range=(low, high), text=word)
    check_ranked(got, catalog.ranking(query, allowed), 5, what,
                 outside=lambda i: f"it fails a filter ({catalog.product(i)['category']!r}, "
                                   f"{catalog.product(i)['price']})",
                 hint="Combine the filters with spaces (an AND) inside the parentheses before `=>[KNN ...]`.")
