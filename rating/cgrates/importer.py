"""CGRateS tariff plan folder -> the project's reference data (in memory; ``writer`` puts it on disk).

    result = convert_tariff_plan("tariffplans/tutorial", ImportOptions(arithmetic="cgrates"))
    result.report.partial      # True when something could not be expressed (see result.report)

One tenant per reference directory (usage records carry no tenant). Each selected category is one
usage type: call, sms and data the built-in voice, sms and data, any other a declared type named
after it (``mms`` -> MMS, ``*routes`` -> ROUTES; ``category_type``), counted in seconds when its rates
use time units (``60s``, ``1m``), else as a count. Every subject becomes a subscription: of kind
msisdn when it is an MSISDN (digits), else of kind account (the subject as an account code,
``subject_kind``); subjects come from the rating
profiles, from AccountActions.csv (accounts without a profile of their own are rated by ``*any``)
and from ``extra_subjects``. Subjects with the same rating timeline share a plan; ``ANY`` is the
plan of subjects without a profile (CGRateS's ``*any`` subject).
"""

from __future__ import annotations

import dataclasses
import re
import zoneinfo
from pathlib import Path

from rating.cgrates.bands import unique_name
from rating.cgrates.profiles import Interval, Profiles
from rating.cgrates.rates import ARITHMETIC, RateConverter
from rating.cgrates.report import Report
from rating.cgrates.resolve import RatingPlanIndex
from rating.cgrates.tariff_files import TariffPlan, read_tariff_plan
from rating.cgrates.values import ANY
from rating.cgrates.versions import VersionBuilder, VersionContent
from rating.cgrates.zones import ZoneTable, build_zone_table
from rating.identity import identity_key

SERVICES = ("voice", "sms", "data")   # the built-in usage types; a category may import as any other
DEFAULT_CATEGORIES = {"call": "voice", "sms": "sms", "data": "data"}
DEFAULT_TENANT = "cgrates.org"   # CGRateS's general.default_tenant
DEFAULT_PLAN = "ANY"
_CURRENCY = re.compile(r"[A-Z]{3}")
_NOT_PLAN_ID = re.compile(r"[^A-Za-z0-9_.+-]")
_TYPE_NAME = re.compile(r"[A-Za-z0-9_]+")
_TIME_UNIT = re.compile(r"[0-9.]+(?:h|m|s|ms|us|µs|ns)(?:[0-9.]+(?:h|m|s|ms|us|µs|ns))*")
_RESERVED_TYPES = ("plan_fee",)   # rating.reference.usage_types_yaml


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    tenant: str | None = None                                # None: the only tenant, else cgrates.org
    categories: tuple[tuple[str, str], ...] | None = None    # (category, usage type); None: every category
    arithmetic: str = "native"                               # native | cgrates
    currency: str = "EUR"
    timezone: str = "UTC"
    extra_subjects: tuple[str, ...] = ()

    def __post_init__(self):
        if self.arithmetic not in ARITHMETIC:
            raise ValueError(f"--rounding must be one of {', '.join(ARITHMETIC)}, got {self.arithmetic!r}")
        if _CURRENCY.fullmatch(self.currency) is None:
            raise ValueError(f"--currency must be an ISO 4217 code of 3 capital letters such as EUR, "
                             f"got {self.currency!r}")
        if self.timezone not in zoneinfo.available_timezones():
            raise ValueError(f"--timezone must be an IANA timezone name such as UTC or Europe/Berlin, "
                             f"got {self.timezone!r}")
        for subject in self.extra_subjects:
            if subject_kind(subject) is None:
                raise ValueError(f"--add-subject {subject!r} is neither an MSISDN (1 to 15 digits, no leading 0) "
                                 f"nor an account code (printable characters, no comma)")
        if self.categories is not None:
            services = [service for _, service in self.categories]
            for category, service in self.categories:
                if _TYPE_NAME.fullmatch(service) is None or service.lower() in _RESERVED_TYPES:
                    raise ValueError(f"--category {category}={service}: the usage type must be voice, sms, data or "
                                     f"a name of letters, digits and _ such as mms")
            services = [service.lower() for service in services]
            if len(set(services)) != len(services):
                raise ValueError(f"--category maps two categories to one usage type ({', '.join(services)}); a plan "
                                 f"has one set of rates per usage type")


@dataclasses.dataclass(frozen=True)
class PlanVersionOut:
    version: int
    valid_from_us: int
    valid_to_us: int | None
    chains: dict[str, tuple[str, ...]]   # service -> rating plans tried in order
    content: VersionContent


@dataclasses.dataclass(frozen=True)
class PlanOut:
    plan_id: str
    subjects: tuple[str, ...]
    versions: tuple[PlanVersionOut, ...]


@dataclasses.dataclass(frozen=True)
class ImportResult:
    source: Path
    options: ImportOptions
    tenant: str
    categories: dict[str, str]          # category -> usage type (lower case), built-in types first
    units: dict[str, str]               # usage type -> seconds | messages | bytes | count
    zones: ZoneTable
    plans: tuple[PlanOut, ...]
    subscriptions: tuple[tuple[str, str, int], ...]   # (subject, plan_id, valid_from_us); kind: subject_kind
    default_plan: str | None
    report: Report


def convert_tariff_plan(folder: str | Path, options: ImportOptions = ImportOptions()) -> ImportResult:
    """Convert the tariff plan in ``folder``. Raises ``ValueError`` for bad options or a folder that is
    not a tariff plan; what cannot be expressed goes to ``result.report``."""
    report = Report()
    tariff = read_tariff_plan(folder, report)
    tenant = _tenant(tariff, options, report)
    rows = [r for r in tariff.rating_profiles if r.tenant == tenant]
    categories = _categories(rows, options, report)
    services = tuple(categories.values())
    units = {service: _unit(tariff, [r for r in rows if r.category == category], service)
             for category, service in categories.items()}
    selected = [r for r in rows if r.category in categories]
    profiles = Profiles(selected, tuple(categories), options.timezone, report)
    index = RatingPlanIndex(tariff, report)
    for activation in profiles.activations():
        if not index.has_plan(activation.plan_id):
            report.unsupported(activation.where, f"rating plan {activation.plan_id!r} is not in RatingPlans.csv; "
                                                 f"this activation rates nothing")

    timelines = {subject: profiles.timeline(subject)
                 for subject in _subjects(tariff, tenant, rows, profiles, options, report)}
    for subject, timeline in timelines.items():
        if not timeline:
            report.note(f"subject {subject}", "no rating plan rates it in the imported categories (nor *any); "
                                              "no subscription")
    default = profiles.timeline(ANY) if profiles.has_default() else []
    used_plans = {p for intervals in [*timelines.values(), default] for i in intervals for c in i.chains for p in c}
    zones = build_zone_table(index.destinations(used_plans), tariff.destinations, report)
    seconds = tuple(service for service, unit in units.items() if unit == "seconds")
    builder = VersionBuilder(index, zones, RateConverter(tariff.rates, options.arithmetic, report, seconds=seconds),
                             services, report)
    plans, subscriptions = _plans(timelines, default, profiles, services, builder)
    return ImportResult(Path(folder), options, tenant, categories, units, zones, plans, subscriptions,
                        DEFAULT_PLAN if default else None, report)


def category_type(category: str) -> str:
    """The usage type a category imports as unless ``--category`` says otherwise: call, sms and data
    as voice, sms and data; another its name with characters other than letters, digits and _
    dropped (``-``, ``.`` and spaces become _), in the lower case rates use: ``*routes`` -> routes
    (type ROUTES), ``reseller1`` -> reseller1."""
    if category in DEFAULT_CATEGORIES:
        return DEFAULT_CATEGORIES[category]
    name = re.sub(r"[^a-z0-9_]", "", re.sub(r"[-. ]", "_", category.lower())) or "category"
    return name + "_" if name in _RESERVED_TYPES else name


def _unit(tariff: TariffPlan, rows, service: str) -> str:
    """The unit of a category's usage type: the built-in type's, else seconds when a rate its rating
    plans use has a time unit or increment (60s, 1m), else count."""
    builtin = {"voice": "seconds", "sms": "messages", "data": "bytes"}
    if service in builtin:
        return builtin[service]
    for row in rows:
        for plan_row in tariff.rating_plans.get(row.plan_id, ()):
            for dr in tariff.destination_rates.get(plan_row.dr_id, ()):
                for rate in tariff.rates.get(dr.rates_tag, ()):
                    if any(_TIME_UNIT.fullmatch(v.strip()) for v in (rate.rate_unit, rate.rate_increment)):
                        return "seconds"
    return "count"


def _tenant(tariff: TariffPlan, options: ImportOptions, report: Report) -> str:
    tenants = sorted({r.tenant for r in tariff.rating_profiles})
    if not tenants:
        raise ValueError(f"{tariff.folder}/RatingProfiles.csv has no rating profiles; nothing to import")
    if options.tenant is not None:
        if options.tenant not in tenants:
            raise ValueError(f"--tenant {options.tenant!r} has no rating profiles; tenants: {', '.join(tenants)}")
        tenant = options.tenant
    elif len(tenants) == 1:
        tenant = tenants[0]
    elif DEFAULT_TENANT in tenants:
        tenant = DEFAULT_TENANT
    else:
        raise ValueError(f"the rating profiles name several tenants ({', '.join(tenants)}); choose one with --tenant")
    for other in tenants:
        if other != tenant:
            count = sum(1 for r in tariff.rating_profiles if r.tenant == other)
            report.note(f"tenant {other}", f"not imported ({count} rating profiles): a reference directory holds one "
                                           f"tenant; import it with --tenant {other} into another directory")
    return tenant


def _categories(rows, options: ImportOptions, report: Report) -> dict[str, str]:
    present = list(dict.fromkeys(r.category for r in rows))
    if options.categories is None:
        chosen: dict[str, str] = {}
        for category in present:   # two categories that name one type (mms, MMS): the second gets a suffix
            service, n = category_type(category), 1
            while service in chosen.values():
                n += 1
                service = f"{category_type(category)}_{n}"
            chosen[category] = service
    else:
        chosen = {category: service.lower() for category, service in options.categories}
        for category in chosen:
            if category not in present:
                raise ValueError(f"--category {category}: no rating profile of the tenant has this category; present: "
                                 f"{', '.join(present)}")
        for category in present:
            if category not in chosen:
                report.note(f"category {category}", "not selected with --category; not imported")
    if not chosen:
        raise ValueError(f"no category to import (present: {', '.join(present)}); select some with "
                         f"--category CATEGORY[=TYPE]")
    return dict(sorted(chosen.items(), key=lambda item: (item[1] not in SERVICES,
                                                         SERVICES.index(item[1]) if item[1] in SERVICES else 0,
                                                         item[1])))


def _subjects(tariff, tenant, rows, profiles: Profiles, options, report: Report) -> list[str]:
    """Subjects to subscribe: MSISDNs (kind msisdn) and any other subject that is a valid account code
    (kind account: ANY2CNT, RP_RETAIL, rs1...); the rest are reported."""
    fallback_targets = {f.strip() for r in rows for f in r.fallback_subjects.split(";") if f.strip()}
    candidates: dict[str, str] = {}   # subject -> where it comes from
    for row in rows:
        if row.subject != ANY:
            candidates.setdefault(row.subject, row.where)
    for account_tenant, account in tariff.accounts:
        if account_tenant == tenant:
            candidates.setdefault(account, "AccountActions.csv")
    for subject in options.extra_subjects:
        candidates.setdefault(subject, "--add-subject")
    subjects = []
    for subject, where in sorted(candidates.items()):
        if subject_kind(subject) is not None:
            subjects.append(subject)
        elif subject in profiles.subjects and subject not in fallback_targets:
            report.unsupported(where, f"subject {subject!r} is neither an MSISDN nor an account code (printable, "
                                      f"no comma), so it cannot be a subscription; its rating profile is not imported")
        elif subject in profiles.subjects:
            report.note(where, f"subject {subject!r} cannot be a subscription: its profile is used as a fallback "
                               f"of other subjects only")
        else:
            report.note(where, f"{subject!r} is neither an MSISDN nor an account code; no subscription")
    return subjects


def subject_kind(subject: str) -> str | None:
    """The subscriber kind a CGRateS subject is imported as: msisdn for an MSISDN, else account
    (CGRateS subjects are account codes, SIP users or MSISDNs alike); None when it can be neither."""
    for kind in ("msisdn", "account"):
        if identity_key(kind, subject) is not None:
            return kind
    return None


def _plans(timelines: dict[str, list[Interval]], default: list[Interval], profiles: Profiles,
           services: tuple[str, ...], builder: VersionBuilder):
    groups: dict[tuple[Interval, ...], list[str]] = {}
    if default:
        groups[tuple(default)] = []
    for subject, timeline in timelines.items():
        if timeline:
            groups.setdefault(tuple(timeline), []).append(subject)
    taken: set[str] = set()
    plans = []
    subscriptions = []
    for timeline, subjects in groups.items():
        if timeline == tuple(default):
            plan_id = unique_name(DEFAULT_PLAN, taken)
        else:
            base = "+".join(profiles.own_plans(subjects[0])) or f"SUBJECT_{subjects[0]}"
            plan_id = unique_name(_NOT_PLAN_ID.sub("_", base), taken)
        versions = tuple(
            PlanVersionOut(n, interval.from_us, interval.to_us, dict(zip(services, interval.chains)),
                           builder.build(interval.chains))
            for n, interval in enumerate(timeline, start=1))
        plans.append(PlanOut(plan_id, tuple(subjects), versions))
        subscriptions += [(subject, plan_id, timeline[0].from_us) for subject in subjects]
    return tuple(plans), tuple(sorted(subscriptions))


