"""Which destination rate CGRateS picks for a zone while a given set of timings is active.

For a chain of rating plans (the subject's, then its fallbacks'), the first plan that has a rate
wins. Within a plan, the destination's prefixes are walked from longest to shortest, then the
``*any`` destination; at the first prefix with a rate whose timing is active, the highest weight
wins, and among equal weights the timing that started most recently (EXAMPLES.md, rule 2). A tie
beyond that is broken by the order of RatingPlans.csv, and reported.
"""

from __future__ import annotations

import dataclasses

from rating.cgrates.report import Report
from rating.cgrates.tariff_files import DestinationRateRow, TariffPlan
from rating.cgrates.timings import ANY_TIMING, Timing, parse_timing
from rating.cgrates.values import ANY, parse_weight
from rating.cgrates.zones import Chain


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One rate a rating plan offers a destination in a timing."""
    plan_id: str
    dr: DestinationRateRow
    timing: str
    weight: float
    order: int            # RatingPlans.csv position

    def describe(self) -> str:
        return (f"{self.plan_id}: {self.dr.dr_id} ({self.dr.destination_id}) -> {self.dr.rates_tag}, "
                f"timing {self.timing}, weight {self.weight:g}")


class RatingPlanIndex:
    """Rating plans by destination, with their timings parsed; unusable rows are reported."""

    def __init__(self, tariff: TariffPlan, report: Report):
        self._report = report
        self.timings: dict[str, Timing] = {ANY: ANY_TIMING}
        for tag, row in tariff.timings.items():
            if tag == ANY:
                report.note(row.where, "timing *any is built in; this definition is ignored")
                continue
            timing = parse_timing(row, report)
            if timing is not None:
                self.timings[tag] = timing
        self._by_plan: dict[str, dict[str, list[Candidate]]] = {}
        for plan_id, rows in tariff.rating_plans.items():
            by_destination: dict[str, list[Candidate]] = {}
            for row in rows:
                if row.timing_tag not in self.timings:
                    if row.timing_tag not in tariff.timings:
                        report.unsupported(row.where, f"{plan_id}: timing {row.timing_tag!r} is not in Timings.csv; "
                                                      f"rates of {row.dr_id} in it are not imported")
                    continue
                drs = tariff.destination_rates.get(row.dr_id)
                if not drs:
                    report.unsupported(row.where, f"{plan_id}: destination rates {row.dr_id!r} are not in "
                                                  f"DestinationRates.csv; not imported")
                    continue
                try:
                    weight = parse_weight(row.weight)
                except ValueError as error:
                    report.unsupported(row.where, f"{plan_id}: {error}; row not imported")
                    continue
                for dr in drs:
                    if dr.destination_id != ANY and dr.destination_id not in tariff.destinations:
                        report.unsupported(dr.where, f"{dr.dr_id}: destination {dr.destination_id!r} is not in "
                                                     f"Destinations.csv; not imported")
                        continue
                    candidate = Candidate(plan_id, dr, row.timing_tag, weight, row.order)
                    by_destination.setdefault(dr.destination_id, []).append(candidate)
            self._by_plan[plan_id] = by_destination

    def has_plan(self, plan_id: str) -> bool:
        return plan_id in self._by_plan

    def destinations(self, plan_ids) -> set[str]:
        return {d for p in plan_ids for d in self._by_plan.get(p, {})}

    def timing_tags(self, plan_ids) -> set[str]:
        return {c.timing for p in plan_ids for cands in self._by_plan.get(p, {}).values() for c in cands}

    def resolve(self, chain: tuple[str, ...], zone: Chain, active: frozenset[str]) -> Candidate | None:
        """The rate CGRateS uses for a number of ``zone`` while the timings ``active`` are active."""
        for plan_id in chain:
            by_destination = self._by_plan.get(plan_id, {})
            for level in zone + ((ANY,),):
                candidates = [c for dest in level for c in by_destination.get(dest, ()) if c.timing in active]
                if candidates:
                    return self._best(candidates)
        return None

    def _best(self, candidates: list[Candidate]) -> Candidate:
        def rank(c: Candidate):
            return (c.weight, self.timings[c.timing].start_minute)
        top = max(rank(c) for c in candidates)
        tied = sorted((c for c in candidates if rank(c) == top), key=lambda c: c.order)
        if len({(c.dr.rates_tag, c.dr.rounding_method, c.dr.rounding_decimals, c.dr.max_cost,
                 c.dr.max_cost_strategy) for c in tied}) > 1:
            self._report.note(tied[0].dr.where, "equal weight and start: " + "; ".join(c.describe() for c in tied)
                              + " — the first listed in RatingPlans.csv is used (CGRateS leaves the order open)")
        return tied[0]
