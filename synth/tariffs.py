"""The tariff plans of the generated operator, as the dicts written to ``plans/<PLAN_ID>.yaml``.

Five plans: MOBILE_S and MOBILE_L (German consumers), BUSINESS_PRO (German business, per-second
billing, pooled data), UK_FLEX (GBP) and US_TALK (USD). Some plans get a second version in the
middle of the generated period (a price change). Every version has a ``*``/``*`` rate per service,
so any (service, zone, band) a valid record reaches has a rate; also for the declared usage types
MMS and API_CALLS (``USAGE_TYPES``, written to usage_types.yaml).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

MIB = 1_048_576
GIB = 1_073_741_824


@dataclasses.dataclass(frozen=True)
class PlanInfo:
    plan_id: str
    name: str
    country: str          # home country: DE, GB, US
    currency: str
    timezone: str
    business: bool
    data_apn: str


PLANS = (
    PlanInfo("MOBILE_S", "Mobile S", "DE", "EUR", "Europe/Berlin", False, "internet.demo.de"),
    PlanInfo("MOBILE_L", "Mobile L", "DE", "EUR", "Europe/Berlin", False, "internet.demo.de"),
    PlanInfo("BUSINESS_PRO", "Business Pro", "DE", "EUR", "Europe/Berlin", True, "corp.demo.de"),
    PlanInfo("UK_FLEX", "Flex 500", "GB", "GBP", "Europe/London", False, "mobile.demo.co.uk"),
    PlanInfo("US_TALK", "Talk & Text", "US", "USD", "America/New_York", False, "fast.demo.us"),
)
NUMBERING = {"DE": ("49", "00", "0"), "GB": ("44", "00", "0"), "US": ("1", "011", "1")}
ZONE_TABLES = {"DE": "zones/de.csv", "GB": "zones/gb.csv", "US": "zones/us.csv"}
ROAMING_TABLES = {"DE": "roaming/de.csv", "GB": "roaming/gb.csv", "US": "roaming/us.csv"}
CALENDARS = {"DE": "calendars/de.csv", "GB": "calendars/gb.csv", "US": "calendars/us.csv"}


# The generated reference's usage_types.yaml: MMS (messages, zoned by destination) and API calls (a
# count, no destination, billed in tens). Records of them are written with the v3 schema only.
USAGE_TYPES = {"usage_types": [
    {"name": "MMS", "unit": "messages", "destination": "required", "increment": 1},
    {"name": "API_CALLS", "unit": "count", "unit_name": "calls", "destination": "none", "increment": 10},
]}


def _declared_type_rates(country: str) -> list[dict]:
    """MMS and API-call rates of every version: steps without increment take the type's."""
    mms, call = {"DE": ("0.39", "0.0004"), "GB": ("0.35", "0.0003"), "US": ("0.25", "0.0005")}[country]
    return [{"service": "mms", "zone": "*", "band": "*", "connect_fee": "0.00",
             "steps": [{"from": 0, "price": mms, "per": 1}]},
            {"service": "api_calls", "zone": "*", "band": "*", "connect_fee": "0.00",
             "steps": [{"from": 0, "price": call, "per": 1}]}]


class Instant(str):
    """An ISO 8601 instant, written to YAML as a plain (unquoted) timestamp like the docs show."""


def local_midnight(day: dt.date, timezone: str) -> Instant:
    """``day`` 00:00 in ``timezone`` as an ISO 8601 instant with that day's UTC offset."""
    return Instant(dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).isoformat())


def _money(value: Decimal | str) -> str:
    text = format(Decimal(value).quantize(Decimal("0.000001")).normalize(), "f")
    return text if "." in text else text + ".00"


def _scaled(price: str, factor: str) -> str:
    return _money(Decimal(price) * Decimal(factor))


def _steps(*steps: tuple[int, str, int, int]) -> list[dict]:
    return [{"from": f, "price": p, "per": per, "increment": inc} for f, p, per, inc in steps]


def _rate(service: str, zone: str, band: str, steps: list[dict], connect: str = "0.00", **extra) -> dict:
    rate = {"service": service, "zone": zone, "band": band, "connect_fee": connect}
    for key in ("minimum_charge", "maximum_charge"):
        if key in extra:
            rate[key] = extra.pop(key)
    rate.update(extra)
    rate["steps"] = steps
    return rate


def _per_minute(price: str, first: int = 60, then: int = 60) -> list[dict]:
    """``price`` per minute charged in a first block of ``first`` seconds then ``then``-second blocks
    (60/60, 30/6, 60/1 ...)."""
    if first == then:
        return _steps((0, price, 60, first))
    return _steps((0, price, 60, first), (first, price, 60, then))


def _sms(price: str) -> list[dict]:
    return _steps((0, price, 1, 1))


def _data_tiers(group: str, levels: list[tuple[int | None, str]]) -> dict:
    return {"group": group, "increment": 1024,
            "levels": [({"up_to": up_to} if up_to else {}) | {"price": price, "per": MIB} for up_to, price in levels]}


def _bands(country: str) -> dict:
    peak = {"DE": ("08:00", "20:00"), "GB": ("07:00", "19:00"), "US": ("07:00", "21:00")}[country]
    return {"default": "OFFPEAK", "rules": [
        {"band": "HOLIDAY", "holiday": True},
        {"band": "PEAK", "days": ["mon", "tue", "wed", "thu", "fri"], "from": peak[0], "to": peak[1]},
        {"band": "WEEKEND", "days": ["sat", "sun"]},
    ]}


def _european_rates(f: str, national_peak: str, national_off: str, mobile_peak: str, mobile_off: str,
                    per_second: bool) -> list[dict]:
    """Voice and SMS rates of a German or British plan; ``f`` scales the international prices."""
    national_steps = (lambda p: _per_minute(p, 1, 1)) if per_second else (lambda p: _per_minute(p))
    return [
        _rate("voice", "NATIONAL", "PEAK", national_steps(national_peak)),
        _rate("voice", "NATIONAL", "*", national_steps(national_off)),
        _rate("voice", "MOBILE", "PEAK", _per_minute(mobile_peak, 60, 1),
              increment_rounding={"decimals": 5, "mode": "half_up"}),
        _rate("voice", "MOBILE", "*", _per_minute(mobile_off, 60, 1),
              increment_rounding={"decimals": 5, "mode": "half_up"}),
        _rate("voice", "*", "WEEKEND", _per_minute("0.04")),
        _rate("voice", "FREEPHONE", "*", _per_minute("0.00")),
        _rate("voice", "SPECIAL", "*", _per_minute("0.14", 60, 1), connect="0.05"),
        _rate("voice", "PREMIUM", "*", _per_minute("1.99"), connect="0.50", maximum_charge="30.00"),
        _rate("voice", "EUROPE", "*", _per_minute(_scaled("0.29", f), 30, 6), connect="0.10", minimum_charge="0.15"),
        _rate("voice", "WORLD_1", "*", _per_minute(_scaled("0.49", f)), connect="0.15"),
        _rate("voice", "WORLD_2", "*", _per_minute(_scaled("0.99", f))),
        _rate("voice", "WORLD_3", "*", _per_minute(_scaled("1.49", f)), minimum_charge="0.50"),
        _rate("voice", "SATELLITE", "*", _per_minute("4.99"), connect="1.00", maximum_charge="99.00"),
        _rate("voice", "ROAM_EU", "*", _per_minute(national_off, 30, 1)),
        _rate("voice", "ROAM_WORLD", "*", _per_minute(_scaled("1.79", f)), connect="0.25",
              rounding={"mode": "up", "decimals": 2}),
        _rate("voice", "*", "*", _per_minute("0.29")),
        _rate("sms", "NATIONAL", "*", _sms("0.09")),
        _rate("sms", "MOBILE", "*", _sms("0.09")),
        _rate("sms", "EUROPE", "*", _sms("0.19")),
        _rate("sms", "ROAM_EU", "*", _sms("0.09")),
        _rate("sms", "ROAM_WORLD", "*", _sms(_scaled("0.49", f))),
        _rate("sms", "PREMIUM", "*", _sms("0.99")),
        _rate("sms", "*", "*", _sms("0.29")),
        # Priced per KB: the rating compiler needs price x largest event (2**44 bytes) to fit int64.
        _rate("data", "ROAM_WORLD", "*", _steps((0, _scaled("0.0098", f), 1024, 102_400)), minimum_charge="0.10"),
    ]


def _version(number: int, valid_from: Instant, country: str, rates: list[dict], allowances: list[dict],
             fees: list[dict], rounding: dict, zero_duration: str = "free") -> dict:
    return {
        "version": number, "valid_from": valid_from, "zone_table": ZONE_TABLES[country],
        "roaming_table": ROAMING_TABLES[country], "holiday_calendar": CALENDARS[country],
        "rounding": rounding, "zero_duration": zero_duration, "bands": _bands(country),
        "rates": rates + _declared_type_rates(country), "allowances": allowances, "recurring_fees": fees,
    }


def _mobile_s(n: int, start: Instant) -> dict:
    rates = _european_rates("1", "0.09", "0.05", "0.12", "0.07", per_second=False) + [
        {"service": "data", "zone": "*", "band": "*", "connect_fee": "0.00",
         "tiers": _data_tiers("DATA", [(GIB, "0.00"), (5 * GIB, "0.0098"), (None, "0.0049")])},
        _rate("data", "ROAM_EU", "*", _steps((0, "0.0020", MIB, 1024))),
    ]
    allowances = [
        {"name": "VOICE_100", "service": "voice", "zones": ["NATIONAL", "MOBILE"], "units": 6000, "order": 1},
        {"name": "SMS_100", "service": "sms", "zones": ["NATIONAL", "MOBILE", "ROAM_EU"], "units": 100, "order": 2},
        {"name": "DATA_EU_2GB", "service": "data", "zones": ["ROAM_EU"], "units": 2 * GIB, "order": 3},
    ]
    fees = [{"name": "MONTHLY", "description": "Mobile S monthly fee", "amount": "9.99"}]
    return _version(n, start, "DE", rates, allowances, fees, {"mode": "half_up", "decimals": 6})


def _mobile_l(n: int, start: Instant) -> dict:
    f = "1" if n == 1 else "0.8"      # version 2 cuts international prices by 20 %
    rates = _european_rates(f, "0.00", "0.00", "0.00", "0.00", per_second=False) + [
        {"service": "data", "zone": "*", "band": "*", "connect_fee": "0.00",
         "tiers": _data_tiers("DATA", [(20 * GIB, "0.00"), (None, "0.0049")])},
        _rate("data", "ROAM_EU", "*", _steps((0, "0.0015", MIB, 1024))),
    ]
    allowances = [
        {"name": "VOICE_EU_300", "service": "voice", "zones": ["EUROPE", "ROAM_EU"], "units": 18_000, "order": 1},
        {"name": "SMS_FLAT", "service": "sms", "zones": ["*"], "units": 3000, "order": 2},
        {"name": "DATA_ROAM_EU_15GB", "service": "data", "zones": ["ROAM_EU"], "units": 15 * GIB, "order": 3},
    ]
    fees = [{"name": "MONTHLY", "description": "Mobile L monthly fee", "amount": "29.99" if n == 1 else "32.99"}]
    return _version(n, start, "DE", rates, allowances, fees, {"mode": "half_even", "decimals": 6})


def _business_pro(n: int, start: Instant) -> dict:
    rates = _european_rates("0.7", "0.039", "0.039", "0.049", "0.049", per_second=True) + [
        {"service": "data", "zone": "*", "band": "*", "connect_fee": "0.00",
         "tiers": _data_tiers("DATA_POOL", [(10 * GIB, "0.00"), (50 * GIB, "0.0040"), (None, "0.0020")])},
        _rate("data", "ROAM_EU", "*", _steps((0, "0.0010", MIB, 1024))),
    ]
    for rate in rates:     # business calls carry a connect fee
        if rate["service"] == "voice" and rate["zone"] in ("NATIONAL", "MOBILE"):
            rate["connect_fee"] = "0.02"
    allowances = [
        {"name": "VOICE_EU_1000", "service": "voice", "zones": ["NATIONAL", "MOBILE", "EUROPE", "ROAM_EU"],
         "units": 60_000, "order": 1},
        {"name": "DATA_ROAM_WORLD_500MB", "service": "data", "zones": ["ROAM_WORLD"], "units": 500 * MIB, "order": 2},
    ]
    fees = [{"name": "MONTHLY", "description": "Business Pro line", "amount": "24.90"},
            {"name": "DEVICE", "description": "Device instalment", "amount": "5.00"}]
    return _version(n, start, "DE", rates, allowances, fees, {"mode": "up", "decimals": 4}, zero_duration="charged")


def _uk_flex(n: int, start: Instant) -> dict:
    rates = _european_rates("1" if n == 1 else "1.1", "0.10", "0.05", "0.10", "0.05", per_second=True) + [
        {"service": "data", "zone": "*", "band": "*", "connect_fee": "0.00",
         "tiers": _data_tiers("DATA", [(4 * GIB, "0.00"), (None, "0.0075")])},
        _rate("data", "ROAM_EU", "*", _steps((0, "0.0030", MIB, 1024))),
    ]
    allowances = [
        {"name": "MINUTES_500", "service": "voice", "zones": ["NATIONAL", "MOBILE", "ROAM_EU"], "units": 30_000,
         "order": 1},
        {"name": "TEXTS_UNLIMITED", "service": "sms", "zones": ["NATIONAL", "MOBILE"], "units": 100_000, "order": 2},
    ]
    fees = [{"name": "MONTHLY", "description": "Flex monthly plan", "amount": "12.00" if n == 1 else "13.50"}]
    return _version(n, start, "GB", rates, allowances, fees, {"mode": "half_up", "decimals": 6})


def _us_talk(n: int, start: Instant) -> dict:
    rates = [
        _rate("voice", "NATIONAL", "PEAK", _per_minute("0.05")),
        _rate("voice", "NATIONAL", "*", _per_minute("0.00")),       # free nights and weekends
        _rate("voice", "FREEPHONE", "*", _per_minute("0.00")),
        _rate("voice", "PREMIUM", "*", _per_minute("2.99"), connect="0.99", maximum_charge="50.00"),
        _rate("voice", "WORLD_1", "*", _per_minute("0.10", 60, 1)),
        _rate("voice", "WORLD_2", "*", _per_minute("0.25", 30, 6), minimum_charge="0.25"),
        _rate("voice", "WORLD_3", "*", _per_minute("0.75")),
        _rate("voice", "SATELLITE", "*", _per_minute("6.99"), connect="1.99"),
        _rate("voice", "ROAM_NA", "*", _per_minute("0.00")),
        _rate("voice", "ROAM_WORLD", "*", _per_minute("1.99"), connect="0.50"),
        _rate("voice", "*", "*", _per_minute("0.25")),
        _rate("sms", "NATIONAL", "*", _sms("0.00")),
        _rate("sms", "ROAM_WORLD", "*", _sms("0.50")),
        _rate("sms", "*", "*", _sms("0.25")),
        {"service": "data", "zone": "*", "band": "*", "connect_fee": "0.00",
         "tiers": _data_tiers("DATA", [(15 * GIB, "0.00"), (None, "0.0100")])},
        _rate("data", "ROAM_NA", "*", _steps((0, "0.0000", MIB, 1024))),
        _rate("data", "ROAM_WORLD", "*", _steps((0, "0.002", 1024, 1024)), maximum_charge="250.00"),
    ]
    allowances = [
        {"name": "PEAK_MINUTES_450", "service": "voice", "zones": ["NATIONAL"], "units": 27_000, "order": 1},
        {"name": "INTL_TEXTS_100", "service": "sms", "zones": ["*"], "units": 100, "order": 2},
    ]
    fees = [{"name": "MONTHLY", "description": "Talk & Text monthly plan", "amount": "35.00"},
            {"name": "REGULATORY", "description": "Regulatory cost recovery fee", "amount": "1.82"}]
    return _version(n, start, "US", rates, allowances, fees, {"mode": "half_even", "decimals": 6})


_BUILDERS = {"MOBILE_S": (_mobile_s, 1), "MOBILE_L": (_mobile_l, 2), "BUSINESS_PRO": (_business_pro, 1),
             "UK_FLEX": (_uk_flex, 2), "US_TALK": (_us_talk, 1)}


def first_version_day(start: dt.date) -> dt.date:
    """Version 1 of every plan is in force from January 1st three years before the period."""
    return dt.date(start.year - 3, 1, 1)


def price_change_day(start: dt.date, days: int) -> dt.date:
    """Plans with two versions change prices at local midnight in the middle of the period."""
    return start + dt.timedelta(days=max(1, days // 2))


def plan_documents(start: dt.date, days: int) -> list[dict]:
    """One plan document (the YAML content) per plan, versions sorted by ``valid_from``."""
    documents = []
    for info in PLANS:
        build, versions = _BUILDERS[info.plan_id]
        starts = [first_version_day(start), price_change_day(start, days)][:versions]
        cc, intl, trunk = NUMBERING[info.country]
        documents.append({
            "plan_id": info.plan_id,
            "name": info.name,
            "currency": info.currency,
            "timezone": info.timezone,
            "numbering": {"country_code": cc, "international_prefix": intl, "trunk_prefix": trunk},
            "versions": [build(i + 1, local_midnight(day, info.timezone)) for i, day in enumerate(starts)],
        })
    return documents
