"""Streaming order semantics with TestStream: out-of-order usage, allowances, late usage; and the
label (``input_file``) of a message's rows."""

from __future__ import annotations

import json

import apache_beam as beam
import polars as pl
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.utils.timestamp import Timestamp

from pipelines.streaming import RateUsageStream, StreamConfig
from rating.engine import RatingEngine
from rating.reference import load_reference
from tests.usage_rows import instant_us, usage_batch, usage_row
from tests.paths import REFERENCE_EXAMPLES

REFERENCE = str(REFERENCE_EXAMPLES)
DAY_S = 86_400


def _message(record_id: str, start: str, seconds: int, msisdn="491510000002", other="015112345678"):
    record = {"record_id": record_id, "source": "sw1", "service": "VOICE", "served_msisdn": msisdn,
              "other_party": other, "start_time": start, "duration_s": seconds}
    return PubsubMessage(json.dumps(record).encode(), {"content-type": "application/json"})


def _run(tmp_path, arrivals: list[tuple[str, list[PubsubMessage]]], lateness_s: int = 2 * DAY_S) -> pl.DataFrame:
    """Feed message groups at the given arrival instants; returns every rated row written."""
    config = StreamConfig(subscription="projects/test-project/subscriptions/s", reference_dir=REFERENCE,
                          output_dir=str(tmp_path / "out"), shards=2, allowed_lateness_s=lateness_s)
    stream = BeamTestStream()
    for arrival, messages in arrivals:
        at = Timestamp(micros=instant_us(arrival))
        stream = stream.advance_watermark_to(at).add_elements(
            [beam.window.TimestampedValue(m, at) for m in messages])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as pipeline:
        _ = pipeline | stream | RateUsageStream(config)
    files = sorted((tmp_path / "out" / "rated").rglob("*.parquet"))
    return pl.read_parquet(files)


def _batch_answer(rows) -> pl.DataFrame:
    engine = RatingEngine.from_reference(load_reference(REFERENCE))
    rated, _ = engine.rate(usage_batch(rows))
    return pl.from_arrow(rated)


def _latest(rated: pl.DataFrame) -> pl.DataFrame:
    return rated.sort("revision").group_by("record_id").last().sort("record_id")


def test_an_allowance_taken_by_a_later_event_moves_to_the_earlier_one_when_it_arrives(tmp_path):
    # The 10:00 call arrives first and takes the 100 s bundle; the 09:00 call arrives next.
    rated = _run(tmp_path, [
        ("2026-01-05T10:05:00Z", [_message("b-later", "2026-01-05T10:00:00+01:00", 70)]),
        ("2026-01-05T10:06:00Z", [_message("a-earlier", "2026-01-05T09:00:00+01:00", 47)]),
    ])
    first = rated.filter((pl.col("record_id") == "b-later") & (pl.col("revision") == 0)).row(0, named=True)
    assert first["free_units"] == 72 and first["charge_micros"] == 0        # all 72 charged seconds were free
    latest = _latest(rated)
    expected = _batch_answer([
        usage_row(0, record_id="a-earlier", service="VOICE", served_msisdn="491510000002",
                  other_party="015112345678", start_time="2026-01-05T09:00:00+01:00", duration_s=47),
        usage_row(1, record_id="b-later", service="VOICE", served_msisdn="491510000002",
                  other_party="015112345678", start_time="2026-01-05T10:00:00+01:00", duration_s=70)]).sort("record_id")
    columns = ["record_id", "charge_micros", "free_units", "charged_units"]
    assert latest.select(columns).equals(expected.select(columns))
    assert latest.filter(pl.col("record_id") == "b-later")["charge_micros"][0] == 36_000   # docs/tariffs.md E17
    assert latest.filter(pl.col("record_id") == "b-later")["revision"][0] == 1             # a correction


def test_out_of_order_arrival_without_a_changed_rating_emits_no_correction(tmp_path):
    rated = _run(tmp_path, [
        ("2026-01-05T12:00:00Z", [_message("n2", "2026-01-05T11:00:00+01:00", 61, other="030123456")]),
        ("2026-01-05T12:01:00Z", [_message("n1", "2026-01-05T10:00:00+01:00", 61, other="030123456")]),
    ])
    assert rated.height == 2 and rated["revision"].to_list() == [0, 0]
    assert sorted(rated["charge_micros"].to_list()) == [290_000, 290_000]


def test_usage_later_than_the_allowed_lateness_is_rated_from_what_is_left_not_reordered(tmp_path):
    # January closes on 1 February; with 1 day of lateness, records arriving on 10 February are late.
    rated = _run(tmp_path, [
        ("2026-01-05T10:05:00Z", [_message("b-later", "2026-01-05T10:00:00+01:00", 70)]),
        ("2026-02-10T00:00:00Z", [_message("a-earlier", "2026-01-05T09:00:00+01:00", 47)]),
    ], lateness_s=DAY_S)
    assert rated.height == 2 and rated["revision"].to_list() == [0, 0]  # no re-ordering of a closed cycle
    late = rated.filter(pl.col("record_id") == "a-earlier").row(0, named=True)
    # The bundle was used up by the 10:00 call (72 of 100 s; 28 left): 30 s block paid, 3 x 6 s free.
    assert late["free_units"] == 18 and late["charge_micros"] == 45_000


@pytest.mark.parametrize("seed", [5])
def test_a_shuffled_day_converges_to_the_batch_answer(tmp_path, seed):
    import random

    from tests.usage_rows import mixed_events

    rows = [r for r in mixed_events()[:120]]
    rnd = random.Random(seed)
    order = list(range(len(rows)))
    rnd.shuffle(order)
    arrivals = []
    for k in range(0, len(order), 15):
        messages = []
        for i in order[k:k + 15]:
            r = rows[i]
            record = {key: r[key] for key in ("record_id", "source", "service", "served_msisdn", "other_party",
                                              "duration_s", "bytes_down", "message_count")}
            record["start_time"] = r["start_time"]
            messages.append(PubsubMessage(json.dumps(record).encode(), {"content-type": "application/json"}))
        arrivals.append((f"2026-01-20T00:{k // 15:02d}:00Z", messages))
    rated = _run(tmp_path, arrivals, lateness_s=30 * DAY_S)
    columns = ["record_id", "charge_micros", "free_units", "charged_units", "tier"]
    expected = _batch_answer(rows).sort("record_id").select(columns)
    assert _latest(rated).select(columns).equals(expected)


def test_a_message_without_an_id_is_labelled_alike_in_every_process():
    # input_file of a message's rows names the message; without a message id it comes from the body.
    # Python's hash() is salted per process: two workers or two runs must still give the same label.
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    body = b'{"record_id": "r1", "source": "sw1", "service": "VOICE", "start_time": "not a time"}'
    script = (
        "import json\n"
        "from apache_beam.io.gcp.pubsub import PubsubMessage\n"
        "from pipelines.streaming import _DecodeMessage\n"
        f"message = PubsubMessage({body!r}, {{'content-type': 'application/json'}})\n"
        "rejected = [out.value for out in _DecodeMessage(16).process(message) if getattr(out, 'tag', '') == 'rejected']\n"
        "print(json.dumps(sorted({name for batch in rejected for name in batch.column('input_file').to_pylist()})))\n")
    labels = []
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=True)
        labels.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert labels[0] == labels[1] == [f"pubsub:{hashlib.blake2b(body, digest_size=6).hexdigest()}"]


def test_a_project_id_pubsub_refuses_is_named_before_the_job_starts():
    """Beam refuses a short project id deep in pipeline construction with a bare 'Invalid PubSub
    project name'; the command says which flag, which id and what Pub/Sub accepts."""
    with pytest.raises(ValueError, match=r"--subscription 'projects/strm/subscriptions/s': project id 'strm' is not "
                                         r"one Pub/Sub accepts: 6 to 63 characters"):
        StreamConfig(subscription="projects/strm/subscriptions/s", reference_dir=REFERENCE, output_dir="o")
    with pytest.raises(ValueError, match=r"--rated-topic 'projects/Big/topics/t': project id 'Big'"):
        StreamConfig(subscription="projects/test-project/subscriptions/s", reference_dir=REFERENCE, output_dir="o",
                     rated_topic="projects/Big/topics/t")


def test_the_stream_refuses_an_output_that_holds_the_batch_jobs_store(tmp_path):
    from pipelines.streaming import run_stream
    from sinks.iceberg import IcebergStore

    IcebergStore.open(str(tmp_path / "store"), create=True)
    config = StreamConfig(subscription="projects/test-project/subscriptions/s", reference_dir=REFERENCE,
                          output_dir=str(tmp_path / "store"))
    with pytest.raises(ValueError, match="is an output store of the batch jobs .*give it a folder of its own"):
        run_stream(config, ["--runner=DirectRunner"])
    assert not (tmp_path / "store" / "rated").exists()
