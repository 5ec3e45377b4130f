"""Re-rating speed: re-rate a generated billing cycle after a price change, beside the batch run that
rated it first, in the same run and on the same machine.

    python perf/bench_rerate.py [--records 10000000] [--subscribers 100000] [--workdir DIR]
                                [--json FILE] [Beam flags, default: DirectRunner, 1 worker, in memory]

Steps (each pipeline in its own child process, so its peak RSS is its own):

1. generate ``--records`` records over January 2026 (Parquet; reused when the workdir already has
   them) and set every account's bill cycle day to 1, so the whole month is one cycle (2026-01);
2. **baseline**: ``usage-rating batch`` rates them into an output store (version 1);
3. raise the price of one rate (MOBILE_S voice, NATIONAL, PEAK) by 0.01 in a copy of the reference;
4. **re-rate** cycle 2026-01 with it: the same decode, dedup and rate transforms, then the
   record-by-record comparison with the store and the publication of version 2.

Prints records/s of both runs and their ratio, the comparison's cost (seconds and share of the
re-rate), records changed and peak RSS. ``--json FILE`` writes the figures (``records_per_s``,
``peak_rss_bytes`` and the rest).
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
    from pipelines.generator import GeneratorConfig, generate

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


def _child(phase: str, args: dict, result_path: str) -> None:
    """Run one phase in this (child) process and write its figures to ``result_path``."""
    from pipelines.batch import run_batch
    from pipelines.options import BatchConfig
    from pipelines.rerate import RerateConfig, run_rerate

    started = time.monotonic()
    if phase == "batch":
        totals = run_batch(BatchConfig(input_glob=args["input"], reference_dir=args["reference"],
                                       output_dir=args["output"], shards=args["shards"]), args["beam"])
        figures = {"records_in": totals["records_in"], "rated": totals["rated"], "balanced": totals["balanced"]}
    else:
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--subscribers", type=int, default=None, help="default: records / 100, at least 100")
    parser.add_argument("--workdir", default="bench-rerate", help="generated data is reused from here")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--json", default=None, help="write the figures here")
    if argv and argv[0] == "--child":
        _child(argv[1], json.loads(argv[2]), argv[3])
        return {}
    args, beam = parser.parse_known_args(argv)
    beam = beam or DEFAULT_BEAM
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
        "manifest_records": manifest["records_written"],
    }
    mb = 1 << 20
    print(f"{records:,} records ({rerate['in_cycle']:,} in cycle {CYCLE}), {change}: {changed:,} records change; "
          f"{' '.join(beam)}")
    print(f"{'run':<34}{'records/s':>12}{'seconds':>10}{'peak RSS MB':>13}")
    print(f"{'batch (baseline, version 1)':<34}{batch_rate:>12,.0f}{batch['elapsed_s']:>10.1f}"
          f"{batch['peak_rss_bytes'] / mb:>13,.0f}")
    print(f"{'re-rate (version 2)':<34}{rerate_rate:>12,.0f}{rerate['elapsed_s']:>10.1f}"
          f"{rerate['peak_rss_bytes'] / mb:>13,.0f}")
    print(f"{'  pipeline (decode, dedup, rate)':<34}{'':>12}{timings['pipeline_s']:>10.1f}")
    print(f"{'  comparison (record by record)':<34}{report['compare_records_per_s']:>12,.0f}"
          f"{timings['compare_s']:>10.1f}")
    print(f"{'  version + invoices + publish':<34}{'':>12}{timings['publish_s']:>10.1f}")
    print(f"re-rate / batch speed {report['rerate_vs_batch']:.2f}; comparison {100 * report['compare_share']:.1f}% "
          f"of the re-rate; balanced {'yes' if report['balanced'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
