"""``usage-rating rerate``: re-rate a billing cycle, or report a candidate tariff's impact (--what-if).

    usage-rating rerate --cycle YYYY-MM --input GLOB --reference DIR --output OUT
                        [--what-if REFDIR] [--report FILE] [--top N] [--closed-through YYYY-MM]
                        [--shards auto|N] [--batch-size N] [--shuffle files|beam] [Beam flags]

Exit status (``pipelines.cli.args``): 0 done (also when nothing changed), 1 bad configuration or
input, 3 control totals not balanced (the version is committed anyway, for investigation, like the
batch job). The job flags are the batch job's (``add_job_flags``).
"""

from __future__ import annotations

from pipelines.cli.args import add_command, add_job_flags, exit_status


def add_parser(subparsers) -> None:
    """Add the ``rerate`` sub-command to an argparse subparsers object."""
    p = add_command(
        subparsers, "rerate", run, beam_flags=True,
        help="re-rate a billing cycle and commit it as a new snapshot (or --what-if: report only); extra flags go "
             "to Beam")
    p.add_argument("--cycle", required=True, help="YYYY-MM: the service cycle to re-rate")
    p.add_argument("--input", required=True, help="glob of CDR files: every file the cycle's records came from "
                                                  "(records of other cycles in them are counted, not re-rated)")
    p.add_argument("--reference", required=True, help="reference-data directory in force now")
    p.add_argument("--output", required=True, help="the output store (a batch job's --output)")
    p.add_argument("--what-if", "--what_if", dest="what_if", default=None, metavar="REFDIR",
                   help="candidate reference data: rate with it and report the revenue impact; writes nothing "
                        "to the store")
    p.add_argument("--report", default=None, metavar="FILE", help="also save the report as JSON here")
    add_job_flags(p)
    p.add_argument("--top", type=int, default=20, help="records that change most, listed in the report")


def run(args, beam_args: list[str]) -> int:
    """Run the sub-command from parsed ``args``; returns the exit status. Bad configuration or input
    raises ValueError (``usage-rating`` prints it as one line, exit status 1)."""
    from pipelines.rerate import RerateConfig, run_rerate

    config = RerateConfig(cycle=args.cycle, input_glob=args.input, reference_dir=args.reference,
                          output_dir=args.output, what_if_dir=args.what_if, report_path=args.report,
                          shards=args.shards, batch_size=args.batch_size, closed_through=args.closed_through,
                          top_records=args.top, shuffle=args.shuffle, catalog_uri=args.catalog_uri)
    result = run_rerate(config, beam_args)
    print(format_result(result))
    return exit_status(result["balanced"])


def _signed(micros: int, currency: str) -> str:
    from pipelines.money_text import total_text

    return ("+" if micros > 0 else "") + total_text(micros, currency)


def format_result(result: dict, *, rows: int = 10) -> str:
    """The run as text: what happened to the store, records per status, and the revenue impact."""
    from pipelines.inputs import format_skipped
    from pipelines.money_text import total_text

    totals, summary = result["totals"], result["summary"]
    lines = []
    if result["what_if"]:
        lines.append(f"what-if for cycle {result['cycle']} with {result['reference']} (the store is not written)")
    elif result["version"] is None:
        lines.append(f"cycle {result['cycle']}: no change against the store as of run {result['previous_version']}; "
                     "nothing committed")
    else:
        lines.append(f"cycle {result['cycle']}: committed as run {result['version']} ({result['run_id']}; the cycle "
                     f"as of run {result['previous_version']} stays readable with --as-of); record diff in "
                     f"{result['audit']}")
    state = "closed: adjustments on the next open invoice" if result["closed"] else "open: the new version replaces it"
    lines.append(f"cycle is {state}")
    lines += [f"output store    {note}" for note in result.get("tidied", [])]
    lines.append(f"records in      {totals['records_in']:>14,}   ({result['input_files']} files)")
    lines.extend(format_skipped(totals["skipped_inputs"]))
    lines.append(f"in the cycle    {totals['in_cycle']['rated']:>14,} rated, {totals['in_cycle']['rejected_total']:,} "
                 "rejected")
    other = sum(totals["out_of_scope"]["rated"].values()) + totals["out_of_scope"]["rejected"]
    lines.append(f"other cycles    {other:>14,}   duplicates {totals['duplicates']:,}")
    for status, count in summary["records"].items():
        lines.append(f"  {status:<16}{count:>12,}")
    for reason, count in summary["recycled"].items():
        lines.append(f"  recycled from {reason}: {count:,}")
    lines.append("revenue (usage, before tax):")
    for currency, money in summary["totals"].items():
        lines.append(f"  {currency}  previous {total_text(money['previous_micros'], currency):>18}  "
                     f"re-rated {total_text(money['rerated_micros'], currency):>18}  "
                     f"change {_signed(money['delta_micros'], currency):>16}")
    for title, key, name in (("by plan", "by_plan", "plan_id"), ("by zone", "by_zone", "zone")):
        moved = [r for r in summary[key] if r["delta_micros"] != 0]
        if moved:
            lines.append(f"{title} (changed only):")
            for r in sorted(moved, key=lambda r: -abs(r["delta_micros"]))[:rows]:
                lines.append(f"  {r[name] or '-':<16}{_signed(r['delta_micros'], r['currency']):>18}   "
                             f"{r['changed_records']:,} records changed")
    deciles = [r for r in summary["by_account_decile"] if r["delta_micros"] != 0]
    if deciles:
        lines.append("by account decile of previous revenue (10 = top):")
        for r in deciles:
            lines.append(f"  {r['currency']} {r['decile']:>2}  {_signed(r['delta_micros'], r['currency']):>18}  "
                         f"({r['accounts']:,} accounts)")
    if summary["top_records"]:
        lines.append("records that change most:")
        for r in summary["top_records"][:rows]:
            lines.append(f"  {r['source']}/{r['record_id']}  {r['account_id'] or '-'}  {r['status']:<14} "
                         f"{_signed(r['delta_micros'], r['currency'] or '')}  {r['reasons']}")
    adjustments = totals.get("adjustments")
    if adjustments and adjustments["lines"]:
        lines.append(f"adjustments: {adjustments['lines']} lines on {totals['adjustments_billing_cycle']}, "
                     f"{adjustments['records']:,} records behind them")
    lines.append(f"balanced        {'yes' if totals['balanced'] else 'NO - see control/totals.json':>14}")
    timings = result["timings"]
    rate = totals["records_in"] / max(timings["total_s"], 1e-9)
    lines.append(f"elapsed         {timings['total_s']:>12.1f} s   (pipeline {timings['pipeline_s']:.1f} s, "
                 f"comparison {timings['compare_s']:.1f} s, {rate:,.0f} records/s)")
    return "\n".join(lines)
