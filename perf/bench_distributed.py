"""The batch job on a dask.distributed cluster against the DirectRunner, on the same input.

    PYTHONPATH=. python perf/bench_distributed.py [--records 1000000] [--workers 2] [--json FILE]

Generates (or reuses, under --workdir) an operator month in Avro, then runs ``batch`` end to end
(files in, store committed) three ways on the same files, each into a new local store: the
DirectRunner with 2 worker processes (``runner_configs/direct.flags``, spill-file shuffle), and the
DaskRunner on a local cluster of ``--workers`` single-threaded worker processes (a scheduler and
workers started as processes here, as ``runner_configs/dask.flags`` says), with ``--dask_npartitions``
equal to the workers and to twice the workers. The stores must be byte-identical (checked). Prints
records/s, the run's own timings (reading the store, the pipeline, committing) and the ratio to
the DirectRunner. The cluster shares this machine's disk: the test of isolated workers on object
storage is tests/test_distributed.py; this measures the runner.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from time import time as wall_clock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIRECT_2 = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
_RUN_PREFIX = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}-")


def _generate(work: Path, records: int) -> Path:
    from synth import GeneratorConfig, generate
    out = work / f"gen-{records}"
    if not (out / "manifest.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        generate(GeneratorConfig(out_dir=out, records=records, subscribers=max(1000, records // 50),
                                 files=max(2, records // 250_000)))
    return out


def _batch(gen: Path, out: Path, beam_args: list[str]) -> dict:
    """``batch`` in a child process; its records, seconds and the run's own timings."""
    code = (
        "import json, sys, time\n"
        "from pipelines.batch import run_batch\nfrom pipelines.options import BatchConfig\n"
        "from pipelines.cli.args import default_runner, import_runner_options\n"
        "args = default_runner(sys.argv[1:]); import_runner_options(args)\n"
        f"c = BatchConfig(input_glob={str(gen / 'cdrs' / '*')!r}, reference_dir={str(gen / 'reference')!r}, "
        f"output_dir={str(out)!r})\n"
        "t = time.monotonic(); r = run_batch(c, args); t = time.monotonic() - t\n"
        "print(json.dumps({'records': r['records_in'], 'seconds': t, 'balanced': r['balanced'], "
        "'shards': r['shards'], 'timings': r['timings']}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *beam_args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        raise RuntimeError(f"batch {' '.join(beam_args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _digests(out: Path) -> dict[str, str]:
    warehouse = out / "warehouse"
    return {_RUN_PREFIX.sub("", str(p.relative_to(warehouse))): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(warehouse.rglob("*.parquet")) if "/runs/" not in str(p)}


def _task_profile(tasks: list[dict]) -> dict:
    """Seconds the workers spent per kind of task (dask's task stream: compute, transfer between
    workers, (de)serialising), and how many tasks: what the cluster did with the run's time."""
    profile = {"tasks": len(tasks), "compute_s": {}, "transfer_s": 0.0, "serialize_s": 0.0}
    for task in tasks:
        kind = re.sub(r"-[0-9a-f]{32}$", "", task["key"][0] if isinstance(task["key"], tuple) else task["key"])
        for phase in task["startstops"]:
            seconds = phase["stop"] - phase["start"]
            if phase["action"] == "compute":
                profile["compute_s"][kind] = profile["compute_s"].get(kind, 0.0) + seconds
            elif phase["action"] == "transfer":
                profile["transfer_s"] += seconds
            else:
                profile["serialize_s"] += seconds
    return profile


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)

    from tests.distributed_cluster import dask_cluster

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-distributed-"))
    work.mkdir(parents=True, exist_ok=True)
    gen = _generate(work, args.records)
    results = []
    direct_out = work / "out-direct"
    shutil.rmtree(direct_out, ignore_errors=True)
    direct = _batch(gen, direct_out, DIRECT_2)
    results.append({"runner": "DirectRunner, 2 processes", **direct})
    expected = _digests(direct_out)
    hidden = work / "dask-own"   # the workers' own folder (not isolated here: they share this disk)
    hidden.mkdir(exist_ok=True)
    with dask_cluster(hidden, work / "dask-logs", workers=args.workers) as address:
        from distributed import Client
        with Client(address) as client:
            for partitions in (args.workers, 2 * args.workers):
                out = work / f"out-dask-{partitions}"
                shutil.rmtree(out, ignore_errors=True)
                started = wall_clock()
                client.get_task_stream(start=started)   # starts the scheduler's task recording
                figures = _batch(gen, out, ["--runner=DaskRunner", f"--dask_client_address={address}",
                                            f"--dask_npartitions={partitions}"])
                tasks = client.get_task_stream(start=started)
                if _digests(out) != expected:
                    raise AssertionError(f"the Dask store ({partitions} partitions) differs from the DirectRunner's")
                results.append({"runner": f"DaskRunner, {args.workers} workers, {partitions} partitions", **figures,
                                "tasks": _task_profile(tasks)})

    base = results[0]["records"] / results[0]["seconds"]
    print(f"{results[0]['records']:,} records ({results[0]['shards']} shards); stores byte-identical across runners")
    print(f"{'runner':42} {'records/s':>10} {'x direct':>9} {'total s':>8} {'prior s':>8} {'pipeline s':>11} "
          f"{'commit s':>9}")
    for r in results:
        rate = r["records"] / r["seconds"]
        r["records_per_s"] = rate
        t = r["timings"]
        print(f"{r['runner']:42} {rate:>10,.0f} {rate / base:>9.2f} {r['seconds']:>8.1f} {t['prior_s']:>8.1f} "
              f"{t['pipeline_s']:>11.1f} {t['commit_s']:>9.1f}")
    for r in results[1:]:
        p = r["tasks"]
        busy = sum(p["compute_s"].values())
        print(f"{r['runner']}: {p['tasks']} tasks, {busy:.1f} s computing on the workers "
              f"({busy / r['timings']['pipeline_s'] / args.workers:.0%} of {args.workers} workers' pipeline time), "
              f"{p['transfer_s']:.1f} s transfers, {p['serialize_s']:.1f} s (de)serialising")
        for kind, seconds in sorted(p["compute_s"].items(), key=lambda kv: -kv[1])[:5]:
            print(f"    {seconds:>7.1f} s  {kind}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
