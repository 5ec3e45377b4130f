"""The stateless rating rules as an idiomatic Polars query: the baseline a data engineer would write.

``polars_tariff`` turns the compiled reference into lookup tables to join against; ``rate_lazy`` adds
each row's ``reason``, ``covered`` and ``charge`` to a lazy frame of usage rows that carry their plan
``version``. perf/bench_rating.py times it beside the kernel (enrichment from the wrapper);
perf/bench_pipeline.py runs it inside a whole Polars job (its own enrichment) beside the Beam job.
Both check it against the project's results on every run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from cdr_schemas.reasons import Reason
from rating.compile import CompiledReference
from rating.reference.model import HOME_ZONE

@dataclasses.dataclass(frozen=True)
class PolarsTariff:
    """The compiled tariff as the lookup tables a data engineer would join against."""
    versions: pl.DataFrame       # version -> plan, numbering, timezone, tables, flags
    prefixes: dict[int, pl.DataFrame]  # prefix length -> (zone_table, prefix, zone)
    week: pl.DataFrame           # (version, minute_of_week) -> band, minutes until it changes
    holiday_dates: pl.DataFrame  # (version, local_date) -> is_holiday
    holiday_variants: pl.DataFrame  # (version, zone) -> hol_variant: which holiday week applies
    holiday_minutes: pl.DataFrame  # (hol_variant, minute_of_week) -> holiday band (-1 none), minutes to change
    rates: pl.DataFrame          # (version, service, zone, band) -> rate, with steps and levels as columns
    home_networks: list[str]
    timezones: list[str]
    max_units: list[int]
    home_zone: int
    steps: int
    levels: int


def _trie_prefixes(T, roots) -> list[tuple[int, str, int]]:
    out = []
    for root in roots:
        stack = [(int(root), "")]
        while stack:
            node, prefix = stack.pop()
            if prefix and T.trie_zone[node] >= 0:
                out.append((int(root), prefix, int(T.trie_zone[node])))
            for digit in range(10):
                child = T.trie_children[node, digit]
                if child >= 0:
                    stack.append((int(child), prefix + str(digit)))
    return out


def polars_tariff(compiled: CompiledReference) -> PolarsTariff:
    T = compiled.tables
    ref = compiled.reference
    plans = [ref.plans[p] for p in compiled.plan_ids]
    n_versions = len(compiled.version_plan)
    plan_of = compiled.version_plan
    versions = pl.DataFrame({
        "version": np.arange(n_versions, dtype=np.int64),
        "cc": [plans[p].numbering.country_code for p in plan_of],
        "intl": [plans[p].numbering.international_prefix for p in plan_of],
        "trunk": [plans[p].numbering.trunk_prefix for p in plan_of],
        "tz_name": [plans[p].timezone for p in plan_of],
        "zone_table": T.ver_zone_root.astype(np.int64),
        "roam_table": pl.Series(T.ver_roam_root.astype(np.int64)).replace(-1, None),
        "has_holidays": T.ver_hol_count > 0,
        "zero_charged": T.ver_zero_charged == 1,
        "den": T.ver_denominator.astype(np.int64),
    })
    roots = sorted(set(T.ver_zone_root.tolist()) | {r for r in T.ver_roam_root.tolist() if r >= 0})
    table = pl.DataFrame(_trie_prefixes(T, roots), schema=["zone_table", "prefix", "zone"], orient="row")
    table = table.with_columns(pl.col("zone_table").cast(pl.Int64), pl.col("zone").cast(pl.Int64))
    prefixes = {length: part.drop("length").rename({"prefix": f"prefix_{length}", "zone": f"zone_{length}"})
                for (length,), part in table.with_columns(length=pl.col("prefix").str.len_bytes())
                .partition_by("length", as_dict=True).items()}
    minutes_per_week = T.week_band.shape[1]
    week = pl.DataFrame({
        "version": np.repeat(np.arange(n_versions, dtype=np.int64), minutes_per_week),
        "minute_of_week": np.tile(np.arange(minutes_per_week, dtype=np.int64), n_versions),
        "week_band": T.week_band.ravel().astype(np.int64),
        "week_next": T.week_next_min.ravel().astype(np.int64),
    })
    dates = [(v, int(d)) for v in range(n_versions)
             for d in T.holidays_day[T.ver_hol_first[v]:T.ver_hol_first[v] + T.ver_hol_count[v]]]
    holiday_dates = pl.DataFrame(dates, schema=["version", "days"], orient="row").select(
        pl.col("version").cast(pl.Int64), local_date=pl.col("days").cast(pl.Int32).cast(pl.Date),
        is_holiday=pl.lit(True))
    n_zones = T.hol_variant.shape[1]
    holiday_variants = pl.DataFrame({
        "version": np.repeat(np.arange(n_versions, dtype=np.int64), n_zones),
        "zone": np.tile(np.arange(n_zones, dtype=np.int64), n_versions),
        "hol_variant": T.hol_variant.ravel().astype(np.int64),
    })
    n_variants, minutes_per_week = T.hol_band.shape
    holiday_minutes = pl.DataFrame({
        "hol_variant": np.repeat(np.arange(n_variants, dtype=np.int64), minutes_per_week),
        "minute_of_week": np.tile(np.arange(minutes_per_week, dtype=np.int64), n_variants),
        "hol_band": T.hol_band.ravel().astype(np.int64),
        "hol_next": T.hol_next_min.ravel().astype(np.int64),
    })
    v, s, z, b = np.nonzero(T.rate_index >= 0)
    rate = T.rate_index[v, s, z, b].astype(np.int64)

    def optional(values):  # -1 means none in the compiled tables
        return pl.Series(values.astype(np.int64)).replace(-1, None)

    columns = {
        "version": v.astype(np.int64), "service_code": s.astype(np.int64), "zone": z.astype(np.int64),
        "band": b.astype(np.int64), "rate": rate,
        "connect": T.rate_connect_micros[rate], "minimum": optional(T.rate_min_micros[rate]),
        "maximum": optional(T.rate_max_micros[rate]), "q": T.rate_round_q_micros[rate],
        "mode": T.rate_round_mode[rate], "tier_group": optional(T.rate_tier_group[rate]),
        "tier_inc": T.rate_tier_inc[rate],
    }
    steps = int(T.rate_step_count.max(initial=0))
    for j in range(steps):
        has = T.rate_step_count[rate] > j
        row = np.where(has, T.rate_step_first[rate] + j, 0)
        for name, values in (("from", T.step_from), ("price", T.step_price_micros), ("per", T.step_per),
                             ("inc", T.step_inc), ("inc_price", T.step_inc_price_micros)):
            column = values[row].astype(np.int64) if len(values) else np.zeros(len(rate), np.int64)
            if name == "inc_price":
                column = np.where(column >= 0, column, -1)
            columns[f"s{j}_{name}"] = pl.Series(np.where(has, column, -1)).replace(-1, None)
    levels = int(T.rate_level_count.max(initial=0))
    for k in range(levels):
        has = T.rate_level_count[rate] > k
        row = np.where(has, T.rate_level_first[rate] + k, 0)
        for name, values in (("up_to", T.level_up_to), ("price", T.level_price_micros), ("per", T.level_per)):
            columns[f"l{k}_{name}"] = pl.Series(np.where(has, values[row], -1).astype(np.int64)).replace(-1, None)
    return PolarsTariff(
        versions=versions, prefixes=prefixes, week=week, holiday_dates=holiday_dates,
        holiday_variants=holiday_variants, holiday_minutes=holiday_minutes, rates=pl.DataFrame(columns),
        home_networks=list(ref.operator.home_networks), timezones=sorted(set(versions["tz_name"].to_list())),
        max_units=T.max_units.tolist(), home_zone=compiled.zone_names.index(HOME_ZONE), steps=steps, levels=levels)


def _ceil_div(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return (a + b - 1) // b


def _add_exact(whole: pl.Expr, frac: pl.Expr, price: pl.Expr, units: pl.Expr, per: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """whole + frac/den += price * units / per, exactly (den is a multiple of every per)."""
    q = units // per
    pr = price * (units - q * per)
    return whole + price * q + pr // per, frac + (pr % per) * (pl.col("den") // per)


RATED_COLUMNS = ("service_code", "raw_units", "zone", "band", "rate", "reason", "covered", "charge")


def rate_with_polars(usage: pl.DataFrame, tariff: PolarsTariff) -> pl.DataFrame:
    """``rate_lazy`` on a frame with a ``row`` column, collected: columns ``row`` (of ``usage``; joins
    do not keep the order), ``reason`` (0 rated, -1 not enriched), ``covered`` and ``charge``."""
    return rate_lazy(usage.lazy(), tariff).select("row", "reason", "covered", "charge").collect()


def rate_lazy(usage: pl.LazyFrame, tariff: PolarsTariff) -> pl.LazyFrame:
    """Stateless rating of usage rows (with their plan ``version``; null = not enriched) in Polars.

    Numbers normalised with string ops, zones by joining each prefix length (longest wins), bands
    from the local time (``dt.convert_time_zone``) and minute-of-week/holiday lookups, the rate by a
    join, and the charge in exact integer micro-units: every step and tier level, increment
    rounding, connect fee, minimum/maximum and the rounding modes. Voice calls that may cross a
    band change (or a UTC offset change) are not priced: ``covered`` is false and ``charge`` null.

    ``usage`` needs the usage columns (service as VOICE/SMS/DATA, other_party, start_time in UTC,
    duration_s, bytes_up, bytes_down, message_count, visited_network) and ``version`` (the compiled
    plan-version row). Returns its columns plus ``RATED_COLUMNS``: ``reason`` (0 rated, -1 not
    enriched, else a ``Reason``), ``covered`` and ``charge`` (micro-units; null unless rated and
    covered). Its other column names must not be among the tariff tables' (they are joined in).
    """
    columns = usage.collect_schema().names()
    svc = pl.col("service").cast(pl.String)
    op = pl.col("other_party")
    intl_len, trunk_len = pl.col("intl").str.len_bytes(), pl.col("trunk").str.len_bytes()
    has_plus = op.str.starts_with("+")
    has_intl = (intl_len > 0) & op.str.starts_with(pl.col("intl"))
    has_trunk = (trunk_len > 0) & op.str.starts_with(pl.col("trunk"))
    roaming = pl.col("visited_network").is_not_null() & ~pl.col("visited_network").is_in(tariff.home_networks)

    lf = (usage
          .join(tariff.versions.lazy(), on="version", how="left")
          .with_columns(
              service_code=svc.replace_strict({"VOICE": 0, "SMS": 1, "DATA": 2}, return_dtype=pl.Int64),
              raw_units=pl.when(svc == "VOICE").then(pl.col("duration_s"))
              .when(svc == "SMS").then(pl.col("message_count").cast(pl.Int64))
              .otherwise(pl.col("bytes_up") + pl.col("bytes_down")),
              roaming=roaming,
              rest=pl.when(has_plus).then(op.str.slice(1))
              .when(has_intl).then(op.str.slice(intl_len))
              .when(has_trunk).then(op.str.slice(trunk_len))
              .otherwise(op),
              international=has_plus | has_intl)
          .with_columns(e164=pl.when("international").then("rest").otherwise(pl.col("cc") + pl.col("rest")))
          .with_columns(
              number_ok=pl.col("rest").str.contains("^[0-9]+$") & (pl.col("e164").str.len_bytes() <= 15),
              zone_key=pl.when("roaming").then(
                  pl.when(pl.col("visited_network").str.contains("^[0-9]{1,16}$")).then("visited_network"))
              .when(pl.col("service_code") != 2).then("e164"),
              zone_table=pl.when("roaming").then("roam_table").otherwise("zone_table")))
    for length in sorted(tariff.prefixes, reverse=True):
        lf = (lf.with_columns(pl.col("zone_key").str.slice(0, length).alias(f"prefix_{length}"))
              .join(tariff.prefixes[length].lazy(), on=["zone_table", f"prefix_{length}"], how="left"))
    zone_columns = [pl.col(f"zone_{length}") for length in sorted(tariff.prefixes, reverse=True)]
    home = (pl.col("service_code") == 2) & ~pl.col("roaming")

    def local(instant: pl.Expr) -> pl.Expr:
        return pl.coalesce([pl.when(pl.col("tz_name") == name).then(
            instant.dt.convert_time_zone(name).dt.replace_time_zone(None)) for name in tariff.timezones])

    voice_s = pl.when(pl.col("service_code") == 0).then(pl.col("raw_units")).otherwise(0)
    lf = (lf.with_columns(zone=pl.when(home).then(tariff.home_zone).otherwise(pl.coalesce(zone_columns)),
                          local=local(pl.col("start_time")),
                          local_end=local(pl.col("start_time") + pl.duration(seconds=voice_s)))
          .with_columns(minute_of_day=(pl.col("local").dt.hour().cast(pl.Int64) * 60
                                       + pl.col("local").dt.minute().cast(pl.Int64)),
                        local_date=pl.col("local").dt.date())
          .with_columns(minute_of_week=(pl.col("local").dt.weekday().cast(pl.Int64) - 1) * 1440
                        + pl.col("minute_of_day"))
          .join(tariff.week.lazy(), on=["version", "minute_of_week"], how="left")
          .join(tariff.holiday_dates.lazy(), on=["version", "local_date"], how="left")
          .join(tariff.holiday_variants.lazy(), on=["version", "zone"], how="left")
          .join(tariff.holiday_minutes.lazy(), on=["hol_variant", "minute_of_week"], how="left")
          .with_columns(is_holiday=pl.col("is_holiday").fill_null(False)))
    holiday_band = pl.col("is_holiday") & (pl.col("hol_band") >= 0)
    minutes = (pl.when(holiday_band).then("hol_next")
               .when(pl.col("is_holiday")).then(pl.min_horizontal("week_next", "hol_next"))
               .otherwise("week_next"))
    to_midnight = 1440 - pl.col("minute_of_day")
    minutes = pl.when("has_holidays").then(pl.min_horizontal(minutes, to_midnight)).otherwise(minutes)
    band_end = pl.col("local").dt.truncate("1m") + pl.duration(minutes=minutes)
    same_offset = (pl.col("local_end") - pl.col("local")) == pl.duration(seconds=voice_s)
    max_units = pl.col("service_code").replace_strict(dict(enumerate(tariff.max_units)), return_dtype=pl.Int64)
    lf = (lf.with_columns(band=pl.when(holiday_band).then("hol_band").otherwise("week_band"),
                          covered=(pl.col("service_code") != 0) | (pl.col("raw_units") == 0)
                          | (same_offset & (pl.col("local_end") <= band_end)).fill_null(False))
          .join(tariff.rates.lazy(), on=["version", "service_code", "zone", "band"], how="left")
          .with_columns(reason=pl.when(pl.col("version").is_null()).then(-1)
                        .when((pl.col("service_code") != 2) & ~pl.col("number_ok")).then(int(Reason.INVALID_NUMBER))
                        .when(pl.col("zone").is_null()).then(int(Reason.NO_ZONE))
                        .when(pl.col("raw_units") > max_units).then(int(Reason.OVERFLOW))
                        .when(pl.col("rate").is_null()).then(int(Reason.NO_RATE))
                        .otherwise(0)))

    # Steps: each step prices whole increments from where the previous one stopped to its end.
    raw = pl.col("raw_units")
    stepped = pl.col("tier_group").is_null()
    whole, frac = pl.lit(0, pl.Int64), pl.lit(0, pl.Int64)
    lf = lf.with_columns(u=pl.lit(0, pl.Int64))
    for j in range(tariff.steps):
        following = pl.col(f"s{j + 1}_from") if j + 1 < tariff.steps else pl.lit(None, pl.Int64)
        active = stepped & pl.col(f"s{j}_inc").is_not_null() & (pl.col("u") < raw) & (
            following.is_null() | (pl.col("u") < following))
        seg_end = pl.min_horizontal(raw, following)
        lf = lf.with_columns(**{f"n{j}": pl.when(active).then(_ceil_div(seg_end - pl.col("u"), pl.col(f"s{j}_inc")))
                                .otherwise(0)})
        lf = lf.with_columns(u=pl.col("u") + pl.col(f"n{j}") * pl.col(f"s{j}_inc").fill_null(0))
        n, inc = pl.col(f"n{j}"), pl.col(f"s{j}_inc")
        exact_whole, exact_frac = _add_exact(pl.lit(0, pl.Int64), pl.lit(0, pl.Int64), pl.col(f"s{j}_price"), n * inc,
                                             pl.col(f"s{j}_per"))
        rounded = pl.col(f"s{j}_inc_price").is_not_null()
        whole = whole + pl.when(n > 0).then(pl.when(rounded).then(n * pl.col(f"s{j}_inc_price"))
                                            .otherwise(exact_whole)).otherwise(0)
        frac = frac + pl.when((n > 0) & ~rounded).then(exact_frac).otherwise(0)
    # Graduated tiers, statelessly: the event's paid units counted from zero.
    paid = _ceil_div(raw, pl.col("tier_inc")) * pl.col("tier_inc")
    low = pl.lit(0, pl.Int64)
    for k in range(tariff.levels):
        high = pl.col(f"l{k}_up_to")
        overlap = pl.max_horizontal(pl.min_horizontal(paid, high) - low, 0)
        level_whole, level_frac = _add_exact(pl.lit(0, pl.Int64), pl.lit(0, pl.Int64), pl.col(f"l{k}_price"), overlap,
                                             pl.col(f"l{k}_per"))
        use = ~stepped & high.is_not_null() & (overlap > 0)
        whole = whole + pl.when(use).then(level_whole).otherwise(0)
        frac = frac + pl.when(use).then(level_frac).otherwise(0)
        low = high
    paid_any = pl.when(raw == 0).then("zero_charged").otherwise(True)
    lf = lf.with_columns(whole=whole + pl.when(paid_any).then("connect").otherwise(0), frac=frac)
    lf = lf.with_columns(whole=pl.col("whole") + pl.col("frac") // pl.col("den"), frac=pl.col("frac") % pl.col("den"))
    below = paid_any & pl.col("minimum").is_not_null() & (pl.col("whole") < pl.col("minimum"))
    above = paid_any & pl.col("maximum").is_not_null() & (
        (pl.col("whole") > pl.col("maximum")) | ((pl.col("whole") == pl.col("maximum")) & (pl.col("frac") > 0)))
    lf = lf.with_columns(whole=pl.when(below).then("minimum").when(above).then("maximum").otherwise("whole"),
                         frac=pl.when(below | above).then(0).otherwise("frac"))
    # Round whole + frac/den to a multiple of q micros (modes: up, down, half up, half even).
    q, den = pl.col("q"), pl.col("den")
    rest = pl.col("whole") % q
    base = pl.col("whole") - rest
    num = rest * den + pl.col("frac")
    span = q * den
    up = (pl.when(pl.col("mode") == 0).then(True).when(pl.col("mode") == 1).then(False)
          .when(pl.col("mode") == 2).then(2 * num >= span)
          .otherwise((2 * num > span) | ((2 * num == span) & ((base // q) % 2 == 1))))
    charge = pl.when(num == 0).then("whole").when(up).then(base + q).otherwise(base)
    return lf.select(*columns, *RATED_COLUMNS[:-1],
                     charge=pl.when((pl.col("reason") == 0) & pl.col("covered")).then(charge))
