"""One rule for "this record's rating changed", shared by re-rating and the stream's corrections."""

from __future__ import annotations

import polars as pl
import pytest

from rating.changes import RATING_COLUMNS, allowance_list_length, rating_changed

ALLOWANCE = pl.List(pl.Struct({"allowance": pl.Utf8, "units": pl.Int64}))
BASE = dict(account_id="A1", plan_id="P", plan_version=1, currency="EUR", zone="NATIONAL", band="PEAK",
            band_split=False, rate_id="P/v1/voice/NATIONAL/PEAK", tier=-1, charged_units=60, free_units=0,
            allowance_units=[{"allowance": "B", "units": 60}], connect_fee_micros=0, charge_micros=100,
            rounding_nanos=0)
OTHER = dict(account_id="A2", plan_id="Q", plan_version=2, currency="GBP", zone="MOBILE", band="OFFPEAK",
             band_split=True, rate_id="Q/v2/voice/MOBILE/*", tier=1, charged_units=120, free_units=60,
             allowance_units=[{"allowance": "B", "units": 30}], connect_fee_micros=50_000, charge_micros=101,
             rounding_nanos=-400)


def _changed(old: dict, new: dict) -> bool:
    frame = pl.DataFrame([{**{"old_" + k: v for k, v in old.items()}, **{"new_" + k: v for k, v in new.items()}}],
                         schema_overrides={"old_allowance_units": ALLOWANCE, "new_allowance_units": ALLOWANCE})
    length = allowance_list_length(frame, "old_allowance_units", "new_allowance_units")
    return frame.select(rating_changed(lambda c: "old_" + c, lambda c: "new_" + c, length)).item()


def test_the_same_rating_is_unchanged():
    assert not _changed(BASE, dict(BASE))


@pytest.mark.parametrize("column", RATING_COLUMNS)
def test_a_difference_in_any_rating_column_is_a_change(column):
    # Before, the stream ignored account, plan and currency and re-rating ignored the rounding.
    assert _changed(BASE, {**BASE, column: OTHER[column]})


def test_an_allowance_list_differing_past_its_first_element_is_a_change():
    two = [{"allowance": "A", "units": 10}, {"allowance": "B", "units": 20}]
    assert _changed({**BASE, "allowance_units": two},
                    {**BASE, "allowance_units": [two[0], {"allowance": "B", "units": 21}]})
