"""``usage-rating``: the command line of the rating pipelines.

    usage-rating demo [--workdir DIR] [--records N]
    usage-rating generate --out DIR [--subscribers N] [--records M] ...
    usage-rating validate-reference DIR
    usage-rating batch --input GLOB --reference DIR --output OUT [--closed-through YYYY-MM] [--catalog-uri URI]
                       [Beam flags]
    usage-rating close-cycle --output OUT --cycle YYYY-MM [--reference DIR] [--catalog-uri URI]
    usage-rating invoice --output OUT --account ID [--cycle YYYY-MM] [--as-of RUN_ID|TIMESTAMP] [--format text|html]
                         [--out FILE] [--catalog-uri URI]
    usage-rating stream --subscription projects/P/subscriptions/S --reference DIR --output OUT [...]
    usage-rating import-cgrates DIR --out REFDIR [--tenant T] [--category C] [--rounding native|cgrates]
    usage-rating rerate --cycle YYYY-MM --input GLOB --reference DIR --output OUT [--what-if REFDIR] [--report FILE]
    usage-rating rate-one --reference REFDIR --subject S --destination D --start ISO8601 --usage 85s [--json]
    usage-rating export --output OUT --table TABLE --to FILE.parquet|FILE.csv [--cycle YYYY-MM] [--account ID]
                        [--as-of RUN_ID|TIMESTAMP] [--catalog-uri URI]
    usage-rating maintain --output OUT --retain-days N [--compact] [--catalog-uri URI]

Each sub-command's parser names the function that runs it (``pipelines.cli.args.add_command``);
with no command the help is printed and the exit status is 2, as for any usage error. Otherwise the
exit status is 0 (done), 1 (bad configuration or input: one line on stderr, no traceback) or 3 (a
rating run whose control totals do not balance): ``pipelines.cli.args.EXIT_*``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path


class _OptionalGcpImports(logging.Filter):
    """Beam warns as it is imported when Google Cloud's client packages are absent (they come with
    the ``gcp`` extra): two lines before every command's output, about storage nobody asked for. A
    ``gs://`` path without the extra still fails, naming the path (``match_inputs``)."""

    MESSAGES = ("Failed to import GCSFileSystem", "apitools not found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.MESSAGES)


for _logger in (logging.getLogger("apache_beam.io.filesystems"), logging.getLogger()):
    _logger.addFilter(_OptionalGcpImports())   # before any module of this package imports Beam

from pipelines.cli import cgrates as cgrates_cli, rerate as rerate_cli, store_commands
from pipelines.cli.args import (EXIT_ERROR, EXIT_OK, add_batch_flags, add_catalog_flag, add_command, check_beam_args,
                                default_runner, exit_status, unknown_flags_message)


def cmd_generate(args) -> int:
    from synth import generate
    from synth.config import GeneratorConfig
    from pipelines.cli.progress import ProgressLine

    config = GeneratorConfig(
        out_dir=Path(args.out), subscribers=args.subscribers, records=args.records, days=args.days,
        start=dt.date.fromisoformat(args.start), seed=args.seed, fmt=args.format, files=args.files,
        duplicate_rate=args.duplicate_rate, malformed_rate=args.malformed_rate, schema_version=args.schema_version)
    with ProgressLine("generating") as progress:
        manifest = generate(config, progress=progress.update)
    print(f"wrote {manifest['records_written']:,} records in {config.files} {config.fmt} files "
          f"and the reference data under {config.out_dir}")
    return EXIT_OK


def cmd_validate_reference(args) -> int:
    from rating.reference import check_reference, load_reference

    issues = check_reference(args.directory)
    if issues:
        for issue in issues:
            print(issue, file=sys.stderr)
        print(f"{len(issues)} issue(s) in {args.directory}", file=sys.stderr)
        return EXIT_ERROR
    ref = load_reference(args.directory)
    prefixes = sum(len(t.prefixes) for t in ref.zone_tables.values())
    versions = sum(len(p.versions) for p in ref.plans.values())
    print(f"{args.directory}: OK — {len(ref.plans)} plans ({versions} versions), {prefixes:,} destination "
          f"prefixes, {len(ref.accounts):,} accounts, {len(ref.subscriptions):,} subscriptions")
    return EXIT_OK


def cmd_batch(args, beam_args: list[str]) -> int:
    from pipelines.batch import run_batch
    from pipelines.options import BatchConfig
    from pipelines.cli.summary import print_summary

    config = BatchConfig(input_glob=args.input, reference_dir=args.reference, output_dir=args.output,
                         shards=args.shards, batch_size=args.batch_size, closed_through=args.closed_through,
                         shuffle=args.shuffle, catalog_uri=args.catalog_uri)
    result = run_batch(config, beam_args)
    print_summary(result, config.output_dir, config.catalog_uri)
    return exit_status(result["balanced"])


def cmd_close_cycle(args) -> int:
    from pipelines.bill_store import bill_cycles, stream_fed_cycles
    from pipelines.staged_run import staged_run
    from rating.cycles import month_index

    month_index(args.cycle)
    with staged_run(args.output, args.catalog_uri, f"close-cycle {args.cycle}", create=False) as run:
        current = run.store.closed_through()
        if current is not None and month_index(current) > month_index(args.cycle):
            raise ValueError(f"cycles through {current} are already closed; closing is final, it cannot move back "
                             f"to {args.cycle}")
        fed = stream_fed_cycles(run.store, args.cycle, current)
        if fed and args.reference is None:
            raise ValueError(f"the stream fed cycle(s) {', '.join(fed)} of {args.output}: closing bills them from the "
                             f"store's rated events (every account, plan fees included), which needs the reference "
                             f"data: add --reference DIR. Nothing was closed")
        billed, overwrite = bill_cycles(run, fed, args.reference, current) if fed else ({}, {})
        run.commit("close", run.written(), {"closed_through": args.cycle, "billed": billed}, overwrite=overwrite)
    if billed:
        print(f"billed {', '.join(billed)} from the store's rated events (the stream fed them)")
        if not all(entry["money_balanced"] for entry in billed.values()):
            print("money does not balance: rated events and usage lines differ (see the run's totals)", file=sys.stderr)
            return exit_status(False)
    print(f"{args.output}: cycles through {args.cycle} are closed; later runs bill their late usage on the next cycle")
    return EXIT_OK


def cmd_invoice(args) -> int:
    from pipelines.invoice import load_invoice
    from pipelines.invoice_render import render_html, render_text

    data = load_invoice(args.output, args.account, args.cycle, as_of=args.as_of, catalog_uri=args.catalog_uri)
    for warning in data.warnings:
        print(f"usage-rating invoice: warning: {warning}", file=sys.stderr)
    document = render_html(data) if args.format == "html" else render_text(data)
    if args.out is None:
        sys.stdout.write(document)
        return EXIT_OK
    try:
        Path(args.out).write_text(document, encoding="utf-8")
    except OSError as error:
        raise ValueError(f"--out {args.out}: cannot write it ({error.strerror})") from None
    print(f"wrote the {args.format} invoice of {data.account_id} for {data.billing_cycle} to {args.out}")
    return EXIT_OK


def cmd_stream(args) -> int:
    """Run the stream until Ctrl-C or SIGTERM: then finish the micro-batch in hand (commit, ack,
    totals) and exit 0. A second Ctrl-C or SIGTERM stops at once, acknowledging nothing more."""
    import os
    import signal
    import threading

    stop = threading.Event()

    def on_signal(number, _frame):
        if stop.is_set():
            print(f"{signal.Signals(number).name} again: stopping at once; unacknowledged messages come back",
                  file=sys.stderr, flush=True)
            os._exit(130)
        print(f"{signal.Signals(number).name}: finishing the micro-batch in hand (commit, acknowledge), "
              f"then stopping; press Ctrl-C again to stop at once", file=sys.stderr, flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)    # first thing: a stop while the job starts is a clean one too
    signal.signal(signal.SIGTERM, on_signal)
    from pipelines.streaming import StreamConfig, StreamJob

    config = StreamConfig(subscription=args.subscription, reference_dir=args.reference, output_dir=args.output,
                          catalog_uri=args.catalog_uri, rated_topic=args.rated_topic,
                          charges_topic=args.charges_topic, dead_letter_topic=args.dead_letter_topic,
                          commit_interval_s=args.commit_interval, max_messages=args.max_messages,
                          max_batch_mb=args.max_batch_mb,
                          ack_deadline_s=args.ack_deadline)
    print(f"streaming from {config.subscription} into the store {config.output_dir}; Ctrl-C stops",
          file=sys.stderr, flush=True)
    totals = StreamJob(config).run(stop)
    print(f"stopped: {totals['records_in']:,} records in, {totals['rated']:,} rated, "
          f"{totals['rejected_total']:,} rejected, {totals['duplicates']:,} duplicates, "
          f"{totals['redelivered']:,} redelivered ({totals['commits']:,} commits, all runs of the store)",
          file=sys.stderr)
    return exit_status(totals["records_balanced"])


def cmd_demo(args, beam_args: list[str]) -> int:
    from pipelines.cli.demo import run_demo

    return run_demo(Path(args.workdir), records=args.records, subscribers=args.subscribers, beam_args=beam_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usage-rating", description="Telecom usage rating pipelines on Apache Beam.")
    parser.set_defaults(run=None)
    sub = parser.add_subparsers(dest="command")

    demo = add_command(sub, "demo", cmd_demo, beam_flags=True,
                       help="generate an operator month and rate it on the DirectRunner")
    demo.add_argument("--workdir", default="usage-rating-demo", help="working directory (reused if present)")
    demo.add_argument("--records", type=int, default=1_000_000)
    demo.add_argument("--subscribers", type=int, default=20_000)

    gen = add_command(sub, "generate", cmd_generate,
                      help="write a synthetic operator (reference data) and its CDR files")
    gen.add_argument("--out", required=True)
    gen.add_argument("--subscribers", type=int, default=20_000)
    gen.add_argument("--records", type=int, default=1_000_000)
    gen.add_argument("--days", type=int, default=30)
    gen.add_argument("--start", default="2026-01-01", help="first day, YYYY-MM-DD")
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--format", choices=("avro", "parquet", "jsonl"), default="avro")
    gen.add_argument("--files", type=int, default=8)
    gen.add_argument("--duplicate-rate", type=float, default=0.001)
    gen.add_argument("--malformed-rate", type=float, default=0.0005)
    gen.add_argument("--schema-version", default="v1",
                     help="usage schema of the CDR files: v1, v2 or v3 (v3 adds MMS and API_CALLS records; "
                          "docs/generator.md)")

    val = add_command(sub, "validate-reference", cmd_validate_reference,
                      help="check a reference-data directory; exit 1 on any issue")
    val.add_argument("directory")

    batch = add_command(sub, "batch", cmd_batch, beam_flags=True,
                        help="rate CDR files; extra flags go to Beam (e.g. --direct_num_workers=2)")
    add_batch_flags(batch)

    close = add_command(sub, "close-cycle", cmd_close_cycle,
                        help="mark cycles up to YYYY-MM as invoiced in an output store")
    close.add_argument("--output", required=True)
    close.add_argument("--cycle", required=True, help="YYYY-MM")
    close.add_argument("--reference", default=None,
                       help="reference-data directory: needed to bill the cycles the stream fed, when they close")
    add_catalog_flag(close)

    invoice = add_command(sub, "invoice", cmd_invoice,
                          help="render one account's invoice for a billing cycle from an output store")
    invoice.add_argument("--output", required=True, help="output store written by usage-rating batch")
    invoice.add_argument("--account", required=True, help="account id, e.g. ACC0000001")
    invoice.add_argument("--cycle", default=None, help="billing cycle YYYY-MM (default: the account's latest)")
    invoice.add_argument("--format", choices=("text", "html"), default="text")
    invoice.add_argument("--out", default=None, help="write to this file instead of stdout")
    invoice.add_argument("--as-of", default=None,
                         help="a run id, or an ISO timestamp: the invoice as the store stood after that run")
    add_catalog_flag(invoice)

    stream = add_command(sub, "stream", cmd_stream,
                         help="rate usage from Pub/Sub into the output store until stopped (Ctrl-C, SIGTERM)")
    stream.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    stream.add_argument("--reference", required=True, help="reference-data directory")
    stream.add_argument("--output", required=True, help="the output store (created when missing)")
    add_catalog_flag(stream)
    stream.add_argument("--rated-topic", default=None, help="projects/P/topics/T for rated events (Avro)")
    stream.add_argument("--charges-topic", default=None, help="projects/P/topics/T for running totals (JSON)")
    stream.add_argument("--dead-letter-topic", default=None, help="projects/P/topics/T for rejected records")
    stream.add_argument("--commit-interval", type=float, default=2.0,
                        help="seconds of messages per micro-batch: each is one commit (default 2)")
    stream.add_argument("--max-messages", type=int, default=50_000,
                        help="messages per micro-batch at most (default 50000)")
    stream.add_argument("--max-batch-mb", type=float, default=2.0,
                        help="megabytes of messages per micro-batch at most: a backlog is taken in steps (default 2)")
    stream.add_argument("--ack-deadline", type=int, default=60,
                        help="seconds: the lease of a pulled message, extended until its commit (default 60)")

    cgrates_cli.add_parsers(sub)
    rerate_cli.add_parser(sub)
    store_commands.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if args.run is None:  # no command: what there is to run, and exit status 2 as for any usage error
        parser.print_help(sys.stderr)
        parser.exit(2, f"{parser.prog}: error: name a command\n")
    if beam_args and not args.beam_flags:
        args.command_parser.error(unknown_flags_message(beam_args, args.command_parser))
    try:
        if not args.beam_flags:
            return args.run(args)
        check_beam_args(beam_args, args.command_parser)
        return args.run(args, default_runner(beam_args))
    except ValueError as error:  # bad configuration or input: a message, not a traceback
        return _failed(args, str(error))
    except Exception as error:  # a full disk: where, and how much the run needs; anything else propagates
        from pipelines.cli.disk_full import find_disk_full

        disk_full = find_disk_full(error)
        if disk_full is None:
            raise
        return _failed(args, _disk_full_message(args, disk_full))


def _failed(args: argparse.Namespace, message: str) -> int:
    print(f"usage-rating {args.command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def _disk_full_message(args: argparse.Namespace, error: OSError) -> str:
    """The full-disk line for the command in ``args``: its output folder and, for a rating run, its inputs."""
    from pipelines.cli.demo import demo_input_glob
    from pipelines.cli.disk_full import disk_full_message
    from pipelines.inputs import match_inputs

    folder = next((getattr(args, name) for name in ("output", "workdir", "out") if getattr(args, name, None)), ".")
    glob = demo_input_glob(Path(args.workdir)) if args.command == "demo" else getattr(args, "input", None)
    try:
        inputs = list(match_inputs(glob).paths) if glob else None
    except ValueError:   # the inputs are gone: no estimate
        inputs = None
    return disk_full_message(error, folder, inputs=inputs, shuffle=getattr(args, "shuffle", None) or "files")
