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


# Non-numeric destinations: characters a string rule may hold besides letters and digits.
STRING_RULE_PUNCTUATION = "@._-+:*#"
STRING_RULE_MAX_CHARS = 128
_STRING_EXPECTED = (f"letters, digits 0-9 and {' '.join(STRING_RULE_PUNCTUATION)} "
                    f"(at most {STRING_RULE_MAX_CHARS} characters)")
# A prefix of digits and number separators only is a mistyped number, not a string prefix.
_NUMBER_LIKE = re.compile(r"[0-9+\-.]*")
MATCH_KINDS = ("prefix", "exact")


def fold_destination(text: str) -> str:
    """A destination or string rule as zoning compares it: surrounding whitespace removed, Unicode
    case-folded (``str.casefold``: ``VoiceMail`` and ``voicemail`` are one; ``ß`` folds to ``ss``)."""
    return text.strip().casefold()


def is_string_rule_text(text: str) -> bool:
    """Whether ``text`` may be the value of an ``exact`` rule."""
    return (0 < len(text) <= STRING_RULE_MAX_CHARS
            and all(c.isalpha() or "0" <= c <= "9" or c in STRING_RULE_PUNCTUATION for c in text))


def is_string_prefix(text: str) -> bool:
    """Whether ``text`` may be a string prefix: a valid rule value that is not digits and number
    separators only (``+4917`` and ``49-17`` are mistyped numbers)."""
    return is_string_rule_text(text) and _NUMBER_LIKE.fullmatch(text) is None


def read_zone_table(root: Path, relative: str, log: IssueLog, *,
                    roaming: bool) -> tuple[ZoneTable, frozenset[str]] | None:
    """The table (rules sorted) and every zone name it mentions; ``None`` if unreadable.

    A zone table may have a ``match`` column (``prefix``, the default, or ``exact``) and string
    rules (docs/reference-data.md); a roaming table is MCC+MNC digit prefixes only.
    """
    table = read_csv_table(root, relative, ("prefix", "zone"), log, optional=() if roaming else ("match",))
    if table is None:
        return None
    shortest, longest = _NETWORK_DIGITS if roaming else _DESTINATION_DIGITS
    what = "an MCC or MCC+MNC" if roaming else "an E.164 prefix without +"
    first_line: dict[tuple[str, str], int] = {}
    zones: set[str] = set()
    rules: dict[str, list[tuple[str, str]]] = {"digits": [], "string": [], "exact": []}
    for line, prefix, zone, *match in table.rows():
        kind = _rule_kind(relative, line, prefix, match[0] if match else "", roaming, log,
                          f"expected {what}: {shortest} to {longest} digits 0-9, got {prefix!r}")
        if kind == "digits" and not shortest <= len(prefix) <= longest:
            log.add(relative, column(line, "prefix"),
                    f"expected {what}: {shortest} to {longest} digits 0-9, got {prefix!r}")
            kind = None
        key = prefix if kind == "digits" else fold_destination(prefix)
        namespace = "exact" if kind == "exact" else "prefix"
        if kind is not None and (namespace, key) in first_line:
            same = "" if key == prefix else " once case is ignored"
            log.add(relative, column(line, "prefix"),
                    f"duplicate {'exact value' if kind == 'exact' else 'prefix'} {prefix!r}{same} (first on line "
                    f"{first_line[namespace, key]}); keep one row per {'value' if kind == 'exact' else 'prefix'}")
            kind = None
        elif kind is not None:
            first_line[namespace, key] = line
        if zone not in zones:
            if NAME.fullmatch(zone) is None:
                log.add(relative, column(line, "zone"), f"expected {NAME_EXPECTED}, got {zone!r}")
                continue
            zones.add(zone)
        if kind is not None:
            rules[kind].append((key, zone))
    for found in rules.values():
        found.sort()
    return (ZoneTable(relative, tuple(rules["digits"]), tuple(rules["string"]), tuple(rules["exact"])),
            frozenset(zones))


def _rule_kind(relative: str, line: int, prefix: str, match: str, roaming: bool, log: IssueLog,
               digits_expected: str) -> str | None:
    """``digits`` (a digit-trie prefix), ``string`` (a string prefix), ``exact``, or ``None`` after
    logging why the row is not a rule."""
    if match not in ("", *MATCH_KINDS):
        log.add(relative, column(line, "match"), f"expected prefix or exact (empty: prefix), got {match!r}")
        return None
    digits = prefix.isascii() and prefix.isdigit()
    if match == "exact":
        if is_string_rule_text(prefix):
            return "exact"
        log.add(relative, column(line, "prefix"), f"expected a destination of {_STRING_EXPECTED}, got {prefix!r}")
        return None
    if digits or roaming:
        if not digits:
            log.add(relative, column(line, "prefix"), digits_expected)
            return None
        return "digits"
    if is_string_prefix(prefix):
        return "string"
    if _NUMBER_LIKE.fullmatch(prefix):
        log.add(relative, column(line, "prefix"),
                f"{digits_expected}; a string prefix needs a letter or one of @ _ : * # (for a number, write its "
                f"digits only)")
    else:
        log.add(relative, column(line, "prefix"),
                f"{digits_expected}; or a string prefix of {_STRING_EXPECTED} such as voicemail or sip:")
    return None


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
