"""Control totals: small counter dicts emitted by each writer, summed by one CombineFn.

A counter dict holds int values, except ``rejected`` which maps reason code -> count. The summed
totals prove that nothing was lost: records_in = rated + rejected + duplicates.
"""

from __future__ import annotations

import apache_beam as beam

TOTAL_KEYS = ("records_in", "rated", "duplicates", "rated_seconds", "rated_messages", "rated_bytes",
              "charge_micros")


def empty_totals() -> dict:
    totals = {k: 0 for k in TOTAL_KEYS}
    totals["rejected"] = {}
    return totals


def add_counters(totals: dict, counters: dict) -> dict:
    for key, value in counters.items():
        if key == "rejected":
            for reason, count in value.items():
                totals["rejected"][reason] = totals["rejected"].get(reason, 0) + count
        else:
            totals[key] = totals.get(key, 0) + value
    return totals


def finish_totals(totals: dict) -> dict:
    """Add ``rejected_total`` and ``balanced``; sort reasons for a stable document."""
    out = dict(totals)
    out["rejected"] = dict(sorted(totals["rejected"].items()))
    rejected_total = sum(out["rejected"].values())
    out["rejected_total"] = rejected_total
    out["balanced"] = out["records_in"] == out["rated"] + rejected_total + out["duplicates"]
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
