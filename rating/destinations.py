"""Non-numeric destinations: the exact and string-prefix rules of zone tables, beside the digit tries.

Zoning a destination (docs/tariffs.md, "Order of the rules"): an ``exact`` rule equal to the
destination as dialled (trimmed, case-folded) wins; else a destination that normalises to a number
takes the digit trie's longest prefix; else the longest string prefix rule. The digit part is the
kernels' (``rating.kernels.numbers``); this module is the rest, on the Arrow side:

* rows whose destination is a number are looked up only where their version's table has an exact
  rule that could equal a dialled number (``+`` and digits, e.g. a short code ``112``): one hash
  lookup of the dialled bytes (a number is ASCII ``+`` and digits, which trimming and case folding
  leave alone);
* rows whose destination is not a number (the few that normalisation rejected) are matched by their
  unique (destination, table) pairs in Python: traffic to service names or SIP URIs repeats the same
  values, and numeric traffic never reaches this loop.

A reference whose zone tables have no such rules costs nothing here (``DestinationRules.any`` is
False).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas.reasons import Reason
from rating.arrow_utils import string_buffers
from rating.reference.model import ReferenceData
from rating.reference.zone_tables import fold_destination
from rating.string_index import StringIndex

_DIALLED_NUMBER = re.compile(r"\+?[0-9]+")


@dataclasses.dataclass(frozen=True)
class StringRules:
    """One zone table's exact and string-prefix rules (case-folded values -> global zone ids)."""
    exact: dict[str, int]
    prefixes: dict[str, int]
    longest_prefix: int

    def zone_of(self, key: str) -> int:
        """The zone of a destination that is not a number (``key``: ``fold_destination`` of it):
        its exact rule, else its longest string prefix; -1 when none."""
        zone = self.exact.get(key)
        if zone is not None:
            return zone
        for length in range(min(len(key), self.longest_prefix), 0, -1):
            zone = self.prefixes.get(key[:length])
            if zone is not None:
                return zone
        return -1


@dataclasses.dataclass(frozen=True)
class DestinationRules:
    """Per reference: the zone tables with exact or string rules, and where each version finds them."""
    tables: tuple[StringRules, ...]
    version_table: np.ndarray          # per version row: index into ``tables``, -1 when its zone table has none
    number_keys: StringIndex | None    # exact values that a dialled number can equal (+ and digits), all tables
    number_zone: np.ndarray            # [table, number key] -> global zone id, -1
    number_key_lengths: np.ndarray     # the distinct lengths (bytes) of those values
    version_number_exact: np.ndarray   # per version row: its table has such an exact value

    @property
    def any(self) -> bool:
        return bool(self.tables)


def compile_destination_rules(ref: ReferenceData, zone_tables_of_versions: list[str],
                              zone_id: dict[str, int]) -> DestinationRules:
    """``zone_tables_of_versions``: the zone table of each version row, in version-row order."""
    names = sorted(name for name, t in ref.zone_tables.items() if t.exact or t.string_prefixes)
    index = {name: i for i, name in enumerate(names)}
    tables = []
    for name in names:
        table = ref.zone_tables[name]
        tables.append(StringRules(
            exact={value: zone_id[zone] for value, zone in table.exact},
            prefixes={prefix: zone_id[zone] for prefix, zone in table.string_prefixes},
            longest_prefix=max((len(p) for p, _ in table.string_prefixes), default=0)))
    version_table = np.array([index.get(name, -1) for name in zone_tables_of_versions], np.int64)
    number_keys = sorted({value for t in tables for value in t.exact if _DIALLED_NUMBER.fullmatch(value)})
    number_zone = np.full((len(tables), len(number_keys)), -1, np.int64)
    for t, rules in enumerate(tables):
        for k, value in enumerate(number_keys):
            number_zone[t, k] = rules.exact.get(value, -1)
    has_number_exact = (number_zone >= 0).any(axis=1) if number_keys else np.zeros(len(tables), np.bool_)
    version_number_exact = np.array([t >= 0 and bool(has_number_exact[t]) for t in version_table.tolist()], np.bool_)
    return DestinationRules(
        tables=tuple(tables), version_table=version_table,
        number_keys=StringIndex(pa.array(number_keys, pa.string())) if number_keys else None,
        number_zone=number_zone, number_key_lengths=np.unique([len(v) for v in number_keys]).astype(np.int64),
        version_number_exact=version_number_exact)


def zone_by_rules(other_party: pa.Array, rules: DestinationRules, version: np.ndarray, candidate: np.ndarray,
                  reason: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows that an exact or string rule of their version's zone table zones, and those zones
    (global ids): ``(rows, zones)``, rows ascending; ``None`` when no zone table has such rules.

    ``candidate``: rows with a destination that enrichment kept; ``version``: their version rows
    (any valid row elsewhere); ``reason``: after number normalisation, 0 for a number and
    INVALID_NUMBER for the rest. A row that is not a number but matches a rule gets ``reason`` 0
    (updated in place): its destination is a string destination. Costs nothing per row when the
    tables have no exact value a number can equal, besides finding the rows that are not numbers.
    """
    if not rules.any:
        return None
    found_rows, found_zones = [], []
    if rules.number_keys is not None:
        # Numbers as dialled, only those as long as an exact value (short codes are short).
        offsets, _, _ = string_buffers(other_party)
        numbers = np.flatnonzero(np.isin(np.diff(offsets), rules.number_key_lengths) & candidate & (reason == 0))
        numbers = numbers[rules.version_number_exact[version[numbers]]]
        if len(numbers):
            key = rules.number_keys.rows(other_party.take(pa.array(numbers, pa.int64())))
            zone = np.where(key >= 0, rules.number_zone[rules.version_table[version[numbers]], np.maximum(key, 0)], -1)
            found_rows.append(numbers[zone >= 0])
            found_zones.append(zone[zone >= 0])
    others = np.flatnonzero(reason == Reason.INVALID_NUMBER)   # few: not numbers, or bad ones
    others = others[candidate[others]]
    table = rules.version_table[version[others]]
    others, table = others[table >= 0], table[table >= 0]
    if len(others):
        encoded = pc.dictionary_encode(other_party.take(pa.array(others, pa.int64())))
        values = encoded.dictionary.to_pylist()
        n_tables = len(rules.tables)
        pair = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) * n_tables + table
        pairs, inverse = np.unique(pair, return_inverse=True)
        pair_zone = np.array([rules.tables[p % n_tables].zone_of(fold_destination(values[p // n_tables]))
                              for p in pairs.tolist()], np.int64)
        zone = pair_zone[inverse]
        found_rows.append(others[zone >= 0])
        found_zones.append(zone[zone >= 0])
        reason[others[zone >= 0]] = 0
    rows = np.concatenate(found_rows) if found_rows else np.zeros(0, np.int64)
    zones = np.concatenate(found_zones) if found_zones else np.zeros(0, np.int64)
    order = np.argsort(rows, kind="stable")
    return rows[order], zones[order]
