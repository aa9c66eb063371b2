"""01_setup: `search_module_version(r)` reads MODULE LIST."""

from __future__ import annotations

import redis
from feedback import call, fail, show, works_first
from reference import search_module_version as reference_version


def check_version(got: object, want: int, what: str, hint: str = "") -> None:
    if isinstance(got, bool) or not isinstance(got, int):
        fail(f"`{what}` must return the version as an int.", expected=f"{want} (int)",
             got=f"{show(got)} ({type(got).__name__})",
             hint=hint or "MODULE LIST gives the version under `ver`; return `int(...)` of it, not bytes or str.")
    if got != want:
        fail(f"`{what}` returned another module's version, or a wrong number.", expected=want, got=got,
             hint="Find the entry whose `name` is `search` in MODULE LIST and return its `ver`.")


def test_search_module_version_is_the_loaded_version(nb, r: redis.Redis) -> None:
    want = reference_version(r)
    assert want is not None, "the grader's Redis has no search module"
    check_version(call("search_module_version(r)", nb.search_module_version, r), want, "search_module_version(r)")


def test_search_module_version_with_resp2_client(nb, redis_url: str) -> None:
    """RESP2 replies are flat lists where RESP3 gives maps: the function must read both."""
    resp2 = redis.Redis.from_url(redis_url, protocol=2)
    try:
        want = reference_version(resp2)
        got = call("search_module_version(r) with a RESP2 client", nb.search_module_version, resp2)
    finally:
        resp2.close()
    assert want is not None
    check_version(got, want, "search_module_version(r) with a RESP2 (protocol=2) client",
                  hint="" if got is not None else "A RESP2 client gets each module as a flat list "
                  "[b'name', b'search', b'ver', 21005, ...], a RESP3 client as a dict: handle both, e.g. "
                  "`dict(zip(entry[::2], entry[1::2]))` when the entry is a list.")


def test_search_module_version_none_without_search(nb, r: redis.Redis, plain_r: redis.Redis) -> None:
    search_module_version = nb.search_module_version
    found = call("search_module_version(r)", search_module_version, r)
    works_first("search_module_version(r) on a Redis with the search module", found,
                found == reference_version(r) and not isinstance(found, bool), expected=reference_version(r))
    try:
        got = search_module_version(plain_r)
    except Exception as exc:  # noqa: BLE001 - any exception is the learner's: report it
        fail("On a Redis without the search module, `search_module_version(r)` must return None, not raise.",
             expected=None, got=f"{type(exc).__name__}: {str(exc)[:300]}",
             hint="Loop over MODULE LIST and return None after the loop when no entry is named `search`.")
    if got is not None:
        fail("On a Redis without the search module, `search_module_version(r)` must return None.",
             expected=None, got=got,
             hint="Only return a version when MODULE LIST has an entry named `search`; otherwise return None.")
