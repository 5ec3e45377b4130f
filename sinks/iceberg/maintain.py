"""``usage-rating maintain``: expire old snapshots, delete the files nothing needs, compact small files.

**Which snapshots are expired** (``expirable``). The run log says what readers may ask for: a run's
snapshots (``--as-of``). A table's snapshot is kept when

* it is the table's current snapshot (pyiceberg never expires a branch head either), or
* the run log names it for the latest run, for any run committed within the retention, or for any
  run of kind ``close``: the store as it was when ``close-cycle`` issued those invoices, kept
  forever whatever the retention;

and of the others, expired when it is older than the retention or abandoned (not an ancestor of
the current snapshot: a crashed run's commit that recovery rolled back). So an older run that
closed nothing, and the intermediate "delete" snapshot of an overwrite (re-rate, compaction),
expire with the retention; ``--as-of`` such a run then fails with a message naming maintain.
The ``runs`` table keeps its current snapshot only (readers always read its latest state).

**Which files are deleted** (``delete_unreferenced``): after expiry, data files no kept snapshot
references (``IcebergStore.orphan_files``: also crashed runs' files) and manifest files no snapshot
lists; only files older than the retention, so a writer committing meanwhile is not robbed. The
caller holds the store's lock (``sinks.lock.store_lock``), as every batch, re-rate and close-cycle
run does, so no such writer commits meanwhile.

**Compaction** (``compact``): every partition with two or more data files (streaming makes many
small ones) is rewritten as one file sorted by account, in one commit per table, as a run of kind
``maintain`` in the run log, so readers resolve snapshots as for any run. Rows and money are
unchanged. A partition is read into memory whole: partitions over ``max_bytes`` are left as they are
(and reported).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, In
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from sinks.iceberg import catalog as cat
from sinks.iceberg.store import IcebergStore, Rollback
from sinks.iceberg.tables import DATA_TABLES, PARTITION_COLUMN, RUNS, SORT_COLUMN, TABLES

COMPACT_MAX_BYTES = 1 << 30  # a partition bigger than this (on disk, compressed) is not compacted


@dataclasses.dataclass(frozen=True)
class Compacted:
    run_id: str | None                     # the maintain run that committed it; None when nothing needed it
    files: dict[str, tuple[int, int]]      # table -> (data files before, after), compacted partitions only
    too_big: dict[str, list[str]]          # table -> partitions left alone (over max_bytes)


@dataclasses.dataclass(frozen=True)
class Maintained:
    rolled_back: list[Rollback]            # a crashed run's half commit, undone first
    expired: dict[str, int]                # table -> snapshots expired
    deleted: dict[str, int]                # table -> files deleted (data and manifests)
    compacted: Compacted | None


def expirable(store: IcebergStore, cutoff: dt.datetime) -> dict[str, list[int]]:
    """Per table, the ids of the snapshots to expire for a retention ending at ``cutoff`` (UTC):
    the rule in the module docstring."""
    runs = store.runs()
    needed = [run for run in runs if run is runs[-1] or run.committed >= cutoff or run.kind == "close"]
    cutoff_ms = int(cutoff.timestamp() * 1000)
    out = {}
    for name in TABLES:
        table = store.table(name)
        current = table.current_snapshot()
        keep = {current.snapshot_id}
        if name != RUNS:
            keep |= {run.snapshot_ids[name] for run in needed}
        lineage = {s.snapshot_id for s in ancestors_of(current, table.metadata)}
        out[name] = sorted(s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in keep and
                           (s.timestamp_ms < cutoff_ms or s.snapshot_id not in lineage))
    return out


def expire(store: IcebergStore, cutoff: dt.datetime) -> dict[str, int]:
    """Expire ``expirable`` snapshots (pyiceberg's ``maintenance.expire_snapshots``: metadata only,
    one commit per table); returns how many per table."""
    done = {}
    for name, ids in expirable(store, cutoff).items():
        if ids:
            store.table(name).maintenance.expire_snapshots().by_ids(ids).commit()
        done[name] = len(ids)
    return done


def delete_unreferenced(store: IcebergStore, cutoff: dt.datetime) -> dict[str, int]:
    """Delete, per table, the data files no kept snapshot references and the manifest files (and
    manifest lists) no snapshot lists, when last modified before ``cutoff``; returns how many."""
    orphans = store.orphan_files()
    deleted = {}
    for name in TABLES:
        table = store.table(name)
        candidates = orphans[name] + _unlisted_manifests(table)
        old = [uri for uri in candidates if _modified(uri) < cutoff]
        for uri in old:
            cat.delete_file(uri)
        deleted[name] = len(old)
    return deleted


def _unlisted_manifests(table: Table) -> list[str]:
    listed = set()
    for snapshot in table.metadata.snapshots:
        listed.add(snapshot.manifest_list)
        listed.update(manifest.manifest_path for manifest in snapshot.manifests(table.io))
    files = cat.list_files(cat.join(table.location(), "metadata"))
    return [uri for uri in files if uri.endswith(".avro") and uri not in listed]


def _modified(uri: str) -> dt.datetime:
    fs, path = cat.filesystem(uri)
    mtime = fs.get_file_info(path).mtime
    return mtime if mtime.tzinfo else mtime.replace(tzinfo=dt.timezone.utc)


def compact(store: IcebergStore, run_id: str, *, max_bytes: int = COMPACT_MAX_BYTES,
            exclusive: bool = False) -> Compacted:
    """Rewrite every data-table partition with two or more data files as one file (sorted by
    account where the table declares it), committed as run ``run_id`` of kind ``maintain`` (nothing
    is committed when no partition needs it). ``exclusive``: as for ``IcebergStore.commit_run``."""
    latest = store.run_as_of()
    files: dict[str, list[str]] = {}
    overwrite: dict[str, BooleanExpression] = {}
    counts: dict[str, tuple[int, int]] = {}
    too_big: dict[str, list[str]] = {}
    for name in DATA_TABLES:
        column = PARTITION_COLUMN.get(name)
        partitions: dict[str | None, list] = {}
        for task in store.scan(name, as_of=latest.run_id).plan_files():
            partitions.setdefault(task.file.partition[0] if column else None, []).append(task.file)
        chosen = []
        for value, data_files in sorted(partitions.items(), key=lambda item: str(item[0])):
            if len(data_files) < 2:
                continue
            if sum(f.file_size_in_bytes for f in data_files) > max_bytes:
                too_big.setdefault(name, []).append(f"{column}={value}" if column else "(whole table)")
                continue
            chosen.append((value, len(data_files)))
        if not chosen:
            continue
        overwrite[name] = In(column, [value for value, _ in chosen]) if column else AlwaysTrue()
        files[name] = [_rewrite(store, name, latest.run_id, run_id, value) for value, _ in chosen]
        counts[name] = (sum(n for _, n in chosen), len(chosen))
    if not files:
        return Compacted(None, {}, too_big)
    totals = {"compacted": {name: {"files_before": before, "files_after": after}
                            for name, (before, after) in counts.items()}}
    store.commit_run(run_id, "maintain", files, totals, overwrite=overwrite, exclusive=exclusive)
    return Compacted(run_id, counts, too_big)


def _rewrite(store: IcebergStore, name: str, as_of: str, run_id: str, value: str | None) -> str:
    """Write the rows of ``name``'s partition ``value`` (the whole table when unpartitioned) as of run
    ``as_of`` into one new file of run ``run_id``; returns its URI."""
    column = PARTITION_COLUMN.get(name)
    row_filter = In(column, [value]) if column else AlwaysTrue()
    data = store.read(name, as_of=as_of, row_filter=row_filter)
    if name in SORT_COLUMN:
        data = data.sort_by(SORT_COLUMN[name])  # stable: rows of one account keep their order
    folder = store.data_location(name, {column: value} if column else None)
    uri = cat.join(folder, f"{run_id}-compacted.parquet")
    fs, path = cat.filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as sink:
        pq.write_table(data, sink, compression="zstd")
    return uri


def maintain(store: IcebergStore, *, retain_days: int, run_id: str, compact_files: bool,
             now: dt.datetime | None = None, max_bytes: int = COMPACT_MAX_BYTES,
             exclusive: bool = False) -> Maintained:
    """Roll back a crashed run's half commit (``IcebergStore.recover``), compact (with
    ``compact_files``), then expire snapshots and delete unreferenced files older than ``retain_days``
    days before ``now``. The caller holds the store's lock; ``exclusive``: that lock keeps every other
    writer out (a local store), so any half commit is a crashed run's whatever its age (see
    ``IcebergStore.recover``). ValueError for a negative retention."""
    if retain_days < 0:
        raise ValueError(f"--retain-days {retain_days}: expected 0 or more days")
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=retain_days)
    rolled_back = store.recover(force=exclusive)
    compacted = compact(store, run_id, max_bytes=max_bytes, exclusive=exclusive) if compact_files else None
    expired = expire(store, cutoff)
    deleted = delete_unreferenced(store, cutoff)
    return Maintained(rolled_back, expired, deleted, compacted)

