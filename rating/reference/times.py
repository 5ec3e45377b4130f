"""Instants, dates, times of day and IANA timezone names as written in reference files.

Every parser raises ``ValueError`` with a message that says what was expected and what was found
(without a location: the caller adds file and line).
"""

from __future__ import annotations

import datetime
import functools
import re
import zoneinfo

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_ONE_US = datetime.timedelta(microseconds=1)
_INSTANT_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.([0-9]+))?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME_TEXT = re.compile(r"([0-9]{2}):([0-9]{2})")
_INSTANT_EXAMPLE = "2026-01-01T00:00:00+01:00 or 2026-01-01T00:00:00Z"
# Present in the tz database directory but not zone names anyone should configure.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
MINUTES_PER_DAY = 24 * 60


def datetime_us(value: datetime.datetime) -> int:
    """Epoch microseconds (UTC) of a timezone-aware datetime, exact integer arithmetic."""
    return (value - _EPOCH) // _ONE_US


def parse_instant_us(text: object) -> int:
    """ISO 8601 instant with ``Z`` or an offset -> int epoch microseconds, UTC.

    ``"2026-01-01T00:00:00+01:00"`` -> ``1767222000000000``. Seconds and up to 6 fraction digits
    are optional. A timezone-aware ``datetime`` (what YAML makes of an unquoted instant) is
    accepted too. Raises ``ValueError`` for a missing offset, a date only, or an impossible date.
    """
    if isinstance(text, datetime.datetime):
        if text.tzinfo is None or text.utcoffset() is None:
            raise ValueError(
                f"expected an instant with Z or an offset, got {text.isoformat()} without one; "
                f"write e.g. {_INSTANT_EXAMPLE}")
        return datetime_us(text)
    if isinstance(text, datetime.date):
        raise ValueError(
            f"expected an instant (date, time and Z or offset), got the date {text.isoformat()}; "
            f"write e.g. {text.isoformat()}T00:00:00Z")
    if not isinstance(text, str):
        raise ValueError(
            f"expected an ISO 8601 instant such as {_INSTANT_EXAMPLE}, "
            f"got {type(text).__name__} {text!r}")
    match = _INSTANT_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(
            f"expected an ISO 8601 instant with Z or an offset such as {_INSTANT_EXAMPLE}, "
            f"got {text!r}")
    if match.group(1) is not None and len(match.group(1)) > 6:
        raise ValueError(f"expected at most 6 fraction digits (microseconds), got {text!r}")
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected a valid instant, got {text!r}, which is not a real date or "
                         f"time") from None
    return datetime_us(value)


def parse_date(value: object) -> datetime.date:
    """``"2026-12-25"`` (or the date YAML makes of it) -> ``datetime.date``."""
    if isinstance(value, datetime.datetime) or not isinstance(value, (str, datetime.date)):
        raise ValueError(f"expected an ISO date such as 2026-12-25, got {value!r}")
    if isinstance(value, datetime.date):
        return value
    if _DATE_TEXT.fullmatch(value) is None:
        raise ValueError(f"expected an ISO date such as 2026-12-25, got {value!r}")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected a valid date, got {value!r}, which does not exist") from None


def parse_minute_of_day(value: object, *, allow_end_of_day: bool) -> int:
    """``"08:30"`` -> ``510``; ``"24:00"`` -> ``1440`` only with ``allow_end_of_day``."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 20:00 as the base-60 integer 1200.
        written = f"{value // 60:02d}:{value % 60:02d}" if value >= 60 else "HH:MM"
        raise ValueError(
            f"expected a quoted time of day \"HH:MM\", got the YAML number {value!r} (YAML reads "
            f"an unquoted {written} as a base-60 number); quote it: \"{written}\"")
    match = _TIME_TEXT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a time of day \"HH:MM\" such as \"08:00\", got {value!r}")
    hours, minutes = int(match.group(1)), int(match.group(2))
    minute = hours * 60 + minutes
    if minute == MINUTES_PER_DAY and allow_end_of_day:
        return minute
    if hours > 23 or minutes > 59:
        allowed = "00:00..24:00" if allow_end_of_day else "00:00..23:59"
        raise ValueError(f"expected a time of day in {allowed}, got {value!r}")
    return minute


@functools.lru_cache(maxsize=None)
def _known_zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def check_timezone(value: object) -> str:
    """Return ``value`` if it is a known IANA timezone name, else raise ``ValueError``."""
    if isinstance(value, str) and value in _known_zone_names():
        return value
    raise ValueError(
        f"expected an IANA timezone name such as Europe/Berlin, got {value!r}, which is not in "
        f"the tz database")


def format_instant_us(value_us: int) -> str:
    """Epoch microseconds -> ``2026-01-01T00:00:00Z`` (with a fraction only when there is one)."""
    value = _EPOCH + datetime.timedelta(microseconds=value_us)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")
