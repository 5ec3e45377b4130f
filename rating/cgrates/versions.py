"""One plan version: the bands and explicit (service, zone, band) rates for a set of chains.

For each usage type, each zone (voice and SMS; data is zoned ``HOME`` and rated by the ``*any``
destination, CGRateS's rule for events without a destination; other types both) and each band, the rate is the one
CGRateS would pick (``RatingPlanIndex.resolve``). A zone priced by the same CGRateS rate in every
band gets one rate with band ``*``; so does one priced alike on every ordinary day, with a rate of
its own in each holiday band that prices it differently.

The project takes the connect fee, the maximum and the rounding from the rate in force at the
start of the event; CGRateS takes the connect fee from the first piece too, but rounds with the
longest rounding of all pieces and applies each piece's MaxCost as it adds the pieces up. A zone
whose rates in different bands disagree on those is reported: calls crossing those bands may differ.
"""

from __future__ import annotations

import dataclasses

from rating.cgrates.bands import BandLayout, layout_bands
from rating.cgrates.rates import RateConverter, RateSpec
from rating.cgrates.report import Report
from rating.cgrates.resolve import Candidate, RatingPlanIndex
from rating.cgrates.zones import ZoneTable

HOME = "HOME"   # rating.reference.model.HOME_ZONE: data at home has no destination
ANY_BAND = "*"


@dataclasses.dataclass(frozen=True)
class RateEntry:
    service: str
    zone: str
    band: str          # a band of the version, or "*"
    spec: RateSpec
    chosen: Candidate  # what CGRateS picks (for the import record)


@dataclasses.dataclass(frozen=True)
class VersionContent:
    bands: BandLayout
    rates: tuple[RateEntry, ...]


class VersionBuilder:
    """Builds (and remembers) the content of a version for each distinct chains tuple."""

    def __init__(self, index: RatingPlanIndex, zones: ZoneTable, converter: RateConverter,
                 services: tuple[str, ...], report: Report):
        self._index = index
        self._zones = zones
        self._converter = converter
        self._services = services
        self._report = report
        self._built: dict[tuple, VersionContent] = {}

    def build(self, chains: tuple[tuple[str, ...], ...]) -> VersionContent:
        if chains not in self._built:
            self._built[chains] = self._build(chains)
        return self._built[chains]

    def _build(self, chains: tuple[tuple[str, ...], ...]) -> VersionContent:
        plan_ids = sorted({p for chain in chains for p in chain})
        keys: list[tuple[str, str, tuple[str, ...]]] = []   # (service, zone, rating plan chain)
        for service, chain in zip(self._services, chains):
            if not chain:
                continue
            # Voice and SMS zone by destination, data has none (HOME: the *any destination), a
            # declared type zones by its destination when it has one, else HOME.
            zones = ([HOME] if service == "data" else sorted(self._zones.chains) if service in ("voice", "sms")
                     else sorted(self._zones.chains) + [HOME])
            keys += [(service, zone, chain) for zone in zones]
        memo: dict[frozenset[str], tuple] = {}

        def winners(active: frozenset[str]) -> tuple:
            if active not in memo:
                memo[active] = tuple(
                    self._index.resolve(chain, self._zones.chains.get(zone, ()), active)
                    for _, zone, chain in keys)
            return memo[active]

        timings = [self._index.timings[tag] for tag in sorted(self._index.timing_tags(plan_ids))]
        where = "rating plans " + ", ".join(plan_ids)
        labels = [f"{service} zone {zone}" for service, zone, _ in keys]
        layout = layout_bands(timings, winners, labels, self._report, [zone for _, zone, _ in keys])
        rates = []
        for i, (service, zone, _) in enumerate(keys):
            # A holiday band prices only the zones its rules name.
            bands = [band for band in layout.vectors if band not in layout.scopes or i in layout.scopes[band]]
            chosen = {band: layout.vectors[band][i] for band in bands if layout.vectors[band][i] is not None}
            if not chosen:
                continue
            specs = {band: self._converter.convert(c.dr, service) for band, c in chosen.items()}
            self._check_crossing(service, zone, chosen, specs, where)
            weekly = {chosen.get(band) for band in bands if band not in layout.scopes}
            if len(chosen) == len(bands) and len(weekly) == 1:
                # One rate on every ordinary day: band "*", and the holiday bands that differ on their own.
                common = weekly.pop()
                band = next(band for band in bands if chosen[band] == common)
                if specs[band] is not None:
                    rates.append(RateEntry(service, zone, ANY_BAND, specs[band], common))
                for band in sorted(band for band in chosen if chosen[band] != common):
                    if specs[band] is not None:
                        rates.append(RateEntry(service, zone, band, specs[band], chosen[band]))
                continue
            for band in sorted(chosen):
                if specs[band] is not None:
                    rates.append(RateEntry(service, zone, band, specs[band], chosen[band]))
        return VersionContent(layout, tuple(rates))

    def _check_crossing(self, service, zone, chosen, specs, where) -> None:
        distinct = {s for s in specs.values() if s is not None}
        if len(distinct) < 2:
            return
        bands = ", ".join(sorted(chosen))
        if len({(s.rounding, s.maximum_charge) for s in distinct}) > 1:
            self._report.unsupported(
                f"{where}, {service} zone {zone}",
                f"its rates in bands {bands} differ in rounding or MaxCost; a call crossing between them is rounded "
                f"and capped by the rate at its start, while CGRateS uses the longest rounding and applies each "
                f"piece's MaxCost")
        grids = {tuple((step.from_units, step.increment_units) for step in s.steps) for s in distinct}
        if any(s.moved_steps for s in distinct) and len(grids) > 1:
            self._report.unsupported(
                f"{where}, {service} zone {zone}",
                f"a rate in bands {bands} has GroupIntervalStarts moved onto its increment grid and the others have "
                f"other steps; a call that enters it from another band mid-call may be priced from a different step "
                f"than in CGRateS")
