"""What the Iceberg store costs: the commit's share of a batch run, an append, one invoice on a big store.

    python perf/bench_store.py --records 10000000 [--invoice-records 50000000] [--workdir DIR] [--json FILE]

1. A batch run of ``--records`` generated Avro records into a new store (DirectRunner, 2 workers, in
   a child process): its timings split into reading the store (``prior_s``), the pipeline, choosing
   what to commit (``select_s``) and the commit (``commit_s``: one transaction per table, the run log).
   Target (issue 13): the commit adds at most 5% to the run.
   The store is made of every generated file but the last.
2. The last file as an append into that store (new records of the cycles it holds, as an hourly
   run brings them): what continuing open cycles costs, with its timings.
3. ``usage-rating invoice`` for accounts of the ``--invoice-records`` store, each in a new process
   (what a user waits for), and ``load_invoice`` in-process. Target: under 2 s on 50M records.

Every figure comes from this one invocation; absolute times are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from perf.bench_pipeline import TWO_WORKERS, _generate  # noqa: E402

_RUN = (
    "import json, sys\n"
    "from pipelines.batch import run_batch\nfrom pipelines.options import BatchConfig\n"
    "c = BatchConfig(input_glob=sys.argv[1], reference_dir=sys.argv[2], output_dir=sys.argv[3])\n"
    "r = run_batch(c, sys.argv[4:])\n"
    "print(json.dumps({'records': r['records_in'], 'prior': r['prior_in'], 'duplicates': r['duplicates'], "
    "'timings': r['timings'], 'balanced': r['balanced']}))\n"
)


def _batch(glob: str, reference: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _RUN, glob, str(reference), str(out), *TWO_WORKERS],
                          capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _store(work: Path, records: int, *, all_but_last: bool) -> tuple[Path, Path, dict]:
    """A store holding one batch run over ``records`` generated records, or over all of their files
    but the last (made once per workdir)."""
    gen = _generate(work, records, "avro")
    out = work / f"store-{records}{'-but-last' if all_but_last else ''}"
    marker = out / "bench-run.json"
    if marker.exists():
        return gen, out, json.loads(marker.read_text())
    glob = str(gen / "cdrs" / "*")
    if all_but_last:   # links to every file but the last, in a folder of their own
        first = work / f"cdrs-{records}-but-last"
        first.mkdir(exist_ok=True)
        for path in sorted((gen / "cdrs").iterdir())[:-1]:
            if not (first / path.name).exists():
                (first / path.name).symlink_to(path)
        glob = str(first / "*")
    run = _batch(glob, gen / "reference", out)
    marker.write_text(json.dumps(run))
    return gen, out, run


def _accounts(out: Path, count: int) -> list[str]:
    from sinks.iceberg import IcebergStore

    store = IcebergStore.open(str(out), create=False)
    invoices = store.read("invoices", selected_fields=["account_id"]).column("account_id").to_pylist()
    step = max(1, len(invoices) // count)
    return sorted(set(invoices[::step]))[:count]


def _invoice_times(out: Path, accounts: list[str]) -> dict:
    from pipelines.invoice import load_invoice

    cli = []
    for account in accounts:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipelines.cli", "invoice", "--output", str(out), "--account", account],
                       capture_output=True, text=True, cwd=REPO, check=True)
        cli.append(time.monotonic() - started)
    library = []
    for account in accounts:
        started = time.monotonic()
        load_invoice(out, account)
        library.append(time.monotonic() - started)
    return {"accounts": len(accounts), "cli_s_max": max(cli), "cli_s_median": sorted(cli)[len(cli) // 2],
            "load_invoice_s_max": max(library), "load_invoice_s_median": sorted(library)[len(library) // 2]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--invoice-records", type=int, default=None, help="default: --records")
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-store-"))
    result = {}

    gen, out, first = _store(work, args.records, all_but_last=True)
    t = first["timings"]
    result["batch"] = {"records": first["records"], **t,
                       "commit_share": (t["select_s"] + t["commit_s"]) / (t["prior_s"] + t["pipeline_s"])}
    last_file = sorted((gen / "cdrs").iterdir())[-1]
    append = _batch(str(last_file), gen / "reference", out)
    a = append["timings"]
    result["append"] = {"records": append["records"], "prior": append["prior"], "duplicates": append["duplicates"],
                        **a, "balanced": append["balanced"]}
    big = args.invoice_records or args.records
    _, big_out, _ = _store(work, big, all_but_last=False)
    result["invoice"] = {"store_records": big, **_invoice_times(big_out, _accounts(big_out, args.accounts))}

    b, p, i = result["batch"], result["append"], result["invoice"]
    print(f"batch of {b['records']:,} records into a new store: pipeline {b['pipeline_s']:.1f} s, reading the store "
          f"{b['prior_s']:.2f} s, choosing what to commit {b['select_s']:.2f} s, commit {b['commit_s']:.2f} s: "
          f"committing adds {100 * b['commit_share']:.1f}% to the run (target <= 5%)")
    print(f"append of {p['records']:,} new records ({p['duplicates']:,} duplicates) continuing {p['prior']:,} stored "
          f"events: reading the store {p['prior_s']:.1f} s, pipeline {p['pipeline_s']:.1f} s, choosing what to commit "
          f"{p['select_s']:.2f} s, commit {p['commit_s']:.2f} s")
    print(f"invoice of one account on a {i['store_records']:,}-record store: usage-rating invoice "
          f"{i['cli_s_median']:.2f} s median, {i['cli_s_max']:.2f} s max over {i['accounts']} accounts (new process "
          f"each); load_invoice {i['load_invoice_s_median']:.2f} s median, {i['load_invoice_s_max']:.2f} s max "
          f"(target < 2 s)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
