"""``usage-rating export`` and ``usage-rating maintain``: read one table of the store to a file; keep the
store small (compact small files, expire old snapshots, delete files nothing needs).

    usage-rating export --output OUT --table rated|charges|invoices|rejected|duplicates|runs
                        --to FILE.parquet|FILE.csv [--cycle YYYY-MM] [--account ID]
                        [--as-of RUN_ID|TIMESTAMP] [--catalog-uri URI]
    usage-rating maintain --output OUT --retain-days N [--compact] [--catalog-uri URI]

The store-level logic is ``sinks.iceberg.export`` and ``sinks.iceberg.maintain``; docs/outputs.md
("Reading the store", "Maintaining the store").
"""

from __future__ import annotations

from pipelines.cli.args import EXIT_OK, add_catalog_flag, add_command

TABLE_CHOICES = ("rated", "charges", "invoices", "rejected", "duplicates", "runs")  # sinks.iceberg.TABLES


def add_parsers(subparsers) -> None:
    """Add the ``export`` and ``maintain`` sub-commands to an argparse subparsers object."""
    export = add_command(subparsers, "export", run_export,
                         help="write one table of an output store (as of a run, for a cycle or account) to a "
                              "Parquet or CSV file")
    export.add_argument("--output", required=True, help="the output store")
    export.add_argument("--table", required=True, choices=TABLE_CHOICES)
    export.add_argument("--to", required=True, metavar="FILE",
                        help="FILE.parquet (the store's types) or FILE.csv (money as integers, timestamps ISO 8601 "
                             "UTC, nested columns as JSON, raw bytes as base64)")
    export.add_argument("--cycle", default=None,
                        help="YYYY-MM: rated by service_cycle, charges and invoices by billing_cycle, rejected and "
                             "duplicates by the month (UTC) of start_time")
    export.add_argument("--account", default=None, help="account id (rated, charges, invoices)")
    export.add_argument("--as-of", "--as_of", dest="as_of", default=None, metavar="RUN_ID|TIMESTAMP",
                        help="read the store as it stood after that run (default: the latest run)")
    add_catalog_flag(export)

    maintain = add_command(subparsers, "maintain", run_maintain,
                           help="expire old snapshots, delete files nothing references, and with --compact rewrite "
                                "partitions of many small files as one file each")
    maintain.add_argument("--output", required=True, help="the output store")
    maintain.add_argument("--retain-days", "--retain_days", dest="retain_days", type=int, required=True,
                          metavar="N",
                          help="keep the snapshots of every run of the last N days (--as-of still works for them) "
                               "and of every close-cycle run whatever its age; expire the rest")
    maintain.add_argument("--compact", action="store_true",
                          help="first rewrite each partition that has several data files as one file, as a run of "
                               "kind maintain (same rows, same money)")
    add_catalog_flag(maintain)


def run_export(args) -> int:
    from rating.cycles import month_index
    from sinks.iceberg import IcebergStore
    from sinks.iceberg.export import export_table, output_format

    output_format(args.to)
    if args.cycle is not None:
        month_index(args.cycle)
    store = IcebergStore.open(args.output, args.catalog_uri, create=False)
    done = export_table(store, args.table, args.to, cycle=args.cycle, account=args.account, as_of=args.as_of)
    print(f"wrote {done.rows:,} rows of {done.table} to {done.to} (as of run {done.run.run_id}, "
          f"#{done.run.run_number}, committed {done.run.committed.isoformat()})")
    return EXIT_OK


def run_maintain(args) -> int:
    from pipelines.staged_run import new_run_id
    from sinks.iceberg import IcebergStore
    from sinks.iceberg.maintain import maintain
    from sinks.lock import is_local, store_lock

    run_id = new_run_id()
    # Deleting unreferenced files is only safe while nobody writes: hold the lock every writer holds.
    with store_lock(args.output, f"maintain {run_id}"):
        store = IcebergStore.open(args.output, args.catalog_uri, create=False)
        done = maintain(store, retain_days=args.retain_days, run_id=run_id, compact_files=args.compact,
                        exclusive=args.catalog_uri is None and is_local(args.output))
    for rollback in done.rolled_back:
        print(f"rolled {rollback.table} back from snapshot {rollback.from_snapshot_id} to {rollback.to_snapshot_id} "
              f"(an interrupted run's commit)")
    compacted = done.compacted
    if compacted is not None:
        if compacted.run_id is None:
            print("compacted nothing: no partition has more than one data file")
        else:
            counts = ", ".join(f"{table} {before} -> {after}" for table, (before, after) in compacted.files.items())
            print(f"compacted data files (run {compacted.run_id}): {counts}")
        for table, partitions in compacted.too_big.items():
            print(f"left {table} {', '.join(partitions)} as they are: too big to compact in memory")
    print(f"expired {sum(done.expired.values())} snapshot(s) older than {args.retain_days} day(s) "
          f"({_per_table(done.expired)}); kept every close-cycle run's")
    print(f"deleted {sum(done.deleted.values())} file(s) no snapshot references ({_per_table(done.deleted)})")
    return EXIT_OK


def _per_table(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {n}" for table, n in counts.items() if n) or "none"
