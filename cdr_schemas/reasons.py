"""Reason codes for records that are not rated. Stable strings: they are written to outputs.

Each code has an integer (the kernels' ``out_reason`` column uses it; 0 means rated) and a short
description used in docs and summaries.
"""

from __future__ import annotations

import enum


class Reason(enum.IntEnum):
    RATED = 0
    # Decoding (the record could not be turned into a usage row).
    MALFORMED_RECORD = 1        # not parseable in its container format (bad JSON, bad Avro datum)
    MISSING_FIELD = 2           # a required field absent or null
    INVALID_FIELD = 3           # a field of the wrong type or out of range (negative duration, bad enum)
    # Validation.
    INVALID_NUMBER = 10         # other party has characters that are not digits after normalisation
    MISSING_DESTINATION = 11    # voice or SMS without other_party
    # Enrichment.
    UNKNOWN_SUBSCRIBER = 20     # no subscription for the subscriber identity at the start time
    NO_PLAN_VERSION = 21        # the plan has no version in force at the start time
    UNKNOWN_USAGE_TYPE = 22     # the record's usage type is not declared in the reference data
    # Rating.
    NO_ZONE = 30                # no prefix of the destination (or visited network) is in the zone table
    NO_RATE = 31                # the plan version has no rate for (service, zone, band)
    OVERFLOW = 32               # the event's charge does not fit the int64 micro-unit range

    CYCLE_CLOSED = 40           # the event's service cycle is closed (invoiced): a re-rate bills it


DESCRIPTIONS = {
    Reason.MALFORMED_RECORD: "record could not be parsed in its container format",
    Reason.MISSING_FIELD: "a required field is absent or null",
    Reason.INVALID_FIELD: "a field has the wrong type or is out of range",
    Reason.INVALID_NUMBER: "destination is not a dialable number after normalisation",
    Reason.MISSING_DESTINATION: "voice or SMS record without other_party",
    Reason.UNKNOWN_SUBSCRIBER: "no subscription for the subscriber identity (MSISDN, IMSI, SIP URI, account) at the start",
    Reason.NO_PLAN_VERSION: "the subscriber's plan has no version in force at the event's start",
    Reason.UNKNOWN_USAGE_TYPE: "the record's usage type is not declared in the reference data",
    Reason.NO_ZONE: "no zone matches the destination or visited network",
    Reason.NO_RATE: "the plan version has no rate for the service, zone and band",
    Reason.OVERFLOW: "the charge does not fit in int64 micro-units",
    Reason.CYCLE_CLOSED: "the event's service cycle is closed (its invoices are issued): re-rate the cycle to bill it",
}


def reason_name(code: int) -> str:
    """The stable string written to outputs for an integer reason code."""
    return Reason(code).name
