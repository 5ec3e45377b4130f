"""Deduplication inside the account shuffle (rating.dedup, pipelines.rate) equals deduplicating
every record together, including keys whose copies belong to different accounts."""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rating.dedup
from pipelines.cli import main
from rating.kernels.hashing import mark_repeated
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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 20), max_size=300))
def test_mark_repeated_marks_exactly_the_values_that_occur_twice(values):
    h = np.array(values, np.uint64)
    repeated = np.zeros(len(h), np.bool_)
    count = mark_repeated(h, repeated)
    seen = {v: values.count(v) for v in values}
    assert repeated.tolist() == [seen[v] > 1 for v in values]
    assert count == int(repeated.sum())


def _oracle(rows: list[dict]) -> tuple[list[int], list[tuple]]:
    """Positions of the unique rows (input order) and the duplicates as (position, original file,
    original position, identical), by the plain rule: the first copy by (input_file, input_position)."""
    first = {}
    for row in sorted(rows, key=lambda r: (r["input_file"], r["input_position"])):
        first.setdefault((row["source"], row["record_id"]), row)
    unique = [r["input_position"] for r in rows if first[(r["source"], r["record_id"])] is r]
    same = ("service", "served_msisdn", "start_time", "duration_s")
    duplicates = sorted((r["input_position"], o["input_file"], o["input_position"], all(r[k] == o[k] for k in same))
                        for r in rows for o in [first[(r["source"], r["record_id"])]] if o is not r)
    return unique, duplicates


@pytest.mark.parametrize("collide", [False, True], ids=["fnv-hash", "every-key-one-hash"])
@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.tuples(st.sampled_from(["sw1", "sw2"]), st.integers(0, 8), st.sampled_from(["a", "b"]),
                                  st.integers(0, 1)), min_size=1, max_size=40))
def test_deduplicate_keeps_the_first_copy_of_each_key(records, collide):
    """Only rows whose key hash repeats are sorted: with every key given one hash (all collide)
    the rule must still be the plain one."""
    one_hash = mock.patch.object(rating.dedup, "hash_columns", lambda b, names: np.full(b.num_rows, 7, np.uint64))
    rows = [usage_row(i, source=source, record_id=f"k{key}", served_msisdn="491510000001", service="VOICE",
                      start_time="2026-01-05T10:00:00Z", duration_s=60 + seconds, input_file=f"{file}.avro",
                      input_position=i)
            for i, (source, key, file, seconds) in enumerate(records)]
    with one_hash if collide else contextlib.nullcontext():
        unique, duplicates = deduplicate([usage_batch(rows)])
    expected_unique, expected_duplicates = _oracle(rows)
    assert unique.column("input_position").to_pylist() == expected_unique
    assert sorted(zip(duplicates.column("input_position").to_pylist(),
                      [f.rsplit("/", 1)[-1] for f in duplicates.column("original_input_file").to_pylist()],
                      duplicates.column("original_input_position").to_pylist(),
                      duplicates.column("identical").to_pylist())) == expected_duplicates


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
