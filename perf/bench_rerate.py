"""Re-rating speed: re-rate a generated billing cycle after a price change, beside the batch run that
rated it first, in the same run and on the same machine; then the Beam-free comparison alone at
``--compare-records`` (default 10M).

    python perf/bench_rerate.py [--records 10000000] [--compare-records 10000000] [--subscribers N]
                                [--workdir DIR] [--json FILE]
                                [Beam flags, default: DirectRunner, 1 worker, in memory]

End to end (each pipeline in its own child process, so its peak RSS is its own):

1. generate ``--records`` records over January 2026 (Parquet; reused when the workdir already has
   them) and set every account's bill cycle day to 1, so the whole month is one cycle (2026-01);
2. **baseline**: ``usage-rating batch`` rates them into an output store (run 1);
3. raise the price of one rate (MOBILE_S voice, NATIONAL, PEAK) by 0.01 in a copy of the reference;
4. **re-rate** cycle 2026-01 with it: the batch job's decode, dedup and rate transforms, then the
   record-by-record comparison with the store and the commit of the re-rated cycle (run 2 of the
   store's run log; run 1 is the batch run).

The Beam DirectRunner keeps every stage's output in memory: about 1.6 GB per million records, for
the batch job as much as for the re-rate (16 GB peak at 10M). The script refuses to start when
the machine has less memory available than that; ``--records`` scales the run down. The
comparison is also measured alone at ``--compare-records`` (0 to skip): the cycle's rated events
before the re-rate (read by time travel) and after it are tiled up to that size (with record ids
suffixed) and compared in a child process. It runs once with both sides in the same order (the
fast path: same shards) and once with the new side in another order (the join path).

Prints records/s of both runs and their ratio, the comparison's cost (seconds and share of the
re-rate), records changed and peak RSS. ``--json FILE`` writes the figures: ``records_per_s`` and
``peak_rss_bytes`` of the end-to-end re-rate, and ``compare`` (the comparison alone).
"""

from __future__ import annotations

import argparse
import csv
import decimal
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

CYCLE = "2026-01"
DEFAULT_BEAM = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
_RATE = re.compile(r'(zone: NATIONAL\n\s*band: PEAK\n(?:(?!\s*- service:).*\n)*?\s*price: ")([0-9.]+)(")')


def _generate(workdir: Path, records: int, subscribers: int) -> dict:
    from synth import GeneratorConfig, generate

    manifest_path = workdir / "gen" / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["config"]["records"] == records and manifest["config"]["subscribers"] == subscribers:
            return manifest
    manifest = generate(GeneratorConfig(out_dir=workdir / "gen", records=records, subscribers=subscribers,
                                        days=30, fmt="parquet", files=8))
    _one_cycle(workdir / "gen" / "reference" / "accounts.csv")
    return manifest


def _one_cycle(accounts_csv: Path) -> None:
    """Every account's bill cycle day 1: January is one cycle for all of them."""
    with open(accounts_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0])
    for row in rows:
        row["bill_cycle_day"] = "1"
    with open(accounts_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def candidate_reference(reference: Path, target: Path) -> str:
    """Copy ``reference`` to ``target`` with MOBILE_S's NATIONAL/PEAK voice price raised by 0.01."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(reference, target)
    plan = target / "plans" / "MOBILE_S.yaml"
    text = plan.read_text()
    match = _RATE.search(text)
    if match is None:
        raise SystemExit(f"{plan}: no NATIONAL/PEAK rate with a price to change; update bench_rerate.py")
    price = str(decimal.Decimal(match.group(2)) + decimal.Decimal("0.01"))
    plan.write_text(text[:match.start(2)] + price + text[match.end(2):])
    return f"MOBILE_S voice NATIONAL/PEAK {match.group(2)} -> {price}"


def _tile(store: Path, target: Path, records: int) -> dict:
    """Write the cycle's rated events before the re-rate (as of the run before it: time travel) and
    after it, tiled to ``records`` rows (record ids suffixed per copy), as ``old/`` and ``new/`` part
    files in the same order."""
    import math

    import polars as pl
    from pyiceberg.expressions import EqualTo

    from rating.rerate import RATED_COLUMNS
    from sinks.iceberg import IcebergStore

    shutil.rmtree(target, ignore_errors=True)
    iceberg = IcebergStore.open(str(store), create=False)
    before = iceberg.runs()[-2].run_id
    cycle = EqualTo("service_cycle", CYCLE)
    old, new = (pl.from_arrow(iceberg.read("rated", as_of=as_of, row_filter=cycle, selected_fields=RATED_COLUMNS))
                for as_of in (before, None))
    copies = math.ceil(records / old.height)
    for side, frame in (("old", old), ("new", new)):
        (target / side).mkdir(parents=True)
        left = records
        for k in range(copies):
            part = frame.head(left).with_columns(pl.col("record_id") + f"-{k}")
            part.write_parquet(target / side / f"part-{k:05d}.parquet")
            left -= part.height
    return {"old": sorted(str(p) for p in (target / "old").glob("*.parquet")),
            "new": sorted(str(p) for p in (target / "new").glob("*.parquet"))}


def _compare_child(args: dict) -> dict:
    """Compare the tiled cycle (before/after): read, diff, impact summary, per-record contributions."""
    import polars as pl

    from rating.rerate import RATED_COLUMNS, compare_records, impact_summary, record_contributions

    rejects = pl.LazyFrame(schema={"reason": pl.Utf8, "record_id": pl.Utf8, "source": pl.Utf8,
                                   "start_time": pl.Datetime("us", "UTC"), "in_scope": pl.Boolean})
    new_files = args["new"] if args["aligned"] else list(reversed(args["new"]))
    diff = compare_records(pl.scan_parquet(args["old"]).select(RATED_COLUMNS), rejects.drop("in_scope"),
                           pl.scan_parquet(new_files).select(RATED_COLUMNS), rejects)
    summary = impact_summary(diff)
    contributions = record_contributions(diff.changes)
    return {"records": diff.counts, "contributions": contributions.height,
            "delta_micros": summary["totals"]}


def _child(phase: str, args: dict, result_path: str) -> None:
    """Run one phase in this (child) process and write its figures to ``result_path``."""
    started = time.monotonic()
    if phase.startswith("compare"):
        figures = _compare_child(args)
    elif phase == "batch":
        from pipelines.batch import run_batch
        from pipelines.options import BatchConfig

        totals = run_batch(BatchConfig(input_glob=args["input"], reference_dir=args["reference"],
                                       output_dir=args["output"], shards=args["shards"]), args["beam"])
        figures = {"records_in": totals["records_in"], "rated": totals["rated"], "balanced": totals["balanced"]}
    else:
        from pipelines.rerate import RerateConfig, run_rerate

        result = run_rerate(RerateConfig(cycle=CYCLE, input_glob=args["input"], reference_dir=args["reference"],
                                         output_dir=args["output"], shards=args["shards"]), args["beam"])
        t = result["totals"]
        figures = {"records_in": t["records_in"], "in_cycle": t["in_cycle"]["rated"], "records": t["records"],
                   "version": result["version"], "balanced": result["balanced"], "timings": result["timings"],
                   "delta_micros": result["summary"]["totals"]}
    figures["elapsed_s"] = time.monotonic() - started
    Path(result_path).write_text(json.dumps(figures))


def _run_child(phase: str, args: dict, workdir: Path) -> dict:
    """Run ``phase`` in a child process; its figures plus its peak RSS (bytes) and wall seconds."""
    result_path = workdir / f"{phase}.result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child", phase, json.dumps(args), str(result_path)], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{phase} failed with exit status {proc.returncode}")
    figures = json.loads(result_path.read_text())
    return {**figures, "wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024}


GB_PER_MILLION_RECORDS = 1.6   # peak RSS of the DirectRunner (in memory), measured at 1M, 3M and 10M


def _check_memory(records: int) -> None:
    """Refuse to start when the DirectRunner's peak would not fit in the memory available now."""
    try:
        with open("/proc/meminfo") as f:
            available_gb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 2**20
    except (OSError, StopIteration):
        return
    needed_gb = 1.0 + GB_PER_MILLION_RECORDS * records / 1e6
    if needed_gb > available_gb:
        raise SystemExit(f"--records {records:,} needs about {needed_gb:.0f} GB on the DirectRunner in memory, "
                         f"{available_gb:.0f} GB are available: pass a smaller --records")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000, help="records generated and re-rated end to end")
    parser.add_argument("--compare-records", type=int, default=10_000_000,
                        help="records of the comparison measured alone (0: skip)")
    parser.add_argument("--subscribers", type=int, default=None, help="default: records / 100, at least 100")
    parser.add_argument("--workdir", default="bench-rerate", help="generated data is reused from here")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--json", default=None, help="write the figures here")
    if argv and argv[0] == "--child":
        _child(argv[1], json.loads(argv[2]), argv[3])
        return {}
    args, beam = parser.parse_known_args(argv)
    beam = beam or DEFAULT_BEAM
    if not any(a.startswith("--runner") and "DirectRunner" not in a for a in beam):
        _check_memory(args.records)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    subscribers = args.subscribers or max(100, args.records // 100)

    t0 = time.monotonic()
    manifest = _generate(workdir, args.records, subscribers)
    generate_s = time.monotonic() - t0
    gen = workdir / "gen"
    store = workdir / "store"
    shutil.rmtree(store, ignore_errors=True)
    common = {"input": str(gen / "cdrs" / "*"), "output": str(store), "shards": args.shards, "beam": beam}
    batch = _run_child("batch", {**common, "reference": str(gen / "reference")}, workdir)
    change = candidate_reference(gen / "reference", workdir / "reference-candidate")
    rerate = _run_child("rerate", {**common, "reference": str(workdir / "reference-candidate")}, workdir)

    compare = {}
    if args.compare_records:
        files = _tile(store, workdir / "tiled", args.compare_records)
        for name, aligned in (("aligned", True), ("join", False)):
            run = _run_child(f"compare-{name}", {**files, "aligned": aligned}, workdir)
            compare[name] = {"s": run["elapsed_s"], "records_per_s": args.compare_records / run["elapsed_s"],
                             "peak_rss_bytes": run["peak_rss_bytes"], "changed": run["records"]["CHANGED"]}
        compare["records"] = args.compare_records
        shutil.rmtree(workdir / "tiled", ignore_errors=True)

    records = rerate["records_in"]
    timings = rerate["timings"]
    rerate_rate = records / rerate["elapsed_s"]
    batch_rate = batch["records_in"] / batch["elapsed_s"]
    changed = rerate["records"]["CHANGED"]
    report = {
        "records": records, "in_cycle_records": rerate["in_cycle"], "changed_records": changed,
        "price_change": change, "runner_flags": beam, "generate_s": generate_s,
        "records_per_s": rerate_rate, "peak_rss_bytes": rerate["peak_rss_bytes"],
        "rerate_s": rerate["elapsed_s"], "pipeline_s": timings["pipeline_s"], "compare_s": timings["compare_s"],
        "publish_s": timings["publish_s"], "compare_share": timings["compare_s"] / rerate["elapsed_s"],
        "compare_records_per_s": rerate["in_cycle"] / max(timings["compare_s"], 1e-9),
        "baseline_batch_records_per_s": batch_rate, "baseline_batch_s": batch["elapsed_s"],
        "baseline_batch_peak_rss_bytes": batch["peak_rss_bytes"], "rerate_vs_batch": rerate_rate / batch_rate,
        "version": rerate["version"], "balanced": rerate["balanced"] and batch["balanced"],
        "manifest_records": manifest["records_written"], "compare": compare,
    }
    mb = 1 << 20
    print(f"{records:,} records ({rerate['in_cycle']:,} in cycle {CYCLE}), {change}: {changed:,} records change; "
          f"{' '.join(beam)}")
    print(f"{'run':<34}{'records/s':>12}{'seconds':>10}{'peak RSS MB':>13}")
    print(f"{'batch (baseline, run 1)':<34}{batch_rate:>12,.0f}{batch['elapsed_s']:>10.1f}"
          f"{batch['peak_rss_bytes'] / mb:>13,.0f}")
    print(f"{'re-rate (run 2)':<34}{rerate_rate:>12,.0f}{rerate['elapsed_s']:>10.1f}"
          f"{rerate['peak_rss_bytes'] / mb:>13,.0f}")
    print(f"{'  pipeline (decode, dedup, rate)':<34}{'':>12}{timings['pipeline_s']:>10.1f}")
    print(f"{'  comparison (record by record)':<34}{report['compare_records_per_s']:>12,.0f}"
          f"{timings['compare_s']:>10.1f}")
    print(f"{'  invoices + commit':<34}{'':>12}{timings['publish_s']:>10.1f}")
    print(f"re-rate / batch speed {report['rerate_vs_batch']:.2f}; comparison {100 * report['compare_share']:.1f}% "
          f"of the re-rate; balanced {'yes' if report['balanced'] else 'NO'}")
    if compare:
        print(f"comparison alone, {compare['records']:,} records ({compare['aligned']['changed']:,} changed), "
              "read + diff + impact + per-record money:")
        for name, label in (("aligned", "same order (same shards)"), ("join", "other order (full join)")):
            c = compare[name]
            print(f"  {label:<32}{c['records_per_s']:>12,.0f}{c['s']:>10.1f}{c['peak_rss_bytes'] / mb:>13,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
