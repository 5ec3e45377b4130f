"""RatingEngine: reference data loaded and compiled once, then rating batch after batch.

This is what a Beam worker holds (built in ``DoFn.setup``) and what library users call:

    engine = RatingEngine.load("reference/")
    rated, rejected = engine.rate(usage_batch)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from cdr_schemas import usage_batch_schema
from rating import engine_cache
from rating.arrow_utils import column, int_column
from rating.compile import CompiledReference, compile_reference
from rating.kernels.enrich import assign_cycles, find_subscriptions
from rating.partition import hash_columns, shard_of_hash, split_by_shard
from rating.rate import rate
from rating.reference import load_reference
from rating.reference.loader import gc_paused
from rating.reference.model import ReferenceData
from rating.state import RatingState


_KEEP_LOADED = 4
_LOADED: dict[tuple, "RatingEngine"] = {}


def reference_fingerprint(reference_dir: str) -> str:
    """SHA-256 over the relative path and bytes of every file under ``reference_dir``."""
    root = Path(reference_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else ():
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class RatingEngine:
    def __init__(self, compiled: CompiledReference):
        self.compiled = compiled
        ids = pa.RecordBatch.from_arrays([pa.array(list(compiled.account_ids), pa.string())], names=["account_id"])
        self._account_hash = hash_columns(ids, ["account_id"])

    @classmethod
    def load(cls, reference_dir: str) -> "RatingEngine":
        """Load, validate and compile a reference directory; raises ReferenceDataError if it is bad.

        Engines are kept per process while the directory's files are unchanged (names and
        bytes): the job's up-front check and the in-process workers compile once. Other
        processes and later runs load the compilation from ``rating.engine_cache``.
        """
        fingerprint = reference_fingerprint(reference_dir)
        key = (os.path.abspath(reference_dir), fingerprint)
        engine = _LOADED.get(key)
        if engine is None:
            compiled = engine_cache.load(fingerprint)
            if compiled is None:
                with gc_paused():
                    compiled = compile_reference(load_reference(reference_dir))
                engine_cache.store(fingerprint, compiled)
            engine = cls(compiled)
            if len(_LOADED) >= _KEEP_LOADED:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = engine
        return engine

    @classmethod
    def shared(cls, handle, reference_dir: str) -> "RatingEngine":
        """The engine of ``reference_dir`` shared by every DoFn of this worker process.

        ``handle`` is an ``apache_beam.utils.shared.Shared`` the DoFn created at construction; the
        reference is loaded and compiled once per process instead of once per DoFn instance.
        """
        def load():
            engine = cls.load(reference_dir)
            engine.warm_up()
            return engine
        return handle.acquire(load, tag=str(reference_dir))

    @classmethod
    def from_reference(cls, reference: ReferenceData) -> "RatingEngine":
        return cls(compile_reference(reference))

    def rate(self, batch: pa.RecordBatch, state: RatingState | None = None) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        """(rated, rejected) for a validated usage batch; see ``rating.rate.rate``."""
        return rate(batch, self.compiled, state)

    def warm_up(self) -> None:
        """Compile every kernel now (first calls compile), so no batch pays for it."""
        self.rate(pa.RecordBatch.from_pylist([], schema=usage_batch_schema()))

    def subscription_rows(self, batch: pa.RecordBatch) -> np.ndarray:
        """Subscription row in force at each record's start time, -1 when there is none."""
        c = self.compiled
        subscriber = c.msisdn_index.rows(column(batch, "served_msisdn"))
        rows = np.empty(batch.num_rows, np.int64)
        reason = np.zeros(batch.num_rows, np.int64)
        find_subscriptions(subscriber, int_column(column(batch, "start_time")), c.sub_first, c.sub_count,
                           c.sub_from_us, c.sub_to_us, rows, reason)
        return rows

    def account_rows(self, batch: pa.RecordBatch) -> np.ndarray:
        """Account row of each record's subscription at its start time, -1 when there is none."""
        rows = self.subscription_rows(batch)
        return np.where(rows >= 0, self.compiled.sub_account[np.maximum(rows, 0)], -1)

    def cycle_keys(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(subscription row, account row, cycle month, cycle end in UTC us) of each record's start;
        -1 rows and months when the record has no subscription."""
        c = self.compiled
        T = c.tables
        subs = self.subscription_rows(batch)
        known = subs >= 0
        accounts = np.where(known, c.sub_account[np.maximum(subs, 0)], -1)
        safe = np.maximum(accounts, 0)
        month = np.empty(batch.num_rows, np.int64)
        start = np.zeros(batch.num_rows, np.int64)
        end = np.zeros(batch.num_rows, np.int64)
        assign_cycles(int_column(column(batch, "start_time")), np.where(known, c.account_tz[safe], -1),
                      np.where(known, c.account_bcd[safe], 1), T.tz_start, T.tz_transitions, T.tz_offsets,
                      month, start, end)
        return subs, accounts, month, end

    def accounts_of_shard(self, shard: int, shards: int) -> np.ndarray:
        """Account rows whose events ``split_by_account`` sends to ``shard``."""
        return np.flatnonzero(shard_of_hash(self._account_hash, shards) == shard)

    def split_by_account(self, batch: pa.RecordBatch, shards: int) -> list[tuple[int, pa.RecordBatch]]:
        """(shard, sub-batch) pairs: all events of an account in one shard; unknown subscribers by MSISDN."""
        accounts = self.account_rows(batch)
        h = np.where(accounts >= 0, self._account_hash[np.maximum(accounts, 0)],
                     hash_columns(batch, ["served_msisdn"]))
        return split_by_shard(batch, shard_of_hash(h, shards), shards)
