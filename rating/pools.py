"""Pooled allowances: the grant of an account's pool for a cycle (``pool: account``, docs/tariffs.md).

A pooled allowance is one balance per (account, cycle, allowance name), shared by every
subscription of the account whose plan version lists the name with ``pool: account``. Its grant is
the sum over the account's subscriptions in force during the cycle of what each would get on its
own: ``units x active days / days in the cycle``, rounded down per subscription, from the version
whose recurring fees the subscription pays for the cycle. A subscription with no events in the
batch adds its grant all the same: the grant depends on the reference data and the cycle only.
"""

from __future__ import annotations

import numpy as np

from rating.compile import CompiledReference
from rating.kernels.enrich import active_days, find_overlapping_versions


def pooled_names(compiled: CompiledReference) -> np.ndarray:
    """Allowance name ids (``compiled.allowance_names``) that are pooled; empty when none is."""
    T = compiled.tables
    return np.unique(T.allow_name[T.allow_pooled == 1])


def pool_grants(compiled: CompiledReference, account: np.ndarray, cycle_start_us: np.ndarray,
                cycle_end_us: np.ndarray) -> np.ndarray:
    """Granted units per (account row, cycle) pair and allowance name: an int64 array of shape
    (pairs, allowance names), zero for names that are not pooled. ``cycle_start_us`` and
    ``cycle_end_us`` are each pair's cycle bounds (UTC microseconds), as ``enrich`` computes them."""
    T = compiled.tables
    n_names = max(len(compiled.allowance_names), 1)
    grants = np.zeros((len(account), n_names), np.int64)
    if len(account) == 0 or not (T.allow_pooled == 1).any():
        return grants
    # The subscriptions of each pair's account (sub_by_account lists them grouped by account)...
    by_account = compiled.sub_by_account
    accounts_sorted = compiled.sub_account[by_account]
    first = np.searchsorted(accounts_sorted, account, side="left")
    counts = np.searchsorted(accounts_sorted, account, side="right") - first
    pair = np.repeat(np.arange(len(account)), counts)
    within = np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
    sub_row = by_account[np.repeat(first, counts) + within]
    # ... in force at some instant of the cycle.
    overlap = ((compiled.sub_from_us[sub_row] < cycle_end_us[pair])
               & (compiled.sub_to_us[sub_row] > cycle_start_us[pair]))
    pair, sub_row = pair[overlap], sub_row[overlap]
    if len(pair) == 0:
        return grants
    start, end = cycle_start_us[pair], cycle_end_us[pair]
    days = np.zeros(len(pair), np.int64)
    cycle_days = np.ones(len(pair), np.int64)
    active_days(compiled.sub_from_us[sub_row], compiled.sub_to_us[sub_row], start, end,
                compiled.account_tz[account[pair]], T.tz_start, T.tz_transitions, T.tz_offsets, days, cycle_days)
    version = np.empty(len(pair), np.int64)
    find_overlapping_versions(compiled.sub_plan[sub_row], np.maximum(compiled.sub_from_us[sub_row], start),
                              np.minimum(compiled.sub_to_us[sub_row], end), T.plan_first_version,
                              T.plan_version_count, T.ver_from_us, T.ver_to_us, version)
    for v in np.unique(version[version >= 0]):
        terms = np.flatnonzero(version == v)
        for a in range(T.ver_allow_first[v], T.ver_allow_first[v] + T.ver_allow_count[v]):
            if T.allow_pooled[a] == 1:
                # Rounded down per subscription, then summed: what each member would get alone.
                np.add.at(grants[:, T.allow_name[a]], pair[terms], T.allow_units[a] * days[terms] // cycle_days[terms])
    return grants
