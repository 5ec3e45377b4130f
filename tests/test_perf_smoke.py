"""Every benchmark in perf/ runs once at a tiny size, so that none of them can rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_PERF = Path(__file__).resolve().parent.parent / "perf"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_decode_runs_and_writes_its_figures(tmp_path, capsys):
    bench = _load("bench_decode")
    out = tmp_path / "decode.json"
    report = bench.main(["--records", "3000", "--sample", "500", "--repeat", "1", "--json", str(out),
                          "--writer-engine", "numpy"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    results = report["results"]
    assert {label for label, _, _ in bench.CASES} == set(results)
    for label, figures in results.items():
        expected = 500 if "[sample]" in label else 3000
        assert figures["records"] == expected, label
        assert figures["records_per_s"] > 0
    assert "avro fast path (deflate, v2)" in capsys.readouterr().out


def test_bench_rating_smoke(tmp_path):
    """perf/bench_rating.py runs end to end on 20k records, writes its figures, and its Polars
    version prices every record it covers exactly as the kernel does."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "perf" / "bench_rating.py"
    spec = importlib.util.spec_from_file_location("bench_rating", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    out = tmp_path / "rating.json"
    bench.main(["--records", "20000", "--workdir", str(tmp_path), "--repeat", "1", "--twin-sample", "200",
                "--profile", "--json", str(out)])
    figures = json.loads(out.read_text())
    for key in ("kernel_records_per_s", "scan_records_per_s", "twin_records_per_s", "polars_records_per_s",
                "memcpy_records_per_s"):
        assert figures[key] > 0, key
    check = figures["polars_check"]
    assert check["covered"] > 0.9 * check["records"]
    assert check["reason_mismatches"] == 0 and check["charge_mismatches"] == 0
    assert {row["name"].strip() for row in figures["profile"]} >= {"stateless kernel", "band_at alone, once per row"}


def test_bench_rerate_smoke(tmp_path, capsys):
    bench = _load("bench_rerate")
    out = tmp_path / "rerate.json"
    report = bench.main(["--records", "3000", "--subscribers", "100", "--compare-records", "5000", "--shards", "2",
                         "--workdir", str(tmp_path / "work"), "--json", str(out)])
    figures = json.loads(out.read_text())
    assert figures == json.loads(json.dumps(report))
    assert figures["records_per_s"] > 0 and figures["peak_rss_bytes"] > 0
    assert figures["balanced"] and figures["version"] == 2 and figures["changed_records"] > 0
    assert figures["compare"]["records"] == 5000
    assert figures["compare"]["aligned"]["changed"] == figures["compare"]["join"]["changed"] > 0
    assert "re-rate (run 2)" in capsys.readouterr().out


def test_bench_streaming_smoke(pubsub_host, tmp_path):
    """perf/bench_streaming.py runs once, tiny, on the session's emulator, and writes its figures."""
    bench = _load("bench_streaming")
    out = tmp_path / "streaming.json"
    figures = bench.main(["--records", "1500", "--per-message", "500", "--single", "30", "--timeout", "240",
                          "--workdir", str(tmp_path), "--json", str(out)])
    written = json.loads(out.read_text())
    for key in ("sustained_records_per_s", "p50_latency_s", "p99_latency_s", "emulator_messages_per_s",
                "single_record_messages_per_s"):
        assert written[key] > 0, key
    assert figures["records"] == 1500


def test_bench_pipeline_smoke(tmp_path, capsys):
    """perf/bench_pipeline.py runs the job and both baselines once on a tiny operator and writes its
    figures; the Polars baseline rates the records the job rates, and prices alike those both price."""
    bench = _load("bench_pipeline")
    out = tmp_path / "pipeline.json"
    results = bench.main(["--sizes", "3000", "--workdir", str(tmp_path), "--json", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(results))
    assert {r["format"] for r in written} == {"avro", "parquet"}
    for r in written:
        assert r["records"] == 3000 and r["balanced"]
        assert r["records_per_s"] > 0 and r["baseline_records_per_s"] > 0 and r["peak_rss_bytes"] > 0
        assert r["polars_records_per_s"] > 0 and r["polars"]["records"] == 3000
        check = r["polars_check"]
        assert check["both_rated"] == check["job_rated"] == check["polars_rated"] == r["polars"]["rated"] > 2900
        assert check["account_or_cycle_differ"] == 0
        assert check["compared"] > 0 and check["charges_agree"] == check["compared"]
    printed = capsys.readouterr().out
    assert "x polars" in printed and "Polars vs job, 3,000 avro" in printed


def test_fuzz_smoke(tmp_path, capsys):
    """perf/fuzz.py runs a tiny budget and prints what it tried (per kind) and what held (per check)."""
    fuzz = _load("fuzz")
    out = tmp_path / "fuzz.json"
    status = fuzz.main(["--records", "300", "--kinds", "jsonl_values,avro_block_count", "--cli-cases", "0",
                        "--workdir", str(tmp_path), "--json", str(out)])
    figures = json.loads(out.read_text())
    assert set(figures["cases"]) == {"jsonl_values", "avro_block_count"}
    assert sum(figures["records"].values()) >= 300 and figures["held"]["records_accounted"] > 0
    assert status == (1 if figures["failures"] or figures["harness_errors"] else 0)
    printed = capsys.readouterr().out
    assert "avro_block_count" in printed and "records_accounted" in printed and "result:" in printed


def test_bench_distributed_smoke(tmp_path):
    """perf/bench_distributed.py runs the DirectRunner and a two-worker Dask cluster once, tiny,
    checks their stores are byte-identical, and writes its figures."""
    bench = _load("bench_distributed")
    out = tmp_path / "distributed.json"
    results = bench.main(["--records", "3000", "--workdir", str(tmp_path), "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert [r["runner"] for r in results] == ["DirectRunner, 2 processes", "DaskRunner, 2 workers, 2 partitions",
                                              "DaskRunner, 2 workers, 4 partitions"]
    assert all(r["records"] == 3000 and r["balanced"] and r["records_per_s"] > 0 for r in results)
