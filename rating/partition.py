"""Which shard each row goes to: the one owner of every sharding rule of the pipelines.

* **By record key** (``split_by_record_key``): every copy of a (source, record_id) in one shard, so
  deduplication sees them together.
* **By account** (``split_by_account``, ``accounts_of_shard``): every event of an account in one
  shard, so allowances and tiers are consumed in event-time order and the account is billed once;
  events of unknown subscribers by their MSISDN. Accounts go to shards by **ranges of account id**,
  so each shard's output file covers its own range of ids: a reader of one account's rows (an
  invoice) opens the one file whose id statistics hold it, not every file of the cycle. The ranges
  are cut by subscriptions, not by number of accounts (``AccountRanges``): each shard holds about
  the same number of subscribers, hence of events.
  Cut by number of accounts, the generator's business accounts (consecutive low ids, up to 200
  subscriptions each) all fell in shard 0: 1.45M of 10M records (9.3x the mean shard), and the
  worker that rated it peaked at 2.5 GB against 0.9 GB for the other; at 50M records shard 0 held
  24x the mean shard's subscriptions and the worker peaked at 6.2 GB.
* **By input file** (``split_by_input_file``): every reject of a file in one shard, so a file's
  rejects are written in input order.

Other shards come from FNV-1a 64 hashes of strings, stable across processes, runs and runners
(unlike Python's salted ``hash``): reruns write the same rows to the same part files.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute in AccountRanges.of)

from rating.arrow_utils import column, string_buffers
from rating.identity import subscriber_keys
from rating.kernels.hashing import fnv1a_strings, fnv_seed

RECORD_KEY = ("source", "record_id")   # what makes a record unique: one rating per key


def hash_columns(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    """FNV-1a 64 over the string columns ``names`` of each row (nulls hash as empty strings)."""
    h = fnv_seed(batch.num_rows)
    for name in names:
        offsets, data, _ = string_buffers(column(batch, name))
        fnv1a_strings(offsets, data, h)
    return h


def shard_of_hash(h: np.ndarray, n_shards: int) -> np.ndarray:
    return (h % np.uint64(n_shards)).astype(np.int64)


def split_by_record_key(batch: pa.RecordBatch, n_shards: int) -> list[tuple[int, pa.RecordBatch]]:
    """(shard, sub-batch) pairs by the hash of (source, record_id)."""
    return split_by_shard(batch, shard_of_hash(hash_columns(batch, list(RECORD_KEY)), n_shards), n_shards)


def split_by_input_file(batch: pa.RecordBatch, n_shards: int) -> list[tuple[int, pa.RecordBatch]]:
    """(shard, sub-batch) pairs by the hash of ``input_file``."""
    return split_by_shard(batch, shard_of_hash(hash_columns(batch, ["input_file"]), n_shards), n_shards)


@dataclasses.dataclass(frozen=True, eq=False)
class AccountRanges:
    """Where each account sits on the line that ``split_by_account`` cuts into equal shards.

    Accounts lie on it in sorted id order, each as long as its number of subscriptions (an account
    without any has no events and takes no length), computed once per reference: ``start`` (by
    account row) is the subscriptions of the accounts before it, ``total`` those of all. Shard ``k``
    of ``n`` holds the accounts whose ``start`` falls in the ``k``-th ``n``-th of the line: a
    contiguous range of ids, each shard with about the same number of subscriptions (an account
    larger than a shard's share still goes whole to one shard).
    """
    start: np.ndarray
    total: int

    @classmethod
    def of(cls, account_ids: list[str] | tuple[str, ...], subscriptions: np.ndarray | None = None) -> "AccountRanges":
        """``subscriptions``: each account's number of subscription rows (by account row); None: every
        account weighs the same (ranges of equal numbers of accounts)."""
        ids = pa.array(list(account_ids), pa.string())
        order = pa.compute.sort_indices(ids).to_numpy()
        weight = np.ones(len(ids), np.int64) if subscriptions is None else np.asarray(subscriptions, np.int64)
        start = np.empty(len(ids), np.int64)
        start[order] = np.cumsum(weight[order]) - weight[order]
        return cls(start, int(weight.sum()))

    def shards(self, n_shards: int) -> np.ndarray:
        """Each account's shard (by account row); accounts without subscriptions after the last one
        that has some start at ``total``: the last shard."""
        return np.minimum(self.start * n_shards // max(self.total, 1), n_shards - 1)


def split_by_account(batch: pa.RecordBatch, account_rows: np.ndarray, ranges: AccountRanges,
                     n_shards: int) -> list[tuple[int, pa.RecordBatch]]:
    """(shard, sub-batch) pairs: all events of an account in one shard, by its id's range.

    ``account_rows``: each event's account row (-1: no subscription, sharded by the hash of its
    subscriber key, ``rating.identity``); ``ranges``: the reference's ``AccountRanges``.
    """
    return split_by_shard(batch, account_shards(batch, account_rows, ranges, n_shards), n_shards)


def account_shards(batch: pa.RecordBatch, account_rows: np.ndarray, ranges: AccountRanges,
                   n_shards: int) -> np.ndarray:
    """Each event's shard by account (``split_by_account``'s rule), as int64."""
    by_range = ranges.shards(n_shards)
    return np.where(account_rows >= 0, by_range[np.maximum(account_rows, 0)],
                    shard_of_hash(hash_columns(pa.table({"subscriber": subscriber_keys(batch)}), ["subscriber"]),
                                  n_shards))


def accounts_of_shard(ranges: AccountRanges, shard: int, n_shards: int) -> np.ndarray:
    """Account rows whose events ``split_by_account`` sends to ``shard``."""
    return np.flatnonzero(ranges.shards(n_shards) == shard)


def split_by_shard(batch: pa.RecordBatch, shards: np.ndarray, n_shards: int) -> list[tuple[int, pa.RecordBatch]]:
    """(shard, sub-batch) pairs, rows kept in their original order within each shard.

    One take puts the rows in shard order; each sub-batch is a slice of it. Arrow IPC (the
    RecordBatch coder and the spill files) writes only a slice's own rows; pickling writes the
    whole parent, so anything that may be pickled (runner state) should ``compact`` them first.
    """
    order = np.argsort(shards, kind="stable")
    counts = np.bincount(shards, minlength=n_shards)
    grouped = batch.take(pa.array(order))
    out = []
    start = 0
    for shard, count in enumerate(counts):
        if count:
            out.append((shard, grouped.slice(start, count)))
        start += count
    return out


def compact(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A copy of ``batch`` owning buffers of just its rows (a slice otherwise keeps its parent's)."""
    return pa.RecordBatch.from_arrays([pa.concat_arrays([c]) for c in batch.columns], schema=batch.schema)
