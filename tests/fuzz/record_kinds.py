"""Record kinds: valid files and messages with some records' values mutated.

The file or message framing is sound, so a correct pipeline never refuses the input as a whole:
each mutated record is rated (when its values are still valid) or rejected alone, the records
written beside it are all rated, and nothing else moves. Each builder is
``(kind, seed, rng, pool, n) -> Case``.
"""

from __future__ import annotations

import functools

import pyarrow as pa

from cdr_schemas.messages import AVRO_DATUM, JSON
from cdr_schemas.registry import USAGE_V1, USAGE_V2
from tests.fuzz import structure, values
from tests.fuzz.cases import (MICROS, MILLIS_STORAGE, V1, Message, Storage, avro_file, jsonl_text, make_added,
                              parquet_types, record_case)
from tests.fuzz.encode import MILLIS, encode_datum, jsonl_line, parquet_bytes, writer_schema
from tests.fuzz.values import pick

_UNIT_US = {"s": 1_000_000, "ms": 1000, "us": 1}


def jsonl_values(kind, seed, rng, pool, n):
    """JSON lines: every mutator, JSON-only ones included (wrong types, NaN, nesting, bad bytes)."""
    added = make_added(rng, pool, seed, n, MICROS, {**values.IN_TYPE, **values.JSON_ONLY})
    data = jsonl_text(rng, added)
    return record_case(kind, seed, added, MICROS, added.describe("jsonl"), file_name="fuzz-added.jsonl",
                       file_bytes=data, records_in=structure.records_in_text(data))


def avro_values(kind, seed, rng, pool, n):
    """An Avro container (v1 or v2 writer schema, null or deflate): values inside the Avro types."""
    schema_name = pick(rng, (USAGE_V1, USAGE_V2))
    storage = V1 if schema_name == USAGE_V1 else MICROS
    added = make_added(rng, pool, seed, n, storage, {**values.IN_TYPE, "invalid_utf8": values.invalid_utf8})
    codec = pick(rng, ("null", "deflate"))
    container, _ = avro_file(rng, added.stored, schema_name, codec)
    return record_case(kind, seed, added, storage,
                       added.describe(f"avro {schema_name} {codec} {len(container.blocks)} blocks"),
                       file_name="fuzz-added.avro", file_bytes=container.data, records_in=n)


def avro_millis_values(kind, seed, rng, pool, n):
    """A writer schema whose start_time is timestamp-millis; starts beyond datetime's years 1..9999
    in some records."""
    mutators = {"start_time": functools.partial(values.start_time, millis=True),
                "number": functools.partial(values.number, millis=True),
                "overflowing_sum": values.overflowing_sum, "odd_string": values.odd_string}
    added = make_added(rng, pool, seed, n, MILLIS_STORAGE, mutators)
    codec = pick(rng, ("null", "deflate"))
    container, _ = avro_file(rng, added.stored, MILLIS, codec)
    return record_case(kind, seed, added, MILLIS_STORAGE,
                       added.describe(f"avro timestamp-millis {codec} {len(container.blocks)} blocks"),
                       file_name="fuzz-added.avro", file_bytes=container.data, records_in=n)


def parquet_values(kind, seed, rng, pool, n):
    """Parquet with start_time in us, ms or s: in-type values, nulls in required columns, a uint64
    counter above int64, a 32-bit field beyond 32 bits, and (ms, s) instants microseconds cannot hold."""
    unit = pick(rng, ("us", "us", "ms", "s"))
    storage = Storage(start_per_us=_UNIT_US[unit])
    mutators = {**values.IN_TYPE, **values.PARQUET_ONLY}
    if unit != "us":
        mutators["far_timestamp"] = values.far_timestamp
    added = make_added(rng, pool, seed, n, storage, mutators)
    for record in added.stored:   # the stored form is microseconds floored to the unit
        if isinstance(record.get("start_time"), int):
            record["start_time"] = _fit_timestamp(record["start_time"], unit)
    types = parquet_types(rng, added.stored, unit)
    for name, arrow_type in types.items():   # a uint64 column cannot hold the negative values of other rows
        if arrow_type == pa.uint64():
            for i, record in enumerate(added.stored):
                if isinstance(record.get(name), int) and record[name] < 0:
                    record[name] = 0
                    added.notes.append(f"#{i} {name} negative -> 0 (uint64 column)")
    data = parquet_bytes(added.stored, types, row_group_size=int(rng.integers(7, 500)),
                         data_page_size=pick(rng, (512, 4096, 1 << 20)))
    return record_case(kind, seed, added, storage, added.describe(f"parquet start unit {unit}"),
                       file_name="fuzz-added.parquet", file_bytes=data, records_in=n)


def _fit_timestamp(micros: int, unit: str) -> int:
    """``micros`` floored to ``unit``, and at least the lowest instant the unit's int64 holds."""
    per = _UNIT_US[unit]
    floored = micros // per * per
    return floored if floored >= -(2**63) else -(2**63) // per * per + per


def pubsub_json_values(kind, seed, rng, pool, n):
    """One JSON message per record, every mutator."""
    added = make_added(rng, pool, seed, n, MICROS, {**values.IN_TYPE, **values.JSON_ONLY})
    messages = []
    for record, raw in zip(added.stored, added.raw):
        payload = raw if raw is not None else jsonl_line(record, iso_start=bool(rng.random() < 0.7))
        messages.append(Message(payload, {"content-type": JSON}, 1, False, len(payload) + 1))
    return record_case(kind, seed, added, MICROS, added.describe("Pub/Sub JSON messages"),
                       messages=tuple(messages), records_in=n)


def pubsub_datum_values(kind, seed, rng, pool, n):
    """One Avro datum message per record (schema attribute v1 or v2), values inside the Avro types."""
    schema_name = pick(rng, (USAGE_V1, USAGE_V2))
    storage = V1 if schema_name == USAGE_V1 else MICROS
    added = make_added(rng, pool, seed, n, storage, {**values.IN_TYPE, "invalid_utf8": values.invalid_utf8})
    schema = writer_schema(schema_name)
    datums = [encode_datum(r, schema) for r in added.stored]
    messages = tuple(Message(d, {"content-type": AVRO_DATUM, "schema": schema_name}, 1, False, len(d) + 1)
                     for d in datums)
    return record_case(kind, seed, added, storage, added.describe(f"Pub/Sub Avro datums ({schema_name})"),
                       messages=messages, records_in=n)
