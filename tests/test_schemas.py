"""The Avro schemas and their Arrow mapping: every schema maps both ways, v1 files resolve to v2."""

from __future__ import annotations

import io
from importlib import resources

import fastavro
import pyarrow as pa
import pytest

from cdr_schemas import (
    PROVENANCE_FIELDS,
    USAGE_LATEST,
    USAGE_V1,
    USAGE_V2,
    USAGE_V3,
    arrow_to_avro,
    avro_to_arrow,
    load_schema,
    rejected_schema,
    usage_batch_schema,
)

SCHEMA_NAMES = sorted(
    entry.name.removesuffix(".avsc")
    for entry in resources.files("cdr_schemas").joinpath("avro").iterdir()
    if entry.name.endswith(".avsc")
)


def test_registry_holds_every_output_and_every_usage_version():
    assert {USAGE_V1, USAGE_V2, USAGE_V3, "rated_event_v1", "charge_line_v1", "rejected_record_v1",
            "duplicate_record_v1", "control_totals_v1"} <= set(SCHEMA_NAMES)
    assert USAGE_LATEST == USAGE_V3


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_arrow_schema_round_trips_through_avro(name):
    arrow_schema = avro_to_arrow(load_schema(name))
    avro_schema = arrow_to_avro(arrow_schema, name="RoundTrip")
    fastavro.parse_schema(avro_schema)  # what arrow_to_avro writes is a valid Avro schema
    assert avro_to_arrow(avro_schema) == arrow_schema


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_avro_field_becomes_an_arrow_column_in_order(name):
    avro_schema = load_schema(name)
    assert avro_to_arrow(avro_schema).names == [f["name"] for f in avro_schema["fields"]]


def test_unknown_schema_name_says_where_schemas_live():
    with pytest.raises(ValueError, match=r"cdr_schemas/avro/no_such_schema\.avsc"):
        load_schema("no_such_schema")


def test_usage_batch_schema_is_latest_usage_plus_provenance():
    schema = usage_batch_schema()
    assert schema.names[-2:] == ["input_file", "input_position"]
    assert list(schema)[:-2] == list(avro_to_arrow(load_schema(USAGE_LATEST)))
    assert list(schema)[-2:] == list(PROVENANCE_FIELDS)
    assert schema.field("start_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("service").type == pa.string()
    assert not schema.field("record_id").nullable and schema.field("other_party").nullable


def test_rejected_schema_keeps_raw_bytes_and_provenance():
    schema = rejected_schema()
    assert schema.field("raw").type == pa.binary()
    assert {"reason", "detail", "input_file", "input_position"} <= set(schema.names)


def _v1_record(**overrides):
    record = {
        "record_id": "r1", "source": "msc-1", "service": "VOICE", "served_msisdn": "447700900001",
        "other_party": "02071234567", "start_time": 1_767_600_900_250_000, "duration_s": 61,
    }
    record.update(overrides)
    return record


def test_v1_file_read_with_v2_reader_gets_v2_defaults():
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(load_schema(USAGE_V1)), [_v1_record(), _v1_record(record_id="r2")])
    buffer.seek(0)
    records = list(fastavro.reader(buffer, reader_schema=fastavro.parse_schema(load_schema(USAGE_V2))))
    assert [r["record_id"] for r in records] == ["r1", "r2"]
    for record in records:
        assert record["rat_type"] is None
        assert record["partial_sequence"] == 0
        assert record["bytes_up"] == 0 and record["message_count"] == 1  # v1 defaults, unchanged


def test_v2_adds_only_fields_with_defaults():
    v1_fields = {f["name"] for f in load_schema(USAGE_V1)["fields"]}
    added = [f for f in load_schema(USAGE_V2)["fields"] if f["name"] not in v1_fields]
    assert added and all("default" in f for f in added)


@pytest.mark.parametrize("writer", [USAGE_V1, USAGE_V2])
def test_v1_and_v2_files_read_with_the_v3_reader(writer):
    """v3 makes served_msisdn nullable and adds usage_type, quantity, subscriber and subscriber_kind:
    an older record resolves with the MSISDN kept and the new fields null."""
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(load_schema(writer)), [_v1_record()])
    buffer.seek(0)
    (record,) = fastavro.reader(buffer, reader_schema=fastavro.parse_schema(load_schema(USAGE_V3)))
    assert record["served_msisdn"] == _v1_record()["served_msisdn"]
    assert (record["usage_type"], record["quantity"], record["subscriber"], record["subscriber_kind"]) == (
        None, None, None, None)


def test_v3_adds_only_fields_with_defaults_and_widens_only_to_unions():
    v2 = {f["name"]: f for f in load_schema(USAGE_V2)["fields"]}
    v3 = load_schema(USAGE_V3)["fields"]
    assert all("default" in f for f in v3 if f["name"] not in v2)
    changed = {f["name"] for f in v3 if f["name"] in v2 and f["type"] != v2[f["name"]]["type"]}
    assert changed == {"service", "served_msisdn"}
