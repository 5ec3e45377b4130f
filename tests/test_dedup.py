"""Deduplication inside the account shuffle (rating.dedup, pipelines.rate) equals deduplicating
every record together, including keys whose copies belong to different accounts."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.cli import main
from rating.dedup import SPLIT_COPY_SCHEMA, deduplicate, drop_split_copies, key_rows, split_keys
from tests import store_reads
from tests.paths import DIRECT, DIRECT_2, REFERENCE_MIN
from tests.usage_rows import usage_batch, usage_row

_DUPLICATE_ORDER = [("source", "ascending"), ("record_id", "ascending"), ("input_file", "ascending"),
                    ("input_position", "ascending")]


def _in_shards(batch: pa.RecordBatch, shards: list[int]) -> tuple[pa.Table, pa.Table]:
    """(unique rows, duplicates) the way the pipeline finds them: split keys, then each shard alone."""
    found = split_keys(pa.Table.from_batches([key_rows(batch, shards)]))
    uniques, duplicates = [], []
    for shard in sorted(set(shards)):
        rows = pa.Table.from_batches([batch]).filter(pa.array([s == shard for s in shards]))
        copies = pa.Table.from_batches([found[shard]]) if shard in found else SPLIT_COPY_SCHEMA.empty_table()
        rows, split = drop_split_copies(rows, copies)
        unique, local = deduplicate(rows.to_batches())
        uniques.append(pa.Table.from_batches([unique]))
        duplicates += [pa.Table.from_batches([d]) for d in (split, local) if d.num_rows]
    all_duplicates = pa.concat_tables(duplicates) if duplicates else None
    return pa.concat_tables(uniques), all_duplicates


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.sampled_from(["a.avro", "b.avro", "c.avro"]),
                          st.integers(0, 2)), min_size=1, max_size=40))
def test_deduplicating_per_account_shard_equals_deduplicating_everything(records):
    """(key, msisdn, file, shard of that msisdn's account) per record: copies of a key may differ in
    their MSISDN and land in different account shards."""
    msisdn_shard = {}
    rows, shards = [], []
    for i, (key, msisdn, file, shard) in enumerate(records):
        shard = msisdn_shard.setdefault(msisdn, shard)   # one account shard per MSISDN, as in the pipeline
        rows.append(usage_row(i, record_id=f"k{key}", served_msisdn=f"4915100000{msisdn}", service="VOICE",
                              start_time="2026-01-05T10:00:00Z", duration_s=60, input_file=file, input_position=i))
        shards.append(shard)
    batch = usage_batch(rows)
    expected_unique, expected_duplicates = deduplicate([batch])
    unique, duplicates = _in_shards(batch, shards)
    assert sorted(zip(unique.column("input_file").to_pylist(), unique.column("input_position").to_pylist())) == \
        sorted(zip(expected_unique.column("input_file").to_pylist(), expected_unique.column("input_position").to_pylist()))
    expected = pa.Table.from_batches([expected_duplicates]).sort_by(_DUPLICATE_ORDER)
    if duplicates is None:
        assert expected.num_rows == 0
    else:
        assert duplicates.sort_by(_DUPLICATE_ORDER).equals(expected)


def _call(record_id: str, msisdn: str, position: int, seconds: int = 60) -> str:
    return (f'{{"record_id": "{record_id}", "source": "sw1", "service": "VOICE", "served_msisdn": "{msisdn}", '
            f'"other_party": "015112345678", "start_time": "2026-01-05T10:{position:02d}:00+01:00", '
            f'"duration_s": {seconds}}}')


@pytest.mark.parametrize("runner", [DIRECT, DIRECT_2], ids=["one-process", "two-processes"])
def test_a_record_resent_with_another_subscribers_number_is_a_duplicate_of_the_first_copy(tmp_path, runner):
    """The copies of 'x1' belong to two accounts (their MSISDNs differ), so they meet in no account
    shard: the first by file and position is rated, the later one is its (not identical) duplicate."""
    (tmp_path / "a.jsonl").write_text(_call("x1", "4915100000001", 1) + "\n" + _call("y1", "4915100000003", 2) + "\n")
    (tmp_path / "b.jsonl").write_text(_call("x1", "4915100000003", 3, seconds=120) + "\n"
                                      + _call("y1", "4915100000003", 2) + "\n")
    out = tmp_path / "out"
    assert main(["batch", "--input", str(tmp_path / "*.jsonl"), "--reference", str(REFERENCE_MIN),
                 "--output", str(out), "--shards", "8", *runner]) == 0
    rated = {(r["record_id"], r["served_msisdn"]) for r in store_reads.rows(out, "rated")}
    assert rated == {("x1", "4915100000001"), ("y1", "4915100000003")}
    duplicates = {(r["record_id"], r["input_file"].rsplit("/", 1)[1], r["original_input_file"].rsplit("/", 1)[1],
                   r["identical"]) for r in store_reads.rows(out, "duplicates")}
    assert duplicates == {("x1", "b.jsonl", "a.jsonl", False), ("y1", "b.jsonl", "a.jsonl", True)}
    assert store_reads.latest_totals(out)["balanced"]
