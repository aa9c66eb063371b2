"""08_performance: `recall_at_k(approx_ids, exact_ids)` = |approx ∩ exact| / |exact|.

The expected values are computed here with Python sets, on hand-made cases and on
neighbour lists from the shipped catalogue.
"""

from __future__ import annotations

import numpy as np
from feedback import Catalog, call, close, fail, show

DENOMINATOR_HINT = ("Recall@k is the share of the *exact* top-k that the approximate search found: "
                    "len(set(approx) & set(exact)) / len(exact).")


def check_recall(nb, approx: list[str] | tuple[str, ...], exact: list[str] | tuple[str, ...]) -> None:
    what = f"recall_at_k({show(approx, 120)}, {show(exact, 120)})"
    got = call(what, nb.recall_at_k, approx, exact)
    want = len(set(approx) & set(exact)) / len(exact)
    if isinstance(got, (bool, str, bytes)) or not isinstance(got, (int, float, np.floating)):
        fail(f"`{what}` must return a number between 0 and 1.", expected=want, got=show(got))
    if close(float(got), want):
        return
    hint = DENOMINATOR_HINT
    if approx and close(float(got), len(set(approx) & set(exact)) / len(approx)):
        hint = "You divided by the number of approximate results (that is precision). " + hint
    elif close(float(got), 100 * want):
        hint = "Return a fraction between 0 and 1, not a percentage."
    fail(f"`{what}` is wrong.", expected=round(want, 4), got=got, hint=hint)


def test_recall_at_k_counts_the_exact_ids_found(nb) -> None:
    for approx, exact in ((["1", "2", "3"], ["1", "2", "4"]), (["7", "8"], ["7", "8"]), (["5"], ["6", "9"]),
                          (["3", "2", "1"], ["1", "2", "3", "4"])):
        check_recall(nb, approx, exact)


def test_recall_at_k_divides_by_the_exact_top_k(nb) -> None:
    for approx, exact in ((["1", "2", "3", "4", "5", "6"], ["2", "4"]), (["1", "2", "3"], ["1", "2", "3", "4", "5"])):
        check_recall(nb, approx, exact)


def test_recall_at_k_on_neighbour_lists(nb, shipped_products: Catalog) -> None:
    """Exact top-20 lists vs the top-20 of a drifted query (as an approximate index might return), as tuples."""
    catalog, k = shipped_products, 20
    shares = []
    for start in range(0, len(catalog.products), 50):
        query = catalog.vectors[start]
        drifted = 0.8 * query + 0.2 * catalog.vectors[(start + 7) % len(catalog.products)]
        exact = tuple(i for i, _ in catalog.ranking(query)[:k])
        approx = tuple(i for i, _ in catalog.ranking(drifted)[:k])
        shares.append(len(set(exact) & set(approx)) / k)
        check_recall(nb, approx, exact)
    assert any(0 < share < 1 for share in shares), "the drifted queries should find only part of the exact top-k"
