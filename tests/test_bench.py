"""The benchmark's measuring code and the loader's fast path, against the real query engine.

No test here asserts a speed: timings depend on the machine. They check that every
figure is present and sane, that the peers load the same bytes into the same index
definition, and that what the figures are computed from (ids, recall, memory) is right.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import redis

from redis_workbook import cli, perf
from redis_workbook.bench import TARGETS
from redis_workbook.loading import write_hashes
from redis_workbook.report import ft_info
from redis_workbook.schema import create_index

ISSUE_KEYS = ("load_vectors_per_s", "load_vs_redisvl", "load_vs_naive", "knn_p50_ms", "knn_p99_ms",
              "knn_recall_at_10", "knn_vs_numpy", "flat_p50_ms", "batch100_ms", "memory_bytes_per_vector",
              "server_start_s")
# issue 13: each figure next to the real limit (the algorithm in-process, numpy's batch, a plain pipeline)
LIMIT_RATIOS = ("insert_cpu_vs_hnswlib", "knn_p50_vs_inprocess", "knn_p50_vs_inprocess_plus_ping", "flat_vs_numpy",
                "batch100_vs_numpy_batch", "flat_load_vs_redisvl", "flat_load_vs_pipeline")


# ------------------------------------------------------------------ the command, once, as CI's smoke test


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["bench", "--quick", "--json", str(path)]) == 0
    return json.loads(path.read_text()), out.getvalue()


def test_quick_run_has_every_key_of_the_issue_and_each_is_sane(quick: tuple[dict, str]) -> None:
    results, table = quick
    for key in ISSUE_KEYS:
        assert isinstance(results[key], (int, float)) and math.isfinite(results[key]) and results[key] > 0, key
        assert f"| {key} " in table, f"{key} missing from the printed table"
    assert results["n"] == 10_000 and results["dim"] == 384
    for key in ("knn_recall_at_10", "knn_default_recall_at_10", "flat_recall_at_10"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["knn_ef_runtime"] in perf.EF_SWEEP
    assert results["knn_default_ef_runtime"] == perf.DEFAULT_EF_RUNTIME
    assert set(results["targets"]) == set(TARGETS)
    assert results["machine"]["redis"].startswith(("7.", "8.")) and results["machine"]["cpus"] >= 1
    assert "JSON written to" in table


def test_quick_run_measures_against_the_limits(quick: tuple[dict, str]) -> None:
    res, table = quick
    for key in LIMIT_RATIOS + ("vset_bytes_per_vector", "vset_recall_at_10"):
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, key
        assert f"| {key} " in table, f"{key} missing from the printed table"
    for key in ("inprocess_recall_at_10", "vset_recall_at_10"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["inprocess_ef"] in perf.EF_SWEEP and len(res["inprocess_sweep"]) == len(perf.EF_SWEEP)
    assert res["knn_p50_vs_inprocess"] == pytest.approx(res["knn_p50_ms"] / res["inprocess_p50_ms"])
    assert res["knn_p50_vs_inprocess_plus_ping"] < res["knn_p50_vs_inprocess"]
    # where a query's time goes: inside Redis (SLOWLOG) and the rest of the round trip, each query's own split
    assert 0 < res["knn_server_p50_ms"] < res["knn_split_p50_ms"] and res["knn_client_and_network_p50_ms"] > 0
    same_ef = {p["ef_runtime"]: p["p50_ms"] for p in res["inprocess_sweep"]}[res["knn_ef_runtime"]]
    assert res["knn_server_vs_inprocess"] == pytest.approx(res["knn_server_p50_ms"] / same_ef)
    assert res["knn_resp2_p50_ms"] > 0 and res["knn_resp2_recall_at_10"] == res["knn_recall_at_10"]
    assert "| knn_server_p50_ms " in table
    assert res["flat_vs_numpy"] == pytest.approx(res["flat_p50_ms"] / res["knn_numpy_ms"])
    assert res["batch100_vs_numpy_batch"] == pytest.approx(res["flat_batch100_ms"] / res["numpy_batch100_ms"])
    assert res["flat_load_vs_pipeline"] == pytest.approx(res["flat_load_vectors_per_s"]
                                                         / res["flat_load_pipeline_vectors_per_s"])
    # a vector set holds each vector at least once: 384 bytes quantized to int8 (Q8, all --quick loads)
    assert 384 < res["vset_bytes_per_vector"] and "vset_noquant_bytes_per_vector" not in res
    assert res["vset_insert_cpu_us_per_vector"] > 0


def test_quick_run_compares_float16_and_bfloat16_with_float32(quick: tuple[dict, str]) -> None:
    res, table = quick
    for name in ("float16", "bfloat16"):
        assert 0.4 < res[f"{name}_memory_vs_float32"] < 1, name  # half the bytes per vector in hash and index
        assert f"| {name}_memory_vs_float32 " in table
        assert 0.9 <= res[f"{name}_recall_at_10"] <= 1.0, name  # exact search; only rounding can lose a neighbour
        assert res[f"{name}_index_bytes_per_vector"] < res["float32_index_bytes_per_vector"]
    assert res["float32_recall_at_10"] >= 0.99


def test_quick_run_ratios_are_what_they_say(quick: tuple[dict, str]) -> None:
    res, _ = quick
    # --quick times RedisVL's load into HNSW on the naive peer's vectors, against write_hashes on the same ones
    assert res["load_redisvl_n"] == res["load_naive_n"] < res["n"]
    assert res["load_redisvl_bulk_vectors_per_s"] == res["load_naive_bulk_vectors_per_s"]
    assert res["load_vs_redisvl"] == pytest.approx(res["load_redisvl_bulk_vectors_per_s"]
                                                   / res["load_redisvl_vectors_per_s"])
    assert res["load_vs_naive"] == pytest.approx(res["load_naive_bulk_vectors_per_s"] / res["load_naive_vectors_per_s"])
    assert res["knn_vs_numpy"] == pytest.approx(res["knn_numpy_ms"] / res["knn_p50_ms"])
    assert res["memory_rule_bytes_per_vector"] == pytest.approx(384 * 4 * 1.3)
    loads = {(load["loader"], load["index"]): load["n"] for load in res["loads"]}
    assert loads[("bulk", "idx:bench:hnsw")] == loads[("bulk", "idx:bench:flat")] == 10_000
    assert loads[("redisvl", "idx:bench-redisvl:hnsw")] == res["load_naive_n"]
    assert loads[("naive", "idx:bench-naive:hnsw")] == loads[("bulk", "idx:bench-subset:hnsw")] == res["load_naive_n"]
    # the FLAT race: each loader timed load_rounds times; rates are medians, the ratios theirs
    race = res["flat_load_race"]
    assert set(race) == {"bulk", "redisvl", "pipeline"} and res["flat_load_rounds"] == 5
    for loader, figures in race.items():
        assert len(figures["per_s"]) == 5 and figures["median_per_s"] == sorted(figures["per_s"])[2], loader
        assert figures["client_us_per_vector"] > 0 and figures["server_us_per_vector"] > 0, loader
    assert res["flat_load_vectors_per_s"] == race["bulk"]["median_per_s"]
    for peer in ("redisvl", "pipeline"):
        assert res[f"flat_load_{peer}_vectors_per_s"] == race[peer]["median_per_s"]
        assert res[f"flat_load_vs_{peer}"] == pytest.approx(race["bulk"]["median_per_s"] / race[peer]["median_per_s"])
        low, high = res[f"flat_load_vs_{peer}_range"]
        assert 0 < low <= high


def test_quick_run_figures_agree_with_what_must_be_true(quick: tuple[dict, str]) -> None:
    res, _ = quick
    # FLAT is exact search: it must find numpy's exact top-10 (ties aside).
    assert res["flat_recall_at_10"] >= 0.99
    # Each vector is stored at least once as 384 float32 values in its hash.
    assert res["memory_bytes_per_vector"] > 384 * 4
    # The sweep's chosen EF_RUNTIME is the smallest meeting the target, when one does; --quick stops two
    # points past it.
    meeting = [p["ef_runtime"] for p in res["ef_sweep"] if p["recall"] >= perf.RECALL_TARGET]
    if meeting:
        assert res["knn_ef_runtime"] == min(meeting)
        tried = [p["ef_runtime"] for p in res["ef_sweep"]]
        assert tried == list(perf.EF_SWEEP[:min(len(perf.EF_SWEEP), tried.index(min(meeting)) + 3)])


# ------------------------------------------------------------------ --grading, on the smallest class


GRADING_KEYS = ("grading_s_per_submission", "grading_vs_nbgrader", "nbgrader_s_per_submission",
                "grading_unsafe_s_per_submission", "grading_cpu_s_per_submission", "nbgrader_cpu_s_per_submission")


def test_grading_mode_grades_one_submission_with_both_graders_and_the_same_score(tmp_path) -> None:  # noqa: ANN001
    """One student, one notebook: grade (sandboxed and not) and nbgrader autograde agree; every figure is there."""
    path = tmp_path / "grading.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["bench", "--grading", "--students", "1", "--assignments", "01_setup", "--jobs", "1",
                         "--json", str(path)]) == 0
    res, table = json.loads(path.read_text()), out.getvalue()
    assert res["grading_scores_match"] is True and res["grading_score_differences"] == [], res
    assert (res["grading_submissions"], res["grading_students"], res["grading_jobs"]) == (1, 1, 1)
    assert res["grading_assignments"] == ["01_setup"]
    for key in GRADING_KEYS:
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, key
    assert res["grading_vs_nbgrader"] == pytest.approx(res["grading_seconds"] / res["nbgrader_seconds"])
    assert res["sandbox_s_per_submission"] == pytest.approx(res["grading_s_per_submission"]
                                                            - res["grading_unsafe_s_per_submission"])
    assert set(res["grading_targets"]) == {"grading_vs_nbgrader"}  # the class-time target is for 30 x 6 only
    # the one sandboxed submission said where its time went: every phase, the CPU of each process
    assert res["grading_timed_submissions"] == 1
    for phase in ("process and pytest start-up", "redis under test", "enclosure", "notebook redis", "sandbox",
                  "worker ready", "notebook cells", "checks", "teardown"):
        assert res["grading_phases_s"][phase] >= 0, phase
    assert res["grading_process_cpu_s"]["grader"] > 0 and res["grading_process_cpu_s"]["worker"] > 0
    assert res["grading_cpu_s_per_submission"] == pytest.approx(sum(res["grading_process_cpu_s"].values()))
    assert set(res["sandbox_phases_s"]) == set(res["grading_phases_s"])  # phase by phase, with and without
    for key in ("grading_s_per_submission", "nbgrader_s_per_submission", "grading_vs_nbgrader",
                "sandbox_s_per_submission", "grading_scores_match", "notebook cells"):
        assert f"| {key} " in table, f"{key} missing from the printed report"


def test_grading_mode_refuses_an_unknown_notebook() -> None:
    with pytest.raises(SystemExit, match="no grader checks for 99_nothing"):
        cli.main(["bench", "--grading", "--assignments", "99_nothing"])


# ------------------------------------------------------------------ perf's pieces


def test_unit_vectors_are_seeded_unit_length_and_validated() -> None:
    a = perf.unit_vectors(50, 16, seed=3)
    assert a.dtype == np.float32 and a.shape == (50, 16)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, perf.unit_vectors(50, 16, seed=3))
    assert not np.array_equal(a, perf.unit_vectors(50, 16, seed=4))
    # embedding-like vectors lean one way (positive mean cosine); iid ones do not
    like, iid = perf.unit_vectors(400, 64), perf.unit_vectors(400, 64, kind="iid")
    assert (like @ like.T).mean() > 0.03 > abs((iid @ iid.T).mean())
    with pytest.raises(ValueError, match="kind must be one of"):
        perf.unit_vectors(5, 4, kind="gaussian")
    with pytest.raises(ValueError, match="n must be a positive int"):
        perf.unit_vectors(0, 4)


def test_exact_top_k_matches_a_plain_sort() -> None:
    matrix, queries = perf.unit_vectors(300, 8, 1), perf.unit_vectors(70, 8, 2)
    expected = np.argsort(-(queries @ matrix.T), axis=1)[:, :5]
    assert np.array_equal(perf.exact_top_k(matrix, queries, k=5), expected)
    assert np.array_equal(perf.numpy_knn(matrix, queries[7], k=5), expected[7])


def test_a_run_s_recall_is_the_share_of_the_exact_top_k_found() -> None:
    run = perf.QueryRun([0.001, 0.001], [[1, 2, 7], [3, 4]])  # the second query found fewer than k
    assert run.recall(np.array([[1, 2, 3], [3, 5, 6]])) == 3 / 6
    with pytest.raises(ValueError, match="one row of row numbers per query"):
        run.recall(np.array([[1, 2, 3]]))


@pytest.mark.parametrize("algorithm", ["HNSW", "FLAT"])
def test_redisvl_schema_describes_the_same_index(r: redis.Redis, algorithm: str) -> None:
    """The RedisVL peer is handed our index definition; created by RedisVL it must be identical."""
    from redisvl.index import SearchIndex
    from redisvl.schema import IndexSchema

    ours = perf.bench_index(16, algorithm, "ours")
    create_index(r, ours)
    theirs = IndexSchema.from_dict({"index": {"name": "idx:theirs", "prefix": "theirs:", "storage_type": "hash"},
                                    "fields": perf.redisvl_fields(ours)})
    SearchIndex(theirs, redis_client=r).create()

    def attributes(name: str) -> list:
        return [{k: v for k, v in a.items() if k not in (b"identifier", b"attribute")}
                for a in ft_info(r, name)["attributes"]]

    assert attributes("idx:theirs") == attributes(ours.name)


def test_the_four_loaders_store_the_same_bytes(r: redis.Redis) -> None:
    matrix, records = perf.unit_vectors(30, 8), perf.bench_records(30)
    stored = {}
    for loader in perf.LOADERS:
        spec = perf.bench_index(8, "HNSW", f"t-{loader}")
        result = perf.time_load(r, spec, records, matrix, loader, progress=False)
        assert result.n == 30 and result.seconds > 0 and result.per_s > 0
        stored[loader] = {key[len(spec.prefix):]: r.hgetall(key) for key in r.scan_iter(f"{spec.prefix}*")}
        assert int(ft_info(r, spec.name)["num_docs"]) == 30
    assert stored["bulk"] == stored["naive"] == stored["redisvl"] == stored["pipeline"]
    assert stored["bulk"][b"7"] == {b"id": b"7", b"category": b"c7", b"embedding": matrix[7].tobytes()}


def test_load_race_times_each_loader_each_round_into_the_same_index(r: redis.Redis) -> None:
    matrix, records = perf.unit_vectors(40, 8), perf.bench_records(40)
    spec = perf.bench_index(8, "FLAT", "race")
    runs = perf.load_race(r, spec, records, matrix, ["bulk", "pipeline", "redisvl"], rounds=2)
    assert {loader: [(load.n, load.index) for load in loads] for loader, loads in runs.items()} == {
        loader: [(40, spec.name)] * 2 for loader in ("bulk", "pipeline", "redisvl")}
    assert all(load.seconds > 0 and load.client_cpu_seconds >= 0 for loads in runs.values() for load in loads)
    assert r.execute_command("FT._LIST") == [spec.name.encode()] and r.dbsize() == 40  # one index, emptied each time
    assert int(ft_info(r, spec.name)["num_docs"]) == 40
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        perf.load_race(r, spec, records, matrix, ["bulk"], rounds=0)


def test_queries_return_the_rows_redis_found_in_both_protocols(redis_server, r: redis.Redis) -> None:  # noqa: ANN001
    matrix, queries = perf.unit_vectors(200, 8), perf.unit_vectors(5, 8, 9)
    spec = perf.bench_index(8, "FLAT")
    perf.time_load(r, spec, perf.bench_records(200), matrix, progress=False)
    exact = perf.exact_top_k(matrix, queries)
    resp2 = redis_server.client(protocol=2)
    for client in (r, resp2):
        run = perf.time_queries(client, spec, queries, warmup=1)
        assert run.ids == exact.tolist() and run.recall(exact) == 1.0
        assert len(run.seconds) == 5 and run.p50_ms > 0
    assert perf.time_batch(r, spec, queries, repeats=2) > 0
    resp2.close()


def test_time_inside_redis_is_read_per_query_and_the_slowlog_settings_put_back(r: redis.Redis) -> None:
    matrix, queries = perf.unit_vectors(200, 8), perf.unit_vectors(7, 8, 9)
    spec = perf.bench_index(8, "HNSW")
    perf.time_load(r, spec, perf.bench_records(200), matrix, progress=False)
    before = r.config_get("slowlog-*")
    run, server = perf.time_queries_in_server(r, spec, queries, ef_runtime=40, warmup=2)
    assert len(server) == len(run.seconds) == 7 and all(0 <= inside < client for inside, client in
                                                        zip(server, run.seconds))
    assert run.ids == perf.time_queries(r, spec, queries, ef_runtime=40, warmup=0).ids
    assert r.config_get("slowlog-*") == before


def test_sweep_and_pick(r: redis.Redis) -> None:
    matrix, queries = perf.unit_vectors(500, 8), perf.unit_vectors(20, 8, 9)
    spec = perf.bench_index(8, "HNSW")
    perf.time_load(r, spec, perf.bench_records(500), matrix, progress=False)
    points = perf.recall_sweep(r, spec, queries, perf.exact_top_k(matrix, queries), efs=(10, 200))
    assert [p.ef_runtime for p in points] == [10, 200]
    assert all(0.0 <= p.recall <= 1.0 for p in points)
    fake = [perf.SweepPoint(10, 0.5, 1, 1), perf.SweepPoint(40, 0.96, 1, 1), perf.SweepPoint(80, 0.99, 1, 1)]
    assert perf.pick_ef(fake).ef_runtime == 40
    assert perf.pick_ef(fake[:1]).ef_runtime == 10  # none meets the target: the largest tried
    efs = (10, 20, 40, 80, 200, 400)
    short = perf.recall_sweep(r, spec, queries, perf.exact_top_k(matrix, queries), efs=efs, past_target=1)
    tried = [p.ef_runtime for p in short]
    first = next(i for i, p in enumerate(short) if p.recall >= perf.RECALL_TARGET)  # 500 points: easily found
    assert tried == list(efs[:first + 2])  # one point past the first meeting the target, then it stops


def test_memory_report_counts_what_the_load_added(r: redis.Redis) -> None:
    spec = perf.bench_index(64, "HNSW")
    before = perf.used_memory(r)
    perf.time_load(r, spec, perf.bench_records(2000), perf.unit_vectors(2000, 64), progress=False)
    memory = perf.memory_report(r, spec, 2000, 64, before)
    assert memory.bytes_per_vector > 64 * 4  # at least the hash's copy of each vector
    assert 64 * 4 <= memory.vector_index_bytes / 2000 < memory.bytes_per_vector
    assert memory.rule_bytes == pytest.approx(2000 * 64 * 4 * 1.3)
    perf.drop_index(r, spec)
    assert r.dbsize() == 0
    perf.drop_index(r, spec)  # dropping twice is harmless


def test_hnswlib_peer_finds_the_exact_neighbours_on_easy_data() -> None:
    matrix, queries = perf.unit_vectors(500, 8), perf.unit_vectors(20, 8, 9)
    peer = perf.hnswlib_peer(matrix, queries, perf.exact_top_k(matrix, queries), m=16, ef_construction=200,
                             efs=(10, 200))
    assert peer.build_cpu_seconds > 0 and [p.ef_runtime for p in peer.sweep] == [10, 200]
    assert peer.sweep[-1].recall >= 0.99


def test_vector_set_load_query_and_memory(r: redis.Redis) -> None:
    matrix, queries = perf.unit_vectors(300, 16), perf.unit_vectors(10, 16, 9)
    assert perf.load_vset(r, "vs", matrix, "NOQUANT") > 0
    assert r.execute_command("VCARD", "vs") == 300
    run = perf.time_vsim(r, "vs", queries, ef=200, warmup=1)
    assert run.recall(perf.exact_top_k(matrix, queries)) >= 0.99
    assert perf.vset_bytes(r, "vs") > 300 * 16 * 4


@pytest.mark.parametrize("vtype", ["FLOAT16", "BFLOAT16"])
def test_narrow_vectors_are_stored_and_searched_in_their_type(r: redis.Redis, vtype: str) -> None:
    matrix, queries = perf.unit_vectors(200, 8), perf.unit_vectors(5, 8, 9)
    spec = perf.typed_index(8, vtype)
    assert vtype in spec.fields[-1].args and [len(row) for row in perf.typed_rows(matrix[:2], vtype)] == [16, 16]
    perf.load_typed(r, spec, perf.bench_records(200), matrix, vtype)
    assert len(r.hget(f"{spec.prefix}7", "embedding")) == 16
    run = perf.time_queries(r, spec, queries, warmup=1, vtype=vtype)
    assert run.recall(perf.exact_top_k(matrix, queries)) >= 0.9
    with pytest.raises(ValueError, match="vtype must be one of"):
        perf.typed_rows(matrix, "INT8")
    with pytest.raises(ValueError, match="2-D"):  # one vector is notebook 10's exercise, not the package's
        perf.typed_rows(matrix[0], vtype)


def test_ping_and_numpy_batch_timings(r: redis.Redis) -> None:
    assert len(perf.time_ping(r, repeats=5)) == 5
    assert perf.time_numpy_batch(perf.unit_vectors(100, 8), perf.unit_vectors(10, 8, 1), repeats=2) > 0


# ------------------------------------------------------------------ the loader's fast path


def test_fast_path_stores_what_redis_py_hset_stores(r: redis.Redis) -> None:
    records = [{"id": "1", "name": "Café crème ☕", "price": 3.5, "stock": 12, "raw": b"\x00\xffbin", 7: "int name"},
               {"id": "2", "name": "", "price": 1e-7, "stock": -3, "raw": b"", 7: "x"}]
    matrix = perf.unit_vectors(2, 4)
    write_hashes(r, [f"fast:{record['id']}" for record in records], records, matrix, progress=False)
    for record, row in zip(records, matrix):
        r.hset(f"slow:{record['id']}", mapping={**record, "embedding": row.tobytes()})
        assert r.hgetall(f"fast:{record['id']}") == r.hgetall(f"slow:{record['id']}")


def test_fast_path_raises_redis_errors_and_keeps_the_client_usable(redis_server, r: redis.Redis) -> None:  # noqa: ANN001
    r.set("p:2", "a string, not a hash")
    records = [{"id": str(i)} for i in range(5)]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        write_hashes(r, [f"p:{i}" for i in range(5)], records, perf.unit_vectors(5, 4), batch_size=2)
    assert r.ping() and r.exists("p:0", "p:1") == 2
    single = redis_server.client(single_connection_client=True)
    write_hashes(single, [f"q:{i}" for i in range(5)], records, perf.unit_vectors(5, 4), batch_size=3)
    assert single.ping() and r.exists(*[f"q:{i}" for i in range(5)]) == 5
    single.close()


def test_write_hashes_refuses_a_value_it_cannot_encode_before_writing_anything(r: redis.Redis) -> None:
    records = [{"id": str(i), "tags": ["a", "b"] if i == 7 else "a"} for i in range(10)]
    with pytest.raises(TypeError, match="must be str, bytes, int or float, got list"):
        write_hashes(r, [f"t:{i}" for i in range(10)], records, perf.unit_vectors(10, 4), batch_size=3)
    assert r.ping() and r.keys("t:*") == []  # refused before the first write


def test_loader_progress_bar_counts_every_document(r: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    records = perf.bench_records(1234)
    write_hashes(r, [f"bar:{record['id']}" for record in records], records, perf.unit_vectors(1234, 4), progress=True,
                 batch_size=500)
    assert "1234/1234" in capsys.readouterr().err
