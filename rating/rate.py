"""Rate usage batches: Arrow in, Arrow out. Usable without Beam; the pipeline calls the same code.

``rate(batch, compiled)`` enriches each valid usage row (subscription, account, plan version,
billing cycle), normalises and zones its destination, and prices it with the kernels, consuming
allowances and tiers in event-time order. Every input row comes back exactly once: in ``rated``
(``rated_event_schema()``) or in ``rejected`` (``rejected_schema()``, with the reason).

All events of an (account, cycle) must be in the same call for allowances and tiers to be right:
the pipeline groups by account before rating.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas import rated_event_schema, rejected_schema
from cdr_schemas.decoders.common import rows_as_json
from cdr_schemas.reasons import DESCRIPTIONS, Reason
from rating.arrow_utils import (column, int_column, is_in, pool_empty, string_buffers, take_digit_strings, take_names,
                                take_strings)
from rating.cycles import month_labels
from rating.compile import CompiledReference
from rating.destinations import zone_by_rules
from rating.identity import subscriber_keys
from rating.kernels.enrich import (active_days, assign_cycles, find_overlapping_versions, find_subscriptions, find_versions,
                                   raw_units, subscription_fields)
from rating.kernels.gather import gather_positive_entries, positive_entry_offsets
from rating.kernels.numbers import match_zones, normalise_numbers, parse_digits
from rating.kernels.order import allowance_groups, event_order, lay_out, tier_slots
from rating.kernels.pricing import rate_events
from rating.pools import pool_grants, pooled_names
from rating.reference.model import HOME_ZONE
from rating.state import RatingState, slot_key
from rating.string_index import StringIndex
from rating.tables import MAX_ALLOWANCES_PER_EVENT, SERVICE_CODES

_SERVICE_NAMES = tuple(SERVICE_CODES)   # by service code
_SERVICE_INDEX = StringIndex(pa.array(_SERVICE_NAMES, pa.string()))


def rate(batch: pa.RecordBatch, compiled: CompiledReference,
         state: RatingState | None = None) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Rate a validated usage batch (``usage_batch_schema()``). Returns (rated, rejected).

    Without ``state`` every allowance starts from its prorated grant and every tier counter from
    zero. With ``state``, balances it holds are used instead, and the balances after this call are
    written back to it (streaming: one cycle's events over many calls).

    Three stages, each usable on its own (perf/bench_rating.py times them): ``enrich`` (subscription,
    account, plan version, cycle), ``zone`` (destination numbers and zones) and ``price`` (event-time
    order, allowance and tier slots, the pricing kernel, Arrow out).
    """
    enriched = enrich(batch, compiled)
    return price(batch, compiled, enriched, zone(batch, compiled, enriched), state)


@dataclasses.dataclass(frozen=True)
class Enrichment:
    """Per input row: usage type code (0 voice, 1 SMS, 2 data, then the declared types), start, raw
    units, subscription row, plan, account, plan version (-1: none), account timezone, cycle (month
    index and UTC bounds), and
    ``reason``: 0, or why enrichment rejected the row. ``unit_reason`` holds the raw-unit verdicts
    (OVERFLOW, INVALID_FIELD), applied at pricing after the enrichment and zoning reasons."""
    service: np.ndarray
    start_us: np.ndarray
    raw_units: np.ndarray
    unit_reason: np.ndarray
    sub_row: np.ndarray
    plan: np.ndarray
    account: np.ndarray
    version: np.ndarray
    account_tz: np.ndarray
    cycle_month: np.ndarray
    cycle_start: np.ndarray
    cycle_end: np.ndarray
    reason: np.ndarray


def enrich(batch: pa.RecordBatch, compiled: CompiledReference) -> Enrichment:
    """Subscription, account, plan version and billing cycle of each row of a validated batch."""
    n = batch.num_rows
    T = compiled.tables
    reason = np.zeros(n, np.int64)
    service = usage_type_codes(batch, compiled)
    unknown_type = service < 0
    if unknown_type.any():
        reason[unknown_type] = Reason.UNKNOWN_USAGE_TYPE
        service[unknown_type] = 0
    start_us = int_column(column(batch, "start_time"))
    raw, unit_reason = np.empty(n, np.int64), np.empty(n, np.int64)
    quantity, quantity_valid = _quantities(column(batch, "quantity"))
    raw_units(service, int_column(column(batch, "duration_s")), int_column(column(batch, "message_count")),
              int_column(column(batch, "bytes_up")), int_column(column(batch, "bytes_down")), quantity,
              quantity_valid, T.type_unit, T.max_units, raw, unit_reason)

    subscriber = compiled.subscriber_index.rows(subscriber_keys(batch))
    sub_row = np.empty(n, np.int64)
    find_subscriptions(subscriber, start_us, compiled.sub_first, compiled.sub_count, compiled.sub_from_us,
                       compiled.sub_to_us, sub_row, reason)
    plan, account, account_tz, bcd = (np.empty(n, np.int64) for _ in range(4))
    subscription_fields(sub_row, compiled.sub_plan, compiled.sub_account, compiled.account_tz, compiled.account_bcd,
                        plan, account, account_tz, bcd)
    version = np.empty(n, np.int64)
    find_versions(plan, start_us, T.plan_first_version, T.plan_version_count, T.ver_from_us, T.ver_to_us,
                  version, reason)
    cycle_month = np.empty(n, np.int64)
    cycle_start = np.zeros(n, np.int64)
    cycle_end = np.zeros(n, np.int64)
    assign_cycles(start_us, account_tz, bcd, T.tz_start, T.tz_transitions, T.tz_offsets,
                  cycle_month, cycle_start, cycle_end)
    return Enrichment(service, start_us, raw, unit_reason, sub_row, plan, account, version, account_tz,
                      cycle_month, cycle_start, cycle_end, reason)


def usage_type_codes(batch: pa.RecordBatch, compiled: CompiledReference) -> np.ndarray:
    """Each row's usage type code: its ``usage_type`` (a declared type's name, in any case) when set,
    else the type its ``service`` names (VOICE 0, SMS 1, DATA 2); -1 for a type the reference does
    not declare (and for OTHER without a usage_type, which validation rejects first)."""
    service = _SERVICE_INDEX.rows(column(batch, "service"))
    usage_type = column(batch, "usage_type")
    if usage_type.null_count < len(usage_type):   # some rows name their type: few batches, few distinct names
        named = usage_type.is_valid().to_numpy(zero_copy_only=False)
        types = StringIndex(pa.array(compiled.type_names, pa.string()))
        service = np.where(named, types.rows(pc.utf8_upper(usage_type)), service)
    return service


def _quantities(quantity: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(``quantity`` with nulls as 0, 1 where it is set) for ``raw_units``; two empty arrays when no
    row has a quantity (the usual batch: nothing allocated)."""
    if quantity.null_count == len(quantity):
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    valid = quantity.is_valid().to_numpy(zero_copy_only=False).astype(np.uint8)
    return pc.fill_null(quantity, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False), valid


@dataclasses.dataclass(frozen=True)
class Zoning:
    """Per input row: the normalised destination (digits, length, whether there is one: False for a
    string destination), the zone (global id; -1 none) and ``reason``: the enrichment's, plus
    INVALID_NUMBER and NO_ZONE."""
    digits: np.ndarray
    digits_len: np.ndarray
    has_destination: np.ndarray
    zone: np.ndarray
    reason: np.ndarray


def zone(batch: pa.RecordBatch, compiled: CompiledReference, enriched: Enrichment) -> Zoning:
    """Normalise destinations and zone each row enrichment kept: by destination at home (an exact
    rule, else the longest digit prefix of a number or string prefix of anything else), by visited
    network when roaming, HOME at home for a type without destination (data) and for an optional
    destination that is absent. ``enriched`` is not modified."""
    n = batch.num_rows
    T = compiled.tables
    reason = enriched.reason.copy()
    service, plan = enriched.service, enriched.plan
    rated_ok = reason == 0
    other_party = column(batch, "other_party")
    offsets, data, present = string_buffers(other_party)
    rule = T.type_destination   # per type code, DESTINATION_CODES: 0 required, 1 none, 2 optional
    takes_destination = (rule != 1)[service]   # one gather of a bool per row from a table of a few types
    has_destination = present & takes_destination
    digits = pool_empty(n * 16, np.uint8).reshape(n, 16)   # read only up to each row's length
    digits_len = np.zeros(n, np.int64)
    normalise_numbers(offsets, data, np.where(has_destination & rated_ok, plan, -1), T.num_cc, T.num_cc_len,
                      T.num_intl, T.num_intl_len, T.num_trunk, T.num_trunk_len, digits, digits_len, reason)
    visited = column(batch, "visited_network")
    roaming = ~is_in(visited, compiled.home_networks) & visited.is_valid().to_numpy(zero_copy_only=False)
    safe_version = np.maximum(enriched.version, 0)
    zones = np.full(n, compiled.zone_names.index(HOME_ZONE), np.int64)
    by_rule = zone_by_rules(other_party, compiled.destinations, safe_version, has_destination & rated_ok, reason)
    zoned_by_destination = takes_destination   # required: zoned by it (absent: NO_ZONE); optional: when present
    if (rule == 2).any():
        zoned_by_destination = (rule == 0)[service] | ((rule == 2)[service] & present)
    dest_root = np.where((reason == 0) & ~roaming & zoned_by_destination, T.ver_zone_root[safe_version], -1)
    if by_rule is not None:   # exact and string rules zone these rows; the trie the rest
        named, named_zone = by_rule
        dest_root[named] = -1
        has_destination[named[digits_len[named] == 0]] = False   # a string destination: no E.164 digits
    match_zones(digits, digits_len, dest_root, T.trie_children, T.trie_zone, zones)
    if by_rule is not None:
        zones[named] = named_zone
    roamers = np.flatnonzero((reason == 0) & roaming)   # few: their visited networks alone
    if len(roamers):
        v_offsets, v_data, v_present = string_buffers(visited.take(pa.array(roamers, pa.int64())))
        v_digits = np.zeros((len(roamers), 16), np.uint8)
        v_len = np.zeros(len(roamers), np.int64)
        parse_digits(v_offsets, v_data, v_present, v_digits, v_len)
        roam_root = T.ver_roam_root[safe_version[roamers]]
        roam_zones = np.where(roam_root < 0, -1, zones[roamers])
        match_zones(v_digits, v_len, roam_root, T.trie_children, T.trie_zone, roam_zones)
        zones[roamers] = roam_zones
    reason[(reason == 0) & (zones < 0)] = Reason.NO_ZONE
    return Zoning(digits, digits_len, has_destination, zones, reason)


@dataclasses.dataclass(frozen=True)
class PricingCall:
    """What ``price`` hands the pricing kernel: ``order`` (input rows in event-time order per
    account and cycle), ``arguments`` (``rate_events``'s parameters by name, rows in that order,
    outputs allocated), the state keys of the allowance and tier slots, and ``laid_out``: the
    enrichment's account, plan, cycle and version (-1 as 0) in that order too."""
    order: np.ndarray
    arguments: dict
    allow_keys: np.ndarray
    tier_keys: np.ndarray
    laid_out: dict = dataclasses.field(default_factory=dict)
    pool_base: int = -1   # allow_state rows from here on: the accounts' pools, one per tier key (-1: none)

    def run(self) -> None:
        rate_events(**self.arguments)


def pricing_call(batch: pa.RecordBatch, compiled: CompiledReference, enriched: Enrichment, zoned: Zoning,
                 state: RatingState | None = None) -> PricingCall:
    """Sort the rows into event-time order per (account, cycle), ties by (source, record_id), assign
    allowance and tier slots (from ``state`` where it holds them), and lay out the kernel's arguments."""
    T = compiled.tables
    n = batch.num_rows
    e = enriched
    order, cycle, start = _event_time_layout(batch, e)
    ok = np.empty(n, np.bool_)
    # Pooled memory (see pool_empty): most of these end up in the rated batch.
    service, raw, zone_, version, plan, tz, account, sub_row, reason = (pool_empty(n, np.int64) for _ in range(9))
    lay_out(order, zoned.reason, e.unit_reason, e.service, e.raw_units, zoned.zone, e.version, e.plan, T.plan_tz,
            e.account, e.sub_row, ok, reason, service, raw, zone_, version, plan, tz, account, sub_row)
    allow_slot, tier_slot, allow_state, tier_state, allow_keys, tier_keys, pool_base = _state_slots(
        compiled, order, ok, sub_row, account, cycle, e.cycle_start, e.cycle_end, e.account_tz, state)
    # rate_events writes every output of every row: no zeroing.
    outputs = {name: pool_empty(n, np.int64) for name in (
        "out_charge", "out_connect", "out_charged", "out_free", "out_band", "out_split", "out_rate", "out_tier",
        "out_rounding_nanos")}
    arguments = dict(
        service=service, raw_units=raw, start_us=start, zone=zone_, version=version, tz=tz, allow_slot=allow_slot,
        tier_slot=tier_slot, pool_base=pool_base, T=T, allow_state=allow_state, tier_state=tier_state,
        out_reason=reason, **outputs,
        out_allow_name=pool_empty(n * MAX_ALLOWANCES_PER_EVENT, np.int64).reshape(n, MAX_ALLOWANCES_PER_EVENT),
        out_allow_used=pool_empty(n * MAX_ALLOWANCES_PER_EVENT, np.int64).reshape(n, MAX_ALLOWANCES_PER_EVENT))
    return PricingCall(order, arguments, allow_keys, tier_keys,
                       dict(account=account, plan=plan, cycle=cycle, version=version), pool_base=pool_base)


def price(batch: pa.RecordBatch, compiled: CompiledReference, enriched: Enrichment, zoned: Zoning,
          state: RatingState | None = None) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Price the rows in event-time order and build the (rated, rejected) batches; balances go back
    to ``state`` when given."""
    call = pricing_call(batch, compiled, enriched, zoned, state)
    call.run()
    a = call.arguments
    if state is not None:
        for slot, key in enumerate(call.allow_keys.tolist()):
            state.allowances[key] = a["allow_state"][slot].copy()
        if call.pool_base >= 0:
            for slot, key in enumerate(call.tier_keys.tolist()):
                state.pools[key] = a["allow_state"][call.pool_base + slot].copy()
        for slot, key in enumerate(call.tier_keys.tolist()):
            state.tiers[key] = a["tier_state"][slot].copy()
    o_reason = a["out_reason"]
    rated_rows = np.flatnonzero(o_reason == 0)
    rejected_rows = np.flatnonzero(o_reason != 0)
    rated = _rated_batch(compiled, batch, rated_rows, call, zoned)
    rejected = rejected_batch(batch.take(pa.array(call.order[rejected_rows], pa.int64())), o_reason[rejected_rows])
    return rated, rejected


def event_time_order(batch: pa.RecordBatch, e: Enrichment) -> np.ndarray:
    """Input rows in event-time order per (account, cycle): by (account, cycle, start, source,
    record_id), ties in input order, as a stable ``pc.sort_indices`` on those keys would give."""
    return _event_time_layout(batch, e)[0]


def _event_time_layout(batch: pa.RecordBatch, e: Enrichment) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``event_time_order``, the rows' cycle months and starts in that order)."""
    n = batch.num_rows
    source, record_id = column(batch, "source"), column(batch, "record_id")
    if source.null_count or record_id.null_count:
        order = _sorted_by_arrow(batch, e)
        return order, e.cycle_month[order], e.start_us[order]
    src_offsets, src_data, _ = string_buffers(source)
    rid_offsets, rid_data, _ = string_buffers(record_id)
    order, cycle, start = np.empty(n, np.int64), pool_empty(n, np.int64), pool_empty(n, np.int64)
    event_order(e.account, e.cycle_month, e.start_us, src_offsets, src_data, rid_offsets, rid_data,
                4 * n + 65_536, order, cycle, start)
    return order, cycle, start


def _sorted_by_arrow(batch: pa.RecordBatch, e: Enrichment) -> np.ndarray:
    """``event_time_order`` by Arrow's sort (the reference the kernel is tested against; also the
    path for null sources or record ids, which it sorts last)."""
    order_table = pa.table({
        "account": e.account, "cycle": e.cycle_month, "start": e.start_us,
        "source": column(batch, "source"), "record_id": column(batch, "record_id"),
    })
    return pc.sort_indices(order_table, sort_keys=[(k, "ascending") for k in order_table.column_names]
                           ).to_numpy(zero_copy_only=False)


def _state_slots(compiled, order, ok, sub_row, account, cycle_month, cycle_start, cycle_end, account_tz, state):
    """Allowance slots per (subscription, cycle) with prorated grants (or the balances in ``state``);
    tier slots per (account, cycle); when the reference has pooled allowances, one more row of the
    allowance state per tier slot (from ``pool_base`` on): the account's pools for the cycle
    (``rating.pools``). Returns the slot columns, both state arrays, their keys and ``pool_base``.

    Slots are numbered in ascending key order (``slot_key``). ``ok``, ``sub_row``, ``account`` and
    ``cycle_month`` are laid out in ``order`` (``event_time_order``'s); ``cycle_start``,
    ``cycle_end`` and ``account_tz`` are per input row.
    """
    T = compiled.tables
    n = len(order)
    n_names = max(len(compiled.allowance_names), 1)
    n_groups = max(len(compiled.tier_group_names), 1)
    if not ok.any():
        empty = np.zeros(0, np.int64)
        return (np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.zeros((0, n_names), np.int64),
                np.zeros((0, n_groups), np.int64), empty, empty, -1)
    group = np.empty(n, np.int64)
    group_sub = np.empty(n, np.int64)
    group_cycle = np.empty(n, np.int64)
    group_first = np.empty(n, np.int64)
    count = allowance_groups(ok, sub_row, cycle_month, len(compiled.sub_plan), group, group_sub, group_cycle,
                             group_first)
    group_keys = slot_key(group_sub[:count], group_cycle[:count])
    by_key = np.argsort(group_keys, kind="stable")
    keys = group_keys[by_key]
    if (np.diff(keys) <= 0).any():
        raise AssertionError("allowance slots: a (subscription, cycle) met twice; rows not in event-time order")
    slot_of_group = np.empty(count, np.int64)
    slot_of_group[by_key] = np.arange(count)
    allow_slot = np.where(group >= 0, slot_of_group[np.maximum(group, 0)], -1)
    first_event = order[group_first[:count][by_key]]  # any event of the slot: all share subscription and cycle
    rows = group_sub[:count][by_key]
    active_from = np.maximum(compiled.sub_from_us[rows], cycle_start[first_event])
    active_to = np.minimum(compiled.sub_to_us[rows], cycle_end[first_event])
    days = np.zeros(len(keys), np.int64)
    cycle_days = np.ones(len(keys), np.int64)
    active_days(compiled.sub_from_us[rows], compiled.sub_to_us[rows], cycle_start[first_event],
                cycle_end[first_event], account_tz[first_event], T.tz_start, T.tz_transitions, T.tz_offsets,
                days, cycle_days)
    slot_version = np.empty(len(keys), np.int64)
    find_overlapping_versions(compiled.sub_plan[rows], active_from, active_to, T.plan_first_version,
                              T.plan_version_count, T.ver_from_us, T.ver_to_us, slot_version)
    allow_state = np.zeros((len(keys), n_names), np.int64)
    for v in np.unique(slot_version[slot_version >= 0]):
        slots = np.flatnonzero(slot_version == v)
        for a in range(T.ver_allow_first[v], T.ver_allow_first[v] + T.ver_allow_count[v]):
            if T.allow_pooled[a] == 0:   # pooled ones are granted to the account (below)
                allow_state[slots, T.allow_name[a]] = T.allow_units[a] * days[slots] // cycle_days[slots]
    tier_slot = np.empty(n, np.int64)
    tier_account = np.empty(n, np.int64)
    tier_cycle = np.empty(n, np.int64)
    tier_count = tier_slots(ok, account, cycle_month, tier_slot, tier_account, tier_cycle)
    tier_keys = slot_key(tier_account[:tier_count], tier_cycle[:tier_count])
    tier_state = np.zeros((len(tier_keys), n_groups), np.int64)
    pool_base = -1
    if len(pooled_names(compiled)):
        pool_base = len(keys)
        tier_ok = np.flatnonzero(tier_slot >= 0)   # slots ascend in event order: first row of each
        first_tier_event = order[tier_ok[np.searchsorted(tier_slot[tier_ok], np.arange(tier_count))]]
        pools = pool_grants(compiled, tier_account[:tier_count], cycle_start[first_tier_event],
                            cycle_end[first_tier_event])
        allow_state = np.concatenate([allow_state, pools])
    if state is not None:
        for slot, key in enumerate(keys.tolist()):
            saved = state.allowances.get(key)
            if saved is not None:
                allow_state[slot] = saved
        if pool_base >= 0:
            for slot, key in enumerate(tier_keys.tolist()):
                saved = state.pools.get(key)
                if saved is not None:
                    allow_state[pool_base + slot] = saved
        for slot, key in enumerate(tier_keys.tolist()):
            saved = state.tiers.get(key)
            if saved is not None:
                tier_state[slot] = saved
    return allow_slot, tier_slot, allow_state, tier_state, keys, tier_keys, pool_base


def _by_cycle(rows: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    """``rows`` (ascending positions of the event-time order) grouped by billing cycle, ascending,
    each cycle's rows in the order they had: the rated batch comes out by (cycle, account, event
    time), so its writer cuts one file per cycle with slices instead of a filter of every column."""
    months = cycle[rows]
    if len(rows) == 0 or months.min() == months.max():
        return rows
    low, span = months.min(), months.max() - months.min()
    keys = (months - low).astype(np.int16) if span < 2**15 else months   # int16: NumPy's radix sort
    return rows[np.argsort(keys, kind="stable")]


def _rated_batch(compiled, batch, rows, call: PricingCall, z: Zoning) -> pa.RecordBatch:
    """The rated events: rows ``rows`` (ascending) of the event-time ``call.order``, by cycle
    (``_by_cycle``; the input columns the schema keeps, gathered once each), with the kernel's
    inputs and outputs and the laid-out enrichment (rated rows have a zone and a plan version:
    their -1-as-0 is no-op)."""
    order = call.order
    a = {**call.arguments, **call.laid_out}
    by_cycle = _by_cycle(rows, a["cycle"])
    everything = len(rows) == len(order) and by_cycle is rows   # every row, in the order laid out
    rows = by_cycle
    src = order[rows]
    n = len(rows)

    def out(name):  # a kernel column or laid-out column of the rated rows
        return a[name] if everything else a[name][rows]

    def kept(name):
        col = column(batch, name)
        return take_strings(col, src) if pa.types.is_string(col.type) else col.take(src_array)

    src_array = pa.array(src, pa.int64())
    list_offsets = np.empty(n + 1, np.int32)
    entries = positive_entry_offsets(rows, a["out_allow_used"], list_offsets)
    allowance_ids = np.empty(entries, np.int64)
    allowance_used = np.empty(entries, np.int64)
    gather_positive_entries(rows, a["out_allow_name"], a["out_allow_used"], allowance_ids, allowance_used)
    schema = rated_event_schema()
    allowance_type = schema.field("allowance_units").type
    struct = pa.StructArray.from_arrays(
        [take_names(compiled.allowance_names, allowance_ids) if entries else pa.array([], pa.string()),
         pa.array(allowance_used, pa.int64())],
        fields=list(allowance_type.value_type))
    allowance_units = pa.ListArray.from_arrays(pa.array(list_offsets), struct, type=allowance_type)
    account = out("account")
    arrays = {
        # Rated rows have a declared usage type: its name (VOICE, SMS, DATA, MMS, ...).
        "record_id": kept("record_id"), "source": kept("source"),
        "service": take_names(compiled.type_names, out("service")),
        "served_msisdn": kept("served_msisdn"), "other_party": kept("other_party"),
        "visited_network": kept("visited_network"),
        "destination_e164": take_digit_strings(z.digits, z.digits_len, z.has_destination, src),
        "start_time": kept("start_time"),
        "account_id": take_names(compiled.account_ids, account),
        "plan_id": take_names(compiled.plan_ids, out("plan")),
        "plan_version": pa.array(compiled.version_numbers[out("version")].astype(np.int32)),
        "currency": take_names(compiled.account_currency, account),
        "service_cycle": month_labels(out("cycle")),
        "zone": take_names(compiled.zone_names, out("zone")),
        "band": take_names(compiled.band_names, out("out_band")),
        "band_split": pa.array(out("out_split") == 1),
        "rate_id": take_names(compiled.rate_ids, out("out_rate")),
        "tier": pa.array(out("out_tier").astype(np.int32)),
        "raw_units": pa.array(out("raw_units")),
        "charged_units": pa.array(out("out_charged")),
        "free_units": pa.array(out("out_free")),
        "allowance_units": allowance_units,
        "connect_fee_micros": pa.array(out("out_connect")),
        "charge_micros": pa.array(out("out_charge")),
        "rounding_nanos": pa.array(out("out_rounding_nanos")),
        "revision": pa.array(np.zeros(n, np.int32)),
        "input_file": kept("input_file"), "input_position": kept("input_position"),
        "subscriber": kept("subscriber"), "subscriber_kind": kept("subscriber_kind"),
    }
    return pa.RecordBatch.from_arrays([arrays[f.name] for f in schema], schema=schema)


def rejected_batch(rows: pa.RecordBatch, reasons: np.ndarray) -> pa.RecordBatch:
    """Rejected records (``rejected_schema()``) for decoded usage rows and their reason codes."""
    names = [Reason(int(r)).name for r in reasons]
    details = [DESCRIPTIONS[Reason(int(r))] for r in reasons]
    schema = rejected_schema()
    return pa.RecordBatch.from_arrays([
        pa.array(names, pa.string()), pa.array(details, pa.string()),
        rows.column("record_id"), rows.column("source"), rows.column("start_time"),
        pa.array(rows_as_json(rows, np.arange(rows.num_rows)), pa.binary()),
        rows.column("input_file"), rows.column("input_position"),
    ], schema=schema)
