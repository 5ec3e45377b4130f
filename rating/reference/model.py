"""The reference data as loaded: frozen dataclasses, money already in exact int64 micro-units.

Everything here has passed validation (``rating.reference.load``); the rating code trusts it. Times
are int64 microseconds since the Unix epoch, UTC. Units are seconds (voice), messages (SMS) and
bytes (data), and each declared usage type's unit (``UsageType``). The file format is documented in ``docs/reference-data.md``.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from rating.identity import identity_key

SERVICES = ("voice", "sms", "data")   # the built-in usage types (codes 0, 1, 2), as rates name them
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = ISO weekday - 1
ANY = "*"
HOME_ZONE = "HOME"  # built-in zone of data usage at home (no destination, not roaming)
POOL_SUBSCRIPTION, POOL_ACCOUNT = "subscription", "account"   # an allowance's ``pool``
POOLS = (POOL_SUBSCRIPTION, POOL_ACCOUNT)


class RoundingMode(enum.Enum):
    UP = "up"              # away from zero
    DOWN = "down"          # toward zero
    HALF_UP = "half_up"    # nearest, ties away from zero
    HALF_EVEN = "half_even"  # nearest, ties to even (banker's)


@dataclasses.dataclass(frozen=True)
class Rounding:
    """Round to ``decimals`` decimal places of the currency unit (0..6) with ``mode``."""
    mode: RoundingMode
    decimals: int = 6


@dataclasses.dataclass(frozen=True)
class Currency:
    code: str
    minor_unit_digits: int  # 2 for EUR, 0 for JPY


@dataclasses.dataclass(frozen=True)
class Operator:
    name: str
    home_networks: tuple[str, ...]       # MCC+MNC of the operator's own networks
    currencies: dict[str, Currency]
    invoice_rounding: RoundingMode       # invoice lines to minor units
    tax_rounding: RoundingMode           # tax per line to minor units


@dataclasses.dataclass(frozen=True)
class Account:
    account_id: str
    currency: str
    timezone: str          # IANA name
    bill_cycle_day: int    # 1..28
    tax_region: str


@dataclasses.dataclass(frozen=True)
class Subscription:
    subscriber: str              # the identity's value, normalised (rating.identity)
    account_id: str
    plan_id: str
    valid_from_us: int           # inclusive
    valid_to_us: int | None      # exclusive; None = open-ended
    kind: str = "msisdn"         # msisdn | imsi | sip | account

    @property
    def key(self) -> str:
        """The identity's lookup key (``rating.identity``): the bare digits for an MSISDN."""
        return self.subscriber if self.kind == "msisdn" else identity_key(self.kind, self.subscriber)

    @property
    def msisdn(self) -> str | None:
        """The MSISDN of an MSISDN subscription; ``None`` for other kinds."""
        return self.subscriber if self.kind == "msisdn" else None


@dataclasses.dataclass(frozen=True)
class TaxRate:
    tax_region: str
    valid_from_us: int
    rate_millionths: int   # 0.19 -> 190000
    name: str


@dataclasses.dataclass(frozen=True)
class Numbering:
    country_code: str            # digits, e.g. "49"
    international_prefix: str    # e.g. "00"
    trunk_prefix: str            # e.g. "0"; may be empty


@dataclasses.dataclass(frozen=True)
class BandRule:
    band: str
    days: tuple[int, ...]   # 0 = Monday .. 6 = Sunday (a holiday rule: the weekdays of the date)
    from_minute: int        # minute of the local day, inclusive
    to_minute: int          # exclusive, up to 1440
    holiday: bool           # applies on the version's holiday-calendar dates only
    zones: tuple[str, ...] = (ANY,)   # a holiday rule: the event zones it applies to, or (ANY,)


@dataclasses.dataclass(frozen=True)
class Step:
    from_units: int       # elapsed units from the start of the event where the step begins
    price_micros: int     # price per ``per_units``
    per_units: int
    increment_units: int  # charging increment


@dataclasses.dataclass(frozen=True)
class TierLevel:
    up_to_units: int | None  # cumulative cycle units where the level ends; None = unbounded
    price_micros: int
    per_units: int


@dataclasses.dataclass(frozen=True)
class Tiers:
    group: str              # cumulative counter name, per account and cycle
    increment_units: int    # each event's units are rounded up to this first
    levels: tuple[TierLevel, ...]


@dataclasses.dataclass(frozen=True)
class Rate:
    service: str            # voice | sms | data
    zone: str               # zone name or ANY
    band: str               # band name or ANY
    connect_fee_micros: int
    steps: tuple[Step, ...]            # empty when tiers is set
    tiers: Tiers | None
    minimum_micros: int | None
    maximum_micros: int | None
    increment_rounding: Rounding | None   # round each increment's price before multiplying
    rounding: Rounding | None             # per-event rounding; None = the version's

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.service, self.zone, self.band)


@dataclasses.dataclass(frozen=True)
class Allowance:
    name: str
    service: str
    zones: tuple[str, ...]   # zone names, or (ANY,)
    units: int               # per full cycle, before proration
    order: int               # consumption order among allowances that cover an event
    pool: str = POOL_SUBSCRIPTION   # whose balance: the subscription's, or the account's (shared)

    @property
    def pooled(self) -> bool:
        """One balance per (account, cycle, name), shared by the account's subscriptions."""
        return self.pool == POOL_ACCOUNT


@dataclasses.dataclass(frozen=True)
class RecurringFee:
    name: str
    description: str
    amount_micros: int       # per full cycle, before proration


@dataclasses.dataclass(frozen=True)
class PlanVersion:
    version: int
    valid_from_us: int
    valid_to_us: int | None      # exclusive; None = until the next version (or forever)
    zone_table: str              # key into ReferenceData.zone_tables
    roaming_table: str | None    # key into ReferenceData.roaming_tables
    holiday_calendar: str | None  # key into ReferenceData.calendars
    rounding: Rounding
    zero_duration_charged: bool
    default_band: str
    band_rules: tuple[BandRule, ...]
    rates: tuple[Rate, ...]
    allowances: tuple[Allowance, ...]
    recurring_fees: tuple[RecurringFee, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    plan_id: str
    name: str
    currency: str
    timezone: str
    numbering: Numbering
    versions: tuple[PlanVersion, ...]   # sorted by valid_from_us


@dataclasses.dataclass(frozen=True)
class ZoneTable:
    name: str                                # path relative to the reference dir, e.g. zones/world.csv
    prefixes: tuple[tuple[str, str], ...]    # (digits prefix, zone), unique prefixes
    # Non-numeric destinations (zone tables only; roaming tables have neither): values case-folded
    # (str.casefold), sorted, unique within each tuple. An ``exact`` rule may be digits (a short code).
    string_prefixes: tuple[tuple[str, str], ...] = ()   # (prefix with a character other than 0-9, zone)
    exact: tuple[tuple[str, str], ...] = ()             # (whole destination as dialled, zone)


UNITS = ("seconds", "messages", "bytes", "count")
DESTINATIONS = ("required", "none", "optional")
# Largest raw units one event may carry, per unit, unless a type says otherwise (``max_units``).
DEFAULT_MAX_UNITS = {"seconds": 72 * 3600, "messages": 1_000_000, "bytes": 2**44, "count": 10**12}
MAX_UNITS_LIMIT = 2**44   # no type may allow more units per event (usage_types.yaml max_units)


@dataclasses.dataclass(frozen=True)
class UsageType:
    """A usage type (usage_types.yaml): what its units are and how its events are zoned.

    ``name`` is upper case (``VOICE``, ``MMS``); rates and allowances name it in lower case.
    ``unit_name`` names a ``count`` unit (``calls``, ``kWh``); ``increment`` is used by steps and
    tiers that give none; ``rounding`` rounds its events' money when the rate has no rounding of
    its own (before the version's); ``max_units`` is the largest event (above: OVERFLOW).
    """
    name: str
    unit: str                       # one of UNITS
    destination: str                # one of DESTINATIONS
    max_units: int
    unit_name: str | None = None
    increment: int | None = None
    rounding: Rounding | None = None

    @property
    def service(self) -> str:
        """How rates, allowances and rate ids name the type: ``voice``, ``mms``."""
        return self.name.lower()


BUILTIN_USAGE_TYPES = (
    UsageType("VOICE", "seconds", "required", DEFAULT_MAX_UNITS["seconds"]),
    UsageType("SMS", "messages", "required", DEFAULT_MAX_UNITS["messages"]),
    UsageType("DATA", "bytes", "none", DEFAULT_MAX_UNITS["bytes"]),
)


def builtin_usage_types() -> dict[str, UsageType]:
    return {t.name: t for t in BUILTIN_USAGE_TYPES}


def ordered_usage_types(types: dict[str, UsageType]) -> tuple[UsageType, ...]:
    """Types by code: VOICE 0, SMS 1, DATA 2, then the declared others sorted by name."""
    builtin = [types.get(t.name, t) for t in BUILTIN_USAGE_TYPES]
    return tuple(builtin) + tuple(types[n] for n in sorted(types) if n not in {t.name for t in BUILTIN_USAGE_TYPES})


@dataclasses.dataclass(frozen=True)
class Calendar:
    name: str
    dates: tuple[str, ...]    # ISO dates YYYY-MM-DD, local to the plan's timezone


@dataclasses.dataclass(frozen=True)
class ReferenceData:
    root: Path
    operator: Operator
    plans: dict[str, Plan]
    zone_tables: dict[str, ZoneTable]
    roaming_tables: dict[str, ZoneTable]   # prefixes are MCC+MNC digits
    calendars: dict[str, Calendar]
    accounts: dict[str, Account]
    subscriptions: tuple[Subscription, ...]   # sorted by (key, valid_from_us)
    tax_rates: tuple[TaxRate, ...]            # sorted by (tax_region, valid_from_us)
    usage_types: dict[str, UsageType] = dataclasses.field(default_factory=builtin_usage_types)  # name -> type
