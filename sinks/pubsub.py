"""The streaming job's output topics: rated events, running charges and dead letters.

Messages are published after the micro-batch that holds them is committed, and before its input
messages are acknowledged: a stop between the two publishes them again when the inputs come back
(at least once); a kill between the commit and the publishing loses that micro-batch's topic
messages (the store has them: the topics are a live feed, the store is the record).
"""

from __future__ import annotations

import json

import pyarrow as pa

from cdr_schemas.messages import AVRO_CONTAINER, rated_message


def rated_messages(table: pa.Table):
    """A table of rated events -> (payload, attributes): one Avro container per (account, service cycle)."""
    if table.num_rows == 0:
        return
    # Sorted once, each group is a slice (a filter per group would read the whole table each time).
    table = table.sort_by([("account_id", "ascending"), ("service_cycle", "ascending")])
    accounts, cycles = table.column("account_id").to_pylist(), table.column("service_cycle").to_pylist()
    start = 0
    for end in range(1, table.num_rows + 1):
        if end < table.num_rows and (accounts[end], cycles[end]) == (accounts[start], cycles[start]):
            continue
        part = table.slice(start, end - start)
        yield rated_message(part), {
            "content-type": AVRO_CONTAINER, "schema": "rated_event_v1", "account": accounts[start],
            "cycle": cycles[start], "records": str(part.num_rows)}
        start = end


def charge_totals_message(totals: dict):
    """Running totals of one (account, billing cycle) -> (JSON payload, attributes)."""
    return json.dumps(totals, sort_keys=True).encode(), {
        "content-type": "application/json", "account": totals["account_id"], "cycle": totals["billing_cycle"]}


def dead_letter_messages(rejected: pa.Table):
    """Rejected records -> one (raw record, attributes) each, the reason in the attributes."""
    for row in rejected.to_pylist():
        yield row["raw"], {"reason": row["reason"], "detail": row["detail"][:1000], "input_file": row["input_file"],
                           "input_position": str(row["input_position"])}


class Publisher:
    """Publishes a committed micro-batch to the topics a stream names, and waits until Pub/Sub has them."""

    def __init__(self, client=None):
        from google.cloud import pubsub_v1

        self._client = client or pubsub_v1.PublisherClient()

    def publish(self, config, batch) -> None:
        futures = []
        if config.rated_topic and batch.rated.num_rows:
            futures += [self._client.publish(config.rated_topic, data, **attrs)
                        for data, attrs in rated_messages(batch.rated)]
        if config.charges_topic:
            for key in sorted(batch.charge_totals):
                data, attrs = charge_totals_message(batch.charge_totals[key])
                futures.append(self._client.publish(config.charges_topic, data, **attrs))
        if config.dead_letter_topic and batch.rejected.num_rows:
            futures += [self._client.publish(config.dead_letter_topic, data, **attrs)
                        for data, attrs in dead_letter_messages(batch.rejected)]
        for future in futures:
            future.result(timeout=60)
