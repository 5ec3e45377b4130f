"""What a batch run continues from the store: the usage of the accounts it adds to, and the records it already holds.

A batch run that adds usage to a cycle the store already holds rates the accounts it touches again
for that cycle: the events the store rated (read back from the rated table as usage rows) together
with the new records, in one event-time order. So allowances and tiers carry on from what the store
holds, and a record older than ones already rated corrects them, exactly as one batch over all the
files would have rated them. The run replaces those accounts' rows (or, when it touches many, the
cycles whole) in one commit (``pipelines.batch.appended``).

    accounts_of_inputs(...)     submitter: the accounts the new files touch (decode, subscription lookup)
    prepare_prior(store, ...)   submitter: their events as usage files, and a key index of the store
    ReadPrior                   worker: a usage file of the store -> usage batches (+ ``prior_in``)
    DropStored                  worker: drops new records the store already holds -> duplicates

``DropStored`` catches a record the store rated or rejected in any cycle of the index (the open
cycles and the one before the earliest of them): it becomes a duplicate naming the original's
input file, position and the run that rated it. Re-rated cycles must have been rated with the same
reference data as this run (``check_same_reference``): a change of tariffs is a re-rate, with its
report.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from pyiceberg.expressions import And, GreaterThanOrEqual, In, LessThan, NotNull

from cdr_schemas import duplicate_schema, usage_batch_schema
from pipelines.decode import COUNTS, USAGE
from pipelines.dedup import DUPLICATES, UNIQUE
from rating.cycles import in_cycle_scope, month_bounds, month_index, month_label
from rating.partition import RECORD_KEY, hash_columns, split_by_record_key
from sinks.files import is_remote, local_copy, upload
from sinks.iceberg import IcebergStore
from sinks.iceberg.catalog import join
from sinks.iceberg.tables import arrow_schema
from sinks.object_storage import ObjectStorage

PRIOR_FOLDER = "prior"
_RUN_OF_FILE = re.compile(r"(\d{8}T\d{6}Z-[0-9a-f]{8})-part-\d+\.parquet$")
# The rated-event columns a usage row is rebuilt from; the identity columns a duplicate compares.
_RATED_COLUMNS = ["record_id", "source", "service", "served_msisdn", "other_party", "visited_network", "start_time",
                  "raw_units", "service_cycle", "account_id", "input_file", "input_position",
                  "subscriber", "subscriber_kind"]
_IDENTITY = ["service", "served_msisdn", "other_party", "visited_network", "start_time", "raw_units",
             "subscriber", "subscriber_kind"]


@dataclasses.dataclass(frozen=True)
class PriorUsage:
    """What a run re-rates from the store: the events of ``accounts`` in ``cycles`` (open service
    cycles the store holds) as usage Parquet files (``usage_files``), ``records`` of them per cycle;
    and the key index of every record the store holds in the indexed cycles: ``keys_file`` (Arrow
    IPC: key hashes sorted, each with its row in ``details_file``, the records' keys, origin and
    identity columns). ``keys_file`` None: the store holds nothing to continue or to repeat."""
    cycles: tuple[str, ...]
    accounts: tuple[str, ...] | None   # None: every account of ``cycles``
    usage_files: tuple[str, ...]
    records: dict
    keys_file: str | None
    details_file: str | None

    @classmethod
    def none(cls) -> "PriorUsage":
        return cls((), (), (), {}, None, None)

    def shared_at(self, folder: str) -> "PriorUsage":
        """These files as the workers reach them: copied to ``folder`` when it is on object storage
        (the run's shared scratch folder, ``StagedRun.shared``); as they are otherwise."""
        if self.keys_file is None or not is_remote(folder):
            return self

        def copied(path: str) -> str:
            uri = join(folder, PRIOR_FOLDER, Path(path).name)
            upload(path, uri)
            return uri
        return dataclasses.replace(self, usage_files=tuple(copied(p) for p in self.usage_files),
                                   keys_file=copied(self.keys_file), details_file=copied(self.details_file))


def check_same_reference(store: IcebergStore, cycles: list[str], reference: str) -> None:
    """ValueError when a cycle to re-rate was last rated with other reference data than ``reference``
    (a SHA-256 of ``rating.engine.reference_fingerprint``): continuing it would re-price its events."""
    runs = store.runs()[::-1]   # newest first, read once
    for cycle in cycles:
        for run in runs:
            totals = run.control_totals
            if run.kind not in ("batch", "rerate", "stream") or cycle not in totals.get("cycles", {}) | \
                    ({totals["cycle"]: None} if "cycle" in totals else {}):
                continue
            rated_with = totals.get("run", {}).get("fingerprint", {}).get("reference")
            if rated_with != reference:
                raise ValueError(
                    f"cycle {cycle} of {store.output} was rated with other reference data (run {run.run_id}) than "
                    f"--reference: a batch run adds usage to a cycle only with the reference data that rated it. "
                    f"Re-rate the cycle with the new reference data first (usage-rating rerate --cycle {cycle} ...), "
                    f"then add the new files")
            break


def open_cycles(store: IcebergStore, closed_through: str | None) -> list[str]:
    """The service cycles the store holds that are not closed: a batch run re-rates those it adds to."""
    held = store.partition_values("rated")
    return sorted(c for c in held if closed_through is None or month_index(c) > month_index(closed_through))


def accounts_of_inputs(engine, paths: list[str]) -> set[str]:
    """The accounts whose subscriptions the valid records of ``paths`` belong to: a first, cheap pass
    over the new files (decoding and the subscription lookup, no rating)."""
    from cdr_schemas.decoders import InputFileError, decode_file
    from cdr_schemas.validate import validate_usage

    rows = []
    for path in paths:
        try:
            for decoded in decode_file(path):
                if decoded.usage.num_rows:
                    valid, _ = validate_usage(decoded.usage)
                    rows.append(engine.account_rows(valid))
        except InputFileError as error:
            raise ValueError(str(error)) from None
    known = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
    return {engine.compiled.account_ids[row] for row in known[known >= 0].tolist()}


def prepare_prior(store: IcebergStore, cycles: list[str], accounts: set[str] | None, scratch: Path) -> PriorUsage:
    """Write the stored events of ``accounts`` (None: all) in ``cycles`` as usage rows under ``scratch/prior``,
    and the key index of every record the store holds in ``cycles`` and the held cycle before the
    earliest of them. Reads the store a data file at a time: memory holds one file, plus 16 bytes
    an indexed record."""
    held = store.partition_values("rated")
    if not held:
        return PriorUsage.none()
    indexed = sorted(set(cycles) | ({month_label(month_index(min(cycles)) - 1)} & held if cycles else
                                    {max(held)}))
    folder = scratch / PRIOR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    wanted = pa.array(sorted(accounts), pa.string()) if accounts is not None else None
    usage_files, records, hashes = [], {}, []
    details_file = folder / "details.arrow"
    with ipc.new_file(details_file, _DETAILS_SCHEMA) as details:
        for cycle in indexed:
            for table in ("rated", "rejected"):
                for part in _read_with_runs(store, table, cycle):
                    keys = _details(part)
                    details.write_table(keys)
                    hashes.append(hash_columns(keys.combine_chunks().to_batches()[0], list(RECORD_KEY))
                                  if keys.num_rows else np.zeros(0, np.uint64))
                    if table != "rated" or cycle not in cycles:
                        continue
                    mine = part if wanted is None else part.filter(pc.is_in(part.column("account_id"), value_set=wanted))
                    if mine.num_rows:
                        path = folder / f"usage-{len(usage_files):05d}.parquet"
                        pq.write_table(usage_rows(mine), path, compression="lz4")
                        usage_files.append(str(path))
                        records[cycle] = records.get(cycle, 0) + mine.num_rows
    key_hash = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    order = np.argsort(key_hash, kind="stable")
    keys_file = folder / "keys.arrow"
    index = pa.table({"key_hash": pa.array(key_hash[order], pa.uint64()), "row": pa.array(order, pa.int64())})
    with ipc.new_file(keys_file, index.schema) as writer:
        writer.write_table(index)
    return PriorUsage(tuple(cycles), tuple(sorted(accounts)) if accounts is not None else None, tuple(usage_files),
                      records, str(keys_file), str(details_file))


_DETAILS_SCHEMA = pa.schema([pa.field("source", pa.string()), pa.field("record_id", pa.string()),
                             pa.field("input_file", pa.string()), pa.field("input_position", pa.int64()),
                             pa.field("run_id", pa.string()), pa.field("service", pa.string()),
                             pa.field("served_msisdn", pa.string()), pa.field("other_party", pa.string()),
                             pa.field("visited_network", pa.string()),
                             pa.field("start_time", pa.timestamp("us", tz="UTC")), pa.field("raw_units", pa.int64()),
                             pa.field("subscriber", pa.string()), pa.field("subscriber_kind", pa.string())])


def _details(part: pa.Table) -> pa.Table:
    """The key index's columns of stored rows (rejected rows have no identity columns: nulls)."""
    return pa.table({f.name: part.column(f.name).cast(f.type) if f.name in part.column_names
                     else pa.nulls(part.num_rows, f.type) for f in _DETAILS_SCHEMA}, schema=_DETAILS_SCHEMA)


def _read_with_runs(store: IcebergStore, table: str, cycle: str):
    """The cycle's rated events (the columns a usage row needs, and account_id), or its rejected
    records with a key (those in its calendar month), a data file at a time, each with ``run_id``:
    the run that wrote the file (from its name; null for files written otherwise, e.g. compacted)."""
    if table == "rated":
        columns, where = _RATED_COLUMNS, In("service_cycle", [cycle])
    else:
        columns = ["source", "record_id", "start_time", "input_file", "input_position"]
        where = And(rejects_in_cycle(cycle), And(NotNull("source"), NotNull("record_id")))
    schema = pa.schema([arrow_schema(table).field(c) for c in columns])
    for task in store.scan(table, row_filter=where, selected_fields=columns).plan_files():
        data = _read_columns(task.file.file_path, schema)
        if table == "rejected":   # the scan's filter prunes files; the rows of a file are filtered here
            keyed = pc.and_(pc.is_valid(data.column("source")), pc.is_valid(data.column("record_id")))
            data = data.filter(pc.and_(in_cycle_scope(data.column("start_time"), cycle), keyed))
        match = _RUN_OF_FILE.search(task.file.file_path)
        yield data.append_column("run_id", pa.array([match.group(1) if match else None] * data.num_rows,
                                                    pa.string()))


def _read_columns(path: str, schema: pa.Schema) -> pa.Table:
    """``schema``'s columns of a data file; a column the file predates (rated ``subscriber``, added
    to stores after their first files) reads null, as Iceberg's schema evolution says."""
    present = set(pq.read_schema(path).names)
    data = pq.read_table(path, columns=[f.name for f in schema if f.name in present])
    return pa.table({f.name: data.column(f.name).cast(f.type) if f.name in present else pa.nulls(data.num_rows, f.type)
                     for f in schema}, schema=schema)


def rejects_in_cycle(cycle: str):
    """pyiceberg filter of the rejected records that belong to ``cycle``: those whose start_time
    falls in its calendar month (UTC), the rule of ``rating.cycles.in_cycle_scope``."""
    start, end = month_bounds(cycle)
    return And(GreaterThanOrEqual("start_time", start.isoformat()), LessThan("start_time", end.isoformat()))


def usage_rows(rated: pa.Table) -> pa.Table:
    """Rated events as the usage rows they were rated from (``usage_batch_schema()``).

    Rating reads the service, numbers, visited network, start time and raw units of a record; the
    rest is not kept in the store: voice seconds and SMS messages come back from ``raw_units``, data
    bytes as up and down halves of it (each within the per-counter limit the original passed), and a
    declared usage type (``service`` MMS, API_CALLS) as service OTHER, its ``usage_type`` and
    ``raw_units`` as its ``quantity``.
    """
    service = rated.column("service")
    raw = rated.column("raw_units")
    zero = pa.scalar(0, pa.int64())
    builtin = pc.is_in(service, value_set=pa.array(["VOICE", "SMS", "DATA"]))

    def when(name: str, value):
        return pc.if_else(pc.equal(service, name), value, zero)

    up = pc.divide(raw, 2)
    columns = {
        "record_id": rated.column("record_id"), "source": rated.column("source"),
        "service": pc.if_else(builtin, service, pa.scalar("OTHER")),
        "usage_type": pc.if_else(builtin, pa.scalar(None, pa.string()), service),
        "quantity": pc.if_else(builtin, pa.scalar(None, pa.int64()), raw),
        "served_msisdn": rated.column("served_msisdn"), "other_party": rated.column("other_party"),
        "subscriber": rated.column("subscriber"), "subscriber_kind": rated.column("subscriber_kind"),
        "start_time": rated.column("start_time"), "duration_s": when("VOICE", raw),
        "bytes_up": when("DATA", up), "bytes_down": when("DATA", pc.subtract(raw, up)),
        "message_count": pc.cast(when("SMS", raw), pa.int32()),
        "visited_network": rated.column("visited_network"),
        "partial_sequence": pa.array(np.zeros(rated.num_rows, np.int32)),
        "input_file": rated.column("input_file"), "input_position": rated.column("input_position"),
    }
    schema = usage_batch_schema()
    return pa.table([columns[f.name] if f.name in columns else pa.nulls(rated.num_rows, f.type) for f in schema],
                    schema=schema)


class ReadPrior(beam.DoFn):
    """A prior usage file (a path or URI) -> its usage batches, and ``{"prior_in": rows}`` to the counts."""

    def __init__(self, storage: ObjectStorage):
        self._storage = storage

    def setup(self):
        self._storage.activate()

    def process(self, path: str):
        table = pq.read_table(path).cast(usage_batch_schema())
        for batch in table.to_batches(max_chunksize=65_536):
            yield USAGE, batch
        yield COUNTS, {"prior_in": table.num_rows}


class StoredKeys:
    """The key index of records a store holds (``prepare_prior``'s files), with what a duplicate of
    each reports: its origin and identity columns. The stream adds the records it commits (``add``)."""

    def __init__(self, hashes: np.ndarray, rows: np.ndarray, details: pa.Table):
        self._hashes = hashes
        self._rows = rows
        self._details = details

    @classmethod
    def empty(cls) -> "StoredKeys":
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.int64), _DETAILS_SCHEMA.empty_table())

    @classmethod
    def open(cls, keys_file: str, details_file: str) -> "StoredKeys":
        # Memory-mapped: the index's pages are shared by the workers of a machine and read on demand.
        keys = ipc.open_file(pa.memory_map(keys_file)).read_all().combine_chunks()
        return cls(keys.column("key_hash").to_numpy(), keys.column("row").to_numpy(),
                   ipc.open_file(pa.memory_map(details_file)).read_all())

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, stored: pa.Table, run_id: str) -> None:
        """Index rows just committed by run ``run_id`` (rated events, or rejects with a key)."""
        if stored.num_rows == 0:
            return
        details = _details(stored.append_column("run_id", pa.array([run_id] * stored.num_rows, pa.string()))
                           if "run_id" not in stored.column_names else stored)
        details = details.filter(pc.and_(pc.is_valid(details.column("source")), pc.is_valid(details.column("record_id"))))
        if details.num_rows == 0:
            return
        h = hash_columns(details.combine_chunks().to_batches()[0], list(RECORD_KEY))
        order = np.argsort(h, kind="stable")
        at = np.searchsorted(self._hashes, h[order], side="right")
        self._hashes = np.insert(self._hashes, at, h[order])
        self._rows = np.insert(self._rows, at, order + self._details.num_rows)
        self._details = pa.concat_tables([self._details, details])
        if self._details.column(0).num_chunks > 64:
            self._details = self._details.combine_chunks()

    def lookup(self, batch: pa.RecordBatch) -> np.ndarray:
        """Per row of ``batch``, the row in the details of the stored record with its key, or -1.

        Vectorised: each row's first index entry with its hash is compared by its strings; the rare
        rows whose hash also belongs to other keys (a 64-bit collision) try the other entries."""
        found = np.full(batch.num_rows, -1, np.int64)
        if batch.num_rows == 0 or len(self._hashes) == 0:
            return found
        h = hash_columns(batch, list(RECORD_KEY))
        at = np.searchsorted(self._hashes, h)
        inside = at < len(self._hashes)
        hit = np.zeros(batch.num_rows, np.bool_)
        hit[inside] = self._hashes[at[inside]] == h[inside]
        rows = np.flatnonzero(hit)
        if len(rows) == 0:
            return found
        candidates = self._rows[at[rows]]
        same = self._same_key(batch, rows, candidates)
        found[rows[same]] = candidates[same]
        for row in rows[~same]:   # a hash shared with another key: the next entries with it
            entry = int(at[row]) + 1
            while entry < len(self._hashes) and self._hashes[entry] == h[row]:
                candidate = np.array([self._rows[entry]])
                if self._same_key(batch, np.array([row]), candidate)[0]:
                    found[row] = candidate[0]
                    break
                entry += 1
        return found

    def _same_key(self, batch: pa.RecordBatch, rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        take = pa.array(candidates)
        same = pc.and_(pc.equal(self._details.column("source").take(take), batch.column("source").take(pa.array(rows))),
                       pc.equal(self._details.column("record_id").take(take),
                                batch.column("record_id").take(pa.array(rows))))
        return same.to_numpy(zero_copy_only=False)

    def origins(self, found: np.ndarray) -> pa.Table:
        """``input_file`` and ``input_position`` of the stored records at ``found`` (rows of ``lookup``)."""
        return self._details.select(["input_file", "input_position"]).take(pa.array(found))

    def duplicates(self, dups: pa.RecordBatch, originals: np.ndarray) -> pa.RecordBatch:
        """Duplicate rows (``duplicate_schema()``) of ``dups``, whose stored originals are at ``originals``."""
        original = self._details.take(pa.array(originals))
        rebuilt = usage_rows_identity(dups)
        identical = np.ones(dups.num_rows, np.bool_)
        for name in _IDENTITY:
            a, b = rebuilt[name], original.column(name)
            same = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
            identical &= same.to_numpy(zero_copy_only=False)
        columns = {"record_id": dups.column("record_id"), "source": dups.column("source"),
                   "start_time": dups.column("start_time"), "input_file": dups.column("input_file"),
                   "input_position": dups.column("input_position"),
                   "original_input_file": original.column("input_file").combine_chunks(),
                   "original_input_position": original.column("input_position").combine_chunks(),
                   "identical": pa.array(identical),
                   "original_run_id": original.column("run_id").combine_chunks()}
        schema = duplicate_schema()
        return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)


class DropStored(beam.DoFn):
    """Usage batch -> its records the store has not rated (main), and the others as duplicates
    ((shard, batch) pairs by record key, ``shards`` of them)."""

    def __init__(self, keys_file: str, details_file: str, shards: int, storage: ObjectStorage):
        self._keys_file = keys_file
        self._details_file = details_file
        self._shards = shards
        self._storage = storage
        self._keys = None

    def setup(self):
        self._storage.activate()
        self._keys = StoredKeys.open(local_copy(self._keys_file), local_copy(self._details_file))

    def process(self, batch: pa.RecordBatch):
        found = self._keys.lookup(batch)
        stored = found >= 0
        if not stored.any():
            yield UNIQUE, batch
            return
        yield UNIQUE, batch.filter(pa.array(~stored))
        dups = batch.filter(pa.array(stored))
        yield from ((DUPLICATES, pair)
                    for pair in split_by_record_key(self._keys.duplicates(dups, found[stored]), self._shards))


def usage_rows_identity(batch: pa.RecordBatch) -> dict:
    """The identity columns (``_IDENTITY``) of usage rows, raw units as rating counts them: the
    ``quantity`` when set; a declared usage type (``usage_type``; its unit is in the reference, not
    here) without one is taken as counted in messages, which is exact for messages and counts."""
    usage_type = pc.utf8_upper(batch.column("usage_type"))
    service = pc.coalesce(usage_type, batch.column("service"))
    bytes_total = pc.add(batch.column("bytes_up"), batch.column("bytes_down"))
    raw = pc.if_else(pc.equal(service, "VOICE"), batch.column("duration_s"),
                     pc.if_else(pc.equal(service, "DATA"), bytes_total,
                                pc.cast(batch.column("message_count"), pa.int64())))
    raw = pc.coalesce(batch.column("quantity"), raw)
    return {"service": service, "served_msisdn": batch.column("served_msisdn"),
            "other_party": batch.column("other_party"), "visited_network": batch.column("visited_network"),
            "start_time": batch.column("start_time"), "raw_units": raw,
            "subscriber": batch.column("subscriber"), "subscriber_kind": batch.column("subscriber_kind")}
