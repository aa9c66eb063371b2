"""redis-workbook: the helper package behind the vector-search-on-Redis workbook.

The notebooks use it for setup chores (finding Redis, embeddings, shipped data,
the product catalogue of notebooks 03-06) and leave the Redis commands themselves
in plain sight. It holds no answer to an exercise: every function a notebook asks
for is written by the learner, and the grader keeps its reference copies outside
this package (grader/reference.py).
"""

from redis_workbook import exercises as _exercises
from redis_workbook.connection import connect, redis_url
from redis_workbook.embeddings import (
    Embedder,
    HashingEmbedder,
    LocalEmbedder,
    OpenAIEmbedder,
    default_embedder,
)
from redis_workbook.errors import (
    EmbeddedServerUnavailable,
    RedisUnavailable,
    SearchModuleMissing,
    WorkbookError,
)
from redis_workbook.report import index_report
from redis_workbook.server import EmbeddedRedis

__all__ = [
    "EmbeddedRedis", "EmbeddedServerUnavailable", "Embedder", "HashingEmbedder", "LocalEmbedder",
    "OpenAIEmbedder", "RedisUnavailable", "SearchModuleMissing", "WorkbookError", "connect",
    "default_embedder", "index_report", "redis_url",
]
__version__ = "0.1.0"

_exercises.install()  # in a Jupyter kernel: unfinished exercises get one message, their demos no traceback
