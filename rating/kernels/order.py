"""Event-time order of a batch and its allowance and tier slots, without a general sort.

Rows are put in (account, cycle, start, source, record_id) order, ties kept in input order: the
order of a stable ``pyarrow.compute.sort_indices`` on those keys (strings compared as bytes). A
stable counting sort by account (a stable merge sort when accounts are too spread out for a count
array) is followed by a merge sort of each account's rows on the other keys, on a copy of the
account's keys small enough for the cache. Slots then fall out of one pass over the sorted rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_RUN = 16   # rows insertion-sorted before merging


@njit(nogil=True, cache=True)
def _compare_strings(offsets, data, a, b):
    """-1, 0 or 1: string ``a`` against string ``b`` bytewise (a prefix sorts first)."""
    a0 = offsets[a]
    b0 = offsets[b]
    la = offsets[a + 1] - a0
    lb = offsets[b + 1] - b0
    for k in range(min(la, lb)):
        x = data[a0 + k]
        y = data[b0 + k]
        if x != y:
            return -1 if x < y else 1
    if la == lb:
        return 0
    return -1 if la < lb else 1


@njit(nogil=True, cache=True)
def _strings_before(a, b, src_offsets, src_data, rid_offsets, rid_data):
    """Whether row ``a`` sorts strictly before row ``b`` by (source, record_id)."""
    c = _compare_strings(src_offsets, src_data, a, b)
    if c != 0:
        return c < 0
    return _compare_strings(rid_offsets, rid_data, a, b) < 0


@njit(nogil=True, cache=True, inline="always")
def _before(p, q, cycle, start, rows, src_offsets, src_data, rid_offsets, rid_data):
    """Whether local row ``p`` sorts strictly before local row ``q`` (cycle, start, source, record_id).

    Inlined into the sort loops; the string comparison (equal starts only) stays a call.
    """
    if cycle[p] != cycle[q]:
        return cycle[p] < cycle[q]
    if start[p] != start[q]:
        return start[p] < start[q]
    return _strings_before(rows[p], rows[q], src_offsets, src_data, rid_offsets, rid_data)


@njit(nogil=True, cache=True)
def _sort_segment(rows, cycle, start, perm, buf, src_offsets, src_data, rid_offsets, rid_data):
    """Stable sort of ``perm[:k]`` (local rows 0..k-1) by ``_before``; ``buf`` is scratch of k."""
    k = len(rows)
    for lo in range(0, k, _RUN):
        hi = min(lo + _RUN, k)
        for i in range(lo + 1, hi):
            p = perm[i]
            j = i - 1
            while j >= lo and _before(p, perm[j], cycle, start, rows, src_offsets, src_data, rid_offsets, rid_data):
                perm[j + 1] = perm[j]
                j -= 1
            perm[j + 1] = p
    width = _RUN
    src = perm
    dst = buf
    while width < k:
        for lo in range(0, k, 2 * width):
            mid = min(lo + width, k)
            hi = min(lo + 2 * width, k)
            i = lo
            j = mid
            out = lo
            while i < mid and j < hi:
                # Take the right one only when strictly before: equal keys keep their order.
                if _before(src[j], src[i], cycle, start, rows, src_offsets, src_data, rid_offsets, rid_data):
                    dst[out] = src[j]
                    j += 1
                else:
                    dst[out] = src[i]
                    i += 1
                out += 1
            while i < mid:
                dst[out] = src[i]
                i += 1
                out += 1
            while j < hi:
                dst[out] = src[j]
                j += 1
                out += 1
        src, dst = dst, src
        width *= 2
    if src is not perm:
        perm[:k] = src[:k]


@njit(nogil=True, cache=True)
def event_order(account, cycle, start_us, src_offsets, src_data, rid_offsets, rid_data, max_count_array, out_order,
                out_cycle, out_start_us):
    """Rows in (account, cycle, start_us, source, record_id) order, ties in input order; also the
    rows' cycles and starts in that order.

    ``account`` >= -1. Accounts are counting-sorted when their spread is at most
    ``max_count_array``, else merge-sorted (same order). Strings: Arrow offsets and bytes, no nulls.
    """
    n = len(account)
    if n == 0:
        return
    lo = account.min()
    spread = account.max() - lo + 1
    if spread <= max_count_array:
        bounds = np.zeros(spread + 1, np.int64)   # account a - lo holds sorted rows [bounds[a], bounds[a + 1])
        for i in range(n):
            bounds[account[i] - lo + 1] += 1
        for a in range(spread):
            bounds[a + 1] += bounds[a]
        at = bounds[:spread].copy()
        for i in range(n):
            a = account[i] - lo
            out_order[at[a]] = i
            at[a] += 1
    else:
        out_order[:] = np.argsort(account, kind="mergesort")
        bounds = np.empty(n + 1, np.int64)
        count = 0
        for i in range(n):
            if i == 0 or account[out_order[i]] != account[out_order[i - 1]]:
                bounds[count] = i
                count += 1
        bounds[count] = n
        bounds = bounds[:count + 1]
    longest = 0
    for k in range(len(bounds) - 1):
        longest = max(longest, bounds[k + 1] - bounds[k])
    cyc = np.empty(longest, np.int64)
    st = np.empty(longest, np.int64)
    perm = np.empty(longest, np.int64)
    buf = np.empty(longest, np.int64)
    rows = np.empty(longest, np.int64)
    for k in range(len(bounds) - 1):
        seg = bounds[k]
        size = bounds[k + 1] - seg
        for j in range(size):
            r = out_order[seg + j]
            rows[j] = r
            cyc[j] = cycle[r]
            st[j] = start_us[r]
            perm[j] = j
        if size > 1:
            _sort_segment(rows[:size], cyc, st, perm[:size], buf, src_offsets, src_data, rid_offsets, rid_data)
        for j in range(size):
            p = perm[j]
            out_order[seg + j] = rows[p]
            out_cycle[seg + j] = cyc[p]
            out_start_us[seg + j] = st[p]


@njit(nogil=True, cache=True)
def tier_slots(ok, account, cycle, out_slot, out_account, out_cycle):
    """Slot of each row (-1 unless ``ok``): one per (account, cycle), numbered in that order.

    Rows in ``event_order`` (columns laid out in it). Writes each slot's account and cycle;
    returns the count.
    """
    count = 0
    for i in range(len(ok)):
        out_slot[i] = -1
        if not ok[i]:
            continue
        if count == 0 or account[i] != out_account[count - 1] or cycle[i] != out_cycle[count - 1]:
            out_account[count] = account[i]
            out_cycle[count] = cycle[i]
            count += 1
        out_slot[i] = count - 1
    return count


@njit(nogil=True, cache=True)
def allowance_groups(ok, sub_row, cycle, n_subscriptions, out_group, out_sub, out_cycle, out_first):
    """Group of each row (-1 unless ``ok``): one per (subscription, cycle), numbered as first met.

    Rows in ``event_order`` (columns laid out in it): a subscription has one account, so its rows
    of one cycle are met before those of any later cycle. Writes each group's subscription, cycle
    and first row; returns the count.
    """
    last = np.empty(n_subscriptions, np.int64)   # sparse set: valid only where out_sub agrees
    count = 0
    for i in range(len(ok)):
        out_group[i] = -1
        if not ok[i]:
            continue
        s = sub_row[i]
        g = last[s]
        if g < 0 or g >= count or out_sub[g] != s or out_cycle[g] != cycle[i]:
            g = count
            out_sub[g] = s
            out_cycle[g] = cycle[i]
            out_first[g] = i
            last[s] = g
            count += 1
        out_group[i] = g
    return count


@njit(nogil=True, cache=True)
def lay_out(order, zone_reason, unit_reason, service, raw_units, zone, version, plan, plan_tz, account, sub_row,
            out_ok, out_reason, out_service, out_raw_units, out_zone, out_version, out_plan, out_tz, out_account,
            out_sub_row):
    """The per-row columns in ``order``, in one pass (cycles and starts come from ``event_order``):
    ``out_ok`` where zoning left no reason (the rows that get slots), ``out_reason`` the zoning
    reason or else the raw-unit one, ``out_zone`` and ``out_version`` with -1 as 0 (unrated rows),
    ``out_tz`` the plan's timezone."""
    for i in range(len(order)):
        r = order[i]
        out_ok[i] = zone_reason[r] == 0
        out_reason[i] = zone_reason[r] if zone_reason[r] != 0 else unit_reason[r]
        out_service[i] = service[r]
        out_raw_units[i] = raw_units[r]
        out_zone[i] = max(zone[r], 0)
        out_version[i] = max(version[r], 0)
        p = plan[r]
        out_plan[i] = p
        out_tz[i] = plan_tz[p]
        out_account[i] = account[r]
        out_sub_row[i] = sub_row[r]
