"""Control totals: small counter dicts emitted by each writer, summed by one CombineFn.

A counter dict holds int values, except ``rejected`` which maps reason code -> count. The summed
totals prove that nothing was lost: records_in + prior_in = rated + rejected + duplicates, where
``prior_in`` counts the events of the store a batch run rates again (``pipelines.prior``).
"""

from __future__ import annotations

import apache_beam as beam

TOTAL_KEYS = ("records_in", "prior_in", "rated", "duplicates", "rated_seconds", "rated_messages", "rated_bytes",
              "charge_micros")


def empty_totals() -> dict:
    totals = {k: 0 for k in TOTAL_KEYS}
    totals["rejected"] = {}
    totals["cycles"] = {}
    return totals


def add_counters(totals: dict, counters: dict) -> dict:
    """Add ``counters`` into ``totals`` in place: numbers are summed, nested dicts merged key by key."""
    for key, value in counters.items():
        if isinstance(value, dict):
            add_counters(totals.setdefault(key, {}), value)
        else:
            totals[key] = totals.get(key, 0) + value
    return totals


def finish_totals(totals: dict) -> dict:
    """Add ``rejected_total`` and ``balanced``; sort reasons for a stable document."""
    out = dict(totals)
    out["rejected"] = dict(sorted(totals["rejected"].items()))
    rejected_total = sum(out["rejected"].values())
    out["rejected_total"] = rejected_total
    out["records_balanced"] = out["records_in"] + out["prior_in"] == out["rated"] + rejected_total + out["duplicates"]
    cycles = {}
    for cycle, entry in sorted(totals["cycles"].items()):
        entry = dict(entry)
        entry.setdefault("rated_micros", 0)
        entry.setdefault("usage_line_micros", 0)
        entry["money_balanced"] = entry["rated_micros"] == entry["usage_line_micros"] and \
            entry.get("invoice_lines_minor", {}) == entry.get("invoice_totals_minor", {})
        cycles[cycle] = entry
    out["cycles"] = cycles
    out["money_balanced"] = all(c["money_balanced"] for c in cycles.values())
    out["balanced"] = out["records_balanced"] and out["money_balanced"]
    return out


class SumCounters(beam.CombineFn):
    def create_accumulator(self):
        return empty_totals()

    def add_input(self, accumulator, counters):
        return add_counters(accumulator, counters)

    def merge_accumulators(self, accumulators):
        merged = empty_totals()
        for acc in accumulators:
            add_counters(merged, acc)
        return merged

    def extract_output(self, accumulator):
        return finish_totals(accumulator)
