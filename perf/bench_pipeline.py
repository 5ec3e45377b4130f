"""End-to-end batch throughput: ``usage-rating batch`` against a Polars job and a naive Beam pipeline.

    PYTHONPATH=. python perf/bench_pipeline.py [--sizes 1000000 10000000] [--with-50m] [--json FILE]

For each size it generates (or reuses, under --workdir) an operator month in Avro and in
Parquet, runs the batch job end to end on the DirectRunner (files in, charges out, 2 worker
processes), and runs on the same files in the same invocation two baselines:

* the job a data engineer would write in Polars instead of Beam (``polars_job``: read the files,
  drop duplicates, join subscriptions and plan versions, rate statelessly with the expressions of
  perf/polars_rating.py, aggregate charges per account, cycle and service, write Parquet), once per
  format, in its own process; its rated events are checked against the job's (``compare_with_job``);
* the pipeline a newcomer would write in Beam, on the Avro files: ReadFromAvro -> Map(price one
  dict) -> CombinePerKey(sum) with a subset of the rules (subscription lookup, longest-prefix zone,
  the zone's first rate step and connect fee).

Prints records/s, peak RSS and the ratios; --json writes a list of objects with records, format,
records_per_s, peak_rss_bytes, polars_records_per_s (null when skipped) and baseline_records_per_s.
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

import numpy as np

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


# --- the Polars baseline ----------------------------------------------------------------------------

def polars_job(gen: Path, fmt: str, out: Path) -> dict:
    """The batch job as a data engineer would write it in Polars instead of Beam, on one machine.

    Reads the generated CDR files (Parquet, or for Avro the copies ``polars_inputs`` made: the same
    blocks), keeps one record of each (source, record_id) (duplicates are resent copies), drops
    rows with an empty record_id or a negative counter, joins the subscription and the plan version
    in force at the start time and the account, rates statelessly with
    ``perf.polars_rating.rate_lazy`` (no allowances, tiers priced from zero per event, voice calls
    that may cross a band not priced), gives each event its account's billing cycle, and writes
    rated events and charges per (account, cycle, service) as Parquet under ``out``. Its time
    includes loading the reference data (the compiled tariff through the job's own on-disk cache,
    the subscriptions and accounts CSVs) and writing both files. Returns records, seconds and the
    counts of what it made.
    """
    import polars as pl

    from perf.polars_rating import polars_tariff, rate_lazy
    from rating.engine import RatingEngine

    started = time.monotonic()
    reference = gen / "reference"
    compiled = RatingEngine.load(str(reference)).compiled
    tariff = polars_tariff(compiled)
    T = compiled.tables
    plan_versions = pl.DataFrame({
        "plan_id": pl.Series([compiled.plan_ids[p] for p in compiled.version_plan], dtype=pl.String),
        "version": np.arange(len(compiled.version_plan), dtype=np.int64),
        "version_from": pl.Series(T.ver_from_us.astype(np.int64)).cast(pl.Datetime("us", "UTC")),
        "version_to": pl.Series(T.ver_to_us.astype(np.int64)).cast(pl.Datetime("us", "UTC")),   # INT64_MAX: open
    })
    subscriptions = pl.read_csv(reference / "subscriptions.csv", schema_overrides={
        "msisdn": pl.String, "account_id": pl.String, "plan_id": pl.String, "valid_from": pl.String,
        "valid_to": pl.String}).select(
        served_msisdn="msisdn", account_id="account_id", plan_id="plan_id",
        sub_from=pl.col("valid_from").str.to_datetime(time_zone="UTC"),
        sub_to=pl.col("valid_to").str.to_datetime(time_zone="UTC"))
    accounts = pl.read_csv(reference / "accounts.csv", schema_overrides={"account_id": pl.String}).select(
        "account_id", account_tz="timezone", bill_cycle_day=pl.col("bill_cycle_day").cast(pl.Int64))
    reference_s = time.monotonic() - started

    usage = (pl.read_parquet(sorted(gen.glob("cdrs/*.parquet"))) if fmt == "parquet"
             else pl.concat([pl.read_avro(path) for path in polars_inputs(gen)], how="vertical_relaxed"))
    records = usage.height
    start = pl.col("start_time")
    local = pl.coalesce([pl.when(pl.col("account_tz") == name).then(
        start.dt.convert_time_zone(name).dt.replace_time_zone(None)) for name in accounts["account_tz"].unique()])
    cycle = (local.dt.year().cast(pl.Int64) * 12 + local.dt.month().cast(pl.Int64) - 1
             - (local.dt.day().cast(pl.Int64) < pl.col("bill_cycle_day")).cast(pl.Int64))
    events = (usage.lazy()
              .with_columns(pl.col("service").cast(pl.String))
              .unique(subset=["source", "record_id"], keep="any")
              .filter(pl.col("record_id") != "", pl.col("duration_s") >= 0, pl.col("bytes_up") >= 0,
                      pl.col("bytes_down") >= 0, pl.col("message_count") >= 0)
              .join(subscriptions.lazy(), on="served_msisdn")
              .filter(start >= pl.col("sub_from"), pl.col("sub_to").is_null() | (start < pl.col("sub_to")))
              .join(plan_versions.lazy(), on="plan_id")
              .filter(start >= pl.col("version_from"), start < pl.col("version_to"))
              .join(accounts.lazy(), on="account_id")
              .with_columns(cycle=cycle))
    names = {"zone": compiled.zone_names, "band": compiled.band_names}
    rated = (rate_lazy(events, tariff)
             .filter(pl.col("reason") == 0)
             .select("source", "record_id", "service", "served_msisdn", "other_party", "start_time", "account_id",
                     "plan_id", *[pl.col(k).replace_strict(dict(enumerate(v)), return_dtype=pl.String) for k, v
                                  in names.items()],
                     "raw_units", "cycle", charge_micros="charge")
             .with_columns(service_cycle=pl.format("{}-{}", (pl.col("cycle") // 12).cast(pl.String),
                                                   (pl.col("cycle") % 12 + 1).cast(pl.String).str.zfill(2)))
             .drop("cycle")
             .collect())
    out.mkdir(parents=True, exist_ok=True)
    rated.write_parquet(out / "rated.parquet")
    charges = (rated.group_by("account_id", "service_cycle", "service")
               .agg(events=pl.len(), raw_units=pl.col("raw_units").sum(), charge_micros=pl.col("charge_micros").sum(),
                    unpriced_events=pl.col("charge_micros").null_count())
               .sort("account_id", "service_cycle", "service"))
    charges.write_parquet(out / "charges.parquet")
    return {"records": records, "seconds": time.monotonic() - started, "reference_s": reference_s,
            "rated": rated.height, "unpriced": rated["charge_micros"].null_count(), "charge_lines": charges.height}


def polars_inputs(gen: Path) -> list[Path]:
    """Copies of the generated Avro files that polars.read_avro accepts (made once, beside them):
    the same blocks under a header schema without integer defaults, which its reader refuses
    ("OutOfSpec"; perf/bench_decode.py, perf/RESULTS.md "Decoding")."""
    from perf.bench_decode import without_integer_defaults

    copies = []
    for path in sorted(gen.glob("cdrs/*.avro")):
        copy = gen / "polars-avro" / path.name
        if not copy.exists():
            copy.parent.mkdir(exist_ok=True)
            without_integer_defaults(path, copy.with_suffix(".tmp"))
            copy.with_suffix(".tmp").rename(copy)
        copies.append(copy)
    return copies


def _run_polars_subprocess(gen: Path, fmt: str, out: Path) -> dict:
    """``polars_job`` in a child process (Polars' own thread pool: one thread per core), peak RSS its own."""
    code = _PEAK_RSS + (
        "import json, sys\nfrom pathlib import Path\nfrom perf.bench_pipeline import polars_job\n"
        "r = polars_job(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))\n"
        "r['peak_rss_bytes'] = peak_rss_bytes()\n"
        "print(json.dumps(r))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(gen), fmt, str(out)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"the Polars baseline failed on {gen} ({fmt}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_with_job(polars_out: Path, job_out: Path) -> dict:
    """How the Polars baseline's rated events agree with the job's (its store at ``job_out``).

    Compared: records both rated, that the Polars rules price (``charge_micros`` not null) and that
    the job priced without state (no free units from an allowance, no graduated tier: ``tier`` -1),
    so that the stateless rules apply to both. Counts those whose charge agrees, and whose account
    and service cycle agree.
    """
    import polars as pl

    from sinks.iceberg import IcebergStore

    job = pl.from_arrow(IcebergStore.open(str(job_out), create=False).read(
        "rated", selected_fields=["source", "record_id", "account_id", "service_cycle", "tier", "free_units",
                                  "charge_micros"]))
    ours = pl.read_parquet(polars_out / "rated.parquet",
                           columns=["source", "record_id", "account_id", "service_cycle", "charge_micros"])
    both = ours.join(job, on=["source", "record_id"], suffix="_job")
    stateless = both.filter(pl.col("charge_micros").is_not_null(), pl.col("tier") == -1, pl.col("free_units") == 0)
    return {
        "job_rated": job.height, "polars_rated": ours.height, "both_rated": both.height,
        "compared": stateless.height,
        "charges_agree": stateless.filter(pl.col("charge_micros") == pl.col("charge_micros_job")).height,
        "account_or_cycle_differ": both.filter((pl.col("account_id") != pl.col("account_id_job"))
                                               | (pl.col("service_cycle") != pl.col("service_cycle_job"))).height,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--with-50m", action="store_true", help="also run 50M records (minutes, GBs)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--baseline-records", type=int, default=None,
                        help="run the naive baseline on at most this many records' files (it is slow)")
    parser.add_argument("--polars-max-records", type=int, default=10_000_000,
                        help="skip the Polars baseline above this many records: it holds every record in memory, "
                             "about 1.3 GB per million (default 10,000,000)")
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
            job_out, polars_out = work / f"out-{records}-{fmt}", work / f"polars-{records}-{fmt}"
            run = _run_batch_subprocess(gen, job_out, TWO_WORKERS)
            polars = check = None
            if records <= args.polars_max_records:
                if fmt == "avro":
                    polars_inputs(gen)   # the copies polars.read_avro accepts, made before the timing
                polars = _run_polars_subprocess(gen, fmt, polars_out)
                check = compare_with_job(polars_out, job_out)
            shutil.rmtree(job_out, ignore_errors=True)
            shutil.rmtree(polars_out, ignore_errors=True)
            results.append({"records": run["records"], "format": fmt, "records_per_s": run["records"] / run["seconds"],
                            "peak_rss_bytes": run["peak_rss_bytes"], "baseline_records_per_s": baseline_rate,
                            "baseline_records": baseline["records"], "shards": run["shards"],
                            "seconds": run["seconds"], "balanced": run["balanced"],
                            "polars_records_per_s": polars and polars["records"] / polars["seconds"],
                            "polars": polars, "polars_check": check})
    print_table(results)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(results: list[dict]) -> None:
    print(f"{'records':>12} {'format':<8} {'shards':>6} {'records/s':>12} {'peak RSS MB':>12} {'polars rec/s':>13} "
          f"{'polars MB':>10} {'x polars':>9} {'naive rec/s':>12} {'x naive':>8}")
    for r in results:
        polars = r["polars"]
        shown = f"{'-':>13} {'-':>10} {'-':>9}"   # skipped (--polars-max-records)
        if polars:
            shown = (f"{r['polars_records_per_s']:>13,.0f} {polars['peak_rss_bytes'] / 2**20:>10,.0f} "
                     f"{r['records_per_s'] / r['polars_records_per_s']:>9.2f}")
        print(f"{r['records']:>12,} {r['format']:<8} {r['shards']:>6} {r['records_per_s']:>12,.0f} "
              f"{r['peak_rss_bytes'] / 2**20:>12,.0f} {shown} {r['baseline_records_per_s']:>12,.0f} "
              f"{r['records_per_s'] / r['baseline_records_per_s']:>8.1f}")
    for r in results:
        c = r["polars_check"]
        if c is None:
            continue
        print(f"Polars vs job, {r['records']:,} {r['format']}: {c['both_rated']:,} records rated by both "
              f"(job {c['job_rated']:,}, Polars {c['polars_rated']:,}; account or cycle differ on "
              f"{c['account_or_cycle_differ']:,}); charges compared on {c['compared']:,} priced without allowance "
              f"or tier, differ on {c['compared'] - c['charges_agree']:,}")
    print("polars rec/s: the same files in one Polars process (read, dedup, join subscriptions and plan versions, "
          "stateless rating, charges per account, cycle and service, Parquet out), same invocation")
    print("naive rec/s: the per-record Beam pipeline over the same Avro files (at most --baseline-records of them), "
          "same invocation")
    print("targets: >= 1,000,000 records/s end to end (stretch 2M); >= 2x Polars; peak RSS <= 2 GB at 50M; "
          "50M within 20% of 5M")


if __name__ == "__main__":
    main()
