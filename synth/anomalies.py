"""Injected anomalies: malformed records (one reason code each) and duplicate records.

Malformed records are valid generated rows changed in exactly one way, so the pipeline rejects each
for exactly the reason the manifest names and no earlier one:

=====================  ===================================================================
MALFORMED_RECORD       (JSON lines only) the line is cut in half: not parseable JSON
MISSING_FIELD          empty record_id; in JSON lines also a required key left out
                       (served_msisdn or start_time)
INVALID_FIELD          negative duration_s, or letters in served_msisdn; in JSON lines also
                       an unknown service ("FAX")
MISSING_DESTINATION    voice or SMS without other_party
INVALID_NUMBER         a letter inside other_party ("015x2345678")
UNKNOWN_SUBSCRIBER     served_msisdn in a range the operator never allocates
NO_ZONE                other_party 00999… (011999… from the US): no zone table has 999
=====================  ===================================================================

The destination kinds only touch voice and SMS records at home (a roaming record is zoned by its
visited network, not its destination). Malformed rows keep their unique record ids (except the empty
ones) and are never duplicated.

Duplicates resend a valid original unchanged (same source and record_id): ``same_file`` ones later
in the same chunk, ``cross_file`` ones in a later file, drawn from a bounded pool of rows of earlier
files. An original is duplicated at most once and a duplicate never again.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synth.numbering import HOME_COUNTRIES, NUMBERING
from synth.records import MMS, SMS, VOICE, Chunk

GENERIC_KINDS = ("MISSING_FIELD", "INVALID_FIELD", "UNKNOWN_SUBSCRIBER")
DESTINATION_KINDS = ("MISSING_DESTINATION", "INVALID_NUMBER", "NO_ZONE")
JSONL_ONLY_KINDS = ("MALFORMED_RECORD",)


def malformed_kinds(fmt: str) -> tuple[str, ...]:
    """Reason codes the generator injects for a file format, in a fixed order."""
    generic = (JSONL_ONLY_KINDS + GENERIC_KINDS) if fmt == "jsonl" else GENERIC_KINDS
    return generic + DESTINATION_KINDS


def _replace(batch: pa.RecordBatch, name: str, rows: np.ndarray, values: pa.Array) -> pa.RecordBatch:
    """``batch`` with ``name`` set to ``values`` at ``rows`` (sorted, unique). For small batches."""
    if len(rows) == 0:
        return batch
    index = batch.schema.get_field_index(name)
    mask = np.zeros(batch.num_rows, bool)
    mask[rows] = True
    column = batch.column(index)
    values = values.cast(column.type)
    if values.null_count == len(values):
        new = pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)
    else:
        new = pc.replace_with_mask(column, pa.array(mask), values)
    return batch.set_column(index, batch.schema.field(index), new)


@dataclasses.dataclass(frozen=True)
class Corruption:
    rows: np.ndarray               # sorted rows of the chunk that become malformed
    replacement: pa.RecordBatch    # their malformed versions, in the same order
    broken_json: np.ndarray        # bool per row of ``rows``: write its JSON line cut in half
    counts: dict[str, int]         # reason code -> rows


def corrupt(rng: np.random.Generator, chunk: Chunk, count: int, fmt: str) -> Corruption:
    """Pick ``count`` rows of ``chunk`` and make a malformed version of each (one reason each)."""
    kinds = malformed_kinds(fmt)
    counts = dict.fromkeys(kinds, 0)
    n = chunk.batch.num_rows
    count = min(count, n)
    rows = np.sort(rng.choice(n, size=count, replace=False)) if count else np.zeros(0, np.int64)
    at_home_with_destination = np.isin(chunk.service[rows], (VOICE, SMS, MMS)) & ~chunk.roaming[rows]
    generic = len(kinds) - len(DESTINATION_KINDS)
    allowed = np.where(at_home_with_destination, len(kinds), generic)
    kind = (rng.random(count) * allowed).astype(np.int64)
    variant = rng.random(count)
    for k, name in enumerate(kinds):
        counts[name] = int((kind == k).sum())
    batch = chunk.batch.take(pa.array(rows))      # the few rows to change, changed in this small batch
    country = chunk.country[rows]

    def rows_of(name, lo=0.0, hi=1.0):
        return np.flatnonzero((kind == kinds.index(name)) & (variant >= lo) & (variant < hi))

    if fmt == "jsonl":
        empty = rows_of("MISSING_FIELD", 0.0, 0.4)
        batch = _replace(batch, "record_id", empty, pa.array([""] * len(empty)))
        gone = rows_of("MISSING_FIELD", 0.4, 0.7)
        batch = _replace(batch, "served_msisdn", gone, pa.nulls(len(gone), pa.string()))
        gone = rows_of("MISSING_FIELD", 0.7, 1.0)
        batch = _replace(batch, "start_time", gone, pa.nulls(len(gone), pa.timestamp("us", tz="UTC")))
        fax = rows_of("INVALID_FIELD", 0.7, 1.0)
        batch = _replace(batch, "service", fax, pa.array(["FAX"] * len(fax)))
        negative_hi = 0.4
    else:
        empty = rows_of("MISSING_FIELD")
        batch = _replace(batch, "record_id", empty, pa.array([""] * len(empty)))
        negative_hi = 0.6
    negative = rows_of("INVALID_FIELD", 0.0, negative_hi)
    duration = batch.column("duration_s").to_numpy()
    batch = _replace(batch, "duration_s", negative, pa.array(-(duration[negative] + 1)))
    letters = rows_of("INVALID_FIELD", negative_hi, 0.7 if fmt == "jsonl" else 1.0)
    served = batch.column("served_msisdn").take(pa.array(letters))
    batch = _replace(batch, "served_msisdn", letters, pc.utf8_replace_slice(served, 5, 8, "ABC"))

    no_destination = rows_of("MISSING_DESTINATION")
    batch = _replace(batch, "other_party", no_destination, pa.nulls(len(no_destination), pa.string()))
    bad_number = rows_of("INVALID_NUMBER")
    dialled = batch.column("other_party").take(pa.array(bad_number))
    batch = _replace(batch, "other_party", bad_number, pc.utf8_replace_slice(dialled, 3, 4, "x"))

    unknown = rows_of("UNKNOWN_SUBSCRIBER")
    batch = _replace(batch, "served_msisdn", unknown, _numbers(rng, country[unknown], foreign=True))
    unzoned = rows_of("NO_ZONE")
    batch = _replace(batch, "other_party", unzoned, _numbers(rng, country[unzoned], foreign=False))
    broken = np.zeros(count, bool)
    if fmt == "jsonl":
        broken[rows_of("MALFORMED_RECORD")] = True
    return Corruption(rows, batch, broken, counts)


def _numbers(rng: np.random.Generator, country: np.ndarray, foreign: bool) -> pa.Array:
    """Foreign subscriber MSISDNs (E.164) or unzoned destinations (international prefix + 999…)."""
    heads, widths = [], []
    for iso in HOME_COUNTRIES:
        numbering = NUMBERING[iso]
        if foreign:     # as long as the operator's own numbers
            heads.append(numbering.country_code + numbering.foreign_prefix)
            own = (len(numbering.country_code) + len(numbering.subscriber_prefixes[0])
                   + numbering.subscriber_digits)
            widths.append(own - len(heads[-1]))
        else:
            heads.append(numbering.international_prefix + "999")
            widths.append(8)
    country = country.astype(np.int64)
    head = pa.array(heads, pa.string()).take(pa.array(country))
    width = np.array(widths)[country]
    digits = 10 ** width + (rng.random(len(country)) * 10.0 ** width).astype(np.int64)
    tail = pc.utf8_slice_codeunits(pc.cast(pa.array(digits), pa.string()), 1)    # drop the leading 1
    return pc.binary_join_element_wise(head, tail, "")


def break_json_lines(lines: pa.Array, rows: np.ndarray) -> pa.Array:
    """``lines`` (each ending in a newline) with the lines at ``rows`` cut in half: the object is
    no longer parseable JSON, the newline stays."""
    if len(rows) == 0:
        return lines
    broken = [line[: len(line) // 2] + b"\n" for line in lines.take(pa.array(rows)).to_pylist()]
    mask = np.zeros(len(lines), bool)
    mask[rows] = True
    return pc.replace_with_mask(lines, pa.array(mask), pa.array(broken, lines.type))


class Duplicates:
    """Injects duplicate records and keeps the bounded pool of earlier files' rows to resend."""

    def __init__(self, per_chunk: int, capacity: int):
        self.per_chunk = per_chunk
        self.capacity = capacity
        self._pool: pa.Table | None = None
        self._current: list[pa.RecordBatch] = []

    @property
    def pool_size(self) -> int:
        return 0 if self._pool is None else self._pool.num_rows

    def inject(self, rng: np.random.Generator, batch: pa.RecordBatch, corruption: Corruption, count: int,
               cross_wanted: int):
        """The chunk as written: ``batch`` with the corrupted rows swapped in and ``count``
        duplicates inserted (``cross_wanted`` of them from earlier files when the pool has them).

        Returns (batch, output positions of the corrupted rows, same-file count, cross-file count).
        The output is assembled from slices of ``batch`` and the few changed or inserted rows, so
        the chunk is copied once, not gathered row by row.
        """
        n = batch.num_rows
        valid = np.ones(n, bool)
        valid[corruption.rows] = False
        valid_rows = np.flatnonzero(valid)
        cross = min(cross_wanted, self.pool_size, count)
        same = min(count - cross, len(valid_rows))
        if same < count - cross:     # not enough originals here: take more from the pool
            cross = min(count - same, self.pool_size)
        originals = np.sort(rng.choice(valid_rows, size=same, replace=False)) if same else np.zeros(0, np.int64)
        # Events in the original row order: replace row r (key 2r), insert after row j (key 2j + 1).
        extra = [corruption.replacement]
        keys = [2 * corruption.rows]
        if same:
            extra.append(batch.take(pa.array(originals)))
            keys.append(2 * (originals + (rng.random(same) * (n - originals)).astype(np.int64)) + 1)
        if cross:
            chosen = np.sort(rng.choice(self.pool_size, size=cross, replace=False))
            extra += self._pool.take(pa.array(chosen)).combine_chunks().to_batches()
            keys.append(2 * rng.integers(0, n, cross) + 1)
            keep = np.ones(self.pool_size, bool)
            keep[chosen] = False
            self._pool = self._pool.filter(pa.array(keep))
        # Rows of this chunk that may be resent from a later file.
        unused = np.setdiff1d(valid_rows, originals, assume_unique=True)
        if len(unused):
            sample = np.sort(rng.choice(unused, size=min(self.per_chunk, len(unused)), replace=False))
            self._current.append(batch.take(pa.array(sample)))

        keys = np.concatenate(keys)
        if len(keys) == 0:
            return batch, np.zeros(0, np.int64), same, cross
        extra_table = pa.Table.from_batches([b for b in extra if b.num_rows], schema=batch.schema).combine_chunks()
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        replaces = keys % 2 == 0
        stops = keys // 2 + ~replaces                 # original rows emitted before each event
        starts = np.concatenate([[0], stops[:-1] + replaces[:-1]])
        lengths = stops - starts
        pieces = []
        for start, length, k in zip(starts.tolist(), lengths.tolist(), order.tolist()):
            if length:
                pieces.append(batch.slice(start, length))
            pieces.append(extra_table.slice(k, 1))
        tail = int(stops[-1] + replaces[-1])
        if tail < n:
            pieces.append(batch.slice(tail))
        out = pa.Table.from_batches([p if isinstance(p, pa.RecordBatch) else p.to_batches()[0] for p in pieces],
                                    schema=batch.schema).combine_chunks().to_batches()[0]
        # Output position of every event's row; the corrupted rows are events 0..len(rows)-1.
        event_position = np.cumsum(lengths) + np.arange(len(keys))
        position = np.empty(len(keys), np.int64)
        position[order] = event_position
        return out, position[:len(corruption.rows)], same, cross

    def end_file(self) -> None:
        """Rows of the finished file become candidates for cross-file duplicates."""
        tables = [] if self._pool is None else [self._pool]
        if self._current:
            tables.append(pa.Table.from_batches(self._current))
        self._current = []
        if not tables:
            return
        pool = pa.concat_tables(tables)
        if pool.num_rows > self.capacity:
            pool = pool.slice(pool.num_rows - self.capacity)
        self._pool = pool.combine_chunks()
