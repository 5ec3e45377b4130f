"""The reference data as loaded: frozen dataclasses, money already in exact int64 micro-units.

Everything here has passed validation (``rating.reference.load``); the rating code trusts it. Times
are int64 microseconds since the Unix epoch, UTC. Units are seconds (voice), messages (SMS) and
bytes (data). The file format is documented in ``docs/reference-data.md``.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from rating.identity import identity_key

SERVICES = ("voice", "sms", "data")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = ISO weekday - 1
ANY = "*"
HOME_ZONE = "HOME"  # built-in zone of data usage at home (no destination, not roaming)


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
    days: tuple[int, ...]   # 0 = Monday .. 6 = Sunday; empty with holiday=True
    from_minute: int        # minute of the local day, inclusive
    to_minute: int          # exclusive, up to 1440
    holiday: bool           # applies on the version's holiday-calendar dates only


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
