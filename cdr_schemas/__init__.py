"""Avro schemas of the project's records, their Arrow mapping, and decoders to Arrow batches.

Layering: the schemas and their Arrow mapping need only pyarrow, fastavro and NumPy. The decoders
(``cdr_schemas.decoders``) are where input files are opened and read, so two more libraries are
allowed there and nowhere else in this package: Beam's ``FileSystems``, the one filesystem
abstraction every path a job touches goes through (local disk, gs://, s3://), imported only when a
file is opened; and Numba for the fast Avro block kernel (``avro_kernel``), a kernel of the same
kind as ``rating/kernels`` (NumPy arrays in, caller-supplied outputs, no Arrow or Beam inside). No
module of this package imports ``rating``, ``sinks`` or ``pipelines``. The synthetic CDR writers
are not here: they live with the generator in ``synth/``.
"""

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
    USAGE_V3,
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
    "USAGE_LATEST", "USAGE_V1", "USAGE_V2", "USAGE_V3", "load_schema", "PROVENANCE_FIELDS", "arrow_to_avro",
    "avro_to_arrow", "charge_line_schema", "duplicate_schema", "invoice_summary_schema", "rated_event_schema",
    "rejected_schema", "usage_batch_schema",
]
