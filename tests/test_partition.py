"""Shards by account (rating.partition.AccountRanges): contiguous ranges of ids, balanced by subscriptions.

A shard is what one worker holds at a time, so the largest shard sets the job's peak memory: cut by
number of accounts, the generator's business accounts (consecutive low ids, up to 200 subscriptions
each) all fell in shard 0, 9.3x the mean shard at 10M records.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rating.partition import AccountRanges, accounts_of_shard


@settings(max_examples=200, deadline=None)
@given(subscriptions=st.lists(st.integers(0, 300), min_size=1, max_size=300), n_shards=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1))
def test_each_shard_is_a_range_of_ids_holding_about_an_equal_share_of_subscriptions(subscriptions, n_shards, seed):
    ids = [f"ACC{i:07d}" for i in range(len(subscriptions))]
    order = np.random.default_rng(seed).permutation(len(ids))   # account rows in any order of ids
    rows_ids = [ids[i] for i in order]
    rows_subs = np.array([subscriptions[i] for i in order], np.int64)
    ranges = AccountRanges.of(rows_ids, rows_subs)
    shards = ranges.shards(n_shards)

    assert ((shards >= 0) & (shards < n_shards)).all()
    in_id_order = shards[np.argsort(rows_ids)]
    assert (np.diff(in_id_order) >= 0).all(), "a shard holds one contiguous range of account ids"
    weight = rows_subs
    held = np.bincount(shards, weights=weight, minlength=n_shards)
    assert held.max() <= weight.sum() / n_shards + weight.max(), "no shard holds more than its share and one account"
    for shard in range(n_shards):
        assert (accounts_of_shard(ranges, shard, n_shards) == np.flatnonzero(shards == shard)).all()


def test_large_accounts_with_consecutive_ids_are_spread_over_shards():
    # The generator's shape at 10M records: ~100 business accounts of 200 subscriptions first, then
    # single-subscription consumers.
    subscriptions = np.array([200] * 100 + [1] * 120_000, np.int64)
    ids = [f"ACC{i:07d}" for i in range(len(subscriptions))]
    shards = AccountRanges.of(ids, subscriptions).shards(64)
    per_shard = np.bincount(shards, weights=subscriptions, minlength=64)
    assert per_shard.max() <= 1.1 * per_shard.mean()
    equal_accounts = AccountRanges.of(ids).shards(64)   # every account the same weight: the old cut
    assert np.bincount(equal_accounts, weights=subscriptions, minlength=64).max() > 5 * per_shard.mean()
