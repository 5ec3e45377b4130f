"""CGRateS destinations -> one zone table: a zone per distinct chain of matching prefixes.

CGRateS matches the destination as given, longest prefix first, and falls back to shorter prefixes
(and finally to the ``*any`` destination) when a rating plan has no rate at the longer one. Which
rate applies therefore depends on every listed prefix of the destination, not only the longest. A
zone here is the *chain* of destination groups along the prefixes of a number, longest first: two
prefixes with the same chain rate identically under every plan, so they share a zone. Numbers no
prefix matches fall in the catch-all zone ``ANY`` (CGRateS's ``*any`` destination), written as the
ten one-digit prefixes not otherwise listed.

Destinations are matched as given: the generated plans leave numbers untouched (no country code),
so a prefix is stored as its digits. A ``+`` in front is dropped, because rating strips a leading
``+`` from the dialled number too. A prefix with other characters (tutorial2's ``voicemail``) is a
string prefix of the zone table, compared case-folded (CGRateS compares case-sensitively: two
prefixes that differ only in case are reported); one rating cannot hold (a space, ``49-17``) is
reported.
"""

from __future__ import annotations

import dataclasses
import re

from rating.cgrates.report import Report
from rating.cgrates.values import ANY
from rating.reference.zone_tables import fold_destination, is_string_prefix

CATCH_ALL = "ANY"
_MAX_DIGITS = 15
_NOT_NAME = re.compile(r"[^A-Z0-9_]")

Chain = tuple[tuple[str, ...], ...]   # destination ids per matching prefix, longest prefix first


@dataclasses.dataclass(frozen=True)
class ZoneTable:
    rows: tuple[tuple[str, str], ...]        # (digits or case-folded string prefix, zone), sorted by prefix
    chains: dict[str, Chain]                 # zone -> its chain; CATCH_ALL -> ()
    prefixes: dict[str, tuple[str, ...]]     # zone -> the CGRateS prefixes it holds (as written)


def build_zone_table(destination_ids: set[str], destinations: dict[str, list[tuple[str, str]]],
                     report: Report) -> ZoneTable:
    """The zone table for the destinations the imported rating plans use (``*any`` excluded)."""
    groups: dict[str, set[str]] = {}    # digits (or folded string) -> destination ids listing that prefix
    written: dict[str, set[str]] = {}   # digits (or folded string) -> prefixes as written ("+49151", "49151")
    for dest_id in sorted(destination_ids - {ANY}):
        if dest_id not in destinations:
            continue   # reported by the rate resolution, which knows the rating plan asking for it
        for prefix, where in destinations[dest_id]:
            digits = prefix[1:] if prefix.startswith("+") else prefix
            if not digits or not digits.isascii() or not digits.isdigit():
                if is_string_prefix(prefix):
                    groups.setdefault(fold_destination(prefix), set()).add(dest_id)
                    written.setdefault(fold_destination(prefix), set()).add(prefix)
                    continue
                report.unsupported(where, f"prefix {prefix!r} of {dest_id} is neither a number nor a string prefix "
                                          f"rating can match (letters, digits and @ . _ - + : * #, with a letter or "
                                          f"one of @ _ : * #), so destinations starting with {prefix!r} are rejected "
                                          f"INVALID_NUMBER instead of rated by {dest_id}")
                continue
            if len(digits) > _MAX_DIGITS:
                report.unsupported(where, f"prefix {prefix!r} of {dest_id} is longer than {_MAX_DIGITS} digits; "
                                          f"not imported")
                continue
            groups.setdefault(digits, set()).add(dest_id)
            written.setdefault(digits, set()).add(prefix)
    plus = sorted(p for forms in written.values() for p in forms if p.startswith("+"))
    for digits, forms in sorted(written.items()):
        if len(forms) > 1 and digits.isdigit():
            report.unsupported(f"prefix {digits}", f"listed both with and without '+' ({', '.join(sorted(forms))}); "
                                                   f"rating strips the '+', so both forms share one zone (CGRateS "
                                                   f"keeps them apart)")
        elif len(forms) > 1:
            report.unsupported(f"prefix {digits}", f"listed in several cases ({', '.join(sorted(forms))}); rating "
                                                   f"compares destinations case-folded, so they share one zone "
                                                   f"(CGRateS keeps them apart)")
    if plus:
        report.note("Destinations.csv", f"{len(plus)} prefixes written with '+' ({', '.join(plus[:5])}"
                                        f"{', ...' if len(plus) > 5 else ''}) are stored without it: a number "
                                        f"dialled as +49151... matches them as in CGRateS, and so does 49151... "
                                        f"(which CGRateS would not match)")

    chains_by_prefix = {digits: _chain(digits, groups) for digits in groups}
    names = _zone_names(sorted(set(chains_by_prefix.values())))
    rows = [(digits, names[chain]) for digits, chain in chains_by_prefix.items()]
    rows += [(digit, CATCH_ALL) for digit in "0123456789" if digit not in groups]
    zones: dict[str, Chain] = {names[chain]: chain for chain in names}
    zones[CATCH_ALL] = ()
    prefixes: dict[str, list[str]] = {}
    for digits, zone in rows:
        if zone != CATCH_ALL:
            prefixes.setdefault(zone, []).extend(sorted(written[digits]))
    return ZoneTable(tuple(sorted(rows)), zones, {z: tuple(p) for z, p in sorted(prefixes.items())})


def _chain(digits: str, groups: dict[str, set[str]]) -> Chain:
    return tuple(tuple(sorted(groups[digits[:n]])) for n in range(len(digits), 0, -1) if digits[:n] in groups)


def _zone_names(chains: list[Chain]) -> dict[Chain, str]:
    """Name each chain after the destination ids of its longest prefix, e.g. DST_1002 or
    DST_20__DST_2030; a suffix _2, _3... tells apart chains that would share a name."""
    names: dict[Chain, str] = {}
    taken = {CATCH_ALL}
    # Shorter chains first, so the plain name goes to the destination group on its own.
    for chain in sorted(chains, key=lambda c: (len(c), c)):
        base = _NOT_NAME.sub("_", "__".join(chain[0]).upper()) or "ZONE"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names[chain] = name
    return names
