"""Streaming deduplication: remember (source, record_id) fingerprints until they can no longer recur.

A shard of the key space keeps, for every record it let through, a 128-bit fingerprint of
(source, record_id) — two independent 64-bit FNV-1a hashes — with where the record came from and
an expiry instant. A record whose fingerprint is known is a duplicate (Pub/Sub redelivery, a
mediation resend); the first to arrive is the one rated. Entries expire when the record's cycle
is closed plus the allowed lateness: ``start_time + MAX_CYCLE + allowed lateness`` is a safe upper
bound that needs no reference data. Two different records share a fingerprint with probability
about n²/2¹²⁹ (1e-19 for 10 billion records).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas import duplicate_schema, usage_batch_schema
from rating.arrow_utils import column, int_column
from rating.partition import hash_columns

MAX_CYCLE_US = 31 * 86_400 * 1_000_000
_CONTENT = [f.name for f in usage_batch_schema() if f.name not in ("input_file", "input_position")]


def fingerprints(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of (source, record_id) per row."""
    return hash_columns(batch, ["source", "record_id"]), hash_columns(batch, ["record_id", "source"])


def content_hash(batch: pa.RecordBatch) -> np.ndarray:
    """A hash of every usage field, to tell identical resends from conflicting ones."""
    as_text = pa.RecordBatch.from_arrays(
        [pc.cast(column(batch, name), pa.string()) for name in _CONTENT], names=_CONTENT)
    return hash_columns(as_text, _CONTENT)


@dataclasses.dataclass
class SeenKeys:
    """Fingerprints of the records a shard let through, sorted by the first hash."""
    first: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))
    second: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))
    content: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))
    expiry_us: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    origin: pa.Table = dataclasses.field(
        default_factory=lambda: pa.table({"input_file": pa.array([], pa.string()),
                                          "input_position": pa.array([], pa.int64())}))

    def __len__(self) -> int:
        return len(self.first)

    def _lookup(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Index of each (first, second) in the seen set, or -1."""
        found = np.full(len(first), -1, np.int64)
        if len(self.first) == 0:
            return found
        lo = np.searchsorted(self.first, first, side="left")
        hi = np.searchsorted(self.first, first, side="right")
        for i in np.flatnonzero(hi > lo):
            for j in range(lo[i], hi[i]):  # equal first hashes are rare: scan them
                if self.second[j] == second[i]:
                    found[i] = j
                    break
        return found

    def filter(self, batch: pa.RecordBatch, allowed_lateness_us: int) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        """(records seen for the first time, duplicates) of ``batch``; remembers the new ones.

        Within the batch, the first row of a key (in batch order) is the one kept.
        """
        n = batch.num_rows
        if n == 0:
            return batch, pa.RecordBatch.from_pylist([], schema=duplicate_schema())
        first, second = fingerprints(batch)
        content = content_hash(batch)
        order = np.lexsort((np.arange(n), second, first))
        is_new_key = np.ones(n, np.bool_)
        is_new_key[order[1:]] = (first[order[1:]] != first[order[:-1]]) | (second[order[1:]] != second[order[:-1]])
        leader = np.empty(n, np.int64)  # the first row of each key within the batch
        leader[order] = order[np.maximum.accumulate(np.where(is_new_key[order], np.arange(n), 0))]
        seen = self._lookup(first, second)
        keep = (seen < 0) & (leader == np.arange(n))
        dup_rows = np.flatnonzero(~keep)
        # Where each duplicate's original came from: the seen set, or its leader in this batch.
        from_seen = seen[dup_rows] >= 0
        origin_file = np.empty(len(dup_rows), object)
        origin_pos = np.empty(len(dup_rows), np.int64)
        original_content = np.empty(len(dup_rows), np.uint64)
        if from_seen.any():
            idx = seen[dup_rows][from_seen]
            origin_file[from_seen] = np.asarray(self.origin.column("input_file").take(pa.array(idx)).to_pylist(), object)
            origin_pos[from_seen] = self.origin.column("input_position").to_numpy()[idx]
            original_content[from_seen] = self.content[idx]
        if (~from_seen).any():
            lead = leader[dup_rows][~from_seen]
            origin_file[~from_seen] = np.asarray(column(batch, "input_file").take(pa.array(lead)).to_pylist(), object)
            origin_pos[~from_seen] = int_column(column(batch, "input_position"))[lead]
            original_content[~from_seen] = content[lead]
        dups = batch.take(pa.array(dup_rows, pa.int64()))
        duplicates = pa.RecordBatch.from_arrays([
            dups.column("record_id"), dups.column("source"), dups.column("start_time"),
            dups.column("input_file"), dups.column("input_position"),
            pa.array(origin_file.tolist(), pa.string()), pa.array(origin_pos, pa.int64()),
            pa.array(original_content == content[dup_rows]),
            pa.nulls(len(dup_rows), pa.string()),   # original_run_id: the stream keeps no store runs yet
        ], schema=duplicate_schema())
        kept = np.flatnonzero(keep)
        self._remember(first[kept], second[kept], content[kept],
                       int_column(column(batch, "start_time"))[kept] + MAX_CYCLE_US + allowed_lateness_us,
                       batch.take(pa.array(kept, pa.int64())))
        return batch.take(pa.array(kept, pa.int64())), duplicates

    def _remember(self, first, second, content, expiry, kept: pa.RecordBatch) -> None:
        origin = pa.table({"input_file": kept.column("input_file"), "input_position": kept.column("input_position")})
        all_first = np.concatenate([self.first, first])
        order = np.argsort(all_first, kind="stable")
        self.first = all_first[order]
        self.second = np.concatenate([self.second, second])[order]
        self.content = np.concatenate([self.content, content])[order]
        self.expiry_us = np.concatenate([self.expiry_us, expiry])[order]
        self.origin = pa.concat_tables([self.origin, origin]).take(pa.array(order)).combine_chunks()

    def expire(self, now_us: int) -> int:
        """Forget entries whose expiry is at or before ``now_us``; returns how many were dropped."""
        live = self.expiry_us > now_us
        dropped = int((~live).sum())
        if dropped:
            self.first, self.second = self.first[live], self.second[live]
            self.content, self.expiry_us = self.content[live], self.expiry_us[live]
            self.origin = self.origin.filter(pa.array(live))
        return dropped

    def next_expiry_us(self) -> int | None:
        return int(self.expiry_us.min()) if len(self.expiry_us) else None
