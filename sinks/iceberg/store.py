"""The rated store as Iceberg tables: open it, commit a run's data files, read a run consistently, recover.

A run becomes visible all at once. ``commit_run`` registers each table's data files in one
transaction per table, then appends the run's row to the ``runs`` table naming every table's
snapshot after the run. Readers resolve the snapshots the latest ``runs`` row (or the run ``as_of``
names) and scan each table at that snapshot, so a table committed by a run that died before its
``runs`` row is invisible; ``recover`` rolls such tables back to the snapshot the run log names.
Iceberg (pyiceberg 0.12) has no multi-table transaction: the run log committed last is what makes
the tables' commits one unit.

Several writers (a shared catalog, an object-storage warehouse: no lock file guards them) commit
optimistically: a run commits only if no other run was logged or half-committed since it read the
store, else it undoes its own table commits and raises ``ConcurrentCommitError``. The tables'
commits are never retried by pyiceberg on a moved head (``commit.retry.num-retries`` 0): such a
retry would rebase the run on a state it never read. A half commit is rolled back by recovery only
when it is older than ``RECOVER_AFTER`` or the writer holds the store's lock (``exclusive``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.table import DataScan, Table
from pyiceberg.table.snapshots import ancestors_of

from sinks.iceberg import catalog as cat
from sinks.iceberg.tables import (
    COMMIT_NUM_RETRIES,
    DATA_TABLES,
    NO_COMMIT_RETRIES,
    NAMESPACE,
    PARTITION_COLUMN,
    RUN_KINDS,
    RUNS,
    TABLES,
    arrow_schema,
    check_table,
    create_table,
    identifier,
    runs_schema,
    snapshot_column,
)

RUN_ID_PROPERTY = "usage-rating.run-id"  # in the summary of every snapshot a run commits
CREATE_RUN_ID = "create"
# A half commit (table snapshots without their run log row) younger than this may be a live writer's
# between its table commits and its run log row (seconds apart), so only an older one is taken for a
# crashed run's and rolled back, unless the caller holds the store's lock.
RECOVER_AFTER = dt.timedelta(minutes=15)


class ConcurrentCommitError(ValueError):
    """Another writer committed (or is committing) to the store since a run read it: the run committed
    nothing and may run again. ``other_run_id``: that writer's run id, when known."""

    def __init__(self, message: str, other_run_id: str | None):
        super().__init__(message)
        self.other_run_id = other_run_id


class _Conflict(Exception):
    """Raised inside ``commit_run`` when its optimistic check fails; becomes ``ConcurrentCommitError``.
    ``what`` changed since the run read the store; ``since``: when the other run's commit was made."""

    def __init__(self, other_run_id: str | None, what: str, since: dt.datetime | None = None):
        super().__init__(what)
        self.other_run_id, self.what, self.since = other_run_id, what, since


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the run log: ``snapshot_ids`` maps each data table to its snapshot after the run."""
    run_number: int
    run_id: str
    kind: str
    started: dt.datetime
    committed: dt.datetime
    snapshot_ids: Mapping[str, int]
    control_totals: Mapping


@dataclasses.dataclass(frozen=True)
class Rollback:
    """``table`` was at ``from_snapshot_id`` (committed by a run the run log does not name)."""
    table: str
    from_snapshot_id: int
    to_snapshot_id: int
    run_id: str | None = None               # the run that committed from_snapshot_id (None: not a store run)
    committed: dt.datetime | None = None    # when it did (UTC), by the committing writer's clock


@dataclasses.dataclass(frozen=True)
class CommitResult:
    run: Run
    rolled_back: tuple[Rollback, ...]  # what recovery undid before this run committed
    replayed: bool = False             # the run id was committed before: nothing was done (``replay``)


def _old_layout_error(output: str) -> ValueError:
    return ValueError(f"--output {output} is an output folder in the old layout (_SUCCESS and rated/ "
                      f"of plain Parquet, no Iceberg catalog): this version keeps the store as Iceberg "
                      f"tables. Write to a new --output folder, or read the old one with an earlier release")


class IcebergStore:
    """The store at ``output``; make one with :meth:`open`."""

    def __init__(self, output: str, out_uri: str, catalog):
        self.output = output
        self.uri = out_uri
        self.catalog = catalog

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, output: str, catalog_uri: str | None = None, *, create: bool) -> IcebergStore:
        """Open the store at ``output``; with ``create``, create it there if it does not exist yet.

        ``catalog_uri``: the catalog's SQLAlchemy URL when it is not the embedded ``OUT/catalog.db``
        (then ``output`` is the warehouse, where the tables' files go). Raises ``ValueError`` naming
        the output and the fix when it holds no store (or an old-layout one, or other files).
        """
        out_uri = cat.output_uri(output)
        embedded = catalog_uri is None
        if embedded:
            catalog_uri = cat.embedded_catalog_uri(out_uri, output)
        if cat.is_old_layout(out_uri):
            raise _old_layout_error(output)
        if embedded:
            if not cat.exists(cat.join(out_uri, cat.CATALOG_FILE)):
                if not create:
                    raise ValueError(f"--output {output} is not a rating store (no {cat.CATALOG_FILE}): "
                                     f"check the path, pass --catalog-uri if its catalog is elsewhere, "
                                     f"or create the store with a batch run")
                cls._check_free(output, out_uri)
                cat.make_dirs(out_uri)
        catalog = cat.open_catalog(catalog_uri, cat.warehouse_of(out_uri, embedded=embedded))
        store = cls(output, out_uri, catalog)
        existing = {name for _, name in catalog.list_tables(NAMESPACE)} \
            if (NAMESPACE,) in catalog.list_namespaces() else set()
        missing = [table for table in TABLES if table not in existing]
        if missing and not create:
            raise ValueError(f"--output {output}: catalog {catalog_uri} has no store tables "
                             f"{', '.join(NAMESPACE + '.' + t for t in missing)}; check --output and "
                             f"--catalog-uri, or create the store with a batch run")
        if len(missing) == len(TABLES) and not embedded:
            cls._check_free(output, out_uri)  # a new store's warehouse
        store._check_locations(existing)
        store._evolve(existing)
        if missing:
            store._create(missing)
        return store

    @staticmethod
    def _check_free(output: str, out_uri: str) -> None:
        if not cat.is_empty_or_missing(out_uri):
            raise ValueError(f"--output {output} holds files but no rating store: "
                             f"choose a new or empty folder for a new store")

    def _check_locations(self, tables: set[str]) -> None:
        warehouse = self.catalog.properties["warehouse"]
        for table in sorted(tables & set(TABLES)):
            location = self.table(table).location()
            if not location.startswith(warehouse + "/"):
                raise ValueError(f"--output {self.output}: the catalog's table {identifier(table)} lives "
                                 f"at {location}, not under {warehouse}; a catalog holds one store, so "
                                 f"give the --output it was created with, or another --catalog-uri")

    def _evolve(self, tables: set[str]) -> None:
        """Bring tables an earlier release created up to today's schemas: add the columns added since
        (nullable: older rows read null, e.g. rated ``subscriber``) and make nullable the columns that
        became so (rated ``served_msisdn``). A metadata commit, once per store; nothing when the
        tables are current, and a concurrent opener's identical change is fine."""
        for name in sorted(tables & set(TABLES)):
            table = self.table(name)
            current = {field.name: field for field in table.schema().fields}
            wanted = arrow_schema(name)
            if all(field.name in current and (not field.nullable or current[field.name].optional)
                   for field in wanted):
                continue
            try:
                with table.update_schema() as update:
                    update.union_by_name(wanted)
            except CommitFailedException:
                pass   # another writer evolved it meanwhile

    def _create(self, missing: list[str]) -> None:
        if (NAMESPACE,) not in self.catalog.list_namespaces():
            self.catalog.create_namespace(NAMESPACE)
        for table in missing:
            create_table(self.catalog, table)
        if not self.runs():
            now = _now()
            self._append_run(Run(0, CREATE_RUN_ID, "create", now, now, self._current_snapshot_ids(), {}))

    # -- tables and where their files go -------------------------------------------------------

    def table(self, table: str) -> Table:
        """The catalog's current view of ``table`` (loaded afresh)."""
        return self.catalog.load_table(identifier(table))

    def data_root(self, table: str) -> str:
        """URI of ``table``'s data folder; partitioned tables keep a Hive-style folder per value under it."""
        return cat.join(self.table(check_table(table)).location(), "data")

    def partition_values(self, table: str, as_of: str | None = None) -> set[str]:
        """The values of ``table``'s partition column (its cycles) that hold rows, from the manifests
        of the snapshot the latest run (or ``as_of``) names: no data file is read."""
        column = PARTITION_COLUMN[check_table(table)]
        return {str(task.file.partition[0]) for task in self.scan(table, as_of=as_of).plan_files()
                if task.file.record_count} - {"None"} if column else set()

    def data_location(self, table: str, partition: Mapping[str, str] | None = None) -> str:
        """URI of the folder where workers write ``table``'s data files (for ``partition``, e.g.
        ``{"service_cycle": "2026-01"}``: required for partitioned tables, refused for the others)."""
        base = self.data_root(table)
        column = PARTITION_COLUMN.get(table)
        given = set(partition or {})
        if given != ({column} if column else set()):
            expected = f"{{{column!r}: value}}" if column else "no partition"
            raise ValueError(f"data_location({table!r}, {partition!r}): expected {expected}")
        if column is None:
            return base
        return cat.join(base, f"{column}={urllib.parse.quote(str(partition[column]), safe='')}")

    def _current_snapshot_ids(self) -> dict[str, int]:
        return {table: self.table(table).current_snapshot().snapshot_id for table in DATA_TABLES}

    # -- the run log ---------------------------------------------------------------------------

    def runs(self) -> list[Run]:
        """Every committed run, oldest first (by ``run_number``)."""
        return _runs_of(self.table(RUNS))

    def run_as_of(self, as_of: str | None = None) -> Run:
        """The latest run; or the run ``as_of`` names: a run id, or an ISO timestamp meaning the last
        run committed at or before it (UTC when it names no offset)."""
        runs = self.runs()
        if as_of is None:
            return runs[-1]
        for run in runs:
            if run.run_id == as_of:
                return run
        try:
            instant = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise ValueError(f"--as-of {as_of}: no run with that id in {self.output}, and not an ISO "
                             f"timestamp such as 2026-02-01T00:00:00Z") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.timezone.utc)
        earlier = [run for run in runs if run.committed <= instant]
        if not earlier:
            raise ValueError(f"--as-of {as_of}: no run of {self.output} was committed at or before it; "
                             f"the first was committed at {runs[0].committed.isoformat()}")
        return earlier[-1]

    def _append_run(self, run: Run, runs_table: Table | None = None) -> None:
        """Append ``run``'s row to the run log; with ``runs_table`` (as loaded when the previous run was
        read), a ``CommitFailedException`` when another row was appended since."""
        row = {"run_number": run.run_number, "run_id": run.run_id, "kind": run.kind,
               "started": run.started, "committed": run.committed,
               "control_totals_json": json.dumps(run.control_totals, sort_keys=True)}
        row.update({snapshot_column(table): run.snapshot_ids[table] for table in DATA_TABLES})
        (runs_table or self.table(RUNS)).append(pa.Table.from_pylist([row], schema=runs_schema()),
                                                snapshot_properties={RUN_ID_PROPERTY: run.run_id})

    # -- closed cycles -------------------------------------------------------------------------

    def closed_through(self, as_of: str | None = None) -> str | None:
        """The last cycle whose invoices were issued (``close-cycle``), as of the latest run or
        ``as_of``; None when no cycle was closed. Closing is a run of kind ``close`` in the run log,
        its control totals ``{"closed_through": "YYYY-MM"}``."""
        runs = self.runs()
        last = self.run_as_of(as_of).run_number if as_of is not None else runs[-1].run_number
        closes = [run for run in runs if run.kind == "close" and run.run_number <= last]
        return closes[-1].control_totals["closed_through"] if closes else None

    def close_cycles(self, run_id: str, closed_through: str, *, exclusive: bool = False) -> CommitResult:
        """Record that every cycle through ``closed_through`` (YYYY-MM) is invoiced: a run of kind
        ``close`` that commits no data. The caller checks that closing never moves back.
        ``exclusive``: as for :meth:`commit_run`."""
        return self.commit_run(run_id, "close", {}, {"closed_through": closed_through}, exclusive=exclusive)

    # -- reading -------------------------------------------------------------------------------

    def scan(self, table: str, *, as_of: str | None = None, row_filter: str | BooleanExpression = AlwaysTrue(),
             selected_fields: Sequence[str] = ("*",)) -> DataScan:
        """pyiceberg scan of ``table`` at the snapshot the run ``as_of`` (default: the latest) names.
        Not for ``runs``: read it with :meth:`read` or :meth:`runs`."""
        if check_table(table) == RUNS:
            raise ValueError("scan('runs'): read the run log with read('runs') or runs()")
        run = self.run_as_of(as_of)
        snapshot_id, iceberg_table = run.snapshot_ids[table], self.table(table)
        if iceberg_table.snapshot_by_id(snapshot_id) is None:
            raise ValueError(f"--as-of {as_of}: the snapshot of {table} that run {run.run_id} names was expired by "
                             f"usage-rating maintain (older than its --retain-days); choose a later run, or a "
                             f"close-cycle run (maintain keeps those)")
        return iceberg_table.scan(row_filter=row_filter, selected_fields=tuple(selected_fields),
                                  snapshot_id=snapshot_id)

    def read(self, table: str, *, as_of: str | None = None, row_filter: str | BooleanExpression = AlwaysTrue(),
             selected_fields: Sequence[str] | None = None) -> pa.Table:
        """Rows of ``table`` as of the latest run (or the run ``as_of`` names), with the project's
        Arrow types; ``row_filter`` a pyiceberg expression or string (``"service_cycle == '2026-01'"``)."""
        fields = tuple(selected_fields) if selected_fields else ("*",)
        if check_table(table) == RUNS:
            last = self.run_as_of(as_of).run_number
            data = self.table(RUNS).scan(row_filter=row_filter, selected_fields=fields).to_arrow()
            data = data.filter(pc.less_equal(data["run_number"], last)).sort_by("run_number")
        else:
            data = self.scan(table, as_of=as_of, row_filter=row_filter, selected_fields=fields).to_arrow()
        schema = arrow_schema(table)
        return data.cast(pa.schema([schema.field(name) for name in data.column_names]))

    # -- committing ----------------------------------------------------------------------------

    def commit_run(self, run_id: str, kind: str, files: Mapping[str, Sequence[str]], totals: Mapping,
                   overwrite: Mapping[str, str | BooleanExpression] | None = None,
                   started: dt.datetime | None = None, *, exclusive: bool = False,
                   replay: bool = False, based_on: str | None = None) -> CommitResult:
        """Commit one run: per data table one transaction (delete ``overwrite[table]``'s rows, then
        register ``files[table]``: Parquet files already written under :meth:`data_location`), then
        the run log row naming each table's resulting snapshot. Recovers a crashed run first
        (:meth:`recover`; ``exclusive``: the caller holds the store's lock, so every half commit in
        the store is a crashed run's, whatever its age).

        Optimistic, for several writers on one catalog: the run is based on the latest run it reads
        first. Each table it writes must still be at the snapshot that run names, each table commit
        asserts its table did not move meanwhile, and the run log row is appended only if no other
        row was. When another writer got there first (or is half-way through its own commit), this
        run's table commits are rolled back and ``ConcurrentCommitError`` names that run: nothing of
        this run is committed, no run is lost, and run numbers stay unique. The store does not retry
        by itself: what a job writes depends on what it read (duplicates, allowances, the cycles a
        re-rate overwrites), so the job re-reads the store and runs again.

        ``based_on``: the run id of the run log's head when the job read the store (its duplicates,
        balances, cycles). When another run was committed since, nothing is committed and
        ``ConcurrentCommitError`` names it: what the job computed may no longer hold.

        ``replay``: the run id is the commit's idempotency key (a committer that may be asked to
        commit the same files again, e.g. a retried bundle of a stream, derives it from them): a run
        id of the same kind already in the run log is that commit, returned with ``replayed`` set
        and nothing done. Without it, an already committed run id is an error.

        Raises ``ValueError`` (before committing anything) for an unknown table or kind, a run id
        already committed (of another kind, or without ``replay``), or a file outside its table's
        location or without statistics for its partition column.
        """
        overwrite = dict(overwrite or {})
        started = started or _now()
        if kind not in RUN_KINDS or kind == "create":
            raise ValueError(f"run kind {kind!r}: expected one of {', '.join(RUN_KINDS[1:])}")
        for table in set(files) | set(overwrite):
            if check_table(table) == RUNS:
                raise ValueError("commit_run: the runs table is written by commit_run itself")
        runs_table = self._table_for_commit(RUNS)   # the run log's head this run's row must follow
        runs = _runs_of(runs_table)
        done = [run for run in runs if run.run_id == run_id]
        if done and replay and done[0].kind == kind:
            return CommitResult(done[0], (), replayed=True)
        if done:
            raise ValueError(f"run id {run_id!r} is already committed to {self.output} (run {done[0].run_number}, "
                             f"{done[0].kind}); use a new run id")
        for table, paths in files.items():
            self._check_files(table, list(paths))
        base = runs[-1]
        if based_on is not None and base.run_id != based_on:
            read = [run for run in runs if run.run_id == based_on]
            raise self._conflict(run_id, read[0] if read else base, _Conflict(base.run_id, "the run log has a new run"))
        rolled_back = tuple(self._recover(base, force=exclusive))
        in_progress = self._pending(base)
        if in_progress:
            first = in_progress[0]
            raise self._conflict(run_id, base, _Conflict(first.run_id, f"{first.table} has a commit the run log "
                                                                       f"does not name", first.committed))
        snapshot_ids = dict(base.snapshot_ids)
        committed: dict[str, int] = {}   # table -> this run's snapshot, to undo on a conflict
        try:
            for table in DATA_TABLES:
                paths = list(files.get(table, ()))
                if not paths and table not in overwrite:
                    continue
                iceberg_table = self._table_for_commit(table)
                head = iceberg_table.current_snapshot()
                if head.snapshot_id != base.snapshot_ids[table]:
                    raise _Conflict(_run_id_of(head), f"{table} has another commit")
                try:
                    after = self._commit_table(iceberg_table, run_id, paths, overwrite.get(table)).current_snapshot()
                except CommitFailedException:
                    raise _Conflict(_run_id_of(self.table(table).current_snapshot()),
                                    f"{table} has another commit") from None
                if after.snapshot_id != base.snapshot_ids[table]:
                    committed[table] = snapshot_ids[table] = after.snapshot_id
            for table, snapshot_id in committed.items():   # still there: no recovery took this run for a crash
                if self.table(table).current_snapshot().snapshot_id != snapshot_id:
                    raise _Conflict(None, f"a recovery took its commit to {table} for a crashed run's and "
                                          f"rolled it back")
            run = Run(base.run_number + 1, run_id, kind, started, _now(), snapshot_ids, dict(totals))
            try:
                self._append_run(run, runs_table)
            except CommitFailedException:
                raise _Conflict(self.runs()[-1].run_id, "the run log has a new run") from None
        except _Conflict as conflict:
            left = self._undo(committed, base)
            raise self._conflict(run_id, base, conflict, left) from None
        return CommitResult(run, rolled_back)

    def _table_for_commit(self, name: str) -> Table:
        """``name`` loaded afresh, its commits set to fail rather than be retried by pyiceberg on a
        moved head (``create_table`` sets that; a store created before is set here once)."""
        table = self.table(name)
        if table.metadata.properties.get(COMMIT_NUM_RETRIES) != NO_COMMIT_RETRIES:
            try:
                table.transaction().set_properties({COMMIT_NUM_RETRIES: NO_COMMIT_RETRIES}).commit_transaction()
            except CommitFailedException:
                pass   # another writer set it meanwhile
            table = self.table(name)
        return table

    def _undo(self, committed: Mapping[str, int], base: Run) -> list[str]:
        """Roll each table this run committed back to ``base``'s snapshot, where this run's snapshot is
        still the table's head; returns the tables it could not (the next run's recovery will)."""
        left = []
        for table, snapshot_id in reversed(list(committed.items())):
            if not self._roll_back(Rollback(table, snapshot_id, base.snapshot_ids[table])):
                left.append(table)
        return left

    def _roll_back(self, rollback: Rollback) -> bool:
        """Move ``rollback.table`` back, only if it is still at ``rollback.from_snapshot_id`` (asserted by
        the commit too); False when it moved meanwhile."""
        table = self.table(rollback.table)
        if table.current_snapshot().snapshot_id != rollback.from_snapshot_id:
            return False
        try:
            table.manage_snapshots().rollback_to_snapshot(rollback.to_snapshot_id).commit()
        except CommitFailedException:
            return False
        except ValueError as error:
            raise ValueError(f"recover {self.output}: cannot roll {identifier(rollback.table)} back to "
                             f"snapshot {rollback.to_snapshot_id} named by the run log ({error}); "
                             f"the table was changed outside this store's commits") from None
        return True

    def _conflict(self, run_id: str, base: Run, conflict: _Conflict, left: Sequence[str] = ()) -> ConcurrentCommitError:
        other = conflict.other_run_id
        if other is None:
            who = "another writer got there first"
        elif any(run.run_id == other for run in self.runs()):
            who = f"run {other} was committed meanwhile"
        else:
            who = f"run {other} is committing"
            if conflict.since is not None:
                who += (f" (if it crashed instead, the first run from {(conflict.since + RECOVER_AFTER).isoformat()} "
                        f"on rolls its half commit back)")
        undone = f"; its commits to {', '.join(left)} stay invisible until the next run rolls them back" if left else ""
        return ConcurrentCommitError(
            f"run {run_id} was not committed to {self.output}: {who}. This run read the store as of run "
            f"{base.run_id}; since then {conflict.what}. None of this run's data files were committed{undone}: "
            f"running it again is safe (it re-reads the store)", other)

    @staticmethod
    def _commit_table(table: Table, run_id: str, paths: list[str],
                      delete_filter: str | BooleanExpression | None) -> Table:
        properties = {RUN_ID_PROPERTY: run_id}
        tx = table.transaction()
        if delete_filter is not None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                tx.delete(delete_filter, snapshot_properties=properties)
        if paths:
            # Our writers keep statistics only for the columns readers filter on; pyiceberg logs one
            # warning per other column and file when it registers them.
            quiet = logging.getLogger("pyiceberg.io.pyarrow")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                tx.add_files(paths, snapshot_properties=properties)
            finally:
                quiet.setLevel(level)
        return tx.commit_transaction()

    def _check_files(self, table: str, paths: list[str]) -> None:
        location = self.table(check_table(table)).location() + "/"
        column = PARTITION_COLUMN.get(table)
        for path in paths:
            if not path.startswith(location):
                raise ValueError(f"commit_run: {table} file {path} is outside the table's location "
                                 f"{location}; write it under store.data_location({table!r}, ...)")
            if column is None:
                continue
            # add_files takes a file's partition from its min/max statistics and silently files it
            # under a null partition when the column has none: refuse such a file instead.
            if not cat.has_min_max(path, column):
                raise ValueError(f"commit_run: {table} file {path} has no min/max statistics for its "
                                 f"partition column {column}; write it with statistics for {column}")

    # -- recovery ------------------------------------------------------------------------------

    def pending(self) -> list[Rollback]:
        """Tables whose current snapshot is not the one the latest run names: a run's commit without
        its run log row yet (a crashed run's, or a writer's half-way through ``commit_run``)."""
        return self._pending(self.runs()[-1])

    def _pending(self, latest: Run) -> list[Rollback]:
        pending = []
        for table in DATA_TABLES:
            current = self.table(table).current_snapshot()
            if current.snapshot_id != latest.snapshot_ids[table]:
                pending.append(Rollback(table, current.snapshot_id, latest.snapshot_ids[table], _run_id_of(current),
                                        dt.datetime.fromtimestamp(current.timestamp_ms / 1000, dt.timezone.utc)))
        return pending

    def recover(self, *, force: bool = False) -> list[Rollback]:
        """Roll every table a crashed run committed back to the snapshot the latest run names; returns
        what it rolled back. The abandoned snapshots' data files are then :meth:`orphan_files`.

        A half commit is a crashed run's when its newest snapshot is older than ``RECOVER_AFTER``
        (by the snapshots' own timestamps: writers' clocks must agree to well within that), or with
        ``force``, when the caller holds the store's lock so no other writer can be committing. A
        younger one may be a live writer's, between its table commits and its run log row: it is
        left alone (``pending`` still lists it)."""
        return self._recover(self.runs()[-1], force=force)

    def _recover(self, latest: Run, *, force: bool) -> list[Rollback]:
        pending = self._pending(latest)
        cutoff = _now() - RECOVER_AFTER
        live = set() if force else {p.run_id for p in pending if p.committed > cutoff}
        stale = [p for p in pending if p.run_id not in live]
        if stale and not force and self.runs()[-1].run_id != latest.run_id:
            return []   # a run was just logged: its tables are no crash (the caller re-reads the store)
        return [rollback for rollback in stale if self._roll_back(rollback)]

    def orphan_files(self) -> dict[str, list[str]]:
        """Per table, the files under its data location that no snapshot of its current history
        references: files of crashed or rolled-back runs. Safe to delete only while no writer runs.

        The history is the current snapshot and its ancestors, plus every snapshot the run log names
        (``maintain`` may have expired an ancestor between two of them, which ends the chain); each
        snapshot references the files it reads, so a file deleted by a snapshot whose parent expired
        (a compaction's inputs, a re-rated cycle's old files) is an orphan once nothing reads it."""
        named = {table: {run.snapshot_ids[table] for run in self.runs()} for table in DATA_TABLES}
        orphans = {}
        for name in TABLES:
            table = self.table(name)
            history = {s.snapshot_id: s for s in ancestors_of(table.current_snapshot(), table.metadata)}
            history.update({i: table.snapshot_by_id(i) for i in named.get(name, ()) if table.snapshot_by_id(i)})
            referenced, seen_manifests = set(), set()
            for snapshot in history.values():
                for manifest in snapshot.manifests(table.io):
                    if manifest.manifest_path in seen_manifests:
                        continue
                    seen_manifests.add(manifest.manifest_path)
                    for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                        referenced.add(entry.data_file.file_path)
            files = cat.list_files(cat.join(table.location(), "data"))
            orphans[name] = [path for path in files if path not in referenced]
        return orphans


def _runs_of(runs_table: Table) -> list[Run]:
    """The run log in ``runs_table`` (as loaded), oldest first."""
    rows = runs_table.scan().to_arrow().sort_by("run_number").to_pylist()
    return [Run(row["run_number"], row["run_id"], row["kind"], row["started"], row["committed"],
                {table: row[snapshot_column(table)] for table in DATA_TABLES},
                json.loads(row["control_totals_json"])) for row in rows]


def _run_id_of(snapshot) -> str | None:
    """The run that committed ``snapshot`` (the run id ``commit_run`` puts in its summary)."""
    return snapshot.summary[RUN_ID_PROPERTY] if snapshot.summary is not None else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
