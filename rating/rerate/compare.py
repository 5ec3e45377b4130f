"""Re-rating comparison, Beam-free: the record-by-record differences of two ratings of a cycle.

Everything is vectorised Polars over whole frames (joins on (source, record_id)), money in exact
int64 micro-units. The re-rate job (``pipelines/rerate.py``) feeds it what the output store held for
a cycle and what re-rating produced; a library user can call it on any two sets of rated events.

Record statuses (``status``), with ``previous`` saying what the store held before:

* ``UNCHANGED`` / ``CHANGED`` — rated before and now in the cycle; ``reasons`` says what changed.
* ``NEWLY_RATED`` — rated now; ``previous`` is ``REJECTED`` (recycled: its reject cause is fixed),
  ``OTHER_CYCLE`` (it was rated in another cycle, ``other_cycle``) or ``NONE`` (a late arrival).
* ``NEWLY_REJECTED`` — rejected now; ``previous`` is ``RATED`` (rated in the cycle before) or ``NONE``.
* ``STILL_REJECTED`` — rejected before and now (the reason may differ).
* ``LEFT_CYCLE`` — in the cycle before, now rated in another cycle (``other_cycle``).

Change reasons (comma-separated in ``reasons``): ``ACCOUNT`` (subscription: account, plan or
currency), ``TARIFF_VERSION``, ``ZONE``, ``BAND`` (band or band split), ``RATE`` (another rate rule
for the same plan version, zone and band), ``TIER``, ``UNITS`` (charged units), ``ALLOWANCE`` (free
units or allowance consumption), ``PRICE`` (only the money changed: a price of the same rule).
"""

from __future__ import annotations

import dataclasses

import polars as pl

from rating.changes import RATING_COLUMNS, allowance_list_length, column_differs, rating_changed

KEY = ["source", "record_id"]
STATUSES = ("UNCHANGED", "CHANGED", "NEWLY_RATED", "NEWLY_REJECTED", "STILL_REJECTED", "LEFT_CYCLE")
# Rated-event columns the comparison reads (a store reader may select just these).
RATED_COLUMNS = ["source", "record_id", "service", "start_time", *RATING_COLUMNS]
_CARRIED = ["service", "start_time"]
# Columns of a change row, in order.
CHANGE_COLUMNS = [
    "status", "previous", "reasons", "source", "record_id", "service", "start_time", "currency",
    "account_id", "old_account_id", "plan_id", "old_plan_id", "old_plan_version", "new_plan_version",
    "old_zone", "new_zone", "old_band", "new_band", "old_rate_id", "new_rate_id", "old_tier", "new_tier",
    "old_charged_units", "new_charged_units", "old_free_units", "new_free_units",
    "old_charge_micros", "new_charge_micros", "delta_micros",
    "old_reject_reason", "new_reject_reason", "other_cycle",
]


@dataclasses.dataclass(frozen=True)
class RecordDiff:
    """The record-by-record comparison of one cycle.

    ``changes``: one row per record whose outcome or rating changed (every status but UNCHANGED and
    STILL_REJECTED), columns ``CHANGE_COLUMNS``. ``counts``: records per status. ``recycled``:
    previously rejected records now rated, per previous reject reason. ``rejected``: the rejects now
    in the cycle's scope (full rejected rows). ``previous_micros`` / ``rerated_micros``: money per
    currency. ``by_plan``, ``by_zone``, ``by_account``: revenue before and after. ``unkeyed_rejects``:
    rejects in scope without a usable (source, record_id), which cannot be compared.
    """
    changes: pl.DataFrame
    counts: dict
    recycled: dict
    rejected: pl.DataFrame
    previous_micros: dict
    rerated_micros: dict
    by_plan: pl.DataFrame
    by_zone: pl.DataFrame
    by_account: pl.DataFrame
    unkeyed_rejects: int

    @property
    def delta_micros(self) -> dict:
        currencies = sorted(set(self.previous_micros) | set(self.rerated_micros))
        return {c: self.rerated_micros.get(c, 0) - self.previous_micros.get(c, 0) for c in currencies}

    @property
    def has_changes(self) -> bool:
        return self.changes.height > 0


def _side(rated: pl.LazyFrame, prefix: str) -> pl.LazyFrame:
    return rated.select(KEY + [pl.col(c).alias(prefix + c) for c in _CARRIED + RATING_COLUMNS]) \
        .with_columns(pl.lit(True).alias(prefix + "present"))


def _keyed(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Rows with a usable key: rejects before parsing may have no record_id or an empty one."""
    return frame.filter(pl.col("source").is_not_null() & pl.col("record_id").is_not_null()
                        & (pl.col("record_id") != ""))


def _differs(name: str, list_length: int = 0) -> pl.Expr:
    return column_differs(pl.col("old_" + name), pl.col("new_" + name), name, list_length)


def _reasons(list_length: int) -> pl.Expr:
    account = _differs("account_id") | _differs("plan_id") | _differs("currency")
    version = _differs("plan_version")
    zone = _differs("zone")
    band = _differs("band") | _differs("band_split")
    rule = _differs("rate_id") & ~(account | version | zone | band)
    tier = _differs("tier")
    units = _differs("charged_units")
    allowance = _differs("free_units") | _differs("allowance_units", list_length)
    money = _differs("charge_micros") | _differs("connect_fee_micros") | _differs("rounding_nanos")
    price = money & ~(account | version | zone | band | rule | tier | units | allowance)
    flags = [("ACCOUNT", account), ("TARIFF_VERSION", version), ("ZONE", zone), ("BAND", band), ("RATE", rule),
             ("TIER", tier), ("UNITS", units), ("ALLOWANCE", allowance), ("PRICE", price)]
    joined = pl.concat_str([pl.when(flag).then(pl.lit(name + ",")).otherwise(pl.lit("")) for name, flag in flags])
    return joined.str.strip_suffix(",")


def compare_records(previous_rated: pl.LazyFrame, previous_rejected: pl.LazyFrame, rerated: pl.LazyFrame,
                    rejected_now: pl.LazyFrame, *, prior_rejects: pl.LazyFrame | None = None,
                    other_rated: pl.LazyFrame | None = None, out_of_scope: pl.LazyFrame | None = None) -> RecordDiff:
    """Compare what the store held for a cycle with what re-rating produced, record by record.

    ``previous_rated`` / ``rerated``: rated events of the cycle (at least ``RATED_COLUMNS``).
    ``previous_rejected``: the cycle's rejects before (rejected-record columns). ``rejected_now``:
    every reject of the re-rate run with a boolean ``in_scope`` column (the store's scope rule for
    rejects); those in scope, or whose key was in the cycle before, are the cycle's rejects now.
    ``prior_rejects``: every reject the store knows (to tell recycled records from late arrivals;
    defaults to ``previous_rejected``), ``other_rated``: (source, record_id, service_cycle) of other
    cycles' current rated events, ``out_of_scope``: the same for this run's rated events of other
    cycles. Missing lookups count as empty. Only the records present on one side are looked up.
    """
    empty_keys = pl.LazyFrame(schema={"source": pl.Utf8, "record_id": pl.Utf8, "service_cycle": pl.Utf8})
    other_rated = empty_keys if other_rated is None else other_rated
    out_of_scope = empty_keys if out_of_scope is None else out_of_scope
    prior_rejects = previous_rejected if prior_rejects is None else prior_rejects

    joined = _align(_side(previous_rated, "old_").collect(), _side(rerated, "new_").collect())
    list_length = allowance_list_length(joined, "old_allowance_units", "new_allowance_units")
    joined = joined.with_columns(
        pl.when(pl.col("old_present") & pl.col("new_present"))
        .then(pl.when(rating_changed(lambda c: "old_" + c, lambda c: "new_" + c, list_length))
              .then(pl.lit("CHANGED")).otherwise(pl.lit("UNCHANGED")))
        .when(pl.col("new_present")).then(pl.lit("NEWLY_RATED"))
        .otherwise(pl.lit("LEFT_CYCLE")).alias("status"))
    # The large frame is only filtered or probed against small ones from here on.

    # The cycle's rejects now: in scope by the rule, or a record that was in the cycle before.
    rejected_now = rejected_now.collect().lazy()
    reject_keys = _keyed(rejected_now).select(KEY).unique()
    was_rated = joined.lazy().filter(pl.col("old_present")).select(KEY).join(reject_keys, on=KEY, how="semi")
    old_keys = pl.concat([was_rated, _keyed(previous_rejected).select(KEY)]).unique() \
        .with_columns(pl.lit(True).alias("_was_in_cycle"))
    rejected = (rejected_now.join(old_keys, on=KEY, how="left")
                .filter(pl.col("in_scope") | pl.col("_was_in_cycle").fill_null(False))
                .drop(["in_scope", "_was_in_cycle"]).collect())
    new_rejects = _keyed(rejected.lazy()).select(KEY + [pl.col("reason").alias("new_reject_reason")]).unique(KEY)

    # Records on one side only: where they were before (NEWLY_RATED) or went (LEFT_CYCLE).
    only_new = joined.filter(pl.col("status") == "NEWLY_RATED")
    only_new_keys = only_new.lazy().select(KEY)
    prior = (_keyed(prior_rejects).join(only_new_keys, on=KEY, how="semi")
             .select(KEY + [pl.col("reason").alias("old_reject_reason")]).unique(KEY, keep="last", maintain_order=True))
    before = (other_rated.join(only_new_keys, on=KEY, how="semi")
              .select(KEY + [pl.col("service_cycle").alias("other_cycle")]).unique(KEY))
    only_new = (only_new.lazy().join(prior, on=KEY, how="left").join(before, on=KEY, how="left")
                .with_columns(pl.when(pl.col("other_cycle").is_not_null()).then(pl.lit("OTHER_CYCLE"))
                              .when(pl.col("old_reject_reason").is_not_null()).then(pl.lit("REJECTED"))
                              .otherwise(pl.lit("NONE")).alias("previous"),
                              pl.lit(None, pl.Utf8).alias("new_reject_reason"))
                .with_columns(pl.when(pl.col("previous") == "REJECTED").then(pl.col("old_reject_reason"))
                              .otherwise(pl.lit(None, pl.Utf8)).alias("old_reject_reason"))
                .collect())
    only_old = joined.filter(pl.col("status") == "LEFT_CYCLE")
    went = (out_of_scope.join(only_old.lazy().select(KEY), on=KEY, how="semi")
            .select(KEY + [pl.col("service_cycle").alias("other_cycle")]).unique(KEY))
    only_old = (only_old.lazy().join(new_rejects, on=KEY, how="left").join(went, on=KEY, how="left")
                .with_columns(pl.when(pl.col("new_reject_reason").is_not_null()).then(pl.lit("NEWLY_REJECTED"))
                              .otherwise(pl.lit("LEFT_CYCLE")).alias("status"),
                              pl.lit("RATED").alias("previous"), pl.lit(None, pl.Utf8).alias("old_reject_reason"))
                .collect())
    changed = joined.filter(pl.col("status") == "CHANGED").with_columns(
        _reasons(list_length).alias("reasons"), pl.lit("RATED").alias("previous"))
    moved = pl.concat([changed, only_new, only_old], how="diagonal_relaxed").with_columns(
        pl.col("reasons").fill_null(""),
        pl.coalesce("new_service", "old_service").alias("service"),
        pl.coalesce("new_start_time", "old_start_time").alias("start_time"),
        pl.coalesce("new_currency", "old_currency").alias("currency"),
        pl.coalesce("new_account_id", "old_account_id").alias("account_id"),
        pl.coalesce("new_plan_id", "old_plan_id").alias("plan_id"),
        (pl.col("new_charge_micros").fill_null(0) - pl.col("old_charge_micros").fill_null(0)).alias("delta_micros"),
    )

    # Rejects on both sides, and rejects of records that are rated on neither side.
    old_rejects = _keyed(previous_rejected).select(KEY + [pl.col("reason").alias("old_reject_reason")]).unique(KEY)
    starts = pl.concat([_keyed(rejected.lazy()).select(KEY + ["start_time"]),
                        _keyed(previous_rejected).select(KEY + ["start_time"])]).unique(KEY, maintain_order=True)
    reject_rows = old_rejects.join(new_rejects, on=KEY, how="full", coalesce=True)
    rated_either = joined.lazy().select(KEY).join(reject_rows.select(KEY), on=KEY, how="semi")
    reject_rows = reject_rows.join(rated_either, on=KEY, how="anti")
    reject_rows = (reject_rows.join(out_of_scope.join(reject_rows.select(KEY), on=KEY, how="semi")
                                    .select(KEY + [pl.col("service_cycle").alias("other_cycle")]).unique(KEY),
                                    on=KEY, how="left")
                   .join(starts, on=KEY, how="left")
                   .with_columns(
                       pl.when(pl.col("old_reject_reason").is_not_null() & pl.col("new_reject_reason").is_not_null())
                       .then(pl.lit("STILL_REJECTED"))
                       .when(pl.col("new_reject_reason").is_not_null()).then(pl.lit("NEWLY_REJECTED"))
                       .otherwise(pl.lit("LEFT_CYCLE")).alias("status"),
                       pl.when(pl.col("old_reject_reason").is_not_null()).then(pl.lit("REJECTED"))
                       .otherwise(pl.lit("NONE")).alias("previous"),
                       pl.lit("").alias("reasons"))
                   .collect())

    changes = pl.concat([
        moved.select(_change_columns(moved)),
        reject_rows.filter(pl.col("status") != "STILL_REJECTED").select(_change_columns(reject_rows)),
    ], how="vertical_relaxed").sort(KEY)

    counts = {s: 0 for s in STATUSES}
    counts["UNCHANGED"] = int((joined["status"] == "UNCHANGED").sum())
    for frame in (moved, reject_rows):
        for status_name, n in frame.group_by("status").len().iter_rows():
            counts[status_name] += n
    recycled = dict(sorted(only_new.filter(pl.col("previous") == "REJECTED")
                           .group_by("old_reject_reason").len().iter_rows()))
    unkeyed = rejected.height - _keyed(rejected.lazy()).collect().height
    return RecordDiff(
        changes=changes, counts=counts, recycled=recycled, rejected=rejected,
        previous_micros=_money(joined, "old_"), rerated_micros=_money(joined, "new_"),
        by_plan=_revenue_by(joined, "plan_id"), by_zone=_revenue_by(joined, "zone"),
        by_account=_revenue_by(joined, "account_id"), unkeyed_rejects=unkeyed)


def _align(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Old and new rows of each key side by side (a full join on (source, record_id)).

    When both sides hold the same keys in the same order — a re-rate with the batch run's shard
    count writes its events in the same order unless records moved — the rows are paired by
    position, which avoids gathering every column of both sides in random order.
    """
    if old.height == new.height and old.select(KEY).equals(new.select(KEY)):
        return pl.concat([old, new.drop(KEY)], how="horizontal")
    return (old.lazy().join(new.lazy(), on=KEY, how="full", coalesce=True)
            .with_columns(pl.col("old_present").fill_null(False), pl.col("new_present").fill_null(False))
            .collect())


def _change_columns(frame: pl.DataFrame) -> list[pl.Expr]:
    types = {"start_time": pl.Datetime("us", "UTC"), "delta_micros": pl.Int64, "old_charge_micros": pl.Int64,
             "new_charge_micros": pl.Int64, "old_plan_version": pl.Int32, "new_plan_version": pl.Int32,
             "old_tier": pl.Int32, "new_tier": pl.Int32, "old_charged_units": pl.Int64,
             "new_charged_units": pl.Int64, "old_free_units": pl.Int64, "new_free_units": pl.Int64}
    return [(pl.col(c) if c in frame.columns else pl.lit(None)).cast(types.get(c, pl.Utf8)).alias(c)
            for c in CHANGE_COLUMNS]


def _money(rows: pl.DataFrame, prefix: str) -> dict:
    sums = (rows.lazy().filter(pl.col(prefix + "present"))
            .group_by(prefix + "currency").agg(pl.col(prefix + "charge_micros").sum()).collect())
    return {currency: int(micros) for currency, micros in sorted(sums.iter_rows())}


def _revenue_by(rows: pl.DataFrame, name: str) -> pl.DataFrame:
    """Revenue per (currency, ``name``): old money under the old value, new money under the new one."""
    rows = rows.lazy()

    def side(prefix, label):
        return (rows.filter(pl.col(prefix + "present"))
                .group_by([pl.col(prefix + "currency").alias("currency"), pl.col(prefix + name).alias(name)])
                .agg(pl.col(prefix + "charge_micros").sum().alias(label),
                     pl.len().alias(label.replace("micros", "records"))))
    changed = (rows.filter(pl.col("status") != "UNCHANGED")
               .group_by([pl.coalesce("new_currency", "old_currency").alias("currency"),
                          pl.coalesce("new_" + name, "old_" + name).alias(name)])
               .agg(pl.len().alias("changed_records")))
    keys = ["currency", name]
    out = (side("old_", "previous_micros").join(side("new_", "rerated_micros"), on=keys, how="full", coalesce=True)
           .join(changed, on=keys, how="left").collect())
    out = out.with_columns([pl.col(c).fill_null(0).cast(pl.Int64) for c in
                            ("previous_micros", "rerated_micros", "previous_records", "rerated_records",
                             "changed_records")])
    return out.with_columns((pl.col("rerated_micros") - pl.col("previous_micros")).alias("delta_micros")).sort(keys)
