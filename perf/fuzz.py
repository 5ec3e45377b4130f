"""Fuzz the pipeline with mutated inputs and say what was tried and what held.

    python perf/fuzz.py --records 1000000 [--seed S] [--cli-cases 10] [--kinds K1,K2] [--replay KIND:SEED ...]

Adds mutated files and Pub/Sub messages (structure-aware: Avro blocks and counts, Parquet pages
and column types, JSON values and bytes, gzip streams, message bodies and attributes, boundary
numbers for every numeric field) to a small generated operator's valid input, runs each case
through the batch pipeline's library path (decode, validate, deduplicate, rate, bill: the engine is
``tests/fuzz/``, the same the tests run), and checks: no crash, no hang, bounded memory, records in
= rated + rejected + duplicates, exact record counts, and the blast radius (every other record and
every charge line of untouched accounts as in the run without the mutation). ``--cli-cases`` more
cases go through ``usage-rating batch`` in a subprocess (exit status, final message, totals).

Prints per kind the cases and records written, per check how often it held and failed, and each
failing case's kind and seed: ``--replay KIND:SEED`` runs it again and prints everything about it.
Exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzz.kinds import KINDS  # noqa: E402
from tests.fuzz.runner import FuzzConfig, run_fuzz  # noqa: E402


def _replay(text: str) -> tuple[str, int]:
    kind, _, seed = text.partition(":")
    if kind not in KINDS or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected KIND:SEED with KIND one of {', '.join(KINDS)}, got {text!r}")
    return kind, int(seed)


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {unknown}; expected some of {', '.join(KINDS)}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None,
                        help="records to write into mutated inputs (default 1,000,000; 0 with --replay)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", type=_kinds, default=tuple(KINDS), help="comma-separated kinds (default: all)")
    parser.add_argument("--replay", type=_replay, action="append", default=[], metavar="KIND:SEED",
                        help="run this case (before any --records budget) and print all about it")
    parser.add_argument("--cli-cases", type=int, default=10, help="cases run through usage-rating batch")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a case may take before it is killed")
    parser.add_argument("--memory-mb", type=int, default=512, help="peak-RSS growth a case may cause")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the operator and logs here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures and failures as JSON")
    args = parser.parse_args(argv)
    records = args.records if args.records is not None else 0 if args.replay else 1_000_000
    config = FuzzConfig(records=records, seed=args.seed, work_dir=args.workdir, kinds=args.kinds,
                        case_timeout_s=args.timeout, memory_limit_mb=args.memory_mb,
                        cli_cases=0 if args.replay else args.cli_cases, replay=tuple(args.replay))
    print(f"python perf/fuzz.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
    last = [time.monotonic()]

    def progress(report, kind, seed, answer):
        failed = [check for check, problem in answer["checks"].items() if problem]
        if args.replay:
            print(f"\n{kind}:{seed}  {answer.get('records', 0)} records, {answer.get('elapsed_s', 0):.3f} s\n"
                  f"  mutation: {answer.get('description', '?')}")
            for check, problem in answer["checks"].items():
                print(f"  {check}: {'held' if problem is None else 'FAILED: ' + problem}")
            if "harness_error" in answer:
                print(answer["harness_error"])
        elif time.monotonic() - last[0] > 30 or failed:
            last[0] = time.monotonic()
            done = sum(report.records.values())
            print(f"  {done:,} records, {sum(report.cases.values()):,} cases, {len(report.failures)} failed checks"
                  + (f"; {kind}:{seed} failed {', '.join(failed)}" if failed else ""), file=sys.stderr, flush=True)

    report = run_fuzz(config, progress)
    print(report.format())
    if args.json is not None:
        args.json.write_text(json.dumps({
            "seed": report.seed, "elapsed_s": report.elapsed_s, "cases": dict(report.cases),
            "records": dict(report.records), "mutated": dict(report.mutated), "held": dict(report.held),
            "failed": dict(report.failed), "failures": [f.__dict__ for f in report.failures],
            "harness_errors": report.harness_errors}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
