"""Streaming rating of one account shard: the state a streaming job keeps per key, Beam-free.

Batch rating sees a whole cycle at once and consumes allowances and tiers in event-time order.
A stream sees records as they arrive, possibly out of order. ``ShardState.add`` keeps both
guarantees:

* **In order** (every new record of an (account, cycle) sorts after the ones already rated — the
  usual case): the new records are rated from the carried balances (``RatingState``).
* **Out of order** (a record sorts before an already rated one of its account and cycle): that
  account's cycle is re-rated from scratch over its stored records, exactly as batch does, and
  every record whose rating changed is emitted again with ``revision + 1``. The latest revision of
  each record is therefore what ``usage-rating batch`` gives for the same records.
* **Late beyond the allowed lateness** (its cycle ended more than the allowed lateness before the
  record arrived): rated at once from the balances left (an allowance whose balance is no longer
  kept counts as used up), never re-ordered, and billed on the next cycle.

Rated records of open cycles are kept until their cycle end plus the allowed lateness (``expire``).
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
from rating.cycles import month_index, month_label, next_month_label
from rating.dedup import table_to_batch
from rating.engine import RatingEngine
from rating.state import MONTH_KEY, RatingState, slot_key

_KEEP_RATING_STATE_MONTHS = 3


@dataclasses.dataclass
class StreamResult:
    rated: pa.Table       # new records (revision 0) and corrections (revision > 0)
    rejected: pa.Table
    late_records: int
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

    def add(self, engine: RatingEngine, batch: pa.RecordBatch, arrival_us: int,
            allowed_lateness_us: int) -> StreamResult:
        """Rate ``batch`` (validated, deduplicated usage rows) that arrived at ``arrival_us``."""
        subs, accounts, months, ends = engine.cycle_keys(batch)
        expired = (accounts >= 0) & (ends + allowed_lateness_us < arrival_us)
        starts = int_column(column(batch, "start_time"))
        sources = column(batch, "source").to_pylist()
        records = column(batch, "record_id").to_pylist()
        slow_groups: set[tuple[int, int]] = set()
        for i in np.flatnonzero((accounts >= 0) & ~expired):
            group = (int(accounts[i]), int(months[i]))
            last = self.last_key.get(group)
            if last is not None and (int(starts[i]), sources[i], records[i]) < last:
                slow_groups.add(group)
        group_key = slot_key(accounts, months)
        in_slow = np.isin(group_key, [int(slot_key(a, m)) for a, m in slow_groups]) & (accounts >= 0)
        n_names = max(len(engine.compiled.allowance_names), 1)
        for i in np.flatnonzero(expired):  # a late record must not get a fresh grant of a forgotten cycle
            key = int(slot_key(int(subs[i]), int(months[i])))
            if key not in self.rating_state.allowances:
                self.rating_state.exhaust(key, n_names)

        outputs, rejected = [], []
        fast_rows = np.flatnonzero(~in_slow)
        if len(fast_rows):
            fast = batch.take(pa.array(fast_rows, pa.int64()))
            fast_rated, fast_rejected = engine.rate(fast, self.rating_state)
            outputs.append(pa.Table.from_batches([fast_rated]))
            rejected.append(pa.Table.from_batches([fast_rejected]))
            kept = np.flatnonzero(~expired[fast_rows])
            self._store(fast.take(pa.array(kept, pa.int64())), accounts[fast_rows][kept], months[fast_rows][kept],
                        ends[fast_rows][kept], rated=fast_rated)
        corrections = 0
        if slow_groups:
            slow_rows = np.flatnonzero(in_slow)
            rerated, slow_rejected, corrections = self._rerate(
                engine, slow_groups, batch.take(pa.array(slow_rows, pa.int64())),
                accounts[slow_rows], months[slow_rows], ends[slow_rows])
            outputs.append(rerated)
            rejected.append(pa.Table.from_batches([slow_rejected]))
        rated = pa.concat_tables(outputs) if outputs else rated_event_schema().empty_table()
        self._advance_last_keys(rated.filter(pc.equal(rated.column("revision"), 0)), engine)
        totals = self._update_totals(rated, self._expired_labels(engine, accounts, months, expired))
        self._upsert_emitted(rated)
        if (months >= 0).any():
            self.newest_month = max(self.newest_month, int(months[months >= 0].max()))
            self.rating_state.drop_cycles_before(self.newest_month - _KEEP_RATING_STATE_MONTHS)
        return StreamResult(rated=rated,
                            rejected=pa.concat_tables(rejected) if rejected else rejected_schema().empty_table(),
                            late_records=int(expired.sum()), corrections=corrections, totals=totals)

    # --- out of order ---------------------------------------------------------------------------

    def _rerate(self, engine: RatingEngine, groups: set, new_rows: pa.RecordBatch, accounts, months, ends):
        """Re-rate whole (account, cycle) groups from their stored rows plus ``new_rows``."""
        new = pa.Table.from_batches([new_rows])
        previous = self.stored.filter(pc.is_in(self._group_keys(self.stored),
                                               value_set=pa.array([int(slot_key(a, m)) for a, m in groups])))
        everything = pa.concat_tables([previous.select(usage_batch_schema().names), new])
        fresh_state = RatingState()
        rated, rejected = engine.rate(_usage_batch(everything), fresh_state)
        self.rating_state.allowances.update(fresh_state.allowances)
        self.rating_state.tiers.update(fresh_state.tiers)
        self._store(new_rows, accounts, months, ends, rated=rated)
        frame = pl.from_arrow(self.stored.select(["_account", "_month", "start_time", "source", "record_id"])
                              .set_column(2, "start_time", self.stored.column("start_time").cast(pa.int64())))
        frame = frame.filter((pl.col("_account") * MONTH_KEY + pl.col("_month")).is_in(
            [int(slot_key(a, m)) for a, m in groups]))
        for account, month, start, source, record in frame.sort(
                ["_account", "_month", "start_time", "source", "record_id"]).group_by(
                ["_account", "_month"], maintain_order=True).last().iter_rows():
            self.last_key[(account, month)] = (start, source, record)
        changed, count = self._changed(pa.Table.from_batches([rated]))
        return changed, rejected, count

    def _changed(self, rerated: pa.Table) -> tuple[pa.Table, int]:
        """Rows of ``rerated`` that are new or differ from what was emitted, with their revision."""
        if self.emitted is None or self.emitted.num_rows == 0 or rerated.num_rows == 0:
            return rerated, 0
        new = pl.from_arrow(rerated.select(["source", "record_id", *RATING_COLUMNS]))
        old = pl.from_arrow(self.emitted.select(["source", "record_id", "revision", *RATING_COLUMNS])).rename(
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
        rated_keys = pl.from_arrow(pa.table({"source": rated.column("source"), "record_id": rated.column("record_id")}))
        table = pl.from_arrow(table).join(rated_keys, on=["source", "record_id"], how="semi").to_arrow()
        table = table.cast(pa.schema(list(usage_batch_schema()) + [pa.field(n, pa.int64()) for n in
                                                                   ("_account", "_month", "_end")]))
        self.stored = table if self.stored is None else pa.concat_tables([self.stored, table]).combine_chunks()

    def _advance_last_keys(self, rated: pa.Table, engine: RatingEngine) -> None:
        if rated.num_rows == 0:
            return
        account_row = {a: i for i, a in enumerate(engine.compiled.account_ids)}
        frame = pl.from_arrow(pa.table({
            "account_id": rated.column("account_id"), "service_cycle": rated.column("service_cycle"),
            "start_time": rated.column("start_time").cast(pa.int64()), "source": rated.column("source"),
            "record_id": rated.column("record_id")}))
        last = frame.sort(["account_id", "service_cycle", "start_time", "source", "record_id"]).group_by(
            ["account_id", "service_cycle"], maintain_order=True).last()
        for account, cycle, start, source, record in last.iter_rows():
            group = (account_row[account], month_index(cycle))
            previous = self.last_key.get(group)
            key = (start, source, record)
            self.last_key[group] = key if previous is None else max(previous, key)

    @staticmethod
    def _expired_labels(engine, accounts, months, expired) -> set:
        return {(engine.compiled.account_ids[int(a)], month_label(int(m)))
                for a, m in zip(accounts[expired], months[expired])}

    def _update_totals(self, rated: pa.Table, expired_cycles: set) -> dict:
        """Running totals per (account, billing cycle); a correction replaces what it revises."""
        changed = {}
        if rated.num_rows == 0:
            return changed
        previous = {}
        if self.emitted is not None and pc.any(pc.greater(rated.column("revision"), 0)).as_py():
            old = self.emitted.select(["source", "record_id", "charge_micros", "free_units"]).to_pylist()
            previous = {(r["source"], r["record_id"]): (r["charge_micros"], r["free_units"]) for r in old}
        for row in rated.select(["account_id", "service_cycle", "currency", "source", "record_id", "charge_micros",
                                 "free_units", "revision"]).to_pylist():
            cycle = row["service_cycle"]
            if (row["account_id"], cycle) in expired_cycles:
                cycle = next_month_label(cycle)
            key = (row["account_id"], cycle)
            entry = self.totals.setdefault(key, {"account_id": row["account_id"], "billing_cycle": cycle,
                                                 "currency": row["currency"], "rated_events": 0,
                                                 "late_events": 0, "charge_micros": 0, "free_units": 0})
            if row["revision"] > 0:
                old_charge, old_free = previous.get((row["source"], row["record_id"]), (0, 0))
                entry["charge_micros"] -= old_charge
                entry["free_units"] -= old_free
            else:
                entry["rated_events"] += 1
                entry["late_events"] += int(cycle != row["service_cycle"])
            entry["charge_micros"] += row["charge_micros"]
            entry["free_units"] += row["free_units"]
            changed[key] = dict(entry)
        return changed

    def _upsert_emitted(self, rated: pa.Table) -> None:
        if rated.num_rows == 0:
            return
        if self.emitted is None:
            self.emitted = rated.combine_chunks()
            return
        keys = pl.from_arrow(rated.select(["source", "record_id"]))
        old = pl.from_arrow(self.emitted).join(keys, on=["source", "record_id"], how="anti")
        self.emitted = pa.concat_tables([old.to_arrow().cast(rated_event_schema()), rated]).combine_chunks()

    def expire(self, now_us: int, allowed_lateness_us: int) -> int:
        """Forget stored and emitted rows of cycles that ended before ``now_us - allowed_lateness``."""
        if self.stored is None or self.stored.num_rows == 0:
            return 0
        live = pc.greater(self.stored.column("_end"), now_us - allowed_lateness_us)
        gone = self.stored.filter(pc.invert(live))
        if gone.num_rows == 0:
            return 0
        self.stored = self.stored.filter(live)
        if self.emitted is not None:
            gone_keys = pl.from_arrow(gone.select(["source", "record_id"]))
            self.emitted = pl.from_arrow(self.emitted).join(gone_keys, on=["source", "record_id"], how="anti") \
                .to_arrow().cast(rated_event_schema())
        for group in set(zip(gone.column("_account").to_pylist(), gone.column("_month").to_pylist())):
            self.last_key.pop(group, None)
        return gone.num_rows

    def next_expiry_us(self, allowed_lateness_us: int) -> int | None:
        if self.stored is None or self.stored.num_rows == 0:
            return None
        return int(pc.min(self.stored.column("_end")).as_py()) + allowed_lateness_us
