"""End-to-end batch throughput: ``usage-rating batch`` against a naive per-record Beam pipeline.

    PYTHONPATH=. python perf/bench_pipeline.py [--sizes 1000000 10000000] [--with-50m] [--json FILE]

For each size it generates (or reuses, under --workdir) an operator month in Avro and in
Parquet, runs the batch job end to end on the DirectRunner (files in, charges out, 2 worker
processes), and runs, on the same Avro files in the same invocation, the pipeline a newcomer would
write: ReadFromAvro -> Map(price one dict) -> CombinePerKey(sum) with a subset of the rules
(subscription lookup, longest-prefix zone, the zone's first rate step and connect fee). Prints
records/s, peak RSS and the ratio; --json writes a list of objects with records, format,
records_per_s, peak_rss_bytes and baseline_records_per_s.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TWO_WORKERS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _generate(work: Path, records: int, fmt: str) -> Path:
    from synth import GeneratorConfig, generate
    out = work / f"gen-{records}-{fmt}"
    if not (out / "manifest.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        generate(GeneratorConfig(out_dir=out, records=records, subscribers=max(1000, records // 50), fmt=fmt,
                                 files=max(2, records // 500_000)))
    return out


# The peak RSS of a child process, in bytes: the high-water mark of its own address space (VmHWM)
# or of its largest child (Beam's workers), whichever is larger. Not RUSAGE_SELF's ru_maxrss: a child
# that subprocess starts (vfork + exec) carries the peak of the process that started it in that
# figure (measured here: 1,511 MB in a child of a process that had touched 1.5 GB, 11 MB otherwise).
_PEAK_RSS = (
    "def peak_rss_bytes():\n"
    "    import resource\n"
    "    with open('/proc/self/status') as status:\n"
    "        own_kb = next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))\n"
    "    return max(own_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024\n"
)


def _run_batch_subprocess(gen: Path, out: Path, beam_args: list[str]) -> dict:
    """Run the batch job in a child process so its peak RSS (and its workers') is measured alone."""
    code = _PEAK_RSS + (
        "import json, sys, time\n"
        "from pipelines.batch import run_batch\nfrom pipelines.options import BatchConfig\n"
        f"c = BatchConfig(input_glob={str(gen / 'cdrs' / '*')!r}, reference_dir={str(gen / 'reference')!r}, "
        f"output_dir={str(out)!r})\n"
        "t = time.monotonic(); r = run_batch(c, sys.argv[1:]); t = time.monotonic() - t\n"
        "print(json.dumps({'records': r['records_in'], 'seconds': t, 'peak_rss_bytes': peak_rss_bytes(), "
        "'balanced': r['balanced'], "
        "'shards': r['shards']}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *beam_args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


class _NaivePrice:
    """Per-record pricing from a dict: what a first Beam pipeline over CDRs looks like."""

    def __init__(self, reference_dir: str):
        self._reference_dir = reference_dir

    def setup(self):
        from rating.reference import load_reference
        ref = load_reference(self._reference_dir)
        self.subs = {s.msisdn: s for s in ref.subscriptions}
        self.ref = ref
        self.tables = {name: dict(t.prefixes) for name, t in ref.zone_tables.items()}

    def __call__(self, record: dict):
        sub = self.subs.get(record["served_msisdn"])
        if sub is None:
            return ("rejected", 0)
        plan = self.ref.plans[sub.plan_id]
        version = plan.versions[0]
        number = record.get("other_party") or ""
        digits = number[1:] if number.startswith("+") else number[2:] if number.startswith("00") else \
            plan.numbering.country_code + number.lstrip("0")
        table = self.tables[version.zone_table]
        zone = next((table[digits[:k]] for k in range(len(digits), 0, -1) if digits[:k] in table), "HOME")
        service = record["service"].lower()
        rate = next((r for r in version.rates if r.service == service and r.zone in (zone, "*") and r.steps), None)
        if rate is None:
            return (sub.account_id, 0)
        step = rate.steps[0]
        units = record["duration_s"] if service == "voice" else (
            record["message_count"] if service == "sms" else record["bytes_up"] + record["bytes_down"])
        charged = math.ceil(units / step.increment_units) * step.increment_units
        return (sub.account_id, rate.connect_fee_micros + charged * step.price_micros // step.per_units)


def _run_naive(gen: Path, beam_args: list[str], max_records: int | None = None) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    pricer = _NaivePrice(str(gen / "reference"))

    seen = beam.metrics.Metrics.counter("naive", "records")

    class Price(beam.DoFn):
        def setup(self):
            pricer.setup()

        def process(self, record):
            seen.inc()
            yield pricer(record)

    started = time.monotonic()
    files = sorted(str(f) for f in (gen / "cdrs").glob("*.avro"))
    if max_records is not None:  # generated files hold equal shares of the records
        per_file = json.loads((gen / "manifest.json").read_text())["records_written"] / len(files)
        files = files[:max(1, int(max_records // per_file))]
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    _ = (p | beam.Create(files) | beam.io.ReadAllFromAvro() | "Price" >> beam.ParDo(Price())
         | beam.CombinePerKey(sum))
    result = p.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("records"))["counters"]
    return {"records": sum(c.committed or c.attempted for c in counters), "seconds": seconds}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--with-50m", action="store_true", help="also run 50M records (minutes, GBs)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--baseline-records", type=int, default=None,
                        help="run the naive baseline on at most this many records' files (it is slow)")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    sizes = args.sizes + ([50_000_000] if args.with_50m else [])
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    results = []
    for records in sizes:
        gen_avro = _generate(work, records, "avro")
        baseline = _run_naive(gen_avro, ["--runner=DirectRunner"], args.baseline_records)
        baseline_rate = baseline["records"] / baseline["seconds"]
        for fmt in ("avro", "parquet"):
            gen = gen_avro if fmt == "avro" else _generate(work, records, fmt)
            run = _run_batch_subprocess(gen, work / f"out-{records}-{fmt}", TWO_WORKERS)
            shutil.rmtree(work / f"out-{records}-{fmt}", ignore_errors=True)
            results.append({"records": run["records"], "format": fmt, "records_per_s": run["records"] / run["seconds"],
                            "peak_rss_bytes": run["peak_rss_bytes"], "baseline_records_per_s": baseline_rate,
                            "baseline_records": baseline["records"], "shards": run["shards"],
                            "seconds": run["seconds"], "balanced": run["balanced"]})
    print(f"{'records':>12} {'format':<8} {'shards':>6} {'records/s':>12} {'peak RSS MB':>12} {'naive rec/s':>12} "
          f"{'ratio':>7}")
    for r in results:
        print(f"{r['records']:>12,} {r['format']:<8} {r['shards']:>6} {r['records_per_s']:>12,.0f} "
              f"{r['peak_rss_bytes'] / 2**20:>12,.0f} {r['baseline_records_per_s']:>12,.0f} "
              f"{r['records_per_s'] / r['baseline_records_per_s']:>7.1f}")
    print("naive rec/s: the per-record pipeline over the same Avro files (at most --baseline-records of them), "
          "same invocation")
    print("targets: >= 2,000,000 records/s from Avro (>= 25x naive); peak RSS <= 2 GB at 50M; 50M within 20% of 5M")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
