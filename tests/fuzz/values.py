"""Hostile values for single records: boundary numbers for every numeric field, odd strings, and
(for JSON) wrong types, huge numbers, NaN, deep nesting and broken bytes.

Each mutator takes a random generator, a valid usage record (a dict of stored values, a copy the
mutator changes in place) and ``like(service)``, which gives another valid record of the case's
subscribers for a service (a field is priced only on its own service: a huge ``bytes_up`` goes on a
DATA record). It returns a short note of what it did, or (note, raw line bytes) for a JSON line no
encoder writes. Values are chosen from fixed lists by the generator, so a case is replayed exactly
from its seed.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

import numpy as np

from tests.fuzz.encode import jsonl_line

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

# Every numeric usage field and whether it is an Avro int (32-bit) or long.
NUMERIC_FIELDS = {"duration_s": "long", "bytes_up": "long", "bytes_down": "long", "message_count": "int",
                  "partial_sequence": "int", "start_time": "long"}
# The service a field is priced under (a mutated field reaches rating only on its own service).
SERVICE_OF_FIELD = {"duration_s": "VOICE", "bytes_up": "DATA", "bytes_down": "DATA", "message_count": "SMS"}

LONG_BOUNDARIES = (0, 1, -1, 59, 60, 61, 72 * 3600, 72 * 3600 + 1, INT32_MAX, 2**31, INT32_MIN - 1, 2**32, 2**43,
                   2**44, 2**44 + 1, 2**53, 2**53 + 1, 2**62, INT64_MAX - 1, INT64_MAX, INT64_MIN, INT64_MIN + 1)
INT_BOUNDARIES = (0, 1, -1, 2, 1000, 65_535, 2**24, INT32_MAX, INT32_MIN, INT32_MIN + 1)
BEYOND_INT32 = (2**31, INT32_MIN - 1, 2**32, 2**32 + 1)
BEYOND_INT64 = (2**63, 2**64 - 1, 2**64, INT64_MIN - 1, 10**30, -(10**30), 2**100)
# bytes_up + bytes_down pairs whose sum reaches or leaves the int64 range (or nearly does).
OVERFLOWING_SUMS = ((2**62, 2**62), (INT64_MAX, 1), (1, INT64_MAX), (INT64_MAX, INT64_MAX), (2**62, 2**62 - 1),
                    (INT64_MAX, 0), (2**44, 2**44), (2**63 - 2**20, 2**20), (2**61, 2**61 + 2**60))


def _us(year, month, day, hour=0, minute=0, second=0, micro=0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.timezone.utc)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# start_time (epoch microseconds): the ends of datetime and of int64, the validation window's edges
# (2000-01-01, 2100-01-01), cycle and DST edges of the generated month (2026-01).
START_BOUNDARIES_US = (
    _us(1, 1, 1), _us(9999, 12, 31, 23, 59, 59, 999_999), 0, -1, 1, INT64_MAX, INT64_MIN, 2**53,
    _us(2000, 1, 1) - 1, _us(2000, 1, 1), _us(2100, 1, 1), _us(2100, 1, 1) + 1, _us(2099, 12, 31, 23, 59, 59),
    _us(2026, 1, 1), _us(2026, 1, 1) - 1, _us(2025, 12, 31, 23), _us(2026, 1, 31, 23, 59, 59, 999_999),
    _us(2026, 2, 1), _us(2026, 3, 29, 1), _us(2026, 3, 29, 0, 59, 59, 999_999), _us(2026, 1, 15, 12, 0, 0, 1),
)
# start_time under a timestamp-millis writer schema: datetime's ends in ms, one ms past them, int64's ends.
START_BOUNDARIES_MS = (
    _us(1, 1, 1) // 1000, _us(1, 1, 1) // 1000 - 1, _us(9999, 12, 31, 23, 59, 59, 999_000) // 1000,
    _us(9999, 12, 31, 23, 59, 59, 999_000) // 1000 + 1, INT64_MAX, INT64_MIN, INT64_MAX // 1000 + 1,
    INT64_MIN // 1000 - 1, 0, -1, 2**53, _us(2100, 1, 1) // 1000 + 1, _us(2026, 1, 1) // 1000,
)
ISO_TEXTS = ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
             "2026-02-30T00:00:00Z", "2026-01-05T24:00:00Z", "2026-01-05T10:00:60Z", "2026-01-05T10:00:00+24:00",
             "2026-01-05T10:00:00.1234567Z", "2026-01-05T10:00:00", "2026-01-05 10:00:00Z",
             "1999-12-31T23:59:59.999999Z", "2100-01-01T00:00:00.000001Z", "2026-01-05T10:00:00-23:59", "2026-01-05T10:00:00Z\u0000", "")

STRINGS = ("", " ", "0", "-1", "+", "00", "4915112345678901", "49151123456789012345678901234567890",
           "+491511234567", " 491511234567", "49151 1234567", "4915\u0000112345", "\u0664\u0669\u0661\u0665\u0661",
           "\U0001f4de", "NaN", "1e3", "0x1F", "\ufeff4915112345", "a" * 70_000, "9" * 16, "9" * 17, "26203", "999",
           "0" * 15)
# Invalid UTF-8: a lone continuation byte, an overlong '/', a UTF-8-encoded surrogate, a cut sequence.
BAD_UTF8 = (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"49151\xe2\x82", b"\x80")
STRING_FIELDS = ("served_msisdn", "other_party", "visited_network", "source", "cell_id", "imsi", "apn",
                 "termination_cause", "rat_type")
SERVICES_TEXT = ("voice", "FAX", "", "VOICE ", "SMS\u0000", "Data", "MMS")
JSON_ODD_VALUES = ("60", 60.0, -0.0, 1e308, True, False, [], [60], {}, {"$numberLong": "60"}, "2026-01-05",
                   float("nan"), float("inf"), float("-inf"), 1.5, 10**400)

Like = Callable[[str | None], dict]
Mutator = Callable[[np.random.Generator, dict, Like], "str | tuple[str, bytes]"]


def pick(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"


# --- mutators every format can carry (values inside the Avro types) -------------------------------

def become(record: dict, other: dict) -> None:
    """Turn ``record`` into ``other`` in place, keeping its record_id."""
    record_id = record["record_id"]
    record.clear()
    record.update(other, record_id=record_id)


def number(rng, record: dict, like: Like, *, millis: bool = False) -> str:
    """One numeric field, on a record of the service it is priced under, set to a boundary value
    that fits its Avro type."""
    name = pick(rng, tuple(NUMERIC_FIELDS))
    if SERVICE_OF_FIELD.get(name, record["service"]) != record["service"]:
        become(record, like(SERVICE_OF_FIELD[name]))
    if name == "start_time":
        value = pick(rng, START_BOUNDARIES_MS if millis else START_BOUNDARIES_US)
    else:
        value = pick(rng, INT_BOUNDARIES if NUMERIC_FIELDS[name] == "int" else LONG_BOUNDARIES)
    record[name] = value
    return f"{name}={value}"


def overflowing_sum(rng, record: dict, like: Like) -> str:
    """A DATA record whose bytes_up + bytes_down reaches or leaves int64."""
    up, down = pick(rng, OVERFLOWING_SUMS)
    if record["service"] != "DATA":
        become(record, like("DATA"))
    record.update(bytes_up=up, bytes_down=down)
    return f"bytes_up={up} bytes_down={down}"


def start_time(rng, record: dict, like: Like, *, millis: bool = False) -> str:
    value = pick(rng, START_BOUNDARIES_MS if millis else START_BOUNDARIES_US)
    record["start_time"] = value
    return f"start_time={value}{'ms' if millis else 'us'}"


def odd_string(rng, record: dict, like: Like) -> str:
    name = pick(rng, STRING_FIELDS)
    value = pick(rng, STRINGS)
    record[name] = value
    return f"{name}={short(value)}"


def invalid_utf8(rng, record: dict, like: Like) -> str:
    """A string field holding bytes that are not UTF-8 (Avro: a per-datum reject; JSON: a bad line)."""
    name = pick(rng, STRING_FIELDS + ("record_id",))
    value = pick(rng, BAD_UTF8)
    record[name] = value
    return f"{name}={value!r}"


def cross_service(rng, record: dict, like: Like) -> str:
    """Another service than the record's counters were made for (e.g. DATA without bytes as VOICE)."""
    value = pick(rng, ("VOICE", "SMS", "DATA"))
    record["service"] = value
    if rng.random() < 0.5:
        record["other_party"] = None
    return f"service={value} other_party={short(record.get('other_party'))}"


def nullable_null(rng, record: dict, like: Like) -> str:
    name = pick(rng, ("other_party", "visited_network", "cell_id", "imsi", "apn", "termination_cause", "rat_type"))
    record[name] = None
    return f"{name}=null"


IN_TYPE = {"number": number, "overflowing_sum": overflowing_sum, "start_time": start_time, "odd_string": odd_string,
           "cross_service": cross_service, "nullable_null": nullable_null}


# --- JSON lines only: anything a JSON value (or a line of bytes) can be ---------------------------

def json_number(rng, record: dict, like: Like) -> str:
    """A numeric field beyond its type's range, or a boundary value."""
    name = pick(rng, tuple(NUMERIC_FIELDS))
    if SERVICE_OF_FIELD.get(name, record["service"]) != record["service"]:
        become(record, like(SERVICE_OF_FIELD[name]))
    pool = BEYOND_INT64 + (BEYOND_INT32 if NUMERIC_FIELDS[name] == "int" else LONG_BOUNDARIES)
    value = pick(rng, pool)
    record[name] = value
    return f"{name}={short(value)}"


def json_wrong_type(rng, record: dict, like: Like) -> str:
    name = pick(rng, tuple(NUMERIC_FIELDS) + ("record_id", "service", "served_msisdn", "other_party"))
    value = pick(rng, JSON_ODD_VALUES)
    record[name] = value
    return f"{name}={short(value)}"


def json_iso_time(rng, record: dict, like: Like) -> str:
    value = pick(rng, ISO_TEXTS)
    record["start_time"] = value
    return f"start_time={value!r}"


def json_service(rng, record: dict, like: Like) -> str:
    value = pick(rng, SERVICES_TEXT)
    record["service"] = value
    return f"service={value!r}"


def json_missing(rng, record: dict, like: Like) -> str:
    name = pick(rng, tuple(record))
    del record[name]
    return f"without {name}"


def json_raw_line(rng, record: dict, like: Like) -> tuple[str, bytes]:
    """A line no JSON encoder writes: cut, nested 100k deep, duplicate key, not an object, bad bytes."""
    line = jsonl_line(record)
    choice = int(rng.integers(8))
    if choice == 0:
        cut = int(rng.integers(1, len(line)))
        return f"line cut at byte {cut}", line[:cut]
    if choice == 1:
        depth = pick(rng, (1_000, 100_000))
        return f"apn nested {depth} arrays deep", line[:-1] + b',"apn":' + b"[" * depth + b"]" * depth + b"}"
    if choice == 2:
        return "duration_s twice", line[:-1] + b',"duration_s":1}'
    if choice == 3:
        token = pick(rng, (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"0x10", b"01", b"+1", b".5"))
        return f"duration_s={token.decode()}", line[:-1] + b',"duration_s":' + token + b"}"
    if choice == 4:
        text = pick(rng, (b"[1,2]", b"42", b"null", b'"text"', b"{}", b"{", b"}", b"\xef\xbb\xbf{}", b"\x00"))
        return f"line {text!r}", text
    if choice == 5:
        bad = pick(rng, BAD_UTF8)
        return f"served_msisdn bytes {bad!r}", line[:-1] + b',"served_msisdn":"' + bad + b'"}'
    if choice == 6:
        return "control character in a string", line[:-1] + b',"cell_id":"a\x01\x1fb"}'
    return "lone surrogate escape", line[:-1] + b',"imsi":"\\ud800"}'


JSON_ONLY = {"json_number": json_number, "json_wrong_type": json_wrong_type, "json_iso_time": json_iso_time,
             "json_service": json_service, "json_missing": json_missing, "json_raw_line": json_raw_line,
             "invalid_utf8": invalid_utf8}


# --- Parquet only: column types beyond the schema's ------------------------------------------------

def parquet_uint64(rng, record: dict, like: Like) -> str:
    """A counter above the int64 range (the file's column becomes uint64)."""
    name = pick(rng, ("bytes_up", "bytes_down", "duration_s"))
    if SERVICE_OF_FIELD[name] != record["service"]:
        become(record, like(SERVICE_OF_FIELD[name]))
    value = pick(rng, (2**63, 2**64 - 1, 2**63 + 2**20, INT64_MAX))
    record[name] = value
    return f"{name}={value} (uint64 column)"


def parquet_wide_int(rng, record: dict, like: Like) -> str:
    """A 32-bit field beyond 32 bits (the file's column becomes int64)."""
    name = pick(rng, ("message_count", "partial_sequence"))
    if name == "message_count" and record["service"] != "SMS":
        become(record, like("SMS"))
    value = pick(rng, BEYOND_INT32 + (INT64_MAX, INT64_MIN))
    record[name] = value
    return f"{name}={value} (int64 column)"


def required_null(rng, record: dict, like: Like) -> str:
    name = pick(rng, ("record_id", "source", "service", "served_msisdn", "start_time", "duration_s"))
    record[name] = None
    return f"{name}=null"


def far_timestamp(rng, record: dict, like: Like) -> str:
    """An instant a seconds or milliseconds column holds and microseconds cannot (year ~146,000)."""
    value = pick(rng, (2**62 * 1000, -(2**62) * 1000, INT64_MAX * 1000))
    record["start_time"] = value
    return f"start_time={value}us (beyond int64 microseconds)"


PARQUET_ONLY = {"parquet_uint64": parquet_uint64, "parquet_wide_int": parquet_wide_int,
                "required_null": required_null}   # far_timestamp too, when the column's unit is s or ms
