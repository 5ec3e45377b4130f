"""Pub/Sub message builders for the streaming job's outputs (the publishing itself is Beam's
``WriteToPubSub``): rated events, running charges and dead letters."""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.gcp.pubsub import PubsubMessage

from cdr_schemas.messages import AVRO_CONTAINER, rated_message


class RatedEventMessages(beam.DoFn):
    """A table of rated events -> one Avro-container message per (account, service cycle)."""

    def process(self, table: pa.Table):
        for group in table.group_by(["account_id", "service_cycle"]).aggregate([]).to_pylist():
            part = table.filter(pc.and_(pc.equal(table.column("account_id"), group["account_id"]),
                                        pc.equal(table.column("service_cycle"), group["service_cycle"])))
            yield PubsubMessage(rated_message(part), {
                "content-type": AVRO_CONTAINER, "schema": "rated_event_v1", "account": group["account_id"],
                "cycle": group["service_cycle"], "records": str(part.num_rows)})


class ChargeTotalsMessages(beam.DoFn):
    """Running totals of one (account, billing cycle) -> a JSON message."""

    def process(self, totals: dict):
        yield PubsubMessage(json.dumps(totals, sort_keys=True).encode(), {
            "content-type": "application/json", "account": totals["account_id"], "cycle": totals["billing_cycle"]})


class DeadLetterMessages(beam.DoFn):
    """Rejected records -> one message each: the raw record, with the reason in attributes."""

    def process(self, rejected: pa.Table | pa.RecordBatch):
        for row in rejected.to_pylist():
            yield PubsubMessage(row["raw"], {
                "reason": row["reason"], "detail": row["detail"][:1000], "input_file": row["input_file"],
                "input_position": str(row["input_position"])})
