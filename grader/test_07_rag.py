"""07_rag: `load_posts`, `search_posts`, and `answer` through a real openai client on a local server."""

from __future__ import annotations

import re

import numpy as np
import redis
from feedback import ShippedModel, call, check_ranked, cosine_distances, fail, report_hint, show
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
