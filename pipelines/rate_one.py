"""Rate one usage event through ``RatingEngine`` — the code the pipelines use — and explain the charge.

    answer = rate_one(RateOneRequest(reference_dir="ref/", subject="1001", destination="1002",
                                     start="2014-08-04T13:00:00Z", usage="85s"))
    answer["charge"]        # "0.6418" (currency units), or answer["rejected"] == "NO_RATE"

The event is one usage row (record id ``rate-one``), validated like a decoded record and rated by
``RatingEngine.rate``; the charge is the engine's. The breakdown beside it (zone, band, the pieces
of increments with their steps and prices, connect fee, cap and rounding) is rebuilt from the plan
version the engine used, with the slow twin's band and rounding rules (``rating.twin``), and must
add up to the engine's charge (an internal error otherwise). Events that used allowances or tiers
get no piece list: their price depends on the rest of the cycle.

A reference made by ``import-cgrates`` (it holds ``cgrates-import.json``) rates a subject that has
no subscription at all by its ``*any`` plan, as CGRateS rates subjects without a rating profile,
and names the CGRateS rate behind each piece.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import re
from fractions import Fraction
from pathlib import Path

import pyarrow as pa

from cdr_schemas import usage_batch_schema
from cdr_schemas.validate import validate_usage
from pipelines.money_text import micros_text
from rating.cgrates import DEFAULT_CATEGORIES, RECORD
from rating.cgrates.importer import subject_kind
from rating.engine import RatingEngine
from rating.identity import identity_key
from rating.reference import load_reference
from rating.reference.model import ReferenceData, Subscription, UsageType
from rating.twin import band_twin, rate_for, round_fraction

SERVICES = ("voice", "sms", "data")
UNIT_NAMES = {"voice": "s", "sms": "messages", "data": "bytes"}
_UNIT_LABELS = {"seconds": "s", "messages": "messages", "bytes": "bytes"}   # a count type's: its unit_name
_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROS = 1_000_000


@dataclasses.dataclass(frozen=True)
class RateOneRequest:
    reference_dir: str
    subject: str                  # the CGRateS subject: an MSISDN, else an account code
    destination: str | None       # as dialled; None for data
    start: str                    # ISO 8601 with Z or an offset
    usage: str                    # voice (any seconds type): 85s, 1m25s or seconds; others: a whole number
    service: str | None = None    # a usage type (voice, sms, data, mms...); None: from ``category``, else voice
    category: str | None = None   # a CGRateS category (call, sms, data, or one mapped at import)


def rate_one(request: RateOneRequest) -> dict:
    """The answer for one event: ``charge`` (decimal string, currency units) and the breakdown, or
    ``rejected`` with its reason code. Raises ``ValueError`` for bad arguments or reference data."""
    record = _import_record(request.reference_dir)
    service = _service(request, record)
    start_us = _instant_us(request.start)
    reference = load_reference(request.reference_dir)
    usage_type = reference.usage_types.get(service.upper())
    if usage_type is None:
        raise ValueError(f"usage type {service!r} is not declared in {request.reference_dir}; declared: "
                         f"{', '.join(t.lower() for t in reference.usage_types)}")
    units = parse_usage(request.usage, service, usage_type)
    batch = _usage_batch(request, usage_type, start_us, units)
    subscriber = "subscription"
    kind = subject_kind(request.subject)
    if record.get("default_plan") and not any(s.key == identity_key(kind, request.subject)
                                              for s in reference.subscriptions):
        reference = _with_default_subscription(reference, request.subject, record)
        subscriber = f"none: rated by plan {record['default_plan']} (CGRateS subject *any)"
    engine = RatingEngine.from_reference(reference)
    answer = {"subject": request.subject, "destination": request.destination, "start": request.start,
              "service": service, "usage": units, "unit": _unit_label(usage_type)}
    valid, rejected = validate_usage(batch)
    if rejected.num_rows == 0:
        rated, rejected = engine.rate(valid)
    if rejected.num_rows:
        row = rejected.to_pylist()[0]
        return {**answer, "rejected": row["reason"], "detail": row["detail"]}
    row = rated.to_pylist()[0]
    answer.update(charge=micros_text(row["charge_micros"]), currency=row["currency"], subscriber=subscriber,
                  plan=row["plan_id"], plan_version=row["plan_version"], zone=row["zone"], band=row["band"],
                  band_split=row["band_split"], rate_id=row["rate_id"], charged_units=row["charged_units"],
                  free_units=row["free_units"], connect_fee=micros_text(row["connect_fee_micros"]))
    answer.update(breakdown(reference, row, service, units, start_us, record.get("rates", {})))
    return answer


def _unit_label(usage_type: UsageType) -> str:
    return usage_type.unit_name or _UNIT_LABELS[usage_type.unit]


def parse_usage(text: str, service: str, usage_type: UsageType | None = None) -> int:
    """Units of one event: voice (any type counted in seconds) ``85s``, ``1m25s``, ``1h`` or a number
    of seconds; SMS, data and the others a whole number of messages, bytes or units."""
    seconds = usage_type.unit == "seconds" if usage_type is not None else service == "voice"
    unit = _unit_label(usage_type) if usage_type is not None else UNIT_NAMES.get(service, "units")
    value = text.strip()
    if value.isdigit():
        return int(value)
    match = _DURATION.fullmatch(value)
    if seconds and value and match:
        hours, minutes, seconds_ = (int(g or 0) for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds_
    expected = "a duration such as 85s or 1m25s, or a number of seconds" if seconds else (
        f"a whole number of {unit}")
    raise ValueError(f"--usage {text!r}: expected {expected}")


def _fraction_text(value: Fraction) -> str:
    """Exact decimal text of a (micro-unit) amount when it terminates within 12 decimals."""
    units = value / _MICROS
    scaled = units * 10**12
    if scaled.denominator == 1:
        return format(decimal.Decimal(scaled.numerator).scaleb(-12).normalize(), "f")
    return format(decimal.Decimal(int(scaled)).scaleb(-12).normalize(), "f") + "…"


def _import_record(reference_dir: str) -> dict:
    path = Path(reference_dir) / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _service(request: RateOneRequest, record: dict) -> str:
    if request.service is not None:   # checked against the reference's usage types by rate_one
        return request.service.lower()
    if request.category is not None:
        categories = record.get("categories") or DEFAULT_CATEGORIES
        if request.category not in categories:
            raise ValueError(f"--category {request.category!r} is not one of {', '.join(categories)}; or give "
                             f"--service")
        return categories[request.category]
    return "voice"


def _instant_us(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--start {text!r}: expected an ISO 8601 time such as 2014-08-04T13:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"--start {text!r}: add Z or an offset (e.g. 2014-08-04T13:00:00Z)")
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _usage_batch(request: RateOneRequest, usage_type: UsageType, start_us: int, units: int) -> pa.RecordBatch:
    service = usage_type.service
    builtin = service in SERVICES   # the others: service OTHER, their usage_type and quantity
    # A subject that is not an MSISDN is an account code, as import-cgrates declares it.
    by_msisdn = subject_kind(request.subject) == "msisdn"
    row = {"record_id": "rate-one", "source": "rate-one", "service": service.upper() if builtin else "OTHER",
           "served_msisdn": request.subject if by_msisdn else None,
           "other_party": request.destination, "start_time": start_us,
           "duration_s": units if service == "voice" else 0, "bytes_up": 0,
           "bytes_down": units if service == "data" else 0, "message_count": units if service == "sms" else 0,
           "visited_network": None, "cell_id": None, "imsi": None, "apn": None, "termination_cause": None,
           "rat_type": None, "partial_sequence": 0, "usage_type": None if builtin else usage_type.name,
           "quantity": None if builtin else units,
           "subscriber": None if by_msisdn else request.subject, "subscriber_kind": None if by_msisdn else "account",
           "input_file": "rate-one", "input_position": 0}
    schema = usage_batch_schema()
    columns = []
    for field in schema:
        if pa.types.is_timestamp(field.type):
            columns.append(pa.array([row[field.name]], pa.int64()).cast(field.type))
        else:
            columns.append(pa.array([row[field.name]], field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _with_default_subscription(reference: ReferenceData, subject: str, record: dict) -> ReferenceData:
    plan = reference.plans[record["default_plan"]]
    subscription = Subscription(subject, record["default_account"], plan.plan_id, plan.versions[0].valid_from_us, None,
                                subject_kind(subject) or "account")
    return dataclasses.replace(reference, subscriptions=reference.subscriptions + (subscription,))


def breakdown(reference: ReferenceData, row: dict, service: str, units: int, start_us: int,
               sources: dict) -> dict:
    plan = reference.plans[row["plan_id"]]
    version = next(v for v in plan.versions if v.version == row["plan_version"])
    rate0 = rate_for(version, service, row["zone"], row["band"])
    usage_type = reference.usage_types[service.upper()]
    rounding = rate0.rounding or usage_type.rounding or version.rounding
    result = {"cgrates": sources.get(row["rate_id"], {}).get("cgrates"),
              "rounding": {"mode": rounding.mode.value, "decimals": rounding.decimals}}
    if row["free_units"] or rate0.tiers is not None:
        return {**result, "pieces": None,
                "note": "allowances or tiers priced this event; increments are not itemised"}
    holidays = set(reference.calendars[version.holiday_calendar].dates) if version.holiday_calendar else set()
    pieces = _pieces(plan.plan_id, version, plan.timezone, holidays, service, row["zone"], row["band"], units, start_us,
                     usage_type.unit == "seconds")
    paid = units > 0 or version.zero_duration_charged
    amount = sum((p.pop("_amount") for p in pieces), Fraction(0)) + (rate0.connect_fee_micros if paid else 0)
    result.update(pieces=[{**p, "cgrates": sources.get(p["rate_id"], {}).get("cgrates")} for p in pieces],
                  total=_fraction_text(amount))
    if paid and rate0.minimum_micros is not None and amount < rate0.minimum_micros:
        amount = Fraction(rate0.minimum_micros)
        result["minimum_applied"] = micros_text(rate0.minimum_micros)
    if paid and rate0.maximum_micros is not None and amount > rate0.maximum_micros:
        amount = Fraction(rate0.maximum_micros)
        result["maximum_applied"] = micros_text(rate0.maximum_micros)
    charge = round_fraction(amount, rounding)
    result["rounding"]["adjustment"] = _fraction_text(charge - amount)
    if charge != row["charge_micros"]:
        raise RuntimeError(f"rate-one: the breakdown adds up to {micros_text(charge)} but the engine charged "
                           f"{micros_text(row['charge_micros'])} for rate {row['rate_id']}; please report this")
    return result


def _pieces(plan_id: str, version, timezone: str, holidays: set[str], service: str, zone: str, band0: str,
            units: int, start_us: int, seconds: bool) -> list[dict]:
    """Runs of increments priced alike (band, rate, step), in elapsed order: each increment at the
    band in force when it starts (voice and other ``seconds`` types; bands change on whole minutes),
    the other types at the band of the start."""
    pieces: list[dict] = []
    u = 0
    while u < units:
        t_us = start_us + u * _MICROS
        band = band_twin(t_us, version, timezone, holidays, zone) if seconds else band0
        rate = rate_for(version, service, zone, band)
        index = max(i for i, s in enumerate(rate.steps) if s.from_units <= u)
        step = rate.steps[index]
        limit = min(rate.steps[index + 1].from_units if index + 1 < len(rate.steps) else units, units)
        if seconds:   # increments starting before the next minute share this band
            next_minute_us = (t_us // (60 * _MICROS) + 1) * 60 * _MICROS
            limit = min(limit, -(-(next_minute_us - start_us) // _MICROS))
        count = -(-(limit - u) // step.increment_units)
        exact = Fraction(step.price_micros * step.increment_units, step.per_units)
        price = Fraction(round_fraction(exact, rate.increment_rounding)) if rate.increment_rounding else exact
        rate_id = f"{plan_id}/v{version.version}/{service}/{rate.zone}/{rate.band}"
        last = pieces[-1] if pieces else None
        if last and (last["band"], last["rate_id"], last["step"]) == (band, rate_id, index + 1):
            last["increments"] += count
            last["to"] = u + count * step.increment_units
            last["_amount"] += count * price
            last["amount"] = _fraction_text(last["_amount"])
        else:
            pieces.append({
                "from": u, "to": u + count * step.increment_units, "band": band, "rate_id": rate_id,
                "step": index + 1, "increment": step.increment_units, "increments": count,
                "price": micros_text(step.price_micros), "per": step.per_units,
                "increment_price": _fraction_text(price),
                "increment_rounding": None if rate.increment_rounding is None else {
                    "mode": rate.increment_rounding.mode.value, "decimals": rate.increment_rounding.decimals,
                    "exact": _fraction_text(exact)},
                "amount": _fraction_text(count * price), "_amount": count * price})
        u += count * step.increment_units
    return pieces


def format_text(answer: dict) -> str:
    """The answer as a few lines for a person: charge, where it came from, each piece, rounding."""
    unit = answer["unit"]
    event = (f"{answer['subject']} -> {answer['destination'] or '(no destination)'}, {answer['service']} "
             f"{answer['usage']} {unit} from {answer['start']}")
    if "rejected" in answer:
        return f"rejected: {answer['rejected']} — {answer['detail']} ({event})"
    lines = [f"charge {answer['charge']} {answer['currency']}  ({event})",
             f"plan {answer['plan']} v{answer['plan_version']}, zone {answer['zone']}, band {answer['band']}"
             + (" (increments in other bands too)" if answer["band_split"] else "")
             + ("" if answer["subscriber"] == "subscription" else f"; subscriber: {answer['subscriber']}")]
    if answer.get("cgrates"):
        lines.append(f"  CGRateS: {answer['cgrates']}")
    lines.append(f"  {'connect fee':<58}{answer['connect_fee']:>12}")
    if answer["free_units"]:
        lines.append(f"  {answer['free_units']} {unit} free (allowances)")
    if answer.get("pieces") is None:
        lines.append(f"  {answer.get('note', '')}")
    for piece in answer.get("pieces") or []:
        label = (f"{piece['from']}-{piece['to']} {unit} {piece['band']} step {piece['step']}: {piece['increments']} x "
                 f"{piece['increment']} {unit} at {piece['price']} per {piece['per']} {unit} = "
                 f"{piece['increment_price']} each")
        lines.append(f"  {label:<58}{piece['amount']:>12}")
        rounding = piece["increment_rounding"]
        if rounding and rounding["exact"] != piece["increment_price"]:
            lines.append(f"      {rounding['exact']} per increment, rounded {rounding['mode']} to "
                         f"{rounding['decimals']} decimals")
        if piece.get("cgrates") and piece["cgrates"] != answer.get("cgrates"):
            lines.append(f"      CGRateS: {piece['cgrates']}")
    if "total" in answer:
        lines.append(f"  {'total':<58}{answer['total']:>12}")
    for key, what in (("minimum_applied", "minimum charge"), ("maximum_applied", "maximum charge (MaxCost)")):
        if key in answer:
            lines.append(f"  {what:<58}{answer[key]:>12}")
    rounding = answer["rounding"]
    if "adjustment" in rounding:
        label = f"rounding {rounding['mode']} to {rounding['decimals']} decimals"
        adjustment = rounding["adjustment"]
        signed = adjustment if adjustment.startswith("-") or adjustment == "0" else "+" + adjustment
        lines.append(f"  {label:<58}{signed:>12}")
    lines.append(f"  {'charge':<58}{answer['charge']:>12} {answer['currency']}")
    return "\n".join(lines)
