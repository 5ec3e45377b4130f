"""Build usage batches from short row dicts in tests: unspecified fields take neutral defaults."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa

from cdr_schemas import usage_batch_schema

_DEFAULTS = dict(other_party=None, duration_s=0, bytes_up=0, bytes_down=0, message_count=0, usage_type=None,
                 quantity=None, subscriber=None, subscriber_kind=None,
                 visited_network=None, cell_id=None, imsi=None, apn=None, termination_cause=None,
                 rat_type=None, partial_sequence=0, input_file="test.jsonl")


def instant_us(text: str) -> int:
    """Epoch microseconds of an ISO 8601 instant with offset, e.g. '2026-01-05T10:00:00+01:00'."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def usage_row(index: int = 0, **fields) -> dict:
    """A full usage row; ``start_time`` may be an ISO string or epoch microseconds."""
    row = {"record_id": f"r{index}", "source": "sw1", "input_position": index, **_DEFAULTS, **fields}
    if isinstance(row["start_time"], str):
        row["start_time"] = instant_us(row["start_time"])
    return row


def usage_batch(rows: list[dict]) -> pa.RecordBatch:
    """A batch in ``usage_batch_schema()`` from full rows (start_time as epoch microseconds)."""
    schema = usage_batch_schema()
    columns = []
    for field in schema:
        values = [r[field.name] for r in rows]
        if pa.types.is_timestamp(field.type):
            columns.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            columns.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def mixed_events() -> list[dict]:
    """300 hourly events from 2026-01-05 on ``tests/data/reference_examples``: calls of three
    subscribers (two with bundles) and data sessions of a fourth, with random durations and volumes."""
    rnd = random.Random(3)
    base = instant_us("2026-01-05T08:00:00+01:00")
    rows = []
    for i in range(300):
        msisdn = rnd.choice(["491510000002", "491510000003", "491510000004", "491510000001"])
        service = "DATA" if msisdn == "491510000004" else "VOICE"
        fields = dict(service=service, served_msisdn=msisdn, start_time=base + i * 3_600_000_000 + rnd.randrange(10**9))
        if service == "VOICE":
            fields.update(duration_s=rnd.randrange(0, 200), other_party=rnd.choice(["015112345678", "030123456"]))
        else:
            fields.update(bytes_down=rnd.randrange(0, 400 * 2**20))
        rows.append(usage_row(i, **fields))
    return rows
