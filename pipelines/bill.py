"""Bill accounts: rated events in, charge lines and invoice summaries out (``rating.billing``).

Rated events go through one more shuffle, by account shard (the rating shards: every event of an
account is already in one), with only the columns billing reads. Every shard is billed, with or
without usage: an account with no usage still pays its plan fees, for every cycle the run has
usage of. Those cycles reach each shard through the same shuffle (a ``CoGroupByKey``), not as a
side input: the DaskRunner computes a side input again inside every task that reads it.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pyarrow as pa

from cdr_schemas import rated_event_schema
from pipelines.shuffle import ShardShuffle, SpillByShard
from pipelines.tagged import Tagged
from rating.billing import BILLING_COLUMNS, BillingPeriod, bill_accounts
from rating.engine import EngineRef
from sinks.object_storage import ObjectStorage

CHARGES = "charges"
INVOICES = "invoices"
_RATED = "rated"      # what each shard's group holds: its payloads of rated events,
_CYCLES = "cycles"    # and the run's usage cycles (one list)


def billing_schema() -> pa.Schema:
    schema = rated_event_schema()
    return pa.schema([schema.field(name) for name in BILLING_COLUMNS])


class _RatedForBilling(SpillByShard):
    """(shard, rated batch) -> (shard, payload) of the columns billing reads."""

    def __init__(self, shuffle: ShardShuffle):
        super().__init__(shuffle, "for_billing")

    def pairs(self, element):
        shard, batch = element
        return [(shard, batch.select(list(BILLING_COLUMNS)))]


class _BillShard(beam.DoFn):
    """Charge lines and invoice summaries of the accounts hashed to one shard."""

    def __init__(self, engine: EngineRef, shards: int, closed_through: str | None, shuffle: ShardShuffle):
        self._engine_ref = engine
        self._shards = shards
        self._closed_through = closed_through
        self._shuffle = shuffle
        self._engine = None

    def setup(self):
        self._engine = self._engine_ref.load()

    def process(self, element):
        shard, grouped = element
        rated = self._shuffle.read(grouped[_RATED], billing_schema())
        usage_cycles = [cycle for cycles in grouped[_CYCLES] for cycle in cycles]
        period = BillingPeriod.from_usage_cycles(usage_cycles, self._closed_through)
        lines, summary = bill_accounts(self._engine.compiled, self._engine.accounts_of_shard(shard, self._shards),
                                       rated, period)
        if lines.num_rows:
            yield CHARGES, (shard, lines)
        if summary.num_rows:
            yield INVOICES, (shard, summary)


class BillAccounts(beam.PTransform):
    """(shard, rated batch) pairs -> ``charges`` and ``invoices``: (shard, table) pairs of the charge
    lines and invoice summaries of each account shard (``shards``: the rating's).

    ``closed_through``: cycles up to this YYYY-MM are invoiced; their late usage is billed on the
    next open cycle (``rating.billing.BillingPeriod``). ``shuffle_dir``: how rated events reach
    billing (see ``pipelines.shuffle``).
    """

    def __init__(self, reference_dir: str, shards: int, closed_through: str | None = None,
                 shuffle_dir: str | None = None, storage: ObjectStorage | None = None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be positive, got {shards}")
        self._engine = EngineRef.of(reference_dir, storage)
        self._shards = shards
        self._closed_through = closed_through
        self._shuffle = ShardShuffle(shuffle_dir)

    def expand(self, rated):
        shards = self._shards
        usage_cycles = (   # keyed by shard number: the DaskRunner's shuffle places a str or None key by its
            rated          # hash, which differs between processes (every int key hashes alike)
            | "UsageCycles" >> beam.FlatMap(lambda kv: [(0, c) for c in kv[1].column("service_cycle").unique().to_pylist()])
            | "DistinctCycles" >> beam.CombinePerKey(beam.combiners.ToSetCombineFn())
            | "ToEveryShard" >> beam.FlatMap(lambda kv: [(s, sorted(kv[1])) for s in range(shards)])
        )
        shuffle = self._shuffle
        no_usage = shuffle.empty_payload(billing_schema())
        fillers = rated.pipeline | "EveryShard" >> beam.Create(
            [(s, no_usage) for s in range(self._shards)]).with_output_types(shuffle.element_type)
        payloads = (
            (rated | "RatedForBilling" >> beam.ParDo(_RatedForBilling(shuffle)).with_output_types(shuffle.element_type),
             fillers)
            | "AllShards" >> beam.Flatten()
        )
        return (
            {_RATED: payloads, _CYCLES: usage_cycles}
            | "GroupForBilling" >> beam.CoGroupByKey()
            | "BillShard" >> Tagged(beam.ParDo(_BillShard(self._engine, self._shards, self._closed_through, shuffle)),
                                    {CHARGES: Any, INVOICES: Any})
        )
