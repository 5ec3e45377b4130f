"""RatingEngine: reference data loaded and compiled once, then rating batch after batch.

This is what library users call and what every Beam DoFn holds (through ``EngineRef``, in
``DoFn.setup``); the jobs call ``RatingEngine.load`` up front, so bad reference data fails before
any worker starts:

    engine = RatingEngine.load("reference/")
    rated, rejected = engine.rate(usage_batch)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa

from cdr_schemas import usage_batch_schema
from rating import engine_cache
from rating.arrow_utils import column, int_column
from rating.compile import CompiledReference, compile_reference
from rating.identity import subscriber_keys
from rating.kernels.enrich import assign_cycles, find_subscriptions
from rating.partition import AccountRanges, account_shards, accounts_of_shard, split_by_account
from rating.rate import rate
from rating.reference import load_reference
from rating.reference.loader import gc_paused
from rating.reference.model import ReferenceData
from rating.reference.remote import is_remote, local_reference
from rating.state import RatingState


_KEEP_LOADED = 4
_LOADED: dict[tuple[str, str], "RatingEngine"] = {}   # (absolute directory, reference_fingerprint) -> engine
_LOADING = threading.Lock()   # one compilation per process and reference, however many threads ask


def reference_fingerprint(reference_dir: str) -> str:
    """SHA-256 over the relative path and bytes of every file under ``reference_dir`` (a local
    directory, or ``s3://``/``gs://``: its local copy, ``rating.reference.remote``)."""
    root = Path(local_reference(reference_dir))
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else ():
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class RatingEngine:
    def __init__(self, compiled: CompiledReference):
        self.compiled = compiled
        self._account_ranges = AccountRanges.of(
            compiled.account_ids, np.bincount(compiled.sub_account, minlength=len(compiled.account_ids)))
        self._warm = False

    @classmethod
    def load(cls, reference_dir: str, fingerprint: str | None = None) -> "RatingEngine":
        """Load, validate and compile a reference directory; raises ReferenceDataError if it is bad.

        Engines are kept per process while the directory's files are unchanged (names and
        bytes): the job's up-front check and every DoFn of the in-process workers share one
        compilation. Other processes and later runs load the compilation from
        ``rating.engine_cache``.

        ``fingerprint``: the directory's ``reference_fingerprint`` as the caller last saw it (an
        ``EngineRef`` takes it when the pipeline is built). When this process holds an engine of
        those bytes it is returned without reading the directory again; otherwise the directory is
        read and loaded as it is now.
        """
        directory = str(reference_dir) if is_remote(reference_dir) else os.path.abspath(reference_dir)
        with _LOADING:
            engine = _LOADED.get((directory, fingerprint)) if fingerprint is not None else None
            if engine is not None:
                return engine
            fingerprint = reference_fingerprint(reference_dir)
            engine = _LOADED.get((directory, fingerprint))
            if engine is None:
                compiled = engine_cache.load(fingerprint)
                if compiled is None:
                    with gc_paused():
                        compiled = compile_reference(load_reference(reference_dir))
                    engine_cache.store(fingerprint, compiled)
                engine = cls(compiled)
                if len(_LOADED) >= _KEEP_LOADED:
                    _LOADED.pop(next(iter(_LOADED)))
                _LOADED[(directory, fingerprint)] = engine
            return engine

    @classmethod
    def from_reference(cls, reference: ReferenceData) -> "RatingEngine":
        return cls(compile_reference(reference))

    def rate(self, batch: pa.RecordBatch, state: RatingState | None = None) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        """(rated, rejected) for a validated usage batch; see ``rating.rate.rate``."""
        return rate(batch, self.compiled, state)

    def warm_up(self) -> None:
        """Compile every kernel now (first calls compile), so no batch pays for it; once per engine."""
        if not self._warm:
            self.rate(pa.RecordBatch.from_pylist([], schema=usage_batch_schema()))
            self._warm = True

    def subscription_rows(self, batch: pa.RecordBatch) -> np.ndarray:
        """Subscription row in force at each record's start time, -1 when there is none."""
        c = self.compiled
        subscriber = c.subscriber_index.rows(subscriber_keys(batch))
        rows = np.empty(batch.num_rows, np.int64)
        reason = np.zeros(batch.num_rows, np.int64)
        find_subscriptions(subscriber, int_column(column(batch, "start_time")), c.sub_first, c.sub_count,
                           c.sub_from_us, c.sub_to_us, rows, reason)
        return rows

    @functools.cached_property
    def account_row_of(self) -> dict[str, int]:
        """Account id -> its row in the compiled reference."""
        return {account: row for row, account in enumerate(self.compiled.account_ids)}

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
        """Account rows whose events ``split_by_account`` sends to ``shard`` (``rating.partition``)."""
        return accounts_of_shard(self._account_ranges, shard, shards)

    def account_shards(self, batch: pa.RecordBatch, shards: int) -> np.ndarray:
        """Each event's shard of ``split_by_account``."""
        return account_shards(batch, self.account_rows(batch), self._account_ranges, shards)

    def split_by_account(self, batch: pa.RecordBatch, shards: int) -> list[tuple[int, pa.RecordBatch]]:
        """(shard, sub-batch) pairs: all events of an account in one shard; unknown subscribers by MSISDN."""
        return split_by_account(batch, self.account_rows(batch), self._account_ranges, shards)


@dataclasses.dataclass(frozen=True)
class EngineRef:
    """How a Beam DoFn reaches the engine: made when the pipeline is built, pickled with the DoFn,
    ``load()`` in ``DoFn.setup``.

    It carries the reference directory and the fingerprint its files had when the pipeline was
    built, so ``load()`` finds the process's engine without reading the directory again: runners
    call ``setup`` on every fresh copy of a DoFn (Beam's DirectRunner in streaming mode, once per
    bundle). Why not ``apache_beam.utils.shared.Shared``: a ``Shared`` handle shares one object per
    handle, and every DoFn made its own, so the engine was shared between DoFns by the
    process-level cache of ``RatingEngine.load`` anyway (which also serves the job's up-front
    check); that cache, keyed by the reference's bytes, is now the only one.
    """
    reference_dir: str
    fingerprint: str
    storage: object = None   # the job's sinks.object_storage.ObjectStorage, for a reference on object storage

    @classmethod
    def of(cls, reference_dir: str, storage=None) -> "EngineRef":
        return cls(str(reference_dir), reference_fingerprint(reference_dir), storage)

    def load(self) -> RatingEngine:
        """The engine of this reference in this process, its kernels compiled (``warm_up``)."""
        if self.storage is not None:
            self.storage.activate()
        engine = RatingEngine.load(self.reference_dir, self.fingerprint)
        engine.warm_up()
        return engine
