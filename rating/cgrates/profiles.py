"""Rating profiles -> which rating plans rate a subject, service by service, over time.

CGRateS looks up ``tenant:category:subject``; a subject without a profile in that category is
rated by the ``*any`` subject's profile. The activation in force is the latest one at or before the
event (before a subject's first activation CGRateS falls back to ``*any``). If the activation's
rating plan has no rate for the destination, its fallback subjects (RatesFallbackSubject, ``;``
separated) are tried in order, each with its own profile and fallbacks, at most three levels deep
(``RECURSION_MAX_DEPTH`` in engine/calldesc.go).

So at any instant a subject has, per category, a *chain* of rating plans: the first that rates the
destination wins. Chains change only at activation times; a subject's timeline is the list of
intervals over which its chains stay the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

from rating.cgrates.report import Report
from rating.cgrates.tariff_files import RatingProfileRow
from rating.cgrates.values import ANY

RECURSION_MAX_DEPTH = 3
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

Chains = tuple[tuple[str, ...], ...]   # per selected category (in service order): rating plan ids


@dataclasses.dataclass(frozen=True)
class Activation:
    time_us: int
    plan_id: str
    fallbacks: tuple[str, ...]
    where: str


@dataclasses.dataclass(frozen=True)
class Interval:
    from_us: int
    to_us: int | None      # exclusive; None = open-ended
    chains: Chains


class Profiles:
    """The activations of one tenant's selected categories."""

    def __init__(self, rows: list[RatingProfileRow], categories: tuple[str, ...], timezone: str,
                 report: Report):
        self.categories = categories
        self._by_key: dict[tuple[str, str], list[Activation]] = {}
        zone = zoneinfo.ZoneInfo(timezone)
        for row in rows:
            try:
                time_us = _instant_us(row.activation_time, zone)
            except ValueError as error:
                report.unsupported(row.where, f"{error}; this activation is not imported")
                continue
            fallbacks = tuple(s.strip() for s in row.fallback_subjects.split(";") if s.strip())
            activation = Activation(time_us, row.plan_id, fallbacks, row.where)
            self._by_key.setdefault((row.category, row.subject), []).append(activation)
        for activations in self._by_key.values():
            activations.sort(key=lambda a: a.time_us)

    @property
    def subjects(self) -> set[str]:
        """Subjects with a profile of their own (``*any`` excluded)."""
        return {subject for _, subject in self._by_key if subject != ANY}

    def activations(self) -> list[Activation]:
        return [a for acts in self._by_key.values() for a in acts]

    def own_plans(self, subject: str) -> list[str]:
        """Rating plans of the subject's own activations, in activation order."""
        own = sorted((a for (_, s), acts in self._by_key.items() if s == subject for a in acts),
                     key=lambda a: a.time_us)
        return list(dict.fromkeys(a.plan_id for a in own))

    def has_default(self) -> bool:
        return any(subject == ANY for _, subject in self._by_key)

    def timeline(self, subject: str) -> list[Interval]:
        """Intervals of constant chains for ``subject`` (``ANY`` for a subject without profiles)."""
        bounds = sorted({a.time_us for acts in self._by_key.values() for a in acts})
        intervals: list[Interval] = []
        for index, start in enumerate(bounds):
            chains = tuple(self.chain(category, subject, start) for category in self.categories)
            end = bounds[index + 1] if index + 1 < len(bounds) else None
            if intervals and intervals[-1].chains == chains and intervals[-1].to_us == start:
                intervals[-1] = dataclasses.replace(intervals[-1], to_us=end)
            else:
                intervals.append(Interval(start, end, chains))
        return [i for i in intervals if any(i.chains)]

    def chain(self, category: str, subject: str, t_us: int) -> tuple[str, ...]:
        """Rating plans tried, in order, for ``subject`` in ``category`` at ``t_us``."""
        if (category, subject) not in self._by_key:
            subject = ANY   # the default subject, only when the subject has no profile at all
        found = self._chain(category, subject, t_us, 1)
        return tuple(dict.fromkeys(found or ()))

    def _chain(self, category: str, subject: str, t_us: int, depth: int) -> list[str] | None:
        activations = self._by_key.get((category, subject))
        if activations is None or depth > RECURSION_MAX_DEPTH:
            return None
        current = None
        for activation in activations:
            if activation.time_us <= t_us:
                current = activation
        if current is None:   # before the subject's first activation: CGRateS falls back to *any
            return None if subject == ANY else self._chain(category, ANY, t_us, depth + 1)
        plans = [current.plan_id]
        for fallback in current.fallbacks:
            plans += self._chain(category, fallback, t_us, depth + 1) or []
        return plans


def _instant_us(text: str, zone: zoneinfo.ZoneInfo) -> int:
    value = text.strip()
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"ActivationTime {text!r} is not an ISO 8601 time such as 2014-01-14T00:00:00Z") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=zone)
    return (instant - _EPOCH) // dt.timedelta(microseconds=1)
