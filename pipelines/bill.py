"""Bill accounts: rated events in, charge lines and invoice summaries out (``rating.billing``).

Rated events go through one more shuffle, by account shard (the rating shards: every event of an
account is already in one), with only the columns billing reads. Every shard is billed, with or
without usage: an account with no usage still pays its plan fees.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from cdr_schemas import rated_event_schema
from pipelines.shuffle import ShardShuffle, SpillByShard
from rating.billing import BILLING_COLUMNS, BillingPeriod, bill_accounts
from rating.engine import EngineRef

CHARGES = "charges"
INVOICES = "invoices"


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

    def process(self, element, usage_cycles):
        shard, payloads = element
        rated = self._shuffle.read(payloads, billing_schema())
        period = BillingPeriod.from_usage_cycles(usage_cycles, self._closed_through)
        lines, summary = bill_accounts(self._engine.compiled, self._engine.accounts_of_shard(shard, self._shards),
                                       rated, period)
        if lines.num_rows:
            yield beam.pvalue.TaggedOutput(CHARGES, (shard, lines))
        if summary.num_rows:
            yield beam.pvalue.TaggedOutput(INVOICES, (shard, summary))


class BillAccounts(beam.PTransform):
    """(shard, rated batch) pairs -> ``charges`` and ``invoices``: (shard, table) pairs of the charge
    lines and invoice summaries of each account shard (``shards``: the rating's).

    ``closed_through``: cycles up to this YYYY-MM are invoiced; their late usage is billed on the
    next open cycle (``rating.billing.BillingPeriod``). ``shuffle_dir``: how rated events reach
    billing (see ``pipelines.shuffle``).
    """

    def __init__(self, reference_dir: str, shards: int, closed_through: str | None = None,
                 shuffle_dir: str | None = None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be positive, got {shards}")
        self._engine = EngineRef.of(reference_dir)
        self._shards = shards
        self._closed_through = closed_through
        self._shuffle = ShardShuffle(shuffle_dir)

    def expand(self, rated):
        usage_cycles = (
            rated
            | "UsageCycles" >> beam.FlatMap(lambda kv: kv[1].column("service_cycle").unique().to_pylist())
            | "DistinctCycles" >> beam.Distinct()
        )
        shuffle = self._shuffle
        no_usage = shuffle.empty_payload(billing_schema())
        fillers = rated.pipeline | "EveryShard" >> beam.Create(
            [(s, no_usage) for s in range(self._shards)]).with_output_types(shuffle.element_type)
        return (
            (rated | "RatedForBilling" >> beam.ParDo(_RatedForBilling(shuffle)).with_output_types(shuffle.element_type),
             fillers)
            | "AllShards" >> beam.Flatten()
            | "GroupForBilling" >> beam.GroupByKey()
            | "BillShard" >> beam.ParDo(
                _BillShard(self._engine, self._shards, self._closed_through, shuffle),
                usage_cycles=beam.pvalue.AsList(usage_cycles)).with_outputs(CHARGES, INVOICES)
        )
