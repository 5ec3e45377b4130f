"""Avro schemas of the project's records, their Arrow mapping, and decoders to Arrow batches."""

from cdr_schemas.registry import (
    CHARGE_LINE,
    CONTROL_TOTALS,
    DUPLICATE_RECORD,
    INVOICE_SUMMARY,
    RATED_EVENT,
    REJECTED_RECORD,
    USAGE_LATEST,
    USAGE_V1,
    USAGE_V2,
    load_schema,
)
from cdr_schemas.arrow_mapping import (
    PROVENANCE_FIELDS,
    arrow_to_avro,
    avro_to_arrow,
    charge_line_schema,
    duplicate_schema,
    invoice_summary_schema,
    rated_event_schema,
    rejected_schema,
    usage_batch_schema,
)

__all__ = [
    "CHARGE_LINE", "CONTROL_TOTALS", "DUPLICATE_RECORD", "INVOICE_SUMMARY", "RATED_EVENT", "REJECTED_RECORD",
    "USAGE_LATEST", "USAGE_V1", "USAGE_V2", "load_schema", "PROVENANCE_FIELDS", "arrow_to_avro",
    "avro_to_arrow", "charge_line_schema", "duplicate_schema", "invoice_summary_schema", "rated_event_schema",
    "rejected_schema", "usage_batch_schema",
]
