"""Reference data: tariff plans, zone tables, calendars, accounts, subscriptions, tax rates.

``load_reference(DIR)`` reads and validates a reference-data directory (format in
``docs/reference-data.md``) into the frozen model of :mod:`rating.reference.model`, raising
:class:`ReferenceDataError` with every issue found; ``check_reference(DIR)`` returns the issues
instead (what ``usage-rating validate-reference`` prints).
"""

from rating.reference.issues import ReferenceDataError, ReferenceIssue
from rating.reference.loader import check_reference, load_reference
from rating.reference.model import ReferenceData
from rating.reference.money import parse_money_micros
from rating.reference.times import parse_instant_us

__all__ = [
    "ReferenceData",
    "ReferenceDataError",
    "ReferenceIssue",
    "check_reference",
    "load_reference",
    "parse_instant_us",
    "parse_money_micros",
]
