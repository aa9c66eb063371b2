"""Notebook 07's retrieval evaluation graded where learners are graded: its full-text commands under the restricted
learner user, the shipped questions safe for a text_search that still sends stop words, and `redis-workbook check`
(sandboxed) giving the solution full marks and a one-mistake notebook all but one check."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from grader_mutants import MUTANTS
from redis.commands.search.field import TextField
from redis.commands.search.index_definition import IndexDefinition
from submissions import REPO, write_notebook
from test_grading_check import run_check

from redis_workbook import datasets
from redis_workbook.grading import backends, points
from redis_workbook.report import as_text

sys.path.insert(0, str(REPO / "grader"))
import reference  # noqa: E402
from feedback import ShippedModel  # noqa: E402

ASSIGNMENT = "07_rag"
POINTS = points.read(REPO / "grader" / "points.toml")[ASSIGNMENT]
TOTAL = sum(POINTS.values())
SHOWN = points.format_points(TOTAL)
SCORE = re.compile(r"Total: ([0-9.]+)/([0-9.]+) points")


@pytest.fixture(scope="module")
def learner() -> Iterator[redis.Redis]:
    """A client of the grader's Redis logged in as the learner user (LEARNER_RULES), as learner code is."""
    server = backends.start("embedded")
    client = redis.Redis.from_url(server.learner_url)
    yield client
    client.close()
    server.stop()


def test_the_learner_user_may_run_the_full_text_commands(learner: redis.Redis) -> None:
    """What 07's evaluation sends: FT.SEARCH with SCORER, FT.EXPLAIN on a throwaway index, FT.DROPINDEX."""
    posts = datasets.posts()
    reference.load_posts(learner, posts, datasets.embeddings("posts", ShippedModel()))
    for scorer in ("BM25STD", "BM25", "TFIDF"):
        found = reference.text_search(learner, "How do I expire keys automatically", 3, scorer)
        assert len(found) == 3 and all(url.startswith("https://blog.example.com/") for url, _ in found), scorer
    learner.ft("demo:stopwords").create_index([TextField("body")], definition=IndexDefinition(prefix=["demo:s:"]))
    plan = as_text(learner.execute_command("FT.EXPLAIN", "demo:stopwords", "what | ttl | key", "DIALECT", 2))
    assert re.findall(r"^\s*(\w+)$", plan, re.M) == ["what", "ttl", "key"]
    learner.ft("demo:stopwords").dropindex()


def test_stop_words_in_an_or_list_do_not_take_the_server_down_on_the_shipped_questions(learner: redis.Redis) -> None:
    """A learner's text_search that forgets STOPWORDS sends every word; search 2.10 crashes on two stop words in
    front of an OR list, so the shipped questions avoid that and the learner only loses the stop-word check."""
    reference.load_posts(learner, datasets.posts(), datasets.embeddings("posts", ShippedModel()))
    for question in datasets.post_questions():
        words = re.findall(r"\w+", question["question"].lower())
        learner.ft("idx:posts").search(" | ".join(words))
        assert learner.ping(), question


def test_check_gives_the_solution_full_marks() -> None:
    done = run_check(str(REPO / "solutions" / f"{ASSIGNMENT}.ipynb"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and f"Total: {SHOWN}/{SHOWN} points" in done.stdout, done.stdout


def test_check_a_notebook_with_one_mistake_loses_exactly_that_check(tmp_path: Path) -> None:
    mutant = next(m for m in MUTANTS if m.name == "RRF ranks start at 0")
    done = run_check(str(write_notebook(tmp_path / f"{ASSIGNMENT}.ipynb", mutant.source())))
    assert done.returncode == 1, done.stdout + done.stderr
    failed = re.findall(r"^FAIL  (\S+)", done.stdout, flags=re.MULTILINE)
    assert failed == [mutant.check], done.stdout
    score = SCORE.search(done.stdout)
    assert score is not None, done.stdout
    assert float(score.group(1)) == TOTAL - POINTS[mutant.check] and float(score.group(2)) == TOTAL, done.stdout
