"""How the workbook measures speed, recall and memory: the one source of every figure.

`redis-workbook bench` and notebook 08 both call these functions, so a number in
the README and a number on a learner's plot are measured the same way. Each
function measures one thing on the Redis it is given and leaves the timing
choices (warm-up, percentiles, what counts as "loaded") in one place.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import redis
from redis.commands.search.field import TagField

from redis_workbook.loading import interactive, write_hashes
from redis_workbook.report import as_text, ft_info, unknown_index, wait_indexed
from redis_workbook.schema import IndexSpec, check_algorithm, create_index, vector_field
from redis_workbook.server import EmbeddedRedis

K = 10
DEFAULT_EF_RUNTIME = 10  # what RediSearch's HNSW uses when a query sets no EF_RUNTIME
EF_SWEEP = (10, 20, 40, 80, 120, 160, 200, 240, 320, 400, 640)  # dense where recall crosses 0.95
RECALL_TARGET = 0.95
RULE_OF_THUMB_OVERHEAD = 1.3  # "vectors x dims x 4 bytes x 1.3"
CATEGORIES = 10

# Synthetic "embedding-like" vectors: real sentence embeddings are not spread evenly over
# all 384 directions. Measured on the 525 distinct shipped texts (products, posts, query
# pairs) embedded with all-MiniLM-L6-v2: the variance along the i-th principal direction
# falls roughly as i ** -0.85 (fitted slopes run from -0.6 at the head to -1.1 in the
# tail), and the mean of the unit vectors has length 0.22 (every embedding leans the
# same way a little). Independent Gaussian vectors ("iid") are the worst case for any
# ANN index; they are available too, and notebook 08 shows the difference.
SPECTRUM_EXPONENT = 0.85
MEAN_LENGTH = 0.22
DATA_KINDS = ("embedding-like", "iid")


# ------------------------------------------------------------------ data


def unit_vectors(n: int, dim: int, seed: int = 0, kind: str = "embedding-like") -> np.ndarray:
    """`n` seeded random float32 unit vectors of width `dim`; no model needed."""
    if kind not in DATA_KINDS:
        raise ValueError(f"kind must be one of {DATA_KINDS}, got {kind!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    if kind == "embedding-like":
        scale = np.arange(1, dim + 1, dtype=np.float32) ** (-SPECTRUM_EXPONENT / 2)
        mean = np.random.default_rng(dim).standard_normal(dim).astype(np.float32)  # same for every seed
        mean *= MEAN_LENGTH * np.linalg.norm(scale) / np.linalg.norm(mean)
        noise = noise * scale + mean
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return noise


def bench_records(n: int, start: int = 0) -> list[dict[str, object]]:
    """One small record per vector (ids start, start+1, ...): an id and a category tag, like a product sans text."""
    return [{"id": str(i), "category": f"c{i % CATEGORIES}"} for i in range(start, start + n)]


def bench_index(dim: int, algorithm: str = "HNSW", tag: str = "perf") -> IndexSpec:
    """A HASH index with a tag and a vector field built by schema.vector_field (M, EF_CONSTRUCTION as taught)."""
    algorithm = check_algorithm(algorithm)
    fields = (TagField("category"), vector_field(dim, algorithm))
    return IndexSpec(f"idx:{tag}:{algorithm.lower()}", f"{tag}:{algorithm.lower()}:", fields)


def exact_top_k(matrix: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row numbers of each query's k most cosine-similar rows (unit vectors: dot product), best first."""
    result = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):  # 64 queries at a time keeps the score matrix small
        scores = queries[start:start + 64] @ matrix.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        result[start:start + 64] = np.take_along_axis(top, order, axis=1)
    return result


def numpy_knn(matrix: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    """Brute-force top-k for one query: what you would write without a vector database."""
    scores = matrix @ query
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


# ------------------------------------------------------------------ timing helpers


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, q))


def server_start_seconds(repeats: int = 5) -> float:
    """Median time from starting an embedded redis-server process to its first PONG."""
    samples = []
    for _ in range(repeats):
        server = EmbeddedRedis().start()
        samples.append(server.start_seconds)
        server.stop()
    return statistics.median(samples)


# ------------------------------------------------------------------ indexes and loading


def drop_index(r: redis.Redis, spec: IndexSpec) -> None:
    """FT.DROPINDEX ... DD: the index and its documents, nothing else."""
    try:
        r.execute_command("FT.DROPINDEX", spec.name, "DD")
    except redis.ResponseError as exc:
        if not unknown_index(exc):
            raise


def fresh_index(r: redis.Redis, spec: IndexSpec) -> None:
    """Drop and create `spec`, then wait for FT.CREATE's background scan of the keyspace to finish.

    FT.CREATE scans every existing key for ones it should index, on a background thread that
    takes Redis's lock in turns with the main thread. A load started during that scan competes
    with it (measured: up to 3x slower when other indexes' keys fill the keyspace), so the clock
    starts only when the index is idle.
    """
    drop_index(r, spec)
    create_index(r, spec)
    wait_indexed(r, spec.name, 0, timeout=600)


Loader = Callable[[redis.Redis, IndexSpec, list, np.ndarray, bool], object]


def load_bulk(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray, progress: bool) -> object:
    """The workbook's streaming writer (redis_workbook.loading.write_hashes): pipelined batches of raw RESP."""
    keys = [f"{spec.prefix}{record['id']}" for record in records]
    write_hashes(r, keys, records, matrix, vector_field=spec.vector_field, progress=progress, desc="write_hashes")
    return None


def load_naive(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray, progress: bool) -> object:
    """One HSET per round trip: the loop most first attempts look like."""
    from tqdm.auto import tqdm

    for record, row in tqdm(zip(records, matrix), total=len(records), desc="one HSET each",
                            unit="doc", disable=not progress):
        r.hset(f"{spec.prefix}{record['id']}", mapping={**record, spec.vector_field: row.tobytes()})
    return None


def load_redisvl(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray, progress: bool) -> object:
    """RedisVL's SearchIndex.load with its defaults, given the vectors as bytes as its docs show."""
    from redisvl.index import SearchIndex
    from redisvl.schema import IndexSchema

    schema = IndexSchema.from_dict({"index": {"name": spec.name, "prefix": spec.prefix, "storage_type": "hash"},
                                    "fields": redisvl_fields(spec)})
    data = [{**record, spec.vector_field: row.tobytes()} for record, row in zip(records, matrix)]
    return SearchIndex(schema, redis_client=r).load(data, id_field="id")


def redisvl_fields(spec: IndexSpec) -> list[dict[str, object]]:
    """The index's fields in RedisVL's schema words, translated from the redis-py fields (one definition)."""
    fields: list[dict[str, object]] = []
    for field in spec.fields:
        kind, *rest = field.args
        if kind != "VECTOR":
            fields.append({"name": field.name, "type": str(kind).lower()})
            continue
        algorithm, _count, *pairs = rest
        attrs = {str(key).lower(): value for key, value in zip(pairs[::2], pairs[1::2])}
        translated = {"algorithm": algorithm.lower(), "dims": attrs.pop("dim"),
                      "datatype": attrs.pop("type").lower(), "distance_metric": attrs.pop("distance_metric").lower()}
        fields.append({"name": field.name, "type": "vector", "attrs": translated | attrs})
    return fields


LOADERS: dict[str, Loader] = {"bulk": load_bulk, "naive": load_naive, "redisvl": load_redisvl}


def time_inserts(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray) -> list[float]:
    """Seconds per single HSET (one round trip each) into the existing index: what one write waits."""
    seconds = []
    for record, row in zip(records, matrix, strict=True):
        key, mapping = f"{spec.prefix}{record['id']}", {**record, spec.vector_field: row.tobytes()}
        started = time.perf_counter()
        r.hset(key, mapping=mapping)
        seconds.append(time.perf_counter() - started)
    return seconds


@dataclass(frozen=True)
class LoadResult:
    """One timed load into a fresh index, and where its time went.

    `seconds` is wall time until FT.INFO counts every document. The profile: CPU the
    Python process used (packing, sending, reading replies), CPU Redis's main thread
    used (INFO cpu: parsing, HSET, indexing), and of that, the query engine's own
    indexing time (FT.INFO total_indexing_time). On 2 cores the two sides overlap.
    """

    loader: str
    index: str
    n: int
    seconds: float
    client_cpu_seconds: float
    server_cpu_seconds: float
    indexing_seconds: float

    @property
    def per_s(self) -> float:
        return self.n / self.seconds

    def share(self, part: str) -> float:
        """`client_cpu`, `server_cpu` or `indexing` as a share of the wall time."""
        return float(getattr(self, f"{part}_seconds")) / self.seconds


def time_load(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray, loader: str = "bulk",
              progress: bool | None = None) -> LoadResult:
    """Create `spec` afresh, load the records with `loader`, and time it until FT.INFO counts them all."""
    fresh_index(r, spec)
    show = interactive() if progress is None else progress
    server_before, client_before = server_cpu_seconds(r), time.process_time()
    started = time.perf_counter()
    LOADERS[loader](r, spec, records, matrix, show)
    wait_indexed(r, spec.name, len(records), timeout=600)
    seconds = time.perf_counter() - started
    client = time.process_time() - client_before
    indexing_ms = float(ft_info(r, spec.name)["total_indexing_time"])
    return LoadResult(loader, spec.name, len(records), seconds, client, server_cpu_seconds(r) - server_before,
                      indexing_ms / 1e3)


def load_race(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray, loaders: Sequence[str],
              rounds: int) -> dict[str, list[LoadResult]]:
    """Each loader `rounds` times into `spec`, in rotating order, after one untimed load: every loader timed alike.

    Timed alike because the order mattered: a load into memory Redis has not used yet is slower (page
    faults as it grows: measured 30% more main-thread CPU per load of 10,000 vectors), so one untimed
    load comes first, and each timed load then starts from the same state, an empty index of the same
    name. time_load's FT.DROPINDEX DD empties it and leaves the freed pages with Redis's allocator for
    the next load. FLUSHALL SYNC returns them to the OS (jemalloc purge), so every load pays for them
    again: measured 10-20% more main-thread CPU per load of 10,000 vectors, 6% on 100,000, where the
    drop's background freeing cost 4% instead; FLUSHALL ASYNC frees on a background thread while the
    next load runs. No fork GC ran during either (no child CPU). Rotating the order (a, b, c; b, c, a;
    ...) spreads the machine's other work over every loader.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}.")
    time_load(r, spec, records, matrix, loaders[0], progress=False)
    runs: dict[str, list[LoadResult]] = {loader: [] for loader in loaders}
    for i in range(rounds):
        shift = i % len(loaders)
        for loader in [*loaders[shift:], *loaders[:shift]]:
            runs[loader].append(time_load(r, spec, records, matrix, loader, progress=False))
    return runs


def server_cpu_seconds(r: redis.Redis) -> float:
    """CPU seconds Redis's main thread has used (where commands and indexing run)."""
    cpu = r.info("cpu")
    if "used_cpu_user_main_thread" in cpu:
        return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


# ------------------------------------------------------------------ queries


def knn_args(spec: IndexSpec, query: np.ndarray, k: int = K, ef_runtime: int | None = None,
             vtype: str = "FLOAT32") -> list[object]:
    """The FT.SEARCH arguments of a KNN query returning ids and distances, nearest first."""
    ef = "" if ef_runtime is None else " EF_RUNTIME $ef"
    params: list[object] = ["vec", typed_rows(np.asarray(query)[None], vtype)[0]]
    params += [] if ef_runtime is None else ["ef", ef_runtime]
    return ["FT.SEARCH", spec.name, f"*=>[KNN {k} @{spec.vector_field} $vec{ef} AS dist]",
            "PARAMS", len(params), *params, "SORTBY", "dist", "RETURN", 1, "dist",
            "LIMIT", 0, k, "DIALECT", 2]


def reply_ids(reply: object, prefix: str) -> list[int]:
    """Row numbers from an FT.SEARCH reply (RESP3 dict or RESP2 list), keys `prefix<row>`."""
    if isinstance(reply, Mapping):
        keys = [doc[b"id"] if b"id" in doc else doc["id"] for doc in reply.get(b"results", reply.get("results", []))]
    else:
        keys = list(reply)[1::2]  # type: ignore[call-overload]
    return [int((key.decode() if isinstance(key, bytes) else key)[len(prefix):]) for key in keys]


@dataclass(frozen=True)
class QueryRun:
    """Single-query latencies and what each query returned."""

    seconds: list[float]
    ids: list[list[int]]

    @property
    def p50_ms(self) -> float:
        return percentile_ms(self.seconds, 50)

    @property
    def p99_ms(self) -> float:
        return percentile_ms(self.seconds, 99)

    def recall(self, exact: np.ndarray) -> float:
        """Mean recall@k over the run: the share of all exact top-k row numbers (one row per query) it found.

        Computed over the whole (queries x k) run at once; notebook 08 has the learner write the
        per-query `recall_at_k` and checks it against this.
        """
        if exact.ndim != 2 or len(exact) != len(self.ids):
            raise ValueError(f"exact must hold one row of row numbers per query ({len(self.ids)}), "
                             f"got shape {exact.shape}.")
        found = sum(int(np.isin(exact[i], ids).sum()) for i, ids in enumerate(self.ids))
        return found / exact.size


def time_queries(r: redis.Redis, spec: IndexSpec, queries: np.ndarray, k: int = K,
                 ef_runtime: int | None = None, warmup: int = 20, vtype: str = "FLOAT32") -> QueryRun:
    """One FT.SEARCH round trip per query, each timed on its own (what an application's request waits)."""
    for query in queries[:warmup]:
        r.execute_command(*knn_args(spec, query, k, ef_runtime, vtype))
    seconds, ids = [], []
    for query in queries:
        args = knn_args(spec, query, k, ef_runtime, vtype)
        started = time.perf_counter()
        reply = r.execute_command(*args)
        seconds.append(time.perf_counter() - started)
        ids.append(reply_ids(reply, spec.prefix))
    return QueryRun(seconds, ids)


def time_queries_in_server(r: redis.Redis, spec: IndexSpec, queries: np.ndarray, k: int = K,
                           ef_runtime: int | None = None, warmup: int = 20) -> tuple[QueryRun, list[float]]:
    """time_queries, and the seconds each query spent executing inside Redis, in the same order.

    Read from SLOWLOG, told for this run to log every command (both settings are put back): an
    entry's duration is the command's execution alone, so what is left of a query's round trip
    is the network, Redis reading the request and writing the reply, and the client encoding
    the query and parsing the reply.
    """
    settings = {name: r.config_get(name)[name] for name in ("slowlog-log-slower-than", "slowlog-max-len")}
    r.config_set("slowlog-max-len", len(queries) + warmup + 16)
    r.config_set("slowlog-log-slower-than", 0)
    try:
        r.slowlog_reset()
        run = time_queries(r, spec, queries, k, ef_runtime, warmup)
        entries = [entry for entry in r.slowlog_get(len(queries) + warmup + 16)
                   if as_text(entry["command"]).startswith("FT.SEARCH")]
    finally:
        for name, value in settings.items():
            r.config_set(name, value)
    return run, [entry["duration"] / 1e6 for entry in reversed(entries[:len(queries)])]  # newest first: reversed


def time_batch(r: redis.Redis, spec: IndexSpec, queries: np.ndarray, k: int = K,
               ef_runtime: int | None = None, repeats: int = 5) -> float:
    """Median seconds for all `queries` sent in one pipeline (one round trip)."""
    samples = []
    for _ in range(repeats):
        pipe = r.pipeline(transaction=False)
        for query in queries:
            pipe.execute_command(*knn_args(spec, query, k, ef_runtime))
        started = time.perf_counter()
        pipe.execute()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def time_numpy(matrix: np.ndarray, queries: np.ndarray, k: int = K) -> list[float]:
    """Seconds per brute-force numpy query, one query at a time like the Redis figures."""
    numpy_knn(matrix, queries[0], k)
    samples = []
    for query in queries:
        started = time.perf_counter()
        numpy_knn(matrix, query, k)
        samples.append(time.perf_counter() - started)
    return samples


@dataclass(frozen=True)
class SweepPoint:
    ef_runtime: int
    recall: float
    p50_ms: float
    p99_ms: float


def recall_sweep(r: redis.Redis, spec: IndexSpec, queries: np.ndarray, exact: np.ndarray,
                 efs: Sequence[int] = EF_SWEEP, k: int = K, past_target: int | None = None) -> list[SweepPoint]:
    """Recall@k and latency as EF_RUNTIME grows: the HNSW accuracy/speed dial.

    `past_target`: stop that many points after the first one meeting RECALL_TARGET (the slowest, largest
    EFs are then not timed: bench --quick); None sweeps every EF.
    """
    points: list[SweepPoint] = []
    for ef in efs:
        run = time_queries(r, spec, queries, k, ef)
        points.append(SweepPoint(ef, run.recall(exact), run.p50_ms, run.p99_ms))
        meeting = [i for i, point in enumerate(points) if point.recall >= RECALL_TARGET]
        if past_target is not None and meeting and len(points) - 1 - meeting[0] >= past_target:
            break
    return points


def pick_ef(points: Sequence[SweepPoint], target: float = RECALL_TARGET) -> SweepPoint:
    """The smallest EF_RUNTIME whose recall meets the target (the largest tried when none does)."""
    meeting = [p for p in points if p.recall >= target]
    return min(meeting, key=lambda p: p.ef_runtime) if meeting else max(points, key=lambda p: p.ef_runtime)


# ------------------------------------------------------------------ memory


def used_memory(r: redis.Redis) -> int:
    """INFO memory's used_memory: everything Redis has allocated, in bytes."""
    return int(r.info("memory")["used_memory"])


def rule_of_thumb_bytes(n: int, dim: int) -> float:
    """The planning rule: vectors x dims x 4 bytes (float32) x 1.3 for index overhead."""
    return n * dim * 4 * RULE_OF_THUMB_OVERHEAD


@dataclass(frozen=True)
class MemoryReport:
    n: int
    dim: int
    used_bytes: int  # INFO memory used_memory after the load minus before it
    vector_index_bytes: float  # FT.INFO vector_index_sz_mb: the HNSW/FLAT structure alone

    @property
    def bytes_per_vector(self) -> float:
        return self.used_bytes / self.n

    @property
    def rule_bytes(self) -> float:
        return rule_of_thumb_bytes(self.n, self.dim)


def memory_report(r: redis.Redis, spec: IndexSpec, n: int, dim: int, before: int) -> MemoryReport:
    """Memory the load added (`before` = used_memory taken before it) next to the index's own share."""
    info = ft_info(r, spec.name)
    return MemoryReport(n, dim, used_memory(r) - before, float(info["vector_index_sz_mb"]) * 2**20)


# ------------------------------------------------------------------ the limits: peers outside Redis


def load_pipeline(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray, progress: bool,
                  batch: int = 1_000) -> object:
    """A plain redis-py pipeline: `hset(mapping=...)` per record, `execute()` every `batch` records."""
    pipe = r.pipeline(transaction=False)
    for i, (record, row) in enumerate(zip(records, matrix), 1):
        pipe.hset(f"{spec.prefix}{record['id']}", mapping={**record, spec.vector_field: row.tobytes()})
        if i % batch == 0:
            pipe.execute()
    pipe.execute()
    return None


LOADERS["pipeline"] = load_pipeline


def time_ping(r: redis.Redis, repeats: int = 200) -> list[float]:
    """Seconds per PING: the round trip alone, the floor under every single-query figure."""
    r.ping()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        r.ping()
        samples.append(time.perf_counter() - started)
    return samples


def time_numpy_batch(matrix: np.ndarray, queries: np.ndarray, k: int = K, repeats: int = 5) -> float:
    """Median seconds for the exact top-k of all `queries` at once: one matrix product (exact_top_k)."""
    exact_top_k(matrix, queries, k)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        exact_top_k(matrix, queries, k)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@dataclass(frozen=True)
class InProcess:
    """hnswlib in this process, one thread, at the index's M and EF_CONSTRUCTION on the same vectors."""

    build_cpu_seconds: float
    sweep: list[SweepPoint]


def hnswlib_peer(matrix: np.ndarray, queries: np.ndarray, exact: np.ndarray, m: int, ef_construction: int,
                 efs: Sequence[int] = EF_SWEEP, k: int = K) -> InProcess:
    """Build an hnswlib index (cosine) in one thread, timing its CPU, then sweep ef like recall_sweep."""
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=matrix.shape[1])
    index.init_index(max_elements=len(matrix), M=m, ef_construction=ef_construction, random_seed=0)
    index.set_num_threads(1)
    started = time.process_time()
    index.add_items(matrix, np.arange(len(matrix)))
    build = time.process_time() - started
    points = []
    for ef in efs:
        index.set_ef(max(ef, k))
        seconds, ids = [], []
        for query in queries:
            began = time.perf_counter()
            labels, _ = index.knn_query(query, k=k)
            seconds.append(time.perf_counter() - began)
            ids.append(labels[0].tolist())
        run = QueryRun(seconds, ids)
        points.append(SweepPoint(ef, run.recall(exact), run.p50_ms, run.p99_ms))
    return InProcess(build, points)


# ------------------------------------------------------------------ vector sets


def load_vset(r: redis.Redis, key: str, matrix: np.ndarray, quantization: str = "Q8", m: int = 16,
              ef_construction: int = 200, batch: int = 500) -> float:
    """VADD every row (element = its row number) in pipelined batches; returns the wall seconds."""
    r.delete(key)
    blobs = np.ascontiguousarray(matrix, dtype="<f4")
    started = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, row in enumerate(blobs):
        pipe.execute_command("VADD", key, "FP32", row.tobytes(), i, quantization, "EF", ef_construction, "M", m)
        if (i + 1) % batch == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def time_vsim(r: redis.Redis, key: str, queries: np.ndarray, ef: int, k: int = K, warmup: int = 20) -> QueryRun:
    """One VSIM round trip per query at exploration factor `ef`, like time_queries."""
    def args(query: np.ndarray) -> list[object]:
        return ["VSIM", key, "FP32", query.astype("<f4").tobytes(), "COUNT", k, "EF", ef]

    for query in queries[:warmup]:
        r.execute_command(*args(query))
    seconds, ids = [], []
    for query in queries:
        command = args(query)
        started = time.perf_counter()
        reply = r.execute_command(*command)
        seconds.append(time.perf_counter() - started)
        ids.append([int(element) for element in reply])
    return QueryRun(seconds, ids)


def vset_bytes(r: redis.Redis, key: str) -> int:
    """MEMORY USAGE of the whole vector set (every node sampled)."""
    return int(r.execute_command("MEMORY", "USAGE", key, "SAMPLES", 0))


# ------------------------------------------------------------------ compression: FLOAT16 / BFLOAT16


VECTOR_TYPES = ("FLOAT32", "FLOAT16", "BFLOAT16")


def typed_rows(matrix: np.ndarray, vtype: str = "FLOAT32") -> list[bytes]:
    """Each row of a 2-D matrix as the little-endian bytes an index of TYPE `vtype` reads.

    Packing one vector as FLOAT16 or BFLOAT16 is notebook 10's graded exercise (`to_vector_bytes`),
    so the package has no such function: bfloat16 comes from ml_dtypes, the same cast RedisVL's
    `array_to_buffer` uses.
    """
    values = np.asarray(matrix, dtype="<f4")
    if values.ndim != 2:
        raise ValueError(f"matrix must be 2-D (one row per vector), got shape {values.shape}.")
    if vtype == "FLOAT16":
        values = values.astype("<f2")
    elif vtype == "BFLOAT16":
        import ml_dtypes  # numpy has no bfloat16

        values = values.astype(ml_dtypes.bfloat16)
    elif vtype != "FLOAT32":
        raise ValueError(f"vtype must be one of {VECTOR_TYPES}, got {vtype!r}.")
    return [row.tobytes() for row in values]


def typed_index(dim: int, vtype: str, algorithm: str = "FLAT", tag: str = "typed") -> IndexSpec:
    """bench_index with the vector stored as `vtype` instead of FLOAT32."""
    spec = bench_index(dim, algorithm, f"{tag}-{vtype.lower()}")
    field = spec.fields[-1]
    field.args[field.args.index("TYPE") + 1] = vtype
    return spec


def load_typed(r: redis.Redis, spec: IndexSpec, records: list, matrix: np.ndarray, vtype: str,
               batch: int = 1_000) -> None:
    """load_pipeline with each vector encoded as `vtype`; waits until the index counts them all."""
    fresh_index(r, spec)
    blobs = typed_rows(matrix, vtype)
    pipe = r.pipeline(transaction=False)
    for i, record in enumerate(records):
        pipe.hset(f"{spec.prefix}{record['id']}", mapping={**record, spec.vector_field: blobs[i]})
        if (i + 1) % batch == 0:
            pipe.execute()
    pipe.execute()
    wait_indexed(r, spec.name, len(records), timeout=600)
