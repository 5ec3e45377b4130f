"""The streaming job against a real Pub/Sub emulator, as its own process: kill -9, Ctrl-C and SIGTERM
at random points lose nothing and charge nothing twice; the store equals the batch answer."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import fastavro
import polars as pl
import pytest

from cdr_schemas.registry import load_schema
from pipelines.batch import run_batch
from pipelines.options import BatchConfig
from sinks.iceberg import IcebergStore
from synth import GeneratorConfig, generate

PROJECT = "usage-rating-test"
DIRECT = ["--runner=DirectRunner"]
ROOT = Path(__file__).resolve().parent.parent
ACK_DEADLINE_S = 10   # what a killed job held comes back after this


def _admin():
    from google.cloud import pubsub_v1
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def _topic_and_subscription(name: str):
    publisher, subscriber = _admin()
    topic = publisher.topic_path(PROJECT, name)
    subscription = subscriber.subscription_path(PROJECT, f"{name}-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=ACK_DEADLINE_S)
    return topic, subscription


@pytest.fixture(scope="module")
def usage(tmp_path_factory):
    """Four days of January 2026 usage (fixed dates: the stream's answer does not depend on when the
    test runs) as JSON lines with duplicates and malformed records, and the batch job's store of it."""
    root = tmp_path_factory.mktemp("stream")
    manifest = generate(GeneratorConfig(out_dir=root / "gen", subscribers=60, records=5_000, days=4, files=2,
                                        fmt="jsonl", seed=21, start=dt.date(2026, 1, 5), duplicate_rate=0.01,
                                        malformed_rate=0.01))
    batch_out = root / "batch"
    run_batch(BatchConfig(input_glob=str(root / "gen" / "cdrs" / "*"), reference_dir=str(root / "gen" / "reference"),
                          output_dir=str(batch_out), shards=4), DIRECT)
    lines = [line for path in sorted((root / "gen" / "cdrs").iterdir()) for line in path.read_bytes().splitlines()
             if line.strip()]
    return root, manifest, lines, batch_out


def _avro_container(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(load_schema("usage_record_v1")), rows, codec="deflate")
    return buffer.getvalue()


def _avro_row(line: bytes) -> dict | None:
    """The JSON line as an Avro usage_record_v1 dict, or None when it is not a clean record."""
    try:
        row = json.loads(line)
        start = dt.datetime.fromisoformat(row["start_time"].replace("Z", "+00:00"))
        row["start_time"] = int(start.timestamp()) * 1_000_000 + start.microsecond
        fields = {f["name"]: f for f in load_schema("usage_record_v1")["fields"]}
        out = {name: row.get(name, field.get("default")) for name, field in fields.items()}
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(load_schema("usage_record_v1")), out)
        return out
    except Exception:  # anything odd goes as a JSON message instead, exactly as written
        return None


def _messages(lines: list[bytes], seed: int, per_container: int = 250) -> list[tuple[bytes, dict]]:
    """The lines in shuffled order as a mix of Avro containers, Avro datums and JSON messages."""
    rnd = random.Random(seed)
    lines = lines[:]
    rnd.shuffle(lines)
    messages, container = [], []
    schema = fastavro.parse_schema(load_schema("usage_record_v1"))
    for line in lines:
        row = _avro_row(line)
        kind = rnd.random()
        if row is None or kind < 0.02:
            messages.append((line, {"content-type": "application/json"}))
        elif kind < 0.04:
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, schema, row)
            messages.append((buffer.getvalue(), {"content-type": "application/avro-datum", "schema": "usage_record_v1"}))
        else:
            container.append(row)
            if len(container) == per_container:
                messages.append((_avro_container(container), {"content-type": "application/avro"}))
                container = []
    if container:
        messages.append((_avro_container(container), {"content-type": "application/avro"}))
    rnd.shuffle(messages)
    return messages


def _publish(topic: str, messages: list[tuple[bytes, dict]]) -> None:
    publisher, _ = _admin()
    futures = [publisher.publish(topic, data, **attributes) for data, attributes in messages]
    for future in futures:
        future.result(timeout=60)


class _Stream:
    """``usage-rating stream`` as a process of its own."""

    def __init__(self, root: Path, subscription: str, output: Path, *extra: str):
        self.output = output
        self.log = open(output.parent / f"{output.name}-stream.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "stream", "--subscription", subscription,
             "--reference", str(root / "gen" / "reference"), "--output", str(output), "--commit-interval", "0.5",
             "--ack-deadline", str(ACK_DEADLINE_S), *extra],
            cwd=ROOT, env=dict(os.environ), stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until the job has read the store and written its first totals."""
        deadline = time.monotonic() + timeout_s
        totals = self.output / "control" / "totals.json"
        started = totals.stat().st_mtime if totals.exists() else 0
        while not (totals.exists() and totals.stat().st_mtime > started):
            assert self.process.poll() is None, self._tail()
            assert time.monotonic() < deadline, "the stream did not start"
            time.sleep(0.1)

    def wait_for(self, records: int, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        totals = {}
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self._tail()
            path = self.output / "control" / "totals.json"
            if path.exists():
                totals = json.loads(path.read_text())
                if totals["records_in"] >= records:
                    return totals
            time.sleep(0.5)
        raise AssertionError(f"the stream did not account for {records} records in {timeout_s} s: {totals}")

    def stop(self, how: signal.Signals) -> int:
        self.process.send_signal(how)
        code = self.process.wait(timeout=120)
        self.log.close()
        return code

    def _tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.output.parent / f"{self.output.name}-stream.log").read_text()[-3000:]


COMPARED = ["source", "record_id", "account_id", "service_cycle", "zone", "band", "tier", "charged_units",
            "free_units", "charge_micros", "input_position"]


def _frame(store: Path, table: str) -> pl.DataFrame:
    return pl.from_arrow(IcebergStore.open(str(store), create=False).read(table))


def test_kill_9_ctrl_c_and_sigterm_at_random_points_lose_nothing_and_charge_nothing_twice(pubsub_host, usage,
                                                                                         tmp_path):
    root, manifest, lines, batch_out = usage
    topic, subscription = _topic_and_subscription("usage-kill")
    messages = _messages(lines, seed=1, per_container=20)
    rnd = random.Random(7)
    output = tmp_path / "store"
    # Mediation publishes all along (about 20 s); the job is killed, stopped and restarted meanwhile.
    feed = threading.Thread(target=lambda: [(_publish(topic, messages[k:k + 10]), time.sleep(0.4))
                                            for k in range(0, len(messages), 10)])
    feed.start()
    for how in (signal.SIGKILL, signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGTERM):
        stream = _Stream(root, subscription, output)
        stream.wait_ready()
        time.sleep(rnd.uniform(0.5, 3.0))
        code = stream.stop(how)
        assert code == (-signal.SIGKILL if how == signal.SIGKILL else 0), f"{how.name}: exit {code}\n{stream._tail()}"
    feed.join()
    stream = _Stream(root, subscription, output)     # picks up the rest, and what the kills left unacknowledged
    stream.wait_ready()
    stream.wait_for(len(lines))
    assert stream.stop(signal.SIGTERM) == 0
    totals = json.loads((output / "control" / "totals.json").read_text())   # as written on stop

    assert totals["records_in"] == len(lines) and totals["records_balanced"]
    assert totals["rated"] + totals["rejected_total"] + totals["duplicates"] == len(lines)
    assert totals["money_checked"] is False and totals["money_balanced"] is None   # no charges yet: billed at close
    batch_rated = _frame(batch_out, "rated")
    stream_rated = _frame(output, "rated")
    assert stream_rated.height == stream_rated.select(["source", "record_id"]).unique().height   # each record once
    by_message = stream_rated.select(["source", "record_id", "input_file"])
    assert by_message["input_file"].str.starts_with("pubsub:").all()
    keys = ["source", "record_id"]
    assert stream_rated.select(COMPARED[:-1]).sort(keys).equals(batch_rated.select(COMPARED[:-1]).sort(keys))
    # Allowances ran out mid-stream: some subscription-cycle has free and then paid calls.
    voice = batch_rated.filter(pl.col("service") == "VOICE").group_by(["served_msisdn", "service_cycle"]).agg(
        (pl.col("free_units") > 0).any().alias("free"), ((pl.col("free_units") == 0) & (pl.col("charge_micros") > 0))
        .any().alias("paid"))
    assert voice.filter(pl.col("free") & pl.col("paid")).height > 0
    batch_rejects = Counter(_frame(batch_out, "rejected").select(["reason", "raw"]).iter_rows())
    assert Counter(_frame(output, "rejected").select(["reason", "raw"]).iter_rows()) == batch_rejects
    batch_dups = set(_frame(batch_out, "duplicates").select(keys).iter_rows())
    stream_dups = _frame(output, "duplicates").select(keys)
    assert set(stream_dups.iter_rows()) == batch_dups and stream_dups.height == len(batch_dups)
    runs = IcebergStore.open(str(output), create=False).runs()
    assert {run.kind for run in runs[1:]} == {"stream"} and all(r.control_totals["records_balanced"] for r in runs[1:])


def test_the_topics_get_what_was_committed(pubsub_host, usage, tmp_path):
    root, manifest, lines, batch_out = usage
    topic, subscription = _topic_and_subscription("usage-topics")
    rated_topic, rated_sub = _topic_and_subscription("rated-topics")
    charges_topic, charges_sub = _topic_and_subscription("charges-topics")
    dead_topic, dead_sub = _topic_and_subscription("dead-topics")
    output = tmp_path / "store"
    stream = _Stream(root, subscription, output, "--rated-topic", rated_topic, "--charges-topic", charges_topic,
                     "--dead-letter-topic", dead_topic)
    stream.wait_ready()
    good = [line for line in lines[:200] if _avro_row(line) is not None][:20]
    _publish(topic, [(line, {"content-type": "application/json"}) for line in good] +
             [(b"not a record", {"content-type": "text/plain"})])
    totals = stream.wait_for(len(good) + 1)
    assert stream.stop(signal.SIGTERM) == 0
    _, subscriber = _admin()
    rated = subscriber.pull(subscription=rated_sub, max_messages=100, timeout=30).received_messages
    records = [r for m in rated for r in fastavro.reader(io.BytesIO(m.message.data))]
    assert {r["record_id"] for r in records} == set(_frame(output, "rated")["record_id"].to_list())
    assert all(m.message.attributes["account"] for m in rated)
    charges = subscriber.pull(subscription=charges_sub, max_messages=100, timeout=30).received_messages
    assert charges and all("charge_micros" in json.loads(m.message.data) for m in charges)
    dead = subscriber.pull(subscription=dead_sub, max_messages=100, timeout=30).received_messages
    assert b"not a record" in [m.message.data for m in dead] and len(dead) == totals["rejected_total"]
