"""zones/*.csv, roaming/*.csv (prefix -> zone) and calendars/*.csv (holiday dates)."""

from __future__ import annotations

import re
from pathlib import Path

from rating.reference import times
from rating.reference.csv_tables import column, read_csv_table
from rating.reference.issues import IssueLog
from rating.reference.model import Calendar, ZoneTable

# Zone and band names: what charge lines and reports show.
NAME = re.compile(r"[A-Z0-9_]+")
NAME_EXPECTED = "a name of capital letters, digits and _ such as NATIONAL"
_DESTINATION_DIGITS = (1, 15)   # E.164 without "+"
_NETWORK_DIGITS = (3, 6)        # MCC, or MCC+MNC


def read_zone_table(root: Path, relative: str, log: IssueLog, *,
                    roaming: bool) -> tuple[ZoneTable, frozenset[str]] | None:
    """The table (prefixes sorted) and every zone name it mentions; ``None`` if unreadable."""
    table = read_csv_table(root, relative, ("prefix", "zone"), log)
    if table is None:
        return None
    shortest, longest = _NETWORK_DIGITS if roaming else _DESTINATION_DIGITS
    what = "an MCC or MCC+MNC" if roaming else "an E.164 prefix without +"
    first_line: dict[str, int] = {}
    zones: set[str] = set()
    prefixes = []
    for line, prefix, zone in table.rows():
        good = True
        if not (shortest <= len(prefix) <= longest and prefix.isdigit() and prefix.isascii()):
            log.add(relative, column(line, "prefix"),
                    f"expected {what}: {shortest} to {longest} digits 0-9, got {prefix!r}")
            good = False
        elif prefix in first_line:
            log.add(relative, column(line, "prefix"),
                    f"duplicate prefix {prefix!r} (first on line {first_line[prefix]}); keep one "
                    f"row per prefix")
            good = False
        else:
            first_line[prefix] = line
        if zone not in zones:
            if NAME.fullmatch(zone) is None:
                log.add(relative, column(line, "zone"), f"expected {NAME_EXPECTED}, got {zone!r}")
                continue
            zones.add(zone)
        if good:
            prefixes.append((prefix, zone))
    prefixes.sort()
    return ZoneTable(relative, tuple(prefixes)), frozenset(zones)


def read_calendar(root: Path, relative: str, log: IssueLog) -> Calendar | None:
    """Holiday dates (sorted ISO strings), unique; ``None`` if unreadable."""
    table = read_csv_table(root, relative, ("date", "description"), log)
    if table is None:
        return None
    first_line: dict[str, int] = {}
    for line, date_text, _description in table.rows():
        try:
            times.parse_date(date_text)
        except ValueError as exc:
            log.add(relative, column(line, "date"), str(exc))
            continue
        if date_text in first_line:
            log.add(relative, column(line, "date"),
                    f"duplicate date {date_text} (first on line {first_line[date_text]}); keep one")
            continue
        first_line[date_text] = line
    return Calendar(relative, tuple(sorted(first_line)))
