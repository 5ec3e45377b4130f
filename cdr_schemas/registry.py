"""The project's Avro schemas by name, parsed once.

Each name is a file in ``cdr_schemas/avro/``. ``USAGE_LATEST`` is the reader schema every decoder
uses: files written with an older usage schema are resolved to it by Avro's rules (new fields take
their defaults).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

USAGE_V1 = "usage_record_v1"
USAGE_V2 = "usage_record_v2"
USAGE_V3 = "usage_record_v3"
USAGE_LATEST = USAGE_V3
RATED_EVENT = "rated_event_v1"
CHARGE_LINE = "charge_line_v1"
REJECTED_RECORD = "rejected_record_v1"
DUPLICATE_RECORD = "duplicate_record_v1"
CONTROL_TOTALS = "control_totals_v1"
INVOICE_SUMMARY = "invoice_summary_v1"


@functools.cache
def load_schema(name: str) -> dict:
    """Return the Avro schema ``name`` as a JSON dict (not parsed by fastavro; callers parse)."""
    try:
        text = resources.files("cdr_schemas").joinpath("avro", f"{name}.avsc").read_text()
    except FileNotFoundError:
        raise ValueError(f"unknown Avro schema {name!r}: expected a file cdr_schemas/avro/{name}.avsc") from None
    return json.loads(text)
