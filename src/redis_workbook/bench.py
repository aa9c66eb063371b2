"""`redis-workbook bench`: the workbook's speed measured side by side with its peers.

One run, one embedded server, seeded random unit vectors (no model needed).
Every load figure is a ratio against a peer measured in the same run on the same
server and the same index definition, so a busy machine still gives a fair
comparison. How each figure is measured lives in redis_workbook.perf (notebook
08 uses the same functions); this module only plans the run and reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import redis

from redis_workbook import bench_grading, perf
from redis_workbook.schema import HNSW_EF_CONSTRUCTION, HNSW_M, IndexSpec
from redis_workbook.server import EmbeddedRedis

FULL = {"n": 100_000, "queries": 1_000, "naive_n": 10_000}
QUICK = {"n": 10_000, "queries": 200, "naive_n": 2_000}
# --quick stays under a minute by skipping work whose ratio does not need it: RedisVL's load into HNSW (the
# server's work, like ours) on the naive peer's vectors, against write_hashes on those same vectors; and
# the HNSW EF sweep stops two points past the first EF meeting the recall target.
QUICK_SWEEP_PAST_TARGET = 2
# Vector-set quantizations loaded (each a full VADD of every vector, about as slow as the HNSW load);
# --quick loads only the default, Q8, to stay under a minute.
FULL_VSETS, QUICK_VSETS = ("Q8", "NOQUANT"), ("Q8",)
BATCH = 100
# The FLAT load race (perf.load_race): each of write_hashes, RedisVL and a plain pipeline this many times.
LOAD_ROUNDS = 5

# key -> (comparison, threshold): the project's targets for the full run on the 2-core dev machine (README, Benchmark).
TARGETS = {
    "load_vs_redisvl": (">=", 1.5), "load_vs_naive": (">=", 20.0), "knn_p50_ms": ("<=", 1.0),
    "knn_recall_at_10": (">=", 0.95), "knn_vs_numpy": (">=", 10.0), "server_start_s": ("<=", 0.5),
    # against the real limits (the algorithm in-process, numpy's batch, the plain client)
    "flat_load_vs_redisvl": (">=", 1.5), "knn_p50_vs_inprocess_plus_ping": ("<=", 1.5),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, help=f"vectors to load (default {FULL['n']:,}; {QUICK['n']:,} with --quick)")
    parser.add_argument("--dim", type=int, default=384, help="vector width (default 384, all-MiniLM-L6-v2's)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['n']:,} vectors and fewer queries: under a minute (CI's smoke test)")
    parser.add_argument("--queries", type=int, help=f"KNN queries to time (default {FULL['queries']:,})")
    parser.add_argument("--naive-n", type=int, dest="naive_n",
                        help="vectors for the one-HSET-per-round-trip peer (default "
                             f"{FULL['naive_n']:,}); its rate is compared with write_hashes on the same vectors")
    parser.add_argument("--data", choices=perf.DATA_KINDS, default="embedding-like",
                        help="embedding-like (spectrum of real sentence embeddings, default) or iid (worst case)")
    parser.add_argument("--seed", type=int, default=0)
    grading = parser.add_argument_group("grading (--grading: a separate, longer mode; a few minutes with the defaults)")
    grading.add_argument("--grading", action="store_true",
                         help="grade a class of honest submissions with `grade --jobs J` and with `nbgrader autograde` "
                              "instead of the vector figures")
    grading.add_argument("--students", type=int, default=bench_grading.STUDENTS,
                         help=f"students in the class (default {bench_grading.STUDENTS})")
    grading.add_argument("--jobs", type=int, default=bench_grading.JOBS,
                         help=f"grade's --jobs (default {bench_grading.JOBS})")
    grading.add_argument("--assignments", nargs="+", default=list(bench_grading.ASSIGNMENTS), metavar="NOTEBOOK",
                         help="the notebooks each student hands in (default 01_setup ... 06_recommender)")


@dataclass(frozen=True)
class Plan:
    n: int
    dim: int
    queries: int
    naive_n: int
    data: str
    seed: int
    vsets: tuple[str, ...] = FULL_VSETS
    redisvl_hnsw_n: int | None = None  # RedisVL's load into HNSW on this many vectors (None: all n)
    sweep_past_target: int | None = None  # see perf.recall_sweep
    load_rounds: int = LOAD_ROUNDS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        sizes = QUICK if args.quick else FULL
        plan = cls(n=args.n or sizes["n"], dim=args.dim, queries=args.queries or sizes["queries"],
                   naive_n=min(args.naive_n or sizes["naive_n"], args.n or sizes["n"]),
                   data=args.data, seed=args.seed, vsets=QUICK_VSETS if args.quick else FULL_VSETS)
        if args.quick:
            plan = replace(plan, redisvl_hnsw_n=plan.naive_n, sweep_past_target=QUICK_SWEEP_PAST_TARGET)
        plan.check()
        return plan

    def check(self) -> None:
        if self.n < 1_000:
            raise SystemExit(f"--n must be at least 1000, got {self.n}.")
        if self.dim < 2:
            raise SystemExit(f"--dim must be at least 2, got {self.dim}.")
        if self.queries < BATCH:
            raise SystemExit(f"--queries must be at least {BATCH} (the batch figure pipelines {BATCH}).")
        if self.naive_n < 100:
            raise SystemExit(f"--naive-n must be at least 100, got {self.naive_n}.")


def run(args: argparse.Namespace) -> int:
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.grading:
        results = bench_grading.measure(bench_grading.ClassPlan(args.students, args.jobs, tuple(args.assignments)), say)
        print(bench_grading.report(results))
    else:
        results = measure(Plan.from_args(args), say)
        print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    return 0


# ------------------------------------------------------------------ measuring


def measure(plan: Plan, say: Callable[[str], object] = print) -> dict[str, object]:
    """Every figure of the benchmark as a JSON-ready dict."""
    say(f"bench: {plan.n:,} x {plan.dim} {plan.data} vectors, {plan.queries:,} queries")
    results: dict[str, object] = {"n": plan.n, "dim": plan.dim, "queries": plan.queries, "data": plan.data,
                                  "seed": plan.seed, "k": perf.K}
    results["load_average_before"] = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    results["server_start_s"] = perf.server_start_seconds(5)
    data = Data.make(plan)
    with EmbeddedRedis() as server:
        r, resp2 = server.client(), server.client(protocol=2)
        bench = Bench(r, plan, data, say, resp2)
        results["machine"] = machine(r)
        results |= bench.hnsw()
        results |= bench.flat()
        results |= bench.compression()
        results |= bench.vsets(int(results["knn_ef_runtime"]))  # type: ignore[arg-type]
        results["loads"] = [load.__dict__ | {"per_s": load.per_s} for load in bench.loads]
        r.close()
        resp2.close()
    results["targets"] = {key: {"target": f"{op} {value:g}", "met": met(float(results[key]), op, value)}
                          for key, (op, value) in TARGETS.items()}
    return results


@dataclass(frozen=True)
class Data:
    """The run's vectors, its queries (same distribution, other seed) and their exact top-k."""

    records: list[dict[str, object]]
    matrix: np.ndarray
    queries: np.ndarray
    exact: np.ndarray

    @classmethod
    def make(cls, plan: Plan) -> Data:
        matrix = perf.unit_vectors(plan.n, plan.dim, plan.seed, plan.data)
        queries = perf.unit_vectors(plan.queries, plan.dim, plan.seed + 1, plan.data)
        return cls(perf.bench_records(plan.n), matrix, queries, perf.exact_top_k(matrix, queries))


class Bench:
    """One run's measurements on one server; keeps every load so the report can show them all."""

    def __init__(self, r: redis.Redis, plan: Plan, data: Data, say: Callable[[str], object],
                 resp2: redis.Redis) -> None:
        self.r, self.plan, self.data, self.say = r, plan, data, say
        self.resp2 = resp2  # the same server over RESP2 (r speaks redis-py's default, RESP3)
        self.loads: list[perf.LoadResult] = []
        self.numpy_ms = 0.0  # numpy's single-query p50, measured once (hnsw) and compared with HNSW and FLAT

    def load(self, spec: IndexSpec, loader: str, n: int, what: str) -> perf.LoadResult:
        self.say(f"loading {n:,} vectors into {spec.name} with {what}...")
        result = perf.time_load(self.r, spec, self.data.records[:n], self.data.matrix[:n], loader)
        self.loads.append(result)
        self.say(f"  {result.per_s:,.0f} vectors/s; CPU: Python {result.share('client_cpu'):.0%}, "
                 f"Redis {result.share('server_cpu'):.0%} (indexing {result.share('indexing'):.0%}) of the wall time")
        return result

    def peers(self, algorithm: str, bulk: perf.LoadResult) -> dict[str, float]:
        """RedisVL on all vectors (into HNSW with --quick: on naive_n) and the naive peer, each against write_hashes
        on those same vectors.

        Each load gets an index of its own and nothing is dropped until the end: dropping an index
        frees it on a background thread and wakes the fork GC, which would steal CPU from the next load.
        """
        m = self.plan.naive_n
        subset = algorithm == "HNSW" and self.plan.redisvl_hnsw_n == m and m < self.plan.n
        redisvl = self.load(perf.bench_index(self.plan.dim, algorithm, "bench-redisvl"), "redisvl",
                            m if subset else self.plan.n, "RedisVL SearchIndex.load")
        naive, same = self.naive(algorithm, bulk)
        ours = same if subset else bulk
        return {"redisvl_per_s": redisvl.per_s, "vs_redisvl": ours.per_s / redisvl.per_s, "redisvl_n": redisvl.n,
                "bulk_per_s": ours.per_s, "naive_per_s": naive.per_s, "naive_n": m, "naive_bulk_per_s": same.per_s,
                "vs_naive": same.per_s / naive.per_s}

    def naive(self, algorithm: str, bulk: perf.LoadResult) -> tuple[perf.LoadResult, perf.LoadResult]:
        """One HSET per round trip on naive_n vectors, and write_hashes on the same ones (`bulk` when that is all)."""
        def spec(tag: str) -> IndexSpec:
            return perf.bench_index(self.plan.dim, algorithm, f"bench-{tag}")

        m = self.plan.naive_n
        naive = self.load(spec("naive"), "naive", m, "one HSET per round trip")
        same = bulk if m == self.plan.n else self.load(spec("subset"), "bulk", m, "write_hashes (the naive's vectors)")
        return naive, same

    def race(self) -> dict[str, object]:
        """write_hashes, RedisVL and a plain redis-py pipeline into FLAT, where the client matters (perf.load_race).

        The rate of each is the median of its timed loads; the spread is their range, and the range of the
        ratios taken round by round (loads next to each other in time saw the same machine).
        """
        rounds, names = self.plan.load_rounds, {"bulk": "write_hashes", "redisvl": "RedisVL", "pipeline": "pipeline"}
        spec = perf.bench_index(self.plan.dim, "FLAT", "bench-race")
        self.say(f"loading {self.plan.n:,} vectors into {spec.name} with {', '.join(names.values())}: "
                 f"{rounds} times each in rotating order, after one untimed load...")
        runs = perf.load_race(self.r, spec, self.data.records, self.data.matrix, list(names), rounds)
        race = {loader: {"per_s": [load.per_s for load in loads],
                         "median_per_s": statistics.median(load.per_s for load in loads),
                         "client_us_per_vector": median_us(load.client_cpu_seconds / load.n for load in loads),
                         "server_us_per_vector": median_us(load.server_cpu_seconds / load.n for load in loads)}
                for loader, loads in runs.items()}
        for loader, figures in race.items():
            self.say(f"  {names[loader]}: median {figures['median_per_s']:,.0f} vectors/s "
                     f"({min(figures['per_s']):,.0f}-{max(figures['per_s']):,.0f}); CPU per vector: "
                     f"Python {figures['client_us_per_vector']:.1f} us, Redis {figures['server_us_per_vector']:.1f} us")
        bulk, wall = runs["bulk"], sum(load.seconds for load in runs["bulk"])
        out: dict[str, object] = {
            "flat_load_rounds": rounds, "flat_load_race": race, "flat_load_vectors_per_s": race["bulk"]["median_per_s"],
            "flat_load_client_cpu_share": sum(load.client_cpu_seconds for load in bulk) / wall,
            "flat_load_server_cpu_share": sum(load.server_cpu_seconds for load in bulk) / wall}
        for peer in ("redisvl", "pipeline"):
            per_round = [ours.per_s / theirs.per_s for ours, theirs in zip(bulk, runs[peer])]
            out |= {f"flat_load_{peer}_vectors_per_s": race[peer]["median_per_s"],
                    f"flat_load_vs_{peer}": race["bulk"]["median_per_s"] / race[peer]["median_per_s"],
                    f"flat_load_vs_{peer}_range": [min(per_round), max(per_round)]}
        return out

    def hnsw(self) -> dict[str, object]:
        r, plan, data = self.r, self.plan, self.data
        spec = perf.bench_index(plan.dim, "HNSW", "bench")
        before = perf.used_memory(r)
        bulk = self.load(spec, "bulk", plan.n, "write_hashes")
        memory = perf.memory_report(r, spec, plan.n, plan.dim, before)
        self.say("KNN latency and recall as EF_RUNTIME grows...")
        sweep = perf.recall_sweep(r, spec, data.queries, data.exact, past_target=plan.sweep_past_target)
        chosen = perf.pick_ef(sweep)
        default = perf.time_queries(r, spec, data.queries)
        split = self.knn_split(spec, chosen.ef_runtime)
        batch = perf.time_batch(r, spec, data.queries[:BATCH], ef_runtime=chosen.ef_runtime)
        numpy_ms = self.numpy_ms = perf.percentile_ms(perf.time_numpy(data.matrix, data.queries[:BATCH]), 50)
        peers = self.peers("HNSW", bulk)
        limits = self.inprocess(bulk, chosen)
        split["knn_server_vs_inprocess"] = split["knn_server_p50_ms"] / float(limits["inprocess_same_ef_p50_ms"])
        return limits | split | {
            "load_vectors_per_s": bulk.per_s, "load_client_cpu_share": bulk.share("client_cpu"),
            "load_server_cpu_share": bulk.share("server_cpu"), "load_indexing_share": bulk.share("indexing"),
            "load_vs_redisvl": peers["vs_redisvl"], "load_redisvl_vectors_per_s": peers["redisvl_per_s"],
            "load_redisvl_n": peers["redisvl_n"], "load_redisvl_bulk_vectors_per_s": peers["bulk_per_s"],
            "load_vs_naive": peers["vs_naive"], "load_naive_vectors_per_s": peers["naive_per_s"],
            "load_naive_n": peers["naive_n"], "load_naive_bulk_vectors_per_s": peers["naive_bulk_per_s"],
            "knn_ef_runtime": chosen.ef_runtime, "knn_p50_ms": chosen.p50_ms, "knn_p99_ms": chosen.p99_ms,
            "knn_recall_at_10": chosen.recall, "knn_default_ef_runtime": perf.DEFAULT_EF_RUNTIME,
            "knn_default_p50_ms": default.p50_ms, "knn_default_p99_ms": default.p99_ms,
            "knn_default_recall_at_10": default.recall(data.exact),
            "knn_numpy_ms": numpy_ms, "knn_vs_numpy": numpy_ms / chosen.p50_ms,
            "batch100_ms": batch * 1e3, "batch100_ef_runtime": chosen.ef_runtime,
            "memory_bytes_per_vector": memory.bytes_per_vector, "memory_used_bytes": memory.used_bytes,
            "memory_vector_index_bytes_per_vector": memory.vector_index_bytes / plan.n,
            "memory_rule_bytes_per_vector": memory.rule_bytes / plan.n, "memory_rule_bytes": memory.rule_bytes,
            "ef_sweep": [point.__dict__ for point in sweep],
        }

    def knn_split(self, spec: IndexSpec, ef: int) -> dict[str, float]:
        """Where a KNN query's time goes: executing inside Redis (SLOWLOG) and the rest of its round trip, per
        query; and the same queries over RESP2, whose replies are flat lists instead of RESP3's maps."""
        self.say(f"KNN at EF_RUNTIME {ef}: time inside Redis, and over RESP2...")
        run, server = perf.time_queries_in_server(self.r, spec, self.data.queries, ef_runtime=ef)
        resp2 = perf.time_queries(self.resp2, spec, self.data.queries, ef_runtime=ef)
        rest = [client - inside for client, inside in zip(run.seconds, server)]
        return {"knn_split_p50_ms": run.p50_ms, "knn_server_p50_ms": perf.percentile_ms(server, 50),
                "knn_client_and_network_p50_ms": perf.percentile_ms(rest, 50), "knn_resp2_p50_ms": resp2.p50_ms,
                "knn_resp2_recall_at_10": resp2.recall(self.data.exact)}

    def inprocess(self, bulk: perf.LoadResult, chosen: perf.SweepPoint) -> dict[str, object]:
        """hnswlib in this process at the same M, EF_CONSTRUCTION and vectors: the algorithm's own cost."""
        self.say("hnswlib in-process, one thread, same M / EF_CONSTRUCTION / vectors...")
        peer = perf.hnswlib_peer(self.data.matrix, self.data.queries, self.data.exact, HNSW_M, HNSW_EF_CONSTRUCTION)
        own = perf.pick_ef(peer.sweep)
        ping_ms = perf.percentile_ms(perf.time_ping(self.r), 50)
        redis_cpu, hnswlib_cpu = bulk.server_cpu_seconds / self.plan.n, peer.build_cpu_seconds / self.plan.n
        self.say(f"  insert CPU: Redis {redis_cpu * 1e6:,.0f} us, hnswlib {hnswlib_cpu * 1e6:,.0f} us per vector; "
                 f"KNN p50 {chosen.p50_ms:.3f} ms vs {own.p50_ms:.3f} ms in-process, PING {ping_ms:.3f} ms")
        return {"insert_cpu_us_per_vector": redis_cpu * 1e6, "hnswlib_insert_cpu_us_per_vector": hnswlib_cpu * 1e6,
                "insert_cpu_vs_hnswlib": redis_cpu / hnswlib_cpu,
                "inprocess_ef": own.ef_runtime, "inprocess_recall_at_10": own.recall,
                "inprocess_p50_ms": own.p50_ms, "inprocess_p99_ms": own.p99_ms, "ping_p50_ms": ping_ms,
                "inprocess_same_ef_p50_ms": next(p.p50_ms for p in peer.sweep if p.ef_runtime == chosen.ef_runtime),
                "knn_p50_vs_inprocess": chosen.p50_ms / own.p50_ms,
                "knn_p99_vs_inprocess": chosen.p99_ms / own.p99_ms,
                "knn_p50_vs_inprocess_plus_ping": chosen.p50_ms / (own.p50_ms + ping_ms),
                "inprocess_sweep": [point.__dict__ for point in peer.sweep]}

    def flat(self) -> dict[str, object]:
        """FLAT: exact search, and a load where Redis does little, so the loaders' own cost shows."""
        spec = perf.bench_index(self.plan.dim, "FLAT", "bench")
        bulk = self.load(spec, "bulk", self.plan.n, "write_hashes")
        self.say("FLAT KNN latency...")
        run = perf.time_queries(self.r, spec, self.data.queries)
        batch = perf.time_batch(self.r, spec, self.data.queries[:BATCH])
        numpy_batch = perf.time_numpy_batch(self.data.matrix, self.data.queries[:BATCH])
        naive, same = self.naive("FLAT", bulk)
        return self.race() | {
            "flat_vs_numpy": run.p50_ms / self.numpy_ms, "flat_batch100_ms": batch * 1e3,
            "numpy_batch100_ms": numpy_batch * 1e3, "batch100_vs_numpy_batch": batch / numpy_batch,
            "flat_p50_ms": run.p50_ms, "flat_p99_ms": run.p99_ms, "flat_recall_at_10": run.recall(self.data.exact),
            "flat_load_vs_naive": same.per_s / naive.per_s, "flat_load_naive_vectors_per_s": naive.per_s,
            "flat_load_naive_bulk_vectors_per_s": same.per_s}

    def vsets(self, ef: int) -> dict[str, object]:
        """The same vectors in vector sets (VADD Q8 and NOQUANT, same M / EF): memory, VSIM latency and recall.

        VSIM runs at the EF the FT index needed for recall 0.95, so both do the same search effort.
        """
        out: dict[str, object] = {}
        for quant in self.plan.vsets:
            key, tag = f"bench:vset:{quant.lower()}", "" if quant == "Q8" else "_noquant"
            self.say(f"VADD {self.plan.n:,} vectors ({quant})...")
            before, cpu_before = perf.used_memory(self.r), perf.server_cpu_seconds(self.r)
            seconds = perf.load_vset(self.r, key, self.data.matrix, quant, HNSW_M, HNSW_EF_CONSTRUCTION)
            grown, cpu = perf.used_memory(self.r) - before, perf.server_cpu_seconds(self.r) - cpu_before
            run = perf.time_vsim(self.r, key, self.data.queries, ef)
            out |= {f"vset{tag}_load_vectors_per_s": self.plan.n / seconds,
                    f"vset{tag}_insert_cpu_us_per_vector": cpu / self.plan.n * 1e6,
                    f"vset{tag}_bytes_per_vector": perf.vset_bytes(self.r, key) / self.plan.n,
                    f"vset{tag}_used_memory_bytes_per_vector": grown / self.plan.n,
                    f"vset{tag}_p50_ms": run.p50_ms, f"vset{tag}_p99_ms": run.p99_ms,
                    f"vset{tag}_recall_at_10": run.recall(self.data.exact)}
            self.say(f"  {out[f'vset{tag}_load_vectors_per_s']:,.0f} vectors/s, "
                     f"{out[f'vset{tag}_bytes_per_vector']:,.0f} B per vector, VSIM EF {ef}: p50 "
                     f"{run.p50_ms:.3f} ms, recall {out[f'vset{tag}_recall_at_10']:.3f}")
            self.r.delete(key)
        return out | {"vset_ef": ef}

    def compression(self) -> dict[str, object]:
        """The same vectors stored as FLOAT32, FLOAT16 and BFLOAT16 in FLAT indexes: memory and exact recall.

        FLAT is exact search, so any recall lost is the narrower type's rounding alone. Nothing is
        dropped until all three are measured: a drop frees memory on a background thread, which would
        make the next load's used_memory growth too small.
        """
        out: dict[str, object] = {}
        specs = [perf.typed_index(self.plan.dim, vtype, "FLAT", "bench") for vtype in perf.VECTOR_TYPES]
        for vtype, spec in zip(perf.VECTOR_TYPES, specs):
            self.say(f"FLAT index of {vtype} vectors...")
            before = perf.used_memory(self.r)
            perf.load_typed(self.r, spec, self.data.records, self.data.matrix, vtype)
            memory = perf.memory_report(self.r, spec, self.plan.n, self.plan.dim, before)
            run = perf.time_queries(self.r, spec, self.data.queries, vtype=vtype)
            name = vtype.lower()
            out |= {f"{name}_bytes_per_vector": memory.bytes_per_vector,
                    f"{name}_index_bytes_per_vector": memory.vector_index_bytes / self.plan.n,
                    f"{name}_recall_at_10": run.recall(self.data.exact), f"{name}_p50_ms": run.p50_ms}
        for spec in specs:
            perf.drop_index(self.r, spec)
        for name in ("float16", "bfloat16"):
            out[f"{name}_memory_vs_float32"] = out[f"{name}_bytes_per_vector"] / out["float32_bytes_per_vector"]
        return out


def median_us(seconds: Iterable[float]) -> float:
    return statistics.median(seconds) * 1e6


def met(value: float, op: str, threshold: float) -> bool:
    return value >= threshold if op == ">=" else value <= threshold


def machine(r: redis.Redis) -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "os": os_name(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib(), 1), "cpu": cpu_model(),
        "redis": r.info("server")["redis_version"],
        "search": str(r.info("modules").get("search_version", "?")),  # INFO's own dotted string
        "redis_py": metadata.version("redis"), "hiredis": package_version("hiredis"), "numpy": np.__version__,
        "redisvl": package_version("redisvl"), "hnswlib": package_version("hnswlib"),
    }


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------ reporting


def report(res: dict) -> str:  # type: ignore[type-arg]
    """The figures as Markdown tables a person can read in a terminal and paste into the README."""
    m = res["machine"]
    head = (f"**{res['n']:,} x {res['dim']} float32 vectors** ({res['data']}, seed {res['seed']}), "
            f"{res['queries']:,} queries, k={res['k']}. Redis {m['redis']} + search {m['search']} (embedded), "
            f"redis-py {m['redis_py']} (hiredis {m.get('hiredis')}), hnswlib {m.get('hnswlib')}, "
            f"RedisVL {m['redisvl']}, numpy {m['numpy']}; {m['os']}, "
            f"Python {m['python']}, {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM. 1-minute load "
            f"average before the run: {res['load_average_before']} (other work on the machine slows every figure).")
    rows = [("figure", "value", "how / compared with", "target")] + figure_rows(res)
    return "\n\n".join([head, markdown(rows), sweep_table(res), race_table(res), loads_table(res)])


def figure_rows(res: dict) -> list[tuple[str, str, str, str]]:  # type: ignore[type-arg]
    naive_note = (f"on {res['load_naive_n']:,} of {res['n']:,} vectors, against write_hashes on the same ones "
                  f"({res['load_naive_bulk_vectors_per_s']:,.0f}/s); the full set would take about "
                  f"{res['n'] / res['load_naive_vectors_per_s']:,.0f} s this way"
                  if res["load_naive_n"] < res["n"] else "all vectors")
    noquant = "vset_noquant_bytes_per_vector" in res  # --quick loads Q8 only
    noquant_bytes = f"; NOQUANT {res['vset_noquant_bytes_per_vector']:,.0f} B" if noquant else ""
    noquant_recall = (f"; NOQUANT: recall {res['vset_noquant_recall_at_10']:.3f}, p50 "
                      f"{res['vset_noquant_p50_ms']:.3f} ms, VADD {res['vset_noquant_load_vectors_per_s']:,.0f} /s"
                      if noquant else "")
    rows = [
        ("server_start_s", f"{res['server_start_s']:.3f} s",
         "embedded redis-server, process start to PONG, median of 5"),
        ("load_vectors_per_s", f"{res['load_vectors_per_s']:,.0f} /s",
         f"write_hashes into HASH + HNSW; Redis's main thread was busy {res['load_server_cpu_share']:.0%} of the "
         f"time, indexing {res['load_indexing_share']:.0%}; Python {res['load_client_cpu_share']:.0%}"),
        ("load_vs_redisvl", f"{res['load_vs_redisvl']:.2f}x",
         f"RedisVL SearchIndex.load: {res['load_redisvl_vectors_per_s']:,.0f} /s"
         + (f", on {res['load_redisvl_n']:,} of the vectors against write_hashes on the same ones "
            f"({res['load_redisvl_bulk_vectors_per_s']:,.0f} /s)" if res["load_redisvl_n"] < res["n"] else "")),
        ("load_vs_naive", f"{res['load_vs_naive']:.2f}x",
         f"one HSET per round trip: {res['load_naive_vectors_per_s']:,.0f} /s, {naive_note}"),
        ("flat_load_vectors_per_s", f"{res['flat_load_vectors_per_s']:,.0f} /s",
         f"write_hashes into HASH + FLAT, where Redis does little: {race_note(res, 'bulk')}; Redis's main thread "
         f"busy {res['flat_load_server_cpu_share']:.0%} of the time, Python {res['flat_load_client_cpu_share']:.0%}"),
        ("flat_load_vs_redisvl", f"{res['flat_load_vs_redisvl']:.2f}x",
         f"RedisVL SearchIndex.load: {race_note(res, 'redisvl')}; round by round "
         f"{res['flat_load_vs_redisvl_range'][0]:.2f}-{res['flat_load_vs_redisvl_range'][1]:.2f}x"),
        ("flat_load_vs_naive", f"{res['flat_load_vs_naive']:.2f}x",
         f"one HSET per round trip: {res['flat_load_naive_vectors_per_s']:,.0f} /s "
         f"(write_hashes on the same vectors: {res['flat_load_naive_bulk_vectors_per_s']:,.0f} /s)"),
        ("knn_p50_ms", f"{res['knn_p50_ms']:.3f} ms",
         f"HNSW, EF_RUNTIME {res['knn_ef_runtime']} (the smallest with recall >= {perf.RECALL_TARGET}); "
         f"default EF_RUNTIME {res['knn_default_ef_runtime']}: {res['knn_default_p50_ms']:.3f} ms"),
        ("knn_p99_ms", f"{res['knn_p99_ms']:.3f} ms", f"default EF_RUNTIME: {res['knn_default_p99_ms']:.3f} ms"),
        ("knn_recall_at_10", f"{res['knn_recall_at_10']:.3f}",
         f"against numpy's exact top-10; default EF_RUNTIME: {res['knn_default_recall_at_10']:.3f}"),
        ("knn_vs_numpy", f"{res['knn_vs_numpy']:.1f}x",
         f"numpy brute force, one query at a time: {res['knn_numpy_ms']:.2f} ms per query"),
        ("flat_p50_ms", f"{res['flat_p50_ms']:.3f} ms",
         f"FLAT (exact) index, recall {res['flat_recall_at_10']:.3f}; p99 {res['flat_p99_ms']:.3f} ms"),
        ("batch100_ms", f"{res['batch100_ms']:.1f} ms",
         f"{BATCH} HNSW queries in one pipeline (EF_RUNTIME {res['batch100_ef_runtime']}): "
         f"{res['batch100_ms'] / BATCH:.3f} ms each"),
        ("memory_bytes_per_vector", f"{res['memory_bytes_per_vector']:,.0f} B",
         f"INFO used_memory growth / n (hash + index); HNSW structure alone (FT.INFO) "
         f"{res['memory_vector_index_bytes_per_vector']:,.0f} B; rule of thumb dim x 4 x 1.3 = "
         f"{res['memory_rule_bytes_per_vector']:,.0f} B"),
        # each figure against the real limit, measured side by side (Redis's time / the peer's)
        ("insert_cpu_vs_hnswlib", f"{res['insert_cpu_vs_hnswlib']:.2f}x",
         f"Redis main-thread CPU per HNSW insert {res['insert_cpu_us_per_vector']:,.0f} us (HSET + indexing) vs "
         f"hnswlib in-process, one thread, same M/EF_CONSTRUCTION/vectors: "
         f"{res['hnswlib_insert_cpu_us_per_vector']:,.0f} us (reported, not a target)"),
        ("knn_p50_vs_inprocess", f"{res['knn_p50_vs_inprocess']:.2f}x",
         f"hnswlib in-process at its smallest ef with recall >= {perf.RECALL_TARGET} (ef {res['inprocess_ef']}, "
         f"recall {res['inprocess_recall_at_10']:.3f}): p50 {res['inprocess_p50_ms']:.3f} ms, p99 "
         f"{res['inprocess_p99_ms']:.3f} ms (Redis p99 {res['knn_p99_vs_inprocess']:.2f}x)"),
        ("knn_p50_vs_inprocess_plus_ping", f"{res['knn_p50_vs_inprocess_plus_ping']:.2f}x",
         f"the same plus one round trip (PING p50 {res['ping_p50_ms']:.3f} ms)"),
        ("knn_server_p50_ms", f"{res['knn_server_p50_ms']:.3f} ms",
         f"of a query at EF_RUNTIME {res['knn_ef_runtime']} (p50 {res['knn_split_p50_ms']:.3f} ms), the time FT.SEARCH "
         f"executed inside Redis (SLOWLOG): {res['knn_server_vs_inprocess']:.2f}x hnswlib at the same ef "
         f"({res['inprocess_same_ef_p50_ms']:.3f} ms); the rest, network, Redis's socket I/O and redis-py's "
         f"encoding and RESP3 parsing, p50 {res['knn_client_and_network_p50_ms']:.3f} ms; the same queries over "
         f"RESP2: p50 {res['knn_resp2_p50_ms']:.3f} ms"),
        ("flat_vs_numpy", f"{res['flat_vs_numpy']:.2f}x",
         f"FLAT p50 / numpy brute force one query at a time ({res['knn_numpy_ms']:.3f} ms, as knn_vs_numpy)"),
        ("batch100_vs_numpy_batch", f"{res['batch100_vs_numpy_batch']:.2f}x",
         f"{BATCH} FLAT queries in one pipeline ({res['flat_batch100_ms']:.1f} ms) / numpy's one matrix product "
         f"for the same {BATCH} ({res['numpy_batch100_ms']:.1f} ms)"),
        ("flat_load_vs_pipeline", f"{res['flat_load_vs_pipeline']:.2f}x",
         f"a plain redis-py pipeline (hset per record, execute per 1,000) into FLAT: {race_note(res, 'pipeline')}; "
         f"round by round {res['flat_load_vs_pipeline_range'][0]:.2f}-{res['flat_load_vs_pipeline_range'][1]:.2f}x"),
        ("vset_bytes_per_vector", f"{res['vset_bytes_per_vector']:,.0f} B",
         f"vector set, VADD Q8 (MEMORY USAGE / n){noquant_bytes}; the FT HASH + HNSW above "
         f"{res['memory_bytes_per_vector']:,.0f} B"),
        ("vset_recall_at_10", f"{res['vset_recall_at_10']:.3f}",
         f"VSIM Q8 at EF {res['vset_ef']} (the FT index's): p50 {res['vset_p50_ms']:.3f} ms; VADD "
         f"{res['vset_load_vectors_per_s']:,.0f} /s, Redis CPU {res['vset_insert_cpu_us_per_vector']:,.0f} us per "
         f"insert{noquant_recall}"),
    ]
    for name in ("float16", "bfloat16"):
        rows.append((f"{name}_memory_vs_float32", f"{res[f'{name}_memory_vs_float32']:.2f}x",
                     f"{name.upper()} in a FLAT index: {res[f'{name}_bytes_per_vector']:,.0f} B per vector (hash + "
                     f"index) vs FLOAT32 {res['float32_bytes_per_vector']:,.0f} B; recall@10 "
                     f"{res[f'{name}_recall_at_10']:.3f} (FLOAT32 {res['float32_recall_at_10']:.3f}), "
                     f"p50 {res[f'{name}_p50_ms']:.3f} ms (FLOAT32 {res['float32_p50_ms']:.3f} ms)"))
    targets = res["targets"]
    return [(key, value, how, target_text(targets.get(key))) for key, value, how in rows]


def race_note(res: dict, loader: str) -> str:  # type: ignore[type-arg]
    """A loader's median rate in the FLAT race and the range of its timed loads."""
    race = res["flat_load_race"][loader]
    rates = race["per_s"]
    return f"median {race['median_per_s']:,.0f} /s of {len(rates)} loads ({min(rates):,.0f}-{max(rates):,.0f})"


def target_text(target: dict | None) -> str:  # type: ignore[type-arg]
    if target is None:
        return ""
    return f"{target['target']}: {'met' if target['met'] else '**not met**'}"


def sweep_table(res: dict) -> str:  # type: ignore[type-arg]
    rows = [("EF_RUNTIME", "recall@10", "p50 ms", "p99 ms")]
    rows += [(str(p["ef_runtime"]), f"{p['recall']:.3f}", f"{p['p50_ms']:.3f}", f"{p['p99_ms']:.3f}")
             for p in res["ef_sweep"]]
    return "HNSW recall and latency as EF_RUNTIME grows:\n\n" + markdown(rows)


def race_table(res: dict) -> str:  # type: ignore[type-arg]
    rows = [("loader", "median vectors/s", "slowest-fastest", "Python CPU per vector", "Redis CPU per vector")]
    names = {"bulk": "write_hashes", "redisvl": "RedisVL SearchIndex.load", "pipeline": "redis-py pipeline"}
    for loader, race in res["flat_load_race"].items():
        rows.append((names.get(loader, loader), f"{race['median_per_s']:,.0f}",
                     f"{min(race['per_s']):,.0f}-{max(race['per_s']):,.0f}", f"{race['client_us_per_vector']:.1f} us",
                     f"{race['server_us_per_vector']:.1f} us"))
    return (f"The FLAT load race: {res['n']:,} vectors, each loader {res['flat_load_rounds']} times in rotating order "
            "after one untimed load, into the same emptied index (perf.load_race). CPU per vector, medians: on an "
            "idle machine the two sides overlap, so the larger of the two bounds the rate; on a busy one their "
            "sum does:\n\n" + markdown(rows))


def loads_table(res: dict) -> str:  # type: ignore[type-arg]
    rows = [("loader", "index", "vectors", "vectors/s", "seconds", "Python CPU", "Redis CPU", "of which indexing")]
    for load in res["loads"]:
        wall = load["seconds"]
        rows.append((load["loader"], load["index"], f"{load['n']:,}", f"{load['per_s']:,.0f}", f"{wall:.2f}",
                     f"{load['client_cpu_seconds'] / wall:.0%}", f"{load['server_cpu_seconds'] / wall:.0%}",
                     f"{load['indexing_seconds'] / wall:.0%}"))
    return ("Every load of the run: wall time until FT.INFO counts every document, and the CPU each side used "
            "as a share of it (Python: packing, sending, reading replies; Redis main thread: parsing, HSET, "
            "indexing):\n\n" + markdown(rows))


def markdown(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
