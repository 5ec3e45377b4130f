"""The rated store as Iceberg tables: open it, commit a run's data files, read a run consistently, recover.

A run becomes visible all at once. ``commit_run`` registers each table's data files in one
transaction per table, then appends the run's row to the ``runs`` table naming every table's
snapshot after the run. Readers resolve the snapshots the latest ``runs`` row (or the run ``as_of``
names) and scan each table at that snapshot, so a table committed by a run that died before its
``runs`` row is invisible; ``recover`` rolls such tables back to the snapshot the run log names.
Iceberg (pyiceberg 0.12) has no multi-table transaction: the run log committed last is what makes
the tables' commits one unit.

One writer at a time: ``commit_run`` recovers first, which would undo a concurrent writer's
half-committed run, so writers must hold the store's lock. Concurrent writers are not handled yet.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.table import DataScan, Table
from pyiceberg.table.snapshots import ancestors_of

from sinks.iceberg import catalog as cat
from sinks.iceberg.tables import (
    DATA_TABLES,
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


@dataclasses.dataclass(frozen=True)
class CommitResult:
    run: Run
    rolled_back: tuple[Rollback, ...]  # what recovery undid before this run committed


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

    def data_location(self, table: str, partition: Mapping[str, str] | None = None) -> str:
        """URI of the folder where workers write ``table``'s data files (for ``partition``, e.g.
        ``{"service_cycle": "2026-01"}``: required for partitioned tables, refused for the others)."""
        check_table(table)
        base = cat.join(self.table(table).location(), "data")
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
        rows = self.table(RUNS).scan().to_arrow().sort_by("run_number").to_pylist()
        return [Run(row["run_number"], row["run_id"], row["kind"], row["started"], row["committed"],
                    {table: row[snapshot_column(table)] for table in DATA_TABLES},
                    json.loads(row["control_totals_json"])) for row in rows]

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

    def _append_run(self, run: Run) -> None:
        row = {"run_number": run.run_number, "run_id": run.run_id, "kind": run.kind,
               "started": run.started, "committed": run.committed,
               "control_totals_json": json.dumps(run.control_totals, sort_keys=True)}
        row.update({snapshot_column(table): run.snapshot_ids[table] for table in DATA_TABLES})
        self.table(RUNS).append(pa.Table.from_pylist([row], schema=runs_schema()),
                                snapshot_properties={RUN_ID_PROPERTY: run.run_id})

    # -- reading -------------------------------------------------------------------------------

    def scan(self, table: str, *, as_of: str | None = None, row_filter: str | BooleanExpression = AlwaysTrue(),
             selected_fields: Sequence[str] = ("*",)) -> DataScan:
        """pyiceberg scan of ``table`` at the snapshot the run ``as_of`` (default: the latest) names.
        Not for ``runs``: read it with :meth:`read` or :meth:`runs`."""
        if check_table(table) == RUNS:
            raise ValueError("scan('runs'): read the run log with read('runs') or runs()")
        snapshot_id = self.run_as_of(as_of).snapshot_ids[table]
        return self.table(table).scan(row_filter=row_filter, selected_fields=tuple(selected_fields),
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
                   started: dt.datetime | None = None) -> CommitResult:
        """Commit one run: per data table one transaction (delete ``overwrite[table]``'s rows, then
        register ``files[table]``: Parquet files already written under :meth:`data_location`), then
        the run log row naming each table's resulting snapshot. Recovers a crashed run first.

        Raises ``ValueError`` (before committing anything) for an unknown table or kind, a run id
        already committed, or a file outside its table's location or without statistics for its
        partition column.
        """
        overwrite = dict(overwrite or {})
        started = started or _now()
        if kind not in RUN_KINDS or kind == "create":
            raise ValueError(f"run kind {kind!r}: expected one of {', '.join(RUN_KINDS[1:])}")
        for table in set(files) | set(overwrite):
            if check_table(table) == RUNS:
                raise ValueError("commit_run: the runs table is written by commit_run itself")
        if any(run.run_id == run_id for run in self.runs()):
            raise ValueError(f"run id {run_id!r} is already committed to {self.output}; use a new run id")
        for table, paths in files.items():
            self._check_files(table, list(paths))
        rolled_back = tuple(self.recover())
        snapshot_ids = {}
        for table in DATA_TABLES:
            iceberg_table = self.table(table)
            paths = list(files.get(table, ()))
            if paths or table in overwrite:
                iceberg_table = self._commit_table(iceberg_table, run_id, paths, overwrite.get(table))
            snapshot_ids[table] = iceberg_table.current_snapshot().snapshot_id
        previous = self.runs()[-1]
        run = Run(previous.run_number + 1, run_id, kind, started, _now(), snapshot_ids, dict(totals))
        self._append_run(run)
        return CommitResult(run, rolled_back)

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
            tx.add_files(paths, snapshot_properties=properties)
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
        """Tables whose current snapshot is not the one the latest run names (a crashed run's)."""
        latest = self.runs()[-1]
        pending = []
        for table in DATA_TABLES:
            current = self.table(table).current_snapshot().snapshot_id
            if current != latest.snapshot_ids[table]:
                pending.append(Rollback(table, current, latest.snapshot_ids[table]))
        return pending

    def recover(self) -> list[Rollback]:
        """Roll every table a crashed run committed back to the snapshot the latest run names; returns
        what it rolled back. The abandoned snapshots' data files are then :meth:`orphan_files`."""
        rollbacks = self.pending()
        for rollback in rollbacks:
            table = self.table(rollback.table)
            try:
                table.manage_snapshots().rollback_to_snapshot(rollback.to_snapshot_id).commit()
            except ValueError as error:
                raise ValueError(f"recover {self.output}: cannot roll {identifier(rollback.table)} back to "
                                 f"snapshot {rollback.to_snapshot_id} named by the run log ({error}); "
                                 f"the table was changed outside this store's commits") from None
        return rollbacks

    def orphan_files(self) -> dict[str, list[str]]:
        """Per table, the files under its data location that no snapshot of its current history
        references: files of crashed or rolled-back runs. Safe to delete only while no writer runs."""
        orphans = {}
        for name in TABLES:
            table = self.table(name)
            referenced, seen_manifests = set(), set()
            for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
                for manifest in snapshot.manifests(table.io):
                    if manifest.manifest_path in seen_manifests:
                        continue
                    seen_manifests.add(manifest.manifest_path)
                    for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                        referenced.add(entry.data_file.file_path)
            files = cat.list_files(cat.join(table.location(), "data"))
            orphans[name] = [path for path in files if path not in referenced]
        return orphans


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
