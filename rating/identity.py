"""Subscriber identities: (kind, value) pairs and the one string key each is looked up by.

A subscription is declared for an identity of one of ``KINDS``; a usage record names its
subscriber by ``subscriber`` + ``subscriber_kind`` when ``subscriber`` is set, else by
``served_msisdn`` (kind msisdn). Both sides meet in one string key, so subscriber lookup stays a
single ``StringIndex`` lookup per row:

* ``msisdn``: E.164 digits, 1 to 15, no leading 0; the key is the bare digits (today's key, so
  MSISDN rows take the index's integer fast path).
* ``imsi``: digits, 6 to 15; key ``imsi:<digits>``.
* ``sip``: ``sip:user@host``; the scheme and the host are compared case-insensitively (lower-cased),
  the user part exactly; the key is the normalised URI itself (it starts with ``sip:``).
* ``account``: any non-empty string of printable characters without a comma, compared exactly;
  key ``account:<code>``.

Keys cannot collide across kinds: an MSISDN key has no colon, every other key starts with its kind
name and a colon. A value that is not valid for its kind has no key (no subscription can match it:
the record is rejected UNKNOWN_SUBSCRIBER). ``identity_key`` is the rule for one value;
``identity_keys`` the same rule over Arrow columns (the subscriptions loader and rating use it).
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("msisdn", "imsi", "sip", "account")
MSISDN = "msisdn"
# What a valid value of each kind looks like (sip before normalisation), and the fix to show. Explicit
# character classes only: Python's re (identity_key) and Arrow's RE2 (identity_keys) read them alike.
# A SIP host is printable ASCII (a domain name, punycode for others, or an address), so lower-casing
# it means the same to Python and Arrow.
PATTERNS = {
    "msisdn": "^[1-9][0-9]{0,14}$",
    "imsi": "^[0-9]{6,15}$",
    "sip": "^[sS][iI][pP]:[^@:\\x00-\\x20\\x7f]+@[!-?A-~]+$",
    "account": "^[^,\\x00-\\x1f\\x7f]+$",
}
EXPECTED = {
    "msisdn": "an E.164 number: 1 to 15 digits, country code first, no + or spaces",
    "imsi": "an IMSI: 6 to 15 digits",
    "sip": "a SIP URI sip:user@host",
    "account": "an account code: printable characters, no comma",
}
_PREFIX = {"imsi": "imsi:", "account": "account:"}   # sip keys start with "sip:" already; msisdn has none


def identity_key(kind: str, value: str) -> str | None:
    """The lookup key of identity (``kind``, ``value``); ``None`` when the value is not valid for the
    kind (or the kind is unknown)."""
    pattern = PATTERNS.get(kind)
    if pattern is None or value is None or re.fullmatch(pattern, value) is None:
        return None
    if kind == "sip":
        user, host = value[4:].split("@", 1)
        return f"sip:{user}@{host.lower()}"
    return _PREFIX.get(kind, "") + value


def label(kind: str | None, value: str) -> str:
    """How invoices and reports name a subscriber: the MSISDN or SIP URI as it is, else ``kind:value``."""
    return value if kind in (None, "msisdn", "sip") else f"{kind}:{value}"


def identity_keys(kind: pa.Array, value: pa.Array) -> pa.Array:
    """``identity_key`` per row of two string arrays (null where there is no key)."""
    value = value.cast(pa.string())
    present = pc.unique(kind).to_pylist()
    kinds = [k for k in KINDS if k in present]
    if not kinds:
        return pa.nulls(len(value), pa.string())
    conditions, choices = [], []
    for k in kinds:
        valid = pc.fill_null(pc.match_substring_regex(value, PATTERNS[k]), False)
        every_row = present == [k]   # e.g. a file of MSISDNs: no comparison
        conditions.append(valid if every_row else pc.and_(pc.fill_null(pc.equal(kind, k), False), valid))
        choices.append(_keys_of_kind(k, value))
    if len(kinds) == 1:
        return pc.if_else(conditions[0], choices[0], pa.scalar(None, pa.string()))
    chosen = pc.case_when(pc.make_struct(*conditions, field_names=kinds), *choices)
    return chosen.cast(pa.string())


def _keys_of_kind(kind: str, value: pa.Array) -> pa.Array:
    """The keys ``value`` would have if every row were of ``kind`` (meaningful where valid)."""
    if kind == "sip":
        parts = pc.extract_regex(value, "^(?P<scheme>[sS][iI][pP]):(?P<user>[^@]*)@(?P<host>.*)$")
        return pc.binary_join_element_wise(
            "sip:", pc.struct_field(parts, "user"), "@", pc.utf8_lower(pc.struct_field(parts, "host")), "")
    if kind in _PREFIX:
        return pc.binary_join_element_wise(_PREFIX[kind], value, "")
    return value


def subscriber_keys(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """Each usage row's subscriber key: of (``subscriber_kind``, ``subscriber``) when ``subscriber``
    is set, else ``served_msisdn`` as it is (null when neither gives one).

    A batch whose ``subscriber`` column is absent or all null (MSISDN traffic) returns its
    ``served_msisdn`` column untouched: no copy, today's lookup.
    """
    served = _column(batch, "served_msisdn")
    if "subscriber" not in batch.schema.names:
        return served
    subscriber = _column(batch, "subscriber")
    if subscriber.null_count == len(subscriber):
        return served
    named = pc.is_valid(subscriber)
    rows = pc.indices_nonzero(named)   # only these rows' keys are computed
    keys = identity_keys(_column(batch, "subscriber_kind").take(rows), subscriber.take(rows))
    return pc.replace_with_mask(served.cast(pa.string()), named, keys)


def _column(batch, name: str) -> pa.Array:
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
