"""StringIndex: the prebuilt MSISDN -> subscriber-row lookup agrees with pyarrow's index_in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from rating.string_index import StringIndex

_TEXT = st.text(alphabet="+0123456789aé", max_size=8)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(_TEXT, unique=True, max_size=60), queries=st.lists(st.one_of(st.none(), _TEXT), max_size=80))
def test_rows_match_index_in(keys, queries):
    key_array = pa.array(keys, pa.string())
    values = pa.array(queries + keys[::2], pa.string())
    expected = pc.fill_null(pc.index_in(values, value_set=key_array), -1).to_numpy(zero_copy_only=False)
    assert StringIndex(key_array).rows(values).tolist() == expected.astype(np.int64).tolist()


def test_sliced_inputs_and_colliding_buckets():
    keys = pa.array([f"+49{i:09d}" for i in range(5000)], pa.string())
    index = StringIndex(keys.slice(1000, 3000))   # a slice: offsets relative to its own start
    values = keys.slice(500, 4000)
    rows = index.rows(values)
    expected = np.arange(500, 4500) - 1000
    expected[(expected < 0) | (expected >= 3000)] = -1
    assert rows.tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.text(alphabet="0123456789", max_size=19), unique=True, max_size=60),
       queries=st.lists(st.one_of(st.none(), st.text(alphabet="0123456789+", max_size=19)), max_size=80))
def test_digit_strings_match_index_in(keys, queries):
    """Digit strings (MSISDNs) go through the integer table: leading zeros, 17 digits and beyond."""
    key_array = pa.array(keys + ["0", "00", "007", "7", "1" * 17, "1" * 18], pa.string()).unique()
    values = pa.array(queries + ["0", "000", "07", "007", "1" * 17, "1" * 18, "1" * 16] + keys[::3], pa.string())
    expected = pc.fill_null(pc.index_in(values, value_set=key_array), -1).to_numpy(zero_copy_only=False)
    assert StringIndex(key_array).rows(values).tolist() == expected.astype(np.int64).tolist()
    assert StringIndex(key_array.slice(2)).rows(values.slice(1)).tolist() == pc.fill_null(
        pc.index_in(values.slice(1), value_set=key_array.slice(2)), -1).to_numpy(zero_copy_only=False).tolist()
