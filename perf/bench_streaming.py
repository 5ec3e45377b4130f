"""Streaming throughput and latency on the Pub/Sub emulator, beside the emulator's own speed.

    PYTHONPATH=. python perf/bench_streaming.py --records 3000000 --per-message 5000 --single 60000 [--json FILE]

Generates an operator day (a fixed date: 5 January 2026) and publishes it, from a process of its
own and at ``--rate`` records a second, as Avro-container messages of ``--per-message`` records,
while the streaming job (``pipelines.streaming.StreamJob``: its own pull path, committing to a
fresh store) runs in this process; then the same for ``--single`` one-record JSON messages at
``--single-rate`` messages a second. Measures, per feed:

* sustained rate: the steady state, records of the commits between the first and the last over the
  time between the first commit and the one before the last (at most the offered rate: the job
  cannot commit faster than it is fed);
* capacity: records over the seconds the job was busy with micro-batches (what it could take);
* publish->committed latency per record, p50 and p99: the commit time of the run holding the
  record minus its message's publish time (rows a later correction rewrote are left out);
* the emulator's own publish->pull rate for the container messages.

Starts and stops its own emulator unless PUBSUB_EMULATOR_HOST is set. The emulator, the publishing
process and the job share this machine's cores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import fastavro
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdr_schemas.registry import load_schema  # noqa: E402
from synth import GeneratorConfig, generate  # noqa: E402
from pipelines.streaming import StreamConfig, StreamJob  # noqa: E402
from sinks.iceberg import IcebergStore  # noqa: E402

PROJECT = "usage-rating-bench"


def _rows(gen_dir: Path) -> list[dict]:
    frame = pl.read_parquet(sorted((gen_dir / "cdrs").glob("*.parquet")))
    fields = [f["name"] for f in load_schema("usage_record_v1")["fields"]]
    frame = frame.select(fields).with_columns(pl.col("start_time").dt.epoch("us"))
    return frame.to_dicts()


def _containers(rows: list[dict], per_message: int) -> list[bytes]:
    schema = fastavro.parse_schema(load_schema("usage_record_v1"))
    out = []
    for i in range(0, len(rows), per_message):
        buffer = io.BytesIO()
        fastavro.writer(buffer, schema, rows[i:i + per_message], codec="deflate")
        out.append(buffer.getvalue())
    return out


def _clients():
    from google.cloud import pubsub_v1
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def _topic(name: str):
    publisher, subscriber = _clients()
    topic = publisher.topic_path(PROJECT, name)
    sub = subscriber.subscription_path(PROJECT, name + "-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic, ack_deadline_seconds=120)
    return topic, sub


def _publish(topic: str, payloads: list[bytes], content_type: str, per_s: float | None = None) -> dict[str, float]:
    """Publish, ``per_s`` messages a second (None: as fast as the client goes); returns message id ->
    publish time (seconds since the epoch)."""
    publisher, _ = _clients()
    futures = []
    started = time.time()
    for i, data in enumerate(payloads):
        if per_s:
            ahead = started + i / per_s - time.time()
            if ahead > 0:
                time.sleep(ahead)
        futures.append((time.time(), publisher.publish(topic, data, **{"content-type": content_type})))
    return {future.result(timeout=120): at for at, future in futures}


def _publish_to_file(topic: str, payloads: list[bytes], content_type: str, per_s: float | None, path: str) -> None:
    Path(path).write_text(json.dumps(_publish(topic, payloads, content_type, per_s)))


def _publish_elsewhere(topic: str, payloads: list[bytes], content_type: str, per_s: float | None,
                       workdir: Path) -> dict[str, float]:
    """``_publish`` from a process of its own, as mediation publishes: not competing with the job for
    this process's interpreter lock (the machine's cores are still shared, with the emulator too)."""
    import importlib
    import multiprocessing

    path = workdir / f"sent-{int(time.time() * 1000)}.json"
    # By its importable name, whether this file runs as a script or is loaded by path (the smoke test).
    target = importlib.import_module("perf.bench_streaming")._publish_to_file
    process = multiprocessing.get_context("spawn").Process(
        target=target, args=(topic, payloads, content_type, per_s, str(path)))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the publishing process failed (exit status {process.exitcode})")
    return json.loads(path.read_text())


def emulator_rate(payloads: list[bytes]) -> float:
    """Messages/s through the emulator alone: publish all, pull all, same process."""
    from sinks.pubsub_pull import _subscriber_client

    topic, sub = _topic(f"raw-{int(time.time() * 1000)}")
    subscriber = _subscriber_client()   # the job's own client: pull responses of any size
    started = time.monotonic()
    _publish(topic, payloads, "application/avro")
    received = 0
    while received < len(payloads):
        response = subscriber.pull(subscription=sub, max_messages=100, timeout=30)
        if response.received_messages:
            subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in response.received_messages])
        received += len(response.received_messages)
    return len(payloads) / (time.monotonic() - started)


def run_job(gen_dir: Path, out: Path, payloads: list[bytes], records: int, content_type: str,
            timeout_s: float, per_s: float | None = None) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)   # a fresh store: a store of an earlier run holds these records
    topic, sub = _topic(f"usage-{int(time.time() * 1000)}")
    config = StreamConfig(subscription=sub, reference_dir=str(gen_dir / "reference"), output_dir=str(out))
    stop, failed = threading.Event(), []
    busy = []   # seconds each micro-batch took, from the job's own log line

    def log(text: str) -> None:
        found = re.search(r" in ([0-9.]+) s ", text)
        if found:
            busy.append(float(found.group(1)))
        if os.environ.get("BENCH_LOG"):
            print(text, file=sys.stderr)

    job = StreamJob(config, log=log)

    def run():
        try:
            job.run(stop)
        except BaseException as error:   # reported below
            failed.append(error)
            stop.set()

    thread = threading.Thread(target=run)
    thread.start()
    totals_path = out / "control" / "totals.json"
    while not totals_path.exists() and not stop.is_set():
        time.sleep(0.1)   # the job has read the (new) store
    sent = _publish_elsewhere(topic, payloads, content_type, per_s, out.parent)
    first = min(sent.values())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if json.loads(totals_path.read_text())["records_in"] >= records:
            break
        time.sleep(0.2)
    stop.set()
    thread.join()
    if failed:
        raise failed[0]
    store = IcebergStore.open(str(out), create=False)
    runs = [run for run in store.runs() if run.kind == "stream"]
    committed = {run.run_id: run.committed.timestamp() for run in runs}
    # Sustained: the steady state, without the ramp-up and the tail: the records of the commits after
    # the first and before the last, over the time from the first commit to the one before the last.
    steady = sum(run.control_totals["records_in"] for run in runs[1:-1]) / max(
        runs[-2].committed.timestamp() - runs[0].committed.timestamp(), 1e-9) if len(runs) > 2 else None
    rated = pl.from_arrow(store.read("rated", selected_fields=("input_file",)))
    files = store.scan("rated", selected_fields=("input_file",)).plan_files()
    latencies, last = [], first
    for task in files:
        run_id = Path(task.file.file_path).name.split("-part-")[0]
        if run_id not in committed:   # rewritten by a later run's corrections: its rows' first commit is unknown
            continue
        at = committed[run_id]
        last = max(last, at)
        ids = pl.read_parquet(task.file.file_path, columns=["input_file"])["input_file"].str.replace("pubsub:", "")
        latencies.extend(at - sent[i] for i in ids.to_list() if i in sent)
    totals = json.loads(totals_path.read_text())
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    published = len(sent) / max(max(sent.values()) - first, 1e-9)
    end_to_end = totals["records_in"] / max(last - first, 1e-9)
    return {"records": totals["records_in"], "records_per_s": steady if steady is not None else end_to_end, "rated": rated.height, "commits": totals["commits"],
            "published_messages_per_s": published,
            "first_publish_to_last_commit_per_s": end_to_end,
            "capacity_per_s": totals["records_in"] / max(sum(busy), 1e-9), "busy_s": sum(busy),
            "p50_latency_s": float(np.percentile(lat, 50)), "p99_latency_s": float(np.percentile(lat, 99))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=5_000)
    parser.add_argument("--single", type=int, default=500, help="single-record JSON messages to time")
    parser.add_argument("--rate", type=float, default=100_000,
                        help="records/s the containers are published at (0: all at once, a backlog)")
    parser.add_argument("--single-rate", type=float, default=2_000,
                        help="single-record messages/s published (0: all at once)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if "PUBSUB_EMULATOR_HOST" not in os.environ:
            from tests.pubsub_emulator import pubsub_emulator
            os.environ["PUBSUB_EMULATOR_HOST"] = stack.enter_context(pubsub_emulator())
            stack.callback(os.environ.pop, "PUBSUB_EMULATOR_HOST", None)
        work = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory()))
        gen_dir = work / "gen"
        generate(GeneratorConfig(out_dir=gen_dir, records=args.records, subscribers=max(100, args.records // 50),
                                 days=1, files=1, fmt="parquet", start=dt.date(2026, 1, 5),
                                 duplicate_rate=0.0, malformed_rate=0.0))
        rows = _rows(gen_dir)
        payloads = _containers(rows, args.per_message)
        stream = run_job(gen_dir, work / "out-containers", payloads, len(rows), "application/avro", args.timeout,
                         args.rate / args.per_message if args.rate else None)
        emulator = emulator_rate(payloads)
        singles = [json.dumps({**r, "start_time": int(r["start_time"])}).encode() for r in rows[:args.single]]
        single = run_job(gen_dir, work / "out-single", singles, len(singles), "application/json", args.timeout,
                         args.single_rate or None)
    figures = {
        "records": stream["records"], "per_message": args.per_message,
        "sustained_records_per_s": stream["records_per_s"],
        "p50_latency_s": stream["p50_latency_s"], "p99_latency_s": stream["p99_latency_s"],
        "emulator_messages_per_s": emulator,
        "emulator_records_per_s": emulator * args.per_message,
        "single_record_messages_per_s": single["records_per_s"],
        "single_p99_latency_s": single["p99_latency_s"],
        "commits": stream["commits"], "single_commits": single["commits"],
        "capacity_records_per_s": stream["capacity_per_s"],
        "single_capacity_messages_per_s": single["capacity_per_s"],
        "first_publish_to_last_commit_records_per_s": stream["first_publish_to_last_commit_per_s"],
        "offered_records_per_s": args.rate or None, "offered_single_messages_per_s": args.single_rate or None,
        "published_records_per_s": stream["published_messages_per_s"] * args.per_message,
        "published_single_messages_per_s": single["published_messages_per_s"],
    }
    print(f"streaming {figures['records']:,} records in messages of {args.per_message:,} into the store "
          f"({stream['commits']} commits)")
    print(f"{'published records/s':<34}{figures['published_records_per_s']:>14,.0f}   (offered {args.rate:,.0f})")
    print(f"{'sustained records/s':<34}{figures['sustained_records_per_s']:>14,.0f}   target 100,000")
    print(f"{'capacity records/s (busy time)':<34}{figures['capacity_records_per_s']:>14,.0f}")
    print(f"{'p50 publish->committed latency (s)':<34}{figures['p50_latency_s']:>14.2f}")
    print(f"{'p99 publish->committed latency (s)':<34}{figures['p99_latency_s']:>14.2f}   target <= 5")
    print(f"{'emulator publish->pull msgs/s':<34}{emulator:>14,.0f}   ({figures['emulator_records_per_s']:,.0f} records/s)")
    print(f"{'published single-record msgs/s':<34}{figures['published_single_messages_per_s']:>14,.0f}   "
          f"(offered {args.single_rate:,.0f})")
    print(f"{'single-record messages/s':<34}{figures['single_record_messages_per_s']:>14,.0f}   target 2,000")
    print(f"{'single-record capacity msgs/s':<34}{figures['single_capacity_messages_per_s']:>14,.0f}")
    print(f"{'single-record p99 latency (s)':<34}{figures['single_p99_latency_s']:>14.2f}   target <= 5")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
