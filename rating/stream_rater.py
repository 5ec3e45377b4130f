"""Streaming rating of the accounts a stream has met: the state it keeps between micro-batches, Beam-free.

Batch rating sees a whole cycle at once and consumes allowances and tiers in event-time order.
A stream sees records as they arrive, possibly out of order. ``ShardState.add`` keeps both
guarantees:

* **In order** (every new record of an (account, cycle) sorts after the ones already rated — the
  usual case): the new records are rated from the carried balances (``RatingState``).
* **Out of order** (a record sorts before an already rated one of its account and cycle): that
  account's cycle is re-rated from scratch over its stored records, exactly as batch does, and
  every record whose rating changed is emitted again with ``revision + 1`` (the stream's commit
  replaces the stored row with it). The latest revision of each record is therefore what
  ``usage-rating batch`` gives for the same records.

``seed`` takes over what the store already holds of an account (``pipelines.streaming``): the
store is the source of truth, this state a cache of it. Usage of closed cycles never reaches it
(the stream rejects it: ``CYCLE_CLOSED``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from cdr_schemas import rated_event_schema, rejected_schema, usage_batch_schema
from rating.arrow_utils import column, int_column
from rating.changes import RATING_COLUMNS, allowance_list_length, rating_changed
from rating.cycles import month_index, month_label
from rating.dedup import table_to_batch
from rating.engine import RatingEngine
from rating.state import MONTH_KEY, RatingState, slot_key

_KEEP_RATING_STATE_MONTHS = 3


@dataclasses.dataclass
class StreamResult:
    rated: pa.Table       # new records (revision 0) and corrections (revision > 0)
    rejected: pa.Table
    corrections: int
    totals: dict          # (account_id, billing_cycle) -> running totals, for the pairs that changed


def _usage_batch(table: pa.Table) -> pa.RecordBatch:
    return table_to_batch(table.select(usage_batch_schema().names).cast(usage_batch_schema()))


@dataclasses.dataclass
class ShardState:
    """Everything one account shard remembers between bundles (pickled into Beam state)."""
    rating_state: RatingState = dataclasses.field(default_factory=RatingState)
    stored: pa.Table | None = None        # rated usage rows of open cycles + _account, _month, _end
    emitted: pa.Table | None = None       # latest rated row per record of open cycles
    last_key: dict = dataclasses.field(default_factory=dict)    # (account, month) -> (start_us, source, record_id)
    totals: dict = dataclasses.field(default_factory=dict)      # (account_id, billing_cycle) -> dict
    newest_month: int = -1

    def add(self, engine: RatingEngine, batch: pa.RecordBatch) -> StreamResult:
        """Rate ``batch`` (validated, deduplicated usage rows of open cycles)."""
        _, accounts, months, ends = engine.cycle_keys(batch)
        slow_groups = self._out_of_order(batch, accounts, months)
        group_key = slot_key(accounts, months)
        in_slow = np.isin(group_key, [int(slot_key(a, m)) for a, m in slow_groups]) & (accounts >= 0)

        outputs, rejected = [], []
        fast_rows = np.flatnonzero(~in_slow)
        if len(fast_rows):
            fast = batch if len(fast_rows) == batch.num_rows else batch.take(pa.array(fast_rows, pa.int64()))
            fast_rated, fast_rejected = engine.rate(fast, self.rating_state)
            outputs.append(pa.Table.from_batches([fast_rated]))
            rejected.append(pa.Table.from_batches([fast_rejected]))
            self._store(fast, accounts[fast_rows], months[fast_rows], ends[fast_rows], rated=fast_rated)
        corrections = 0
        mask, before = self._emitted_of(engine, slow_groups)
        if slow_groups:
            slow_rows = np.flatnonzero(in_slow)
            rerated, slow_rejected, corrections = self._rerate(
                engine, slow_groups, batch.take(pa.array(slow_rows, pa.int64())),
                accounts[slow_rows], months[slow_rows], ends[slow_rows], before)
            outputs.append(rerated)
            rejected.append(pa.Table.from_batches([slow_rejected]))
        rated = pa.concat_tables(outputs) if outputs else rated_event_schema().empty_table()
        self._advance_last_keys(rated.filter(pc.equal(rated.column("revision"), 0)), engine)
        totals = self._update_totals(rated, before)
        if slow_groups:   # first: ``mask`` is over emitted as it was
            self._replace_emitted(outputs[-1], mask, before)
        if len(fast_rows):   # records never rated before: appended as they are
            self._append_emitted(outputs[0])
        if (months >= 0).any():
            self.newest_month = max(self.newest_month, int(months[months >= 0].max()))
            self.rating_state.drop_cycles_before(self.newest_month - _KEEP_RATING_STATE_MONTHS)
        return StreamResult(rated=rated,
                            rejected=pa.concat_tables(rejected) if rejected else rejected_schema().empty_table(),
                            corrections=corrections, totals=totals)

    def _out_of_order(self, batch: pa.RecordBatch, accounts: np.ndarray, months: np.ndarray) -> set[tuple[int, int]]:
        """The (account, cycle) groups of ``batch`` with a record that sorts before the last one rated."""
        known = np.flatnonzero(accounts >= 0)
        if not self.last_key or len(known) == 0:
            return set()
        keys = slot_key(accounts[known], months[known])
        groups, first = np.unique(keys, return_index=True)
        last_start = np.full(len(groups), np.iinfo(np.int64).min, np.int64)
        lasts = []
        for g, row in enumerate(known[first]):
            last = self.last_key.get((int(accounts[row]), int(months[row])))
            lasts.append(last)
            if last is not None:
                last_start[g] = last[0]
        at = np.searchsorted(groups, keys)
        starts = int_column(column(batch, "start_time"))[known]
        slow = set()
        for g in np.unique(at[starts < last_start[at]]):
            row = known[first[g]]
            slow.add((int(accounts[row]), int(months[row])))
        ties = np.flatnonzero(starts == last_start[at])   # same instant: source and record_id decide
        if len(ties):
            sources = column(batch, "source").take(pa.array(known[ties])).to_pylist()
            records = column(batch, "record_id").take(pa.array(known[ties])).to_pylist()
            for i, source, record in zip(ties, sources, records):
                if (int(starts[i]), source, record) < lasts[at[i]]:
                    row = known[first[at[i]]]
                    slow.add((int(accounts[row]), int(months[row])))
        return slow

    def seed(self, engine: RatingEngine, stored: pa.Table, usage: pa.Table) -> None:
        """Take over what a store holds of some accounts' open cycles: ``stored``, their rated events
        as the store keeps them, and ``usage``, the same events as usage rows. The balances are
        rebuilt by rating the events again from nothing, in event-time order, as the batch job does;
        the stored ratings stay what later corrections are compared with."""
        if stored.num_rows == 0:
            return
        batch = _usage_batch(usage)
        _, accounts, months, ends = engine.cycle_keys(batch)
        fresh = RatingState()
        rerated, _ = engine.rate(batch, fresh)
        self.rating_state.update(fresh)
        self._store(batch, accounts, months, ends, rated=rerated)
        stored = stored.select(rated_event_schema().names).cast(rated_event_schema())
        self._advance_last_keys(stored, engine)
        self._update_totals(stored.set_column(stored.schema.get_field_index("revision"), "revision",
                                              pa.array(np.zeros(stored.num_rows, np.int32))))
        self._append_emitted(stored)
        if (months >= 0).any():
            self.newest_month = max(self.newest_month, int(months[months >= 0].max()))

    # --- out of order ---------------------------------------------------------------------------

    def _rerate(self, engine: RatingEngine, groups: set, new_rows: pa.RecordBatch, accounts, months, ends,
                before: pa.Table | None):
        """Re-rate whole (account, cycle) groups from their stored rows plus ``new_rows``; ``before``:
        what was emitted of the groups."""
        new = pa.Table.from_batches([new_rows])
        previous = self.stored.filter(pc.is_in(self._group_keys(self.stored),
                                               value_set=pa.array([int(slot_key(a, m)) for a, m in groups])))
        everything = pa.concat_tables([previous.select(usage_batch_schema().names), new])
        fresh_state = RatingState()
        rated, rejected = engine.rate(_usage_batch(everything), fresh_state)
        self.rating_state.update(fresh_state)
        kept = self.stored.num_rows if self.stored is not None else 0
        self._store(new_rows, accounts, months, ends, rated=rated)
        mine = pa.concat_tables([previous, self.stored.slice(kept)]).select(
            ["_account", "_month", "start_time", "source", "record_id"])
        frame = pl.from_arrow(mine.set_column(2, "start_time", mine.column("start_time").cast(pa.int64())))
        for account, month, start, source, record in frame.sort(
                ["_account", "_month", "start_time", "source", "record_id"]).group_by(
                ["_account", "_month"], maintain_order=True).last().iter_rows():
            self.last_key[(account, month)] = (start, source, record)
        changed, count = self._changed(pa.Table.from_batches([rated]), before)
        return changed, rejected, count

    def _changed(self, rerated: pa.Table, before: pa.Table | None) -> tuple[pa.Table, int]:
        """Rows of ``rerated`` that are new or differ from what was emitted (``before``), with their revision."""
        if before is None or before.num_rows == 0 or rerated.num_rows == 0:
            return rerated, 0
        new = pl.from_arrow(rerated.select(["source", "record_id", *RATING_COLUMNS]))
        old = pl.from_arrow(before.select(["source", "record_id", "revision", *RATING_COLUMNS])).rename(
            {"revision": "revision_old"})
        joined = new.join(old, on=["source", "record_id"], how="left", suffix="_old")
        list_length = allowance_list_length(joined, "allowance_units", "allowance_units_old")
        differs = pl.col("revision_old").is_null() | rating_changed(lambda c: c + "_old", lambda c: c, list_length)
        out = joined.filter(differs).with_columns(
            pl.when(pl.col("revision_old").is_null()).then(0).otherwise(pl.col("revision_old") + 1)
            .cast(pl.Int32).alias("revision"))
        keys = out.select(["source", "record_id", "revision"])
        table = rerated.drop_columns(["revision"])
        table = pl.from_arrow(table).join(keys, on=["source", "record_id"], how="inner", maintain_order="left")
        result = table.to_arrow().select(rated_event_schema().names).cast(rated_event_schema())
        return result, keys.filter(pl.col("revision") > 0).height

    # --- bookkeeping ----------------------------------------------------------------------------

    @staticmethod
    def _group_keys(table: pa.Table) -> pa.Array:
        return pc.add(pc.multiply(table.column("_account"), MONTH_KEY), table.column("_month"))

    def _store(self, rows: pa.RecordBatch, accounts, months, ends, *, rated: pa.RecordBatch) -> None:
        """Keep the rows that rated (a rejected row has no allowance to give back when re-rated)."""
        if rows.num_rows == 0:
            return
        table = pa.Table.from_batches([rows]).append_column("_account", pa.array(accounts, pa.int64())) \
            .append_column("_month", pa.array(months, pa.int64())).append_column("_end", pa.array(ends, pa.int64()))
        if rated.num_rows != rows.num_rows:
            rated_keys = pl.from_arrow(pa.table({"source": rated.column("source"),
                                                 "record_id": rated.column("record_id")}))
            table = pl.from_arrow(table).join(rated_keys, on=["source", "record_id"], how="semi").to_arrow()
        table = table.cast(pa.schema(list(usage_batch_schema()) + [pa.field(n, pa.int64()) for n in
                                                                   ("_account", "_month", "_end")]))
        self.stored = table if self.stored is None else pa.concat_tables([self.stored, table])

    def _advance_last_keys(self, rated: pa.Table, engine: RatingEngine) -> None:
        if rated.num_rows == 0:
            return
        account_row = engine.account_row_of
        frame = pl.from_arrow(pa.table({
            "account_id": rated.column("account_id"), "service_cycle": rated.column("service_cycle"),
            "start_time": rated.column("start_time").cast(pa.int64()), "source": rated.column("source"),
            "record_id": rated.column("record_id")}))
        group = ["account_id", "service_cycle"]
        # The latest instant of each group first (numbers), then the few rows at it ordered by their strings.
        latest = frame.join(frame.group_by(group).agg(pl.col("start_time").max()), on=[*group, "start_time"],
                            how="semi")
        last = latest.sort([*group, "start_time", "source", "record_id"]).group_by(group, maintain_order=True).last()
        months = {cycle: month_index(cycle) for cycle in last["service_cycle"].unique().to_list()}
        for account, cycle, start, source, record in last.iter_rows():
            group_key = (account_row[account], months[cycle])
            previous = self.last_key.get(group_key)
            key = (start, source, record)
            self.last_key[group_key] = key if previous is None else max(previous, key)

    def _update_totals(self, rated: pa.Table, before: pa.Table | None = None) -> dict:
        """Running totals per (account, service cycle); a correction replaces what it revises."""
        if rated.num_rows == 0:
            return {}
        frame = pl.from_arrow(rated.select(["account_id", "service_cycle", "currency", "source", "record_id",
                                            "charge_micros", "free_units", "revision"]))
        corrected = frame.filter(pl.col("revision") > 0).select(["source", "record_id"])
        if corrected.height and before is not None:
            old = pl.from_arrow(before.select(["source", "record_id", "charge_micros", "free_units"])) \
                .join(corrected, on=["source", "record_id"], how="semi") \
                .rename({"charge_micros": "old_charge", "free_units": "old_free"})
            frame = frame.join(old, on=["source", "record_id"], how="left").with_columns(
                pl.col("old_charge").fill_null(0), pl.col("old_free").fill_null(0))
        else:
            frame = frame.with_columns(pl.lit(0, pl.Int64).alias("old_charge"), pl.lit(0, pl.Int64).alias("old_free"))
        groups = frame.group_by(["account_id", "service_cycle"]).agg(
            pl.col("currency").first(), (pl.col("revision") == 0).sum().alias("events"),
            (pl.col("charge_micros") - pl.col("old_charge")).sum().alias("charge"),
            (pl.col("free_units") - pl.col("old_free")).sum().alias("free"))
        changed = {}
        for account, cycle, currency, events, charge, free in groups.sort(["account_id", "service_cycle"]).iter_rows():
            entry = self.totals.setdefault((account, cycle), {
                "account_id": account, "billing_cycle": cycle, "currency": currency, "rated_events": 0,
                "charge_micros": 0, "free_units": 0})
            entry["rated_events"] += int(events)
            entry["charge_micros"] += int(charge)
            entry["free_units"] += int(free)
            changed[(account, cycle)] = dict(entry)
        return changed

    def _emitted_of(self, engine: RatingEngine, groups: set) -> tuple[np.ndarray | None, pa.Table | None]:
        """(mask over ``emitted``, its rows) of the (account row, month) ``groups``; (None, None) without any."""
        if not groups or self.emitted is None or self.emitted.num_rows == 0:
            return None, None
        wanted = pl.DataFrame({"account_id": [engine.compiled.account_ids[a] for a, _ in groups],
                               "service_cycle": [month_label(m) for _, m in groups]})
        maybe = pc.and_(pc.is_in(self.emitted.column("account_id"), value_set=pa.array(wanted["account_id"].unique()
                                                                                        .to_list(), pa.string())),
                        pc.is_in(self.emitted.column("service_cycle"),
                                 value_set=pa.array(wanted["service_cycle"].unique().to_list(), pa.string())))
        rows = np.flatnonzero(maybe.to_numpy(zero_copy_only=False))
        candidates = pl.from_arrow(self.emitted.select(["account_id", "service_cycle"]).take(pa.array(rows)))
        exact = candidates.with_row_index("_i").join(wanted, on=["account_id", "service_cycle"], how="semi")["_i"]
        mask = np.zeros(self.emitted.num_rows, np.bool_)
        mask[rows[exact.to_numpy()]] = True
        return mask, self.emitted.filter(pa.array(mask))

    def _replace_emitted(self, rerated: pa.Table, mask: np.ndarray | None, before: pa.Table | None) -> None:
        """``rerated`` (rows of some groups) replaces what was emitted of the same records."""
        if mask is None:
            self._append_emitted(rerated)
            return
        keys = pl.from_arrow(rerated.select(["source", "record_id"]))
        kept = pl.from_arrow(before).join(keys, on=["source", "record_id"], how="anti").to_arrow() \
            .cast(rated_event_schema())
        self.emitted = pa.concat_tables([self.emitted.filter(pa.array(~mask)), kept, rerated.cast(rated_event_schema())])

    def _append_emitted(self, rated: pa.Table) -> None:
        """Keep ``rated``, ratings of records never emitted before, as their latest."""
        if rated.num_rows == 0:
            return
        rated = rated.cast(rated_event_schema())
        self.emitted = rated if self.emitted is None else pa.concat_tables([self.emitted, rated])

