"""07_rag: `load_posts`, `search_posts`, `answer` through a real openai client on a local server, and the retrieval
evaluation: `text_search` (BM25STD full text), `reciprocal_rank_fusion` and `evaluate` (hit@k, MRR)."""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import redis
import reference
from feedback import (
    LIMIT_HINT,
    NOT_WRITTEN_HINT,
    Listed,
    ShippedModel,
    call,
    check_id_list,
    check_ranked,
    cosine_distances,
    expect_error,
    fail,
    report_hint,
    show,
    works_first,
)
from redis.commands.search.query import Query
from reference import load_posts, post_index

from redis_workbook import datasets
from redis_workbook.embeddings import HashingEmbedder
from redis_workbook.openai_server import OpenAIServer
from redis_workbook.report import as_text, index_report
from redis_workbook.schema import create_index


def shipped_posts() -> tuple[list[dict], np.ndarray]:
    return datasets.posts(), np.asarray(datasets.embeddings("posts", ShippedModel()), dtype=np.float32)


def load_reference_posts(r: redis.Redis, posts: list[dict], vectors: np.ndarray) -> None:
    """idx:posts as notebook 07 builds it, but FLAT (exact), loaded by the grader's reference loader."""
    load_posts(r, posts, vectors, "FLAT")


def post_ranking(posts: list[dict], vectors: np.ndarray, query: np.ndarray) -> list[tuple[str, float]]:
    dist = cosine_distances(query, vectors, [p["url"] for p in posts])
    return sorted(dist.items(), key=lambda pair: (pair[1], pair[0]))


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_load_posts_writes_hashes_and_creates_the_index(nb, r: redis.Redis) -> None:
    posts, vectors = shipped_posts()
    what = "load_posts(r, posts, embeddings)"
    count = call(what, nb.load_posts, r, posts, vectors)
    if count != len(posts):
        fail(f"`{what}` must return the number of posts written.", expected=len(posts), got=count)
    report = index_report(r, "idx:posts", "post:")
    if report.num_docs != len(posts) or report.failures:
        fail("`idx:posts` does not index every post.", expected=f"{len(posts)} documents, 0 failures",
             got=f"{report.num_docs} documents, {report.failures} failures",
             hint=report_hint(r, "idx:posts", "post:") or "Create idx:posts ON HASH PREFIX 1 post: if it is missing.")
    stored = {}
    for key in r.scan_iter(match="post:*", count=1000):
        fields = {as_text(k): v for k, v in r.hgetall(key).items()}
        stored[as_text(fields.get("url", b""))] = fields
    for post, vector in zip(posts, vectors):
        fields = stored.get(post["url"])
        if fields is None:
            fail(f"No `post:` hash has the url {post['url']!r}.", expected="one hash per post with a `url` field",
                 got=f"{len(stored)} hashes, urls like {list(stored)[:3]}")
        for name in ("title", "body"):
            if as_text(fields.get(name, b"")) != post[name]:
                fail(f"The hash of {post['url']!r} has a wrong `{name}`.", expected=show(post[name], 120),
                     got=show(as_text(fields.get(name, b"")), 120))
        if fields.get("embedding") != vector.astype("<f4").tobytes():
            fail(f"The hash of {post['url']!r} does not hold the post's vector as float32 bytes.",
                 expected=f"{vector.size * 4} bytes", got=f"{len(fields.get('embedding', b''))} bytes",
                 hint="Store `np.asarray(vector, dtype=np.float32).tobytes()` in `embedding`.")


def test_load_posts_uses_an_existing_index(nb, r: redis.Redis) -> None:
    posts, vectors = shipped_posts()
    create_index(r, post_index(vectors.shape[1]))
    what = "load_posts(r, posts, embeddings) when idx:posts already exists"
    count = call(what, nb.load_posts, r, posts[:10], vectors[:10])
    docs = index_report(r, "idx:posts").num_docs
    if count != 10 or docs != 10:
        fail(f"`{what}` must load into the existing index.", expected="10 written, 10 documents",
             got=f"{count} written, {docs} documents", hint="Create idx:posts only if it is missing.")


def test_search_posts_returns_urls_and_similarities_best_first(nb, r: redis.Redis) -> None:
    posts, vectors = shipped_posts()
    load_reference_posts(r, posts, vectors)
    blend = (vectors[0] + vectors[len(posts) // 2]).astype(np.float32)
    for query, k, label in ((vectors[3], 5, "a post's own vector"), (blend, 12, "a blend of two posts")):
        what = f"search_posts(r, <{label}>, k={k})"
        got = call(what, nb.search_posts, r, query, k=k)
        check_ranked(got, post_ranking(posts, vectors, query), k, what, similarity=True, id_name="url", prefix="")


def test_answer_sends_the_best_post_in_the_prompt(nb, r: redis.Redis, chat_server: OpenAIServer) -> None:
    embedder = HashingEmbedder(384)
    posts = datasets.posts()
    vectors = embedder.embed([datasets.post_text(p) for p in posts])
    load_reference_posts(r, posts, vectors)
    question = posts[7]["title"] + "?"
    best = posts[int(np.argmax(vectors @ embedder.embed([question])[0]))]
    what = f"answer({question!r}, r, embedder, chat)"
    got = call(what, nb.answer, question, r, embedder, chat_server.client())
    if not chat_server.chat_requests:
        fail(f"`{what}` never called the chat model.", expected="one chat.completions.create(...) call",
             hint="Call `chat.chat.completions.create(model=model, messages=[...])` with the client you are given.")
    prompt = squash(chat_server.prompts()[-1])
    if squash(best["body"]) not in prompt:
        fail(f"The prompt sent to the model does not contain the best post's text ({best['url']}).",
             expected=f"the body of {best['title']!r}, starting {show(best['body'][:80])}",
             got=f"a prompt of {len(prompt)} characters: {show(prompt[:300])}",
             hint="Embed the question, search_posts(r, vector, k=1), read that post's body from its hash, and put "
                  "it into the messages (e.g. a system message 'Answer using this post: ...').")
    if question.strip() not in prompt:
        fail("The prompt sent to the model does not contain the question.", expected=question,
             got=show(prompt[:300]), hint="Send the question as the user message.")
    if got != chat_server.chat_replies[-1]:
        fail(f"`{what}` must return the text of the model's reply.", expected=show(chat_server.chat_replies[-1]),
             got=show(got), hint="Return `reply.choices[0].message.content`.")


def test_answer_uses_the_model_it_is_given(nb, r: redis.Redis, chat_server: OpenAIServer) -> None:
    embedder = HashingEmbedder(384)
    posts = datasets.posts()[:10]
    load_reference_posts(r, posts, embedder.embed([datasets.post_text(p) for p in posts]))
    what = "answer(question, r, embedder, chat, model='grader-model-7')"
    call(what, nb.answer, posts[0]["title"], r, embedder, chat_server.client(), model="grader-model-7")
    models = [request.get("model") for request in chat_server.chat_requests]
    if models != ["grader-model-7"]:
        fail(f"`{what}` must ask the model it is given, once.", expected=["grader-model-7"], got=models,
             hint="Pass `model=model` to chat.chat.completions.create.")


# ------------------------------------------------------------------------------------------ text_search
# So that each mistake costs its own check: the questions of the ranking, k and punctuation checks have no stop word
# and no repeated word, those of the ranking and k checks no punctuation, and every check but the k one asks for
# k=10, what FT.SEARCH returns without LIMIT.
RANKED = ("How do I expire keys automatically", "Which distance metric suits normalised embeddings")
WITH_TFIDF = "When should I choose FLAT over HNSW"
SIZES = (("Redis vector search memory", 15), ("How do I expire keys automatically", None),
         ("Which distance metric suits normalised embeddings", 3))
WITH_STOPWORDS = ("What is the TTL of a key that has none", "How do I cap a list in Redis")
PUNCTUATED = ("What does @embedding:[VECTOR_RANGE 0.2 $vec] do?", "Redis: RDB vs AOF?",
              "Why use FLAT (brute force) search?", "HNSW's EF_RUNTIME default?", "Aperture f/2.8 vs 1/500s shutter?",
              "LPUSH + LTRIM -> capped list?", "JSON {documents} vs hashes?")
NO_WORDS = "~%*|-?!"
URLS = Listed("a url", "urls", "['https://...', ...]", "post:",
              "Return the `url` field (RETURN 1 url), not the document's key.", decode="the url field")
WORDS_HINT = ("Turn the question into a query: its words (`re.findall(r\"\\w+\", question.lower())`), without the "
              "stop words in STOPWORDS, OR-ed: `\" | \".join(words)`; no words, no query: return [].")


def loaded_posts(r: redis.Redis) -> None:
    posts, vectors = shipped_posts()
    load_reference_posts(r, posts, vectors)


def alternatives(r: redis.Redis, question: str, k: int, scorer: str) -> dict[str, list[str]]:
    """What the usual mistakes return for this question, each with the hint that fixes it (never crashing queries)."""
    words = reference.query_words(question)
    found = {}
    for other, hint in (("TFIDF", "FT.SEARCH without SCORER uses the server's default, TFIDF on search 2.x (BM25STD "
                                  "only from Redis 8): name the scorer, `Query(...).scorer(scorer)`."),
                        ("BM25", "SCORER BM25 is the query engine's older variant (deprecated in Redis 8.4): ask for "
                                 "BM25STD, the standard Okapi BM25."),
                        ("BM25STD", "Pass the scorer you are given: `Query(...).scorer(scorer)`.")):
        if other != scorer:
            found[hint] = [url for url, _ in reference.text_search(r, question, k, other)]
    every_word = re.findall(r"\w+", question.lower())
    and_hint = "Words separated by spaces must ALL match (an intersection); a question's words are alternatives: `|`."
    stop_hint = ("Leave the stop words out (`word not in STOPWORDS`): inside an OR list search 2.10 keeps only the "
                 "words before the first one (and crashes on two in front).")
    for query, hint in ((" ".join(words), and_hint), (" | ".join(every_word), stop_hint)):
        docs = r.ft("idx:posts").search(Query(query).scorer(scorer).return_fields("url").paging(0, k).dialect(2)).docs
        found[hint] = [as_text(doc.url) for doc in docs]
    return found


def check_text_ranking(r: redis.Redis, got: object, question: str, k: int, what: str, scorer: str = "BM25STD",
                       any_scorer: bool = False) -> None:
    """got must be the k best posts by `scorer` for the question's words; posts with equal scores in any order.

    any_scorer: the check is about something else (LIMIT, stop words, punctuation), so a ranking by another
    scorer passes too: a scorer mistake costs only the check that asks for the scorer.
    """
    urls = check_id_list(got, what, URLS)
    if len(set(urls)) != len(urls):
        fail(f"`{what}` returned the same url twice.", got=urls)
    tried = (scorer, *(other for other in ("TFIDF", "BM25", "BM25STD") if other != scorer)) if any_scorer else (scorer,)
    for candidate in tried:
        ranking = reference.text_search(r, question, 100, candidate)
        scores, want = dict(ranking), min(k, len(ranking))
        got_scores = [scores.get(url) for url in urls]
        best = [score for _, score in ranking[:want]]
        if len(urls) == want and None not in got_scores and all(abs(a - b) <= 1e-9 for a, b in zip(got_scores, best)):
            return
    ranking = reference.text_search(r, question, 100, scorer)
    want = min(k, len(ranking))
    if len(urls) == 10 and want > 10:
        fail(f"`{what}` returned 10 posts.", expected=f"{want}", got="10", hint=LIMIT_HINT)
    diagnosis = next((hint for hint, other in alternatives(r, question, k, scorer).items()
                      if other == urls and other != [url for url, _ in ranking[:k]]), None)
    fail(f"`{what}` is not the {scorer} ranking of the question's words.",
         expected=[url.rsplit("/", 1)[-1] for url, _ in ranking[:want]], got=[url.rsplit("/", 1)[-1] for url in urls],
         hint=diagnosis or f"{WORDS_HINT} Then FT.SEARCH idx:posts <query> SCORER {scorer} RETURN 1 url LIMIT 0 k "
                           "DIALECT 2, and keep Redis's order.")


def test_text_search_ranks_by_the_scorer_asked_for(nb, r: redis.Redis) -> None:
    loaded_posts(r)
    for question in RANKED:
        what = f"text_search(r, {question!r}, k=10)"
        check_text_ranking(r, call(what, nb.text_search, r, question, k=10), question, 10, what)
    what = f"text_search(r, {WITH_TFIDF!r}, k=10, scorer='TFIDF')"
    got = call(what, nb.text_search, r, WITH_TFIDF, k=10, scorer="TFIDF")
    check_text_ranking(r, got, WITH_TFIDF, 10, what, "TFIDF")


def test_text_search_returns_k_results(nb, r: redis.Redis) -> None:
    loaded_posts(r)
    for question, k in SIZES:
        what = f"text_search(r, {question!r}{'' if k is None else f', k={k}'})"
        got = call(what, nb.text_search, r, question) if k is None else call(what, nb.text_search, r, question, k=k)
        check_text_ranking(r, got, question, 5 if k is None else k, what, any_scorer=True)


def test_text_search_leaves_the_stop_words_out(nb, r: redis.Redis) -> None:
    loaded_posts(r)
    for question in WITH_STOPWORDS:
        what = f"text_search(r, {question!r}, k=10)"
        check_text_ranking(r, call(what, nb.text_search, r, question, k=10), question, 10, what, any_scorer=True)


def test_text_search_survives_punctuation(nb, r: redis.Redis) -> None:
    loaded_posts(r)
    for question in (*PUNCTUATED, NO_WORDS):
        what = f"text_search(r, {question!r}, k=10)"
        try:
            got = nb.text_search(r, question, k=10)
        except NotImplementedError:
            fail(f"`{what}`: the function is not written yet (it raises NotImplementedError).", hint=NOT_WRITTEN_HINT)
        except Exception as exc:  # learner code may raise anything
            fail(f"`{what}` raised {type(exc).__name__}: {str(exc)[:300]}",
                 hint="Punctuation is query syntax (`@field:`, `[ranges]`, `{tags}`, `$params`, `-` negation, `|`): "
                      f"never send a question as it is. {WORDS_HINT}")
        if question == NO_WORDS and got != []:
            fail(f"`{what}` must return [] for a question without words.", expected=[], got=show(got, 300),
                 hint="Check the words before querying: an empty query (or `*`) matches every post.")
        check_text_ranking(r, got, question, 10, what, any_scorer=True)


# ------------------------------------------------------------------------------------------ reciprocal_rank_fusion
def rrf_scores(rankings: list[list[str]], k: int = 60, start: int = 1, reciprocal: bool = True,
               use_k: bool = True) -> dict[str, Fraction]:
    """Exact RRF scores (and the usual mistakes': ranks from 0, 1/rank without k, plain sums of ranks)."""
    scores: dict[str, Fraction] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=start):
            term = Fraction(1, (k if use_k else 0) + rank) if reciprocal else Fraction(rank)
            scores[item] = scores.get(item, Fraction(0)) + term
    return scores


def fused(scores: dict[str, Fraction], descending: bool = True) -> list[str]:
    return sorted(scores, key=scores.__getitem__, reverse=descending)  # stable: ties keep first-seen order


def rrf_call(nb, rankings: list[list[str]], **kwargs: object) -> tuple[str, list[str]]:
    extra = "".join(f", {name}={value!r}" for name, value in kwargs.items())
    what = f"reciprocal_rank_fusion({rankings!r}{extra})"
    got = call(what, nb.reciprocal_rank_fusion, rankings, **kwargs)
    if not isinstance(got, list) or not all(isinstance(item, str) for item in got):
        fail(f"`{what}` must return a list of the ids, best first.", expected="list[str]", got=show(got, 300),
             hint="Return the ids only, sorted by their fused score: `sorted(scores, key=scores.get, reverse=True)`.")
    return what, got


def test_reciprocal_rank_fusion_sums_one_over_k_plus_rank(nb) -> None:
    cases = (([["e", "b", "a", "d"], ["d", "b", "a", "c", "e"]], {"k": 10}),
             ([["a", "b", "c"], ["d", "a", "b", "c"]], {"k": 1}),
             ([["a", "b", "c"], ["d", "a", "b", "c"]], {}),
             ([["a", "b", "c", "d"], ["c", "d"], ["d"]], {"k": 10}))
    for rankings, kwargs in cases:
        k = int(kwargs.get("k", 60))  # type: ignore[call-overload]
        what, got = rrf_call(nb, rankings, **kwargs)
        scores = rrf_scores(rankings, k)
        want = fused(scores)
        if got == want:
            continue
        mistakes = {"Ranks start at 1 (`enumerate(ranking, start=1)`): the first item adds 1/(k + 1), not 1/k.":
                    fused(rrf_scores(rankings, k, start=0)),
                    "The score of an id is a sum of RECIPROCAL ranks, 1/(k + rank), one term per list it is in; "
                    "adding up ranks (or sorting by them) is another method, and it ignores k.":
                    fused(rrf_scores(rankings, reciprocal=False), descending=False),
                    "Use the k you are given: each term is 1/(k + rank), with k=60 only by default.":
                    fused(rrf_scores(rankings, use_k=False)) if k != 60 else [],
                    "The default is k=60 (`def reciprocal_rank_fusion(rankings, k=60, top=None)`).":
                    fused(rrf_scores(rankings, 1)) if k == 60 else []}
        if k != 60:
            mistakes["Use the k you are given, not 60 every time."] = fused(rrf_scores(rankings, 60))
        usual = "Sum 1/(k + rank) over the lists each id is in (rank from 1), then sort by the sums, highest first."
        hint = next((text for text, order in mistakes.items() if order == got), usual)
        table = ", ".join(f"{item} {float(value):.4f}" for item, value in sorted(scores.items(), key=lambda p: -p[1]))
        fail(f"`{what}` did not rank the ids by their fused score.", expected=f"{want} (scores: {table})", got=got,
             hint=hint)


def test_reciprocal_rank_fusion_breaks_ties_by_first_appearance(nb) -> None:
    left = [f"a{i}" for i in range(1, 13)]
    right = [f"b{i}" for i in range(1, 13)]
    for rankings in ([left, right], [["x", "y"], ["y", "x"]]):
        what, got = rrf_call(nb, rankings)
        want = fused(rrf_scores(rankings))
        if got != want:
            fail(f"`{what}`: ids with equal scores must keep the order in which they first appear "
                 "(the first list's before the second's).", expected=want, got=got,
                 hint="`sorted(scores, key=scores.get, reverse=True)` over a dict filled list by list is stable and "
                      "keeps first-seen order; a set has no order, and a tie-break on the id is another order.")


def test_reciprocal_rank_fusion_returns_each_id_once_and_cuts_at_top(nb) -> None:
    rankings = [["a", "b", "c"], ["c", "b", "d"]]
    what, got = rrf_call(nb, rankings)
    if sorted(got) != ["a", "b", "c", "d"]:
        fail(f"`{what}` must return every id of every list, once.", expected="a, b, c and d in some order",
             got=got, hint="Add up the terms in a dict keyed by id (`scores[item] = scores.get(item, 0) + ...`), "
                           "then sort its keys: an id in both lists is one entry with two terms.")
    single = [["a", "b", "c", "d", "e"]]
    for top, want in ((2, ["a", "b"]), (9, ["a", "b", "c", "d", "e"]), (None, ["a", "b", "c", "d", "e"])):
        what, got = rrf_call(nb, single, top=top)
        if got != want:
            fail(f"`{what}` must return the best {top if top is not None else 'all'} ids.", expected=want, got=got,
                 hint="Cut the sorted ids at the end: `fused[:top]` (a slice `[:None]` keeps them all).")
    what, got = rrf_call(nb, [])
    if got != []:
        fail(f"`{what}`: no lists, no ids.", expected=[], got=got)


# ------------------------------------------------------------------------------------------ evaluate
# The relevant url of each question is "x" (the fifth, "x" or "y"); k=5. First relevant rank: 1, 4, 6, -, 1, 5.
EVAL_RANKINGS = [["x", "a", "b", "c", "d"], ["a", "b", "c", "x"], ["a", "b", "c", "d", "e", "x"], [],
                 ["y", "x", "a"], ["a", "b", "c", "d", "x", "e"]]
EVAL_RELEVANT = [["x"], ["x"], ["x"], ["x"], ["x", "y"], ["x"]]


def evaluated(nb, key: str, k: int) -> float:
    what = f"evaluate(rankings, relevant, k={k})  # rankings={EVAL_RANKINGS}, relevant={EVAL_RELEVANT}"
    got = call(what, nb.evaluate, EVAL_RANKINGS, EVAL_RELEVANT, k=k)
    if not isinstance(got, dict) or key not in got:
        fail(f"`{what}` must return a dict with the keys 'hit@k' and 'mrr'.", expected="{'hit@k': ..., 'mrr': ...}",
             got=show(got, 300), hint="Return `{\"hit@k\": hits / n, \"mrr\": total / n}`.")
    value = got[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"`{what}`[{key!r}] must be a number.", expected="a float between 0 and 1", got=show(value))
    return float(value)


def test_evaluate_hit_at_k_looks_at_the_first_k(nb) -> None:
    for k, want, one_more, one_less in ((5, 4 / 6, 5 / 6, 3 / 6), (1, 2 / 6, 3 / 6, 0.0), (4, 3 / 6, 4 / 6, 2 / 6)):
        got = evaluated(nb, "hit@k", k)
        if abs(got - want) <= 1e-9:
            continue
        hint = ("A question counts once, whichever of its relevant urls comes first in `ranking[:k]`; divide by the "
                "number of questions, those without a hit included.")
        if abs(got - one_more) <= 1e-9:
            hint = "That counts a url at rank k + 1 too: look at `ranking[:k]`, the first k."
        elif abs(got - one_less) <= 1e-9:
            hint = "That misses a url at rank k: `ranking[:k]` holds the first k (ranks 1 to k)."
        fail(f"evaluate(..., k={k})['hit@k'] is the share of questions with a relevant url in their first {k}.",
             expected=f"{want:.4f} (first relevant ranks: 1, 4, 6, none, 1, 5)", got=f"{got:.4f}", hint=hint)


def test_evaluate_mrr_is_the_mean_reciprocal_rank_of_the_first_relevant(nb) -> None:
    for k, want in ((5, (1 + 1 / 4 + 0 + 0 + 1 + 1 / 5) / 6), (3, (1 + 0 + 0 + 0 + 1 + 0) / 6)):
        got = evaluated(nb, "mrr", k)
        if abs(got - want) > 1e-9:
            only_first = (1 + 1) / 6
            fail(f"evaluate(..., k={k})['mrr'] is the mean over questions of 1 / the rank of the first relevant url "
                 f"within the first {k} (0 when there is none).",
                 expected=f"{want:.4f} (first relevant ranks: 1, 4, 6, none, 1, 5)", got=f"{got:.4f}",
                 hint="A relevant url at rank 4 adds 1/4, not 0: that is what separates MRR from 'hit@1'."
                      if k == 5 and abs(got - only_first) < 1e-9 else
                      "Per question: the reciprocal rank (rank from 1) of its first relevant url in `ranking[:k]`, "
                      "or 0; then the mean over all questions, those without a hit included.")


def test_evaluate_refuses_lists_of_different_lengths(nb) -> None:
    for rankings, relevant in (([["a"], ["b"]], [["a"]]), ([["a"]], [["a"], ["b"]])):
        what = f"evaluate({rankings!r}, {relevant!r})"
        expect_error(what, nb.evaluate, rankings, relevant, kinds=(ValueError,))
    what = "evaluate([['a', 'b']], [['a']], k=1)"
    got = call(what, nb.evaluate, [["a", "b"]], [["a"]], k=1)
    works_first(what, got, isinstance(got, dict) and got.get("hit@k") == 1 and got.get("mrr") == 1,
                expected={"hit@k": 1.0, "mrr": 1.0})
