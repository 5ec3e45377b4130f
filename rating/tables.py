"""The arrays kernels read: one ``RatingTables`` namedtuple per reference-data load.

Numba accepts a namedtuple of arrays as one argument, so kernels take ``tables`` instead of forty
parameters. Field names carry units; ``-1`` means "none" in index and optional-money columns.
"""

from __future__ import annotations

import collections

RATING_TABLE_FIELDS = (
    # timezones (rating.timezones.stack_zones)
    "tz_start", "tz_transitions", "tz_offsets",
    # plans
    "plan_tz", "plan_first_version", "plan_version_count",
    "num_cc", "num_cc_len", "num_intl", "num_intl_len", "num_trunk", "num_trunk_len",
    # plan versions
    "ver_from_us", "ver_to_us", "ver_zone_root", "ver_roam_root", "ver_zero_charged",
    "ver_denominator", "ver_hol_first", "ver_hol_count", "holidays_day",
    "week_band", "week_next_min", "hol_band", "hol_next_min",
    # hol_variant[version, zone] -> row of hol_band / hol_next_min (minutes of a holiday's week)
    "hol_variant",
    "ver_allow_first", "ver_allow_count",
    # prefix tries (destination and roaming tables share one node array)
    "trie_children", "trie_zone",
    # rates: rate_index[version, usage type, zone, band] -> rate row or -1
    "rate_index", "rate_connect_micros", "rate_min_micros", "rate_max_micros",
    "rate_round_q_micros", "rate_round_mode", "rate_step_first", "rate_step_count",
    "rate_tier_group", "rate_tier_inc", "rate_level_first", "rate_level_count",
    # steps and tier levels
    "step_from", "step_price_micros", "step_per", "step_inc", "step_inc_price_micros",
    "level_up_to", "level_price_micros", "level_per",
    # allowances (global rows, grouped per version in consumption order)
    "allow_name", "allow_service", "allow_units", "allow_zone_ok",
    # 1: the allowance draws from the account's pool (a row of allow_state per account and cycle)
    "allow_pooled",
    # limits per usage type (code: voice 0, sms 1, data 2, then declared types): raw units above are rejected OVERFLOW
    "max_units",
    # per usage type: unit (UNIT_CODES), destination (DESTINATION_CODES), 1 when priced per increment in
    # the band of the increment's start (seconds types), else 0 (the band at the event's start)
    "type_unit",
    "type_destination",
    "type_split",
)

RatingTables = collections.namedtuple("RatingTables", RATING_TABLE_FIELDS)

SERVICE_CODES = {"VOICE": 0, "SMS": 1, "DATA": 2}
SERVICE_NAMES = ("VOICE", "SMS", "DATA")
UNIT_CODES = {"seconds": 0, "messages": 1, "bytes": 2, "count": 3}
DESTINATION_CODES = {"required": 0, "none": 1, "optional": 2}
ROUNDING_CODES = {"up": 0, "down": 1, "half_up": 2, "half_even": 3}
MAX_ALLOWANCES_PER_EVENT = 4
