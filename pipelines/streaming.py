"""The streaming job: Pub/Sub usage messages in, committed to the output store every few seconds,
acknowledged only after the commit that holds them.

    pull (our own path, sinks.pubsub_pull) -> decode + validate (the batch job's code) ->
    drop redeliveries and duplicates (the store's key index) -> rate (rating.stream_rater: in-order
    records from carried balances, out-of-order ones re-rate their account's cycle) ->
    write data files -> one commit per micro-batch (a run of kind ``stream``) -> ack -> topics

**The store is the source of truth; memory is a cache.** When the job meets an account it has not
seen since it started, it loads that account's events of the open cycles from the store and rates
them again to rebuild its allowance and tier balances, so a restart, a redeploy or a batch run in
between never double-charges or forgets. The key index of every record the store holds in its
open cycles (``pipelines.prior``) tells duplicates and redeliveries. When another writer commits
meanwhile (a shared catalog), the job's commit fails, it forgets its cache and rates the same
messages again from the store as it now is.

A message committed but not acknowledged (the job was killed between the two) comes back: its
records are found in the store under its own label and position, and it is acknowledged without
writing anything (``redelivered`` in the totals), so a replayed micro-batch is a no-op.

Charges and invoices are not written by the stream: the cycles it feeds are billed when they are
closed (``close-cycle --reference``, ``pipelines.bill_store``). See docs/streaming.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, EqualTo, In, Or

from cdr_schemas import duplicate_schema, rated_event_schema, rejected_schema, usage_batch_schema
from cdr_schemas.messages import JSON, decode_json_messages, decode_message
from cdr_schemas.reasons import Reason
from cdr_schemas.validate import validate_usage
from pipelines.counters import add_counters, empty_totals, finish_totals
from pipelines.outputs import (RATED_DICTIONARY_COLUMNS, RATED_ROW_GROUP_ROWS, RATED_STATISTICS_COLUMNS,
                               REJECTED_STATISTICS_COLUMNS, OutputDirs, rated_counters, reason_counts,
                               write_by_cycle)
from pipelines.prior import StoredKeys, check_same_reference, open_cycles, prepare_prior, usage_rows
from pipelines.staged_run import local_path, tidy, new_run_id, scratch_dir_for
from rating.cycles import month_index
from rating.dedup import deduplicate, table_to_batch
from rating.engine import RatingEngine, reference_fingerprint
from rating.rate import rejected_batch
from rating.stream_rater import ShardState
from sinks.files import write_json, write_parquet
from sinks.iceberg import DATA_TABLES, ConcurrentCommitError, IcebergStore
from sinks.iceberg import catalog as cat
from sinks.lock import is_local, store_lock

STREAM = "stream"
COMMIT_ATTEMPTS = 3
PULL_MARGIN_S = 2.0
# Accounts loaded from the store by a filter naming them, up to this many; beyond it the open
# cycles are read whole and filtered here (pyiceberg binds a filter's literals once per data file).
ACCOUNTS_LOADED_BY_NAME = 1_000


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    subscription: str
    reference_dir: str
    output_dir: str
    catalog_uri: str | None = None
    rated_topic: str | None = None
    charges_topic: str | None = None
    dead_letter_topic: str | None = None
    commit_interval_s: float = 2.0
    max_messages: int = 50_000          # per micro-batch
    max_batch_mb: float = 2.0           # message bytes per micro-batch: a backlog is taken in bounded steps
    ack_deadline_s: int = 60

    def __post_init__(self):
        for name in ("rated_topic", "charges_topic", "dead_letter_topic"):
            topic = getattr(self, name)
            if topic is not None and not re.match(r"^projects/[^/]+/topics/[^/]+$", topic):
                raise ValueError(f"--{name.replace('_', '-')} {topic!r}: expected projects/PROJECT/topics/TOPIC")
            if topic is not None:
                _check_project(f"--{name.replace('_', '-')}", topic)
        if not re.match(r"^projects/[^/]+/subscriptions/[^/]+$", self.subscription):
            raise ValueError(f"--subscription {self.subscription!r}: expected projects/PROJECT/subscriptions/NAME")
        _check_project("--subscription", self.subscription)
        if not 0 < self.commit_interval_s <= 600:
            raise ValueError(f"--commit-interval must be between 0 and 600 seconds, got {self.commit_interval_s}")
        if self.max_messages < 1:
            raise ValueError(f"--max-messages must be positive, got {self.max_messages}")
        if not self.max_batch_mb > 0:
            raise ValueError(f"--max-batch-mb must be positive, got {self.max_batch_mb}")
        if not 10 <= self.ack_deadline_s <= 600:
            raise ValueError(f"--ack-deadline must be between 10 and 600 seconds (Pub/Sub's range), "
                             f"got {self.ack_deadline_s}")


# Pub/Sub's rule for project ids, as Beam's connector checks it.
PROJECT_ID_REGEXP = r"^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$"


def _check_project(flag: str, name: str) -> None:
    """ValueError, before the job starts, when the project id of ``name`` (projects/PROJECT/...)
    is not one Pub/Sub accepts."""
    project = name.split("/")[1]
    if not re.match(PROJECT_ID_REGEXP, project):
        raise ValueError(f"{flag} {name!r}: project id {project!r} is not one Pub/Sub accepts: 6 to 63 characters, "
                         f"a lowercase letter first, then lowercase letters, digits, hyphens, dots or colons, and a "
                         f"letter or digit last (e.g. my-project; with the emulator any such id works)")


def message_label(message) -> str:
    """``input_file`` of a message's rows: ``pubsub:MESSAGE_ID``, or for a message without an id
    ``pubsub:`` and 12 hex digits of a BLAKE2b digest of its body (the same in every process and run,
    unlike Python's salted ``hash``)."""
    if getattr(message, "message_id", None):
        return f"pubsub:{message.message_id}"
    return f"pubsub:{hashlib.blake2b(message.data, digest_size=6).hexdigest()}"


@dataclasses.dataclass
class MicroBatch:
    """What one micro-batch commits, and what it tells the topics and the totals."""
    rated: pa.Table           # new events (revision 0) and corrections (revision > 0)
    rejected: pa.Table
    duplicates: pa.Table
    counters: dict            # control counters of this micro-batch
    charge_totals: dict       # (account, billing cycle) -> running totals that changed


def decode_messages(messages, batch_size: int = 65_536) -> tuple[pa.Table, pa.Table, int]:
    """(valid usage rows, rejected rows, records) of messages, by the batch job's decoders and checks.

    One-record JSON messages (what mediation publishes most) are decoded together and every row is
    validated in one pass: the same rows and rejects as message by message, at a fraction of the cost."""
    decoded, json_payloads, json_labels = [], [], []
    for message in messages:
        attributes = message.attributes or {}
        if attributes.get("content-type") == JSON and message.data.strip(b" \t\r\n"):
            json_payloads.append(message.data)
            json_labels.append(message_label(message))
        else:
            decoded.extend(decode_message(message.data, attributes, message_label(message), batch_size))
    decoded.extend(decode_json_messages(json_payloads, json_labels, batch_size))
    records = sum(d.usage.num_rows + d.rejected.num_rows for d in decoded)
    rejected = [d.rejected for d in decoded if d.rejected.num_rows]
    usage = pa.Table.from_batches([d.usage for d in decoded if d.usage.num_rows], schema=usage_batch_schema())
    if usage.num_rows:
        valid, invalid = validate_usage(table_to_batch(usage))
        rejected.append(invalid)
        usage = pa.Table.from_batches([valid])
    return usage, pa.Table.from_batches(rejected, schema=rejected_schema()), records


class StoreState:
    """What the stream knows of the store between commits: the key index of the records it holds,
    the (input_file, position) of the rejects and duplicates it committed, the closed cycles, and
    the ratings and balances of the accounts met so far (``ShardState``, loaded from the store)."""

    def __init__(self, store: IcebergStore, engine: RatingEngine, reference: str, scratch: Path):
        self._store = store
        self._engine = engine
        self._reference = reference
        self._scratch = scratch
        self._resets = 0
        self.reset()

    def reset(self) -> None:
        """Forget the cache and read the store as it now is (start, or after another writer's commit)."""
        store = self._store
        self.based_on = store.runs()[-1].run_id   # what the cache reflects; a commit by another writer after it fails ours
        self.closed_through = store.closed_through()
        self.cycles = open_cycles(store, self.closed_through)
        check_same_reference(store, self.cycles, self._reference)
        self._resets += 1   # a fresh folder: the last index may still be mapped
        prior = prepare_prior(store, self.cycles, set(), self._scratch / f"index-{self._resets}")
        self.keys = StoredKeys.open(prior.keys_file, prior.details_file) if prior.keys_file else StoredKeys.empty()
        self.positions = _committed_positions(store)
        self.shard = ShardState()
        self.loaded: set[int] = set()

    def rate(self, usage: pa.Table, rejected: pa.Table, records_in: int) -> MicroBatch:
        """Rate one micro-batch's decoded rows against the store (nothing is committed here)."""
        engine = self._engine
        counters = {"records_in": records_in, "redelivered": 0}
        # A reject or duplicate this store already holds under the same message and position: a redelivery.
        again = self._committed_again(rejected)
        rejected, counters["redelivered"] = rejected.filter(pa.array(~again)), int(again.sum())
        # A record the store holds (rated, rejected or as a duplicate) under this very message and
        # position is a redelivery: dropped before deduplication, so that it is not taken for a
        # duplicate of another copy.
        usage = table_to_batch(usage)
        again = self._stored_here(usage) | self._committed_again(usage)
        counters["redelivered"] += int(again.sum())
        unique, in_batch = deduplicate([usage.filter(pa.array(~again))])
        in_batch = pa.Table.from_batches([in_batch])
        found = self.keys.lookup(unique)
        stored = found >= 0
        duplicates = [in_batch]
        if stored.any():
            duplicates.append(pa.Table.from_batches([self.keys.duplicates(
                unique.filter(pa.array(stored)), found[stored])]))
        fresh = unique.filter(pa.array(~stored))
        counters["records_in"] -= counters["redelivered"]   # records of this micro-batch that are new to the store

        _, accounts, months, _ = engine.cycle_keys(fresh)
        closed = (accounts >= 0) & (months >= 0) & (months <= _month(self.closed_through))
        rejects = [rejected]
        if closed.any():
            rejects.append(pa.Table.from_batches([rejected_batch(
                fresh.filter(pa.array(closed)), np.full(int(closed.sum()), int(Reason.CYCLE_CLOSED)))]))
            fresh = fresh.filter(pa.array(~closed))
            accounts = accounts[~closed]
        self._load(set(np.unique(accounts[accounts >= 0]).tolist()) - self.loaded)
        result = self.shard.add(engine, fresh)
        rated = result.rated.cast(rated_event_schema())
        rejects.append(result.rejected.cast(rejected_schema()))
        all_rejects = pa.concat_tables([r.cast(rejected_schema()) for r in rejects])
        duplicates = pa.concat_tables([d.cast(duplicate_schema()) for d in duplicates])
        revision = rated.column("revision").to_numpy()
        counters.update(rated_counters(rated.filter(pa.array(revision == 0))),
                        rated_revisions=int((revision > 0).sum()), corrections=result.corrections,
                        duplicates=duplicates.num_rows, rejected=reason_counts(all_rejects))
        return MicroBatch(rated, all_rejects, duplicates, counters, result.totals)

    def committed(self, batch: MicroBatch, run_id: str) -> None:
        """Index what ``run_id`` committed: its new events and keyed rejects, and the positions of its
        rejects and duplicates (a redelivery of them is then recognised)."""
        self.based_on = run_id
        new = batch.rated.filter(pc.equal(batch.rated.column("revision"), 0)) if batch.counters["rated_revisions"] \
            else batch.rated
        self.keys.add(new, run_id)
        self.keys.add(batch.rejected, run_id)
        for table in (batch.rejected, batch.duplicates):
            self.positions.update(zip(table.column("input_file").to_pylist(),
                                      table.column("input_position").to_pylist()))

    def _stored_here(self, usage: pa.RecordBatch) -> np.ndarray:
        """Rows of ``usage`` whose key the store holds from the same input_file and position."""
        found = self.keys.lookup(usage)
        here = np.zeros(usage.num_rows, np.bool_)
        rows = np.flatnonzero(found >= 0)
        if len(rows):
            origin = self.keys.origins(found[rows])
            same = pc.and_(pc.equal(origin.column("input_file"), usage.column("input_file").take(pa.array(rows))),
                           pc.equal(origin.column("input_position"),
                                    usage.column("input_position").take(pa.array(rows))))
            here[rows[same.to_numpy(zero_copy_only=False)]] = True
        return here

    def _committed_again(self, rows) -> np.ndarray:
        """Rows whose (input_file, input_position) is a reject or duplicate the store holds."""
        again = np.zeros(rows.num_rows, np.bool_)
        if rows.num_rows == 0 or not self.positions:
            return again
        labels = pa.array(sorted({label for label, _ in self.positions}), pa.string())
        maybe = np.flatnonzero(pc.is_in(rows.column("input_file"), value_set=labels).to_numpy(zero_copy_only=False))
        if len(maybe):
            take = pa.array(maybe)
            pairs = zip(rows.column("input_file").take(take).to_pylist(), rows.column("input_position").take(take).to_pylist())
            again[maybe] = [pair in self.positions for pair in pairs]
        return again

    def _load(self, account_rows: set[int]) -> None:
        """Seed the cache with what the store holds of these accounts in its open cycles."""
        if not account_rows:
            return
        self.loaded |= account_rows
        if not self.cycles:
            return
        ids = sorted(self._engine.compiled.account_ids[row] for row in account_rows)
        in_cycles = In("service_cycle", self.cycles)
        if len(ids) <= ACCOUNTS_LOADED_BY_NAME:
            stored = self._store.read("rated", row_filter=And(in_cycles, In("account_id", ids)))
        else:
            stored = self._store.read("rated", row_filter=in_cycles)
            stored = stored.filter(pc.is_in(stored.column("account_id"), value_set=pa.array(ids, pa.string())))
        if stored.num_rows:
            self.shard.seed(self._engine, stored, usage_rows(stored))


def _month(cycle: str | None) -> int:
    return month_index(cycle) if cycle is not None else -1


def _committed_positions(store: IcebergStore) -> set:
    """(input_file, input_position) of every reject and duplicate the stream committed."""
    positions = set()
    for table in ("rejected", "duplicates"):
        rows = store.read(table, selected_fields=("input_file", "input_position"))
        rows = rows.filter(pc.starts_with(rows.column("input_file"), "pubsub:"))
        positions.update(zip(rows.column("input_file").to_pylist(), rows.column("input_position").to_pylist()))
    return positions


def corrected_rows(rated: pa.Table):
    """pyiceberg filter of the stored rows that ``rated``'s corrections (revision > 0) replace; None without any."""
    corrections = rated.filter(pc.greater(rated.column("revision"), 0))
    if corrections.num_rows == 0:
        return None
    terms = []
    for source in sorted(set(corrections.column("source").to_pylist())):
        mine = corrections.filter(pc.equal(corrections.column("source"), source))
        terms.append(And(EqualTo("source", source), In("record_id", sorted(set(mine.column("record_id").to_pylist())))))
    cycles = sorted(set(corrections.column("service_cycle").to_pylist()))
    either = terms[0]
    for term in terms[1:]:
        either = Or(either, term)
    return And(In("service_cycle", cycles), either)


def finish_stream_totals(totals: dict) -> dict:
    """``finish_totals`` for the stream: records balance per micro-batch; money is not checked here
    (no charges are written: the money check is the billing's, at close-cycle), so it says so."""
    out = finish_totals(totals)
    for entry in out["cycles"].values():
        entry.pop("money_balanced", None)
        entry.pop("usage_line_micros", None)
    out.update(money_checked=False, money_balanced=None, balanced=out["records_balanced"])
    return out


def stream_totals(counters: dict) -> dict:
    totals = empty_totals()
    totals.update(redelivered=0, rated_revisions=0, corrections=0, commits=0)
    return add_counters(totals, counters)


class StreamJob:
    """Pull, rate, commit, acknowledge, until ``stop`` is set; then finish the micro-batch in hand."""

    def __init__(self, config: StreamConfig, *, puller=None, publisher=None, log=None):
        self.config = config
        self._puller = puller
        self._publisher = publisher
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.totals: dict = {}

    def run(self, stop: threading.Event) -> dict:
        """Run until ``stop``; returns the cumulative control totals (also written on every commit)."""
        from sinks.pubsub import Publisher
        from sinks.pubsub_pull import Puller

        c = self.config
        engine = RatingEngine.load(c.reference_dir)   # bad reference data fails before anything is pulled
        reference = reference_fingerprint(c.reference_dir)
        job_id = new_run_id()
        with store_lock(c.output_dir, f"stream {job_id}"):   # a local store: held while the stream runs
            store = IcebergStore.open(c.output_dir, c.catalog_uri, create=True)
            exclusive = c.catalog_uri is None and is_local(c.output_dir)
            for said in tidy(store, exclusive):
                self._log(f"stream: {said}")
            scratch = scratch_dir_for(c.output_dir, job_id)
            scratch.mkdir(parents=True, exist_ok=True)
            state = StoreState(store, engine, reference, scratch)
            self.totals = stream_totals({})
            for run in store.runs():
                if run.kind == STREAM:
                    add_counters(self.totals, {k: v for k, v in run.control_totals.items()
                                               if k in self.totals and k != "run"})
            self._write_totals(store)
            puller = self._puller or Puller(c.subscription, ack_deadline_s=c.ack_deadline_s)
            publisher = self._publisher or (Publisher() if (c.rated_topic or c.charges_topic or c.dead_letter_topic)
                                            else None)
            try:
                while not stop.is_set():
                    messages = self._collect(puller, stop)
                    if messages:
                        self._micro_batch(store, state, messages, reference, exclusive, puller, publisher)
                    else:   # idle: the totals are rewritten all the same, so a reader sees the job is alive
                        self._write_totals(store)
            finally:
                if self._puller is None:
                    puller.close()
                shutil.rmtree(scratch, ignore_errors=True)
            self._write_totals(store)
        return finish_stream_totals(self.totals)

    def _collect(self, puller, stop: threading.Event) -> list:
        """Messages pulled for up to the commit interval, or until ``max_messages`` or ``max_batch_mb``
        are in hand (fewer when ``stop`` is set meanwhile)."""
        c = self.config
        messages: list = []
        size, max_size = 0, c.max_batch_mb * 1e6
        deadline = time.monotonic() + c.commit_interval_s
        while len(messages) < c.max_messages and size < max_size and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wanted = c.max_messages - len(messages)
            # As many more as fit the size limit at the mean size so far (a first pull of unknown sizes: 100).
            wanted = min(wanted, max(1, int((max_size - size) * len(messages) / size)) if messages else 100)
            # The server answers (empty when it has nothing) before the deadline it is given: a pull the
            # client abandons at its own deadline may have leased messages it never sees, which then come
            # back only when their ack deadline passes. So the deadline is the time left plus a margin.
            pulled = puller.pull(wanted, timeout_s=left + PULL_MARGIN_S)
            messages += pulled
            size += sum(len(m.data) for m in pulled)
        return messages

    def _micro_batch(self, store: IcebergStore, state: StoreState, messages: list, reference: str,
                     exclusive: bool, puller, publisher) -> None:
        """Rate ``messages``, commit them as one run, then acknowledge them. On a concurrent commit the
        cache is dropped and the same messages are rated again from the store (``COMMIT_ATTEMPTS``)."""
        started = time.monotonic()
        usage, rejected, records = decode_messages(messages)
        timings = {"decode_s": time.monotonic() - started}
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            run_id = new_run_id()
            dirs = OutputDirs({table: store.data_root(table) for table in DATA_TABLES}, run_id)
            try:
                at = time.monotonic()
                batch = state.rate(usage, rejected, records)
                timings["rate_s"] = time.monotonic() - at
                at = time.monotonic()
                files = _write(dirs, batch)
                timings["write_s"] = time.monotonic() - at
                counters = dict(batch.counters, commits=1)
                totals = finish_stream_totals(stream_totals(counters))
                totals["run"] = {"subscription": self.config.subscription, "messages": len(messages),
                                 "fingerprint": {"reference": reference}}
                at = time.monotonic()
                store.commit_run(run_id, STREAM, files, totals, overwrite=_overwrite(batch.rated), exclusive=exclusive,
                                 based_on=state.based_on)
                timings["commit_s"] = time.monotonic() - at
            except ConcurrentCommitError:
                _discard(dirs)
                state.reset()
                if attempt == COMMIT_ATTEMPTS:
                    raise
                continue
            except BaseException:
                _discard(dirs)
                state.reset()
                raise
            break
        committed = time.monotonic()
        state.committed(batch, run_id)
        unacked = puller.ack([m.ack_id for m in messages])
        if unacked:
            self._log(f"{unacked:,} messages of {run_id} could not be acknowledged (Pub/Sub failed or timed out): "
                      f"they will come back and be recognised as committed (redelivered)")
        self._log(f"committed {run_id}: {len(messages):,} messages, {records:,} records "
                  f"({counters['rated']:,} rated, {counters['rated_revisions']:,} corrected, "
                  f"{counters['redelivered']:,} redelivered) in {committed - started:.2f} s "
                  f"({', '.join(f'{k[:-2]} {v:.2f}' for k, v in timings.items())})")
        add_counters(self.totals, counters)
        self._write_totals(store)
        if publisher is not None:
            publisher.publish(self.config, batch)

    def _write_totals(self, store: IcebergStore) -> None:
        """``OUT/control/totals.json`` (a local store): the cumulative totals of every stream run."""
        local = local_path(store.uri)
        if local is None:
            return
        totals = finish_stream_totals(self.totals)
        totals["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(Path(local, "control", "totals.json"), totals)


def _write(dirs: OutputDirs, batch: MicroBatch) -> dict[str, list[str]]:
    """The micro-batch's data files, one per table (and cycle of rated events)."""
    if batch.rated.num_rows:
        rated = batch.rated.sort_by([("account_id", "ascending"), ("start_time", "ascending"),
                                     ("source", "ascending"), ("record_id", "ascending")])
        write_by_cycle(dirs, "rated", 0, rated, "service_cycle", dictionary=RATED_DICTIONARY_COLUMNS,
                       statistics=RATED_STATISTICS_COLUMNS, row_group_size=RATED_ROW_GROUP_ROWS)
    if batch.rejected.num_rows:
        write_parquet(dirs.path("rejected", 0), batch.rejected, statistics=REJECTED_STATISTICS_COLUMNS)
    if batch.duplicates.num_rows:
        write_parquet(dirs.path("duplicates", 0), batch.duplicates)
    return {table: dirs.files(table) for table in ("rated", "rejected", "duplicates")}


def _overwrite(rated: pa.Table) -> dict:
    replaced = corrected_rows(rated)
    return {"rated": replaced} if replaced is not None else {}


def _discard(dirs: OutputDirs) -> None:
    for table in ("rated", "rejected", "duplicates"):
        for uri in dirs.files(table):
            cat.delete_file(uri)
