"""How shard data moves between stages: through the runner's shuffle, or through spill files.

Every full-data shuffle of the batch job (by record key for deduplication, by account for rating,
by account for billing) sends (shard, payload) pairs through a GroupByKey. ``ShardShuffle`` decides
what the payload is:

* ``ShardShuffle(None)``: the Arrow batch itself (``RecordBatchCoder``, Arrow IPC). Right for
  runners whose shuffle spills to disk and spreads over machines (Dataflow, Flink, Spark).
* ``ShardShuffle(directory)``: each worker appends its rows of a shard to one Arrow IPC file per
  shard and bundle under ``directory``, and only the file's path goes through the GroupByKey. The
  DirectRunner holds every shuffled element in memory; with spill files its memory is bounded by a
  shard instead of the whole input, and nothing is serialised through it but paths. ``directory``
  must be on a filesystem every worker can read (it is under the run's scratch folder).

A bundle that fails and is retried leaves files nobody reads: only paths a committed bundle emitted
reach the GroupByKey. The run deletes ``directory`` before publishing.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from pipelines.coders import KeyedBatch
from rating.partition import compact

SHUFFLE_MODES = ("files", "beam")
KeyedPath = Tuple[int, str]


class ShardShuffle:
    """Payload of (shard, payload) pairs: batches (``directory`` None) or spill-file paths."""

    def __init__(self, directory: str | None):
        self.directory = None if directory is None else str(directory)

    @property
    def spills(self) -> bool:
        return self.directory is not None

    @property
    def element_type(self):
        return KeyedPath if self.spills else KeyedBatch

    def writer(self, stage: str) -> "ShardWriter":
        return ShardWriter(None if self.directory is None else os.path.join(self.directory, stage))

    def read(self, payloads: Iterable, schema: pa.Schema) -> pa.Table:
        """All rows of a shard's payloads (empty payloads skipped) as one table of ``schema``."""
        batches: list[pa.RecordBatch] = []
        for payload in payloads:
            if isinstance(payload, pa.RecordBatch):
                batches.append(payload)
            elif payload:
                with pa.OSFile(payload, "rb") as source, pa.ipc.open_stream(source) as reader:
                    batches.extend(reader)
        return pa.Table.from_batches([b for b in batches if b.num_rows], schema=schema)

    def empty_payload(self, schema: pa.Schema):
        """A payload with no rows: makes a shard exist for a GroupByKey without adding data."""
        return "" if self.spills else pa.RecordBatch.from_pylist([], schema=schema)


class ShardWriter:
    """Collects (shard, batch) pairs over a bundle; yields (shard, payload) pairs.

    Without a directory every batch is yielded as it comes, compacted (a runner may pickle it, and a
    pickled slice carries its parent's buffers). With one, each shard's batches are appended to one
    IPC stream file per bundle, and the (shard, path) pairs come out of ``finish``.
    """

    MAX_OPEN_FILES = 256   # beyond it the open files are finished and new ones started (fd limits)

    def __init__(self, directory: str | None):
        self._directory = directory
        self._open: dict[int, tuple[str, pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._finished: list[tuple[int, str]] = []

    def add(self, pairs: Iterable[tuple[int, pa.RecordBatch]]) -> Iterator[tuple[int, pa.RecordBatch]]:
        for shard, batch in pairs:
            if self._directory is None:
                yield shard, compact(batch)
            elif batch.num_rows:
                self._stream(shard, batch.schema).write_batch(batch)

    def finish(self) -> list[tuple[int, str]]:
        """Close this bundle's files; their (shard, path) pairs, in shard order."""
        self._close_open()
        out = sorted(self._finished)
        self._finished.clear()
        return out

    def _close_open(self) -> None:
        for shard, (path, sink, writer) in self._open.items():
            writer.close()
            sink.close()
            self._finished.append((shard, path))
        self._open.clear()

    def finish_windowed(self) -> Iterator:
        """``finish`` as windowed values, for ``DoFn.finish_bundle`` (global window)."""
        for pair in self.finish():
            yield GlobalWindows.windowed_value(pair)

    def _stream(self, shard: int, schema: pa.Schema):
        if shard not in self._open:
            if len(self._open) >= self.MAX_OPEN_FILES:
                self._close_open()
            folder = Path(self._directory, f"{shard:05d}")
            folder.mkdir(parents=True, exist_ok=True)
            path = str(folder / f"{uuid.uuid4().hex}.arrow")
            sink = pa.OSFile(path, "wb")
            self._open[shard] = (path, sink, pa.ipc.new_stream(sink, schema))
        return self._open[shard][2]


class SpillByShard(beam.DoFn):
    """Base for DoFns that split batches into (shard, batch) pairs and send them through a shuffle.

    Subclasses implement ``pairs(element)``; the base routes them through a ``ShardWriter``.
    """

    def __init__(self, shuffle: ShardShuffle, stage: str):
        self._shuffle = shuffle
        self._stage = stage
        self._writer = None

    def start_bundle(self):
        self._writer = self._shuffle.writer(self._stage)

    def process(self, element):
        yield from self._writer.add(self.pairs(element))

    def finish_bundle(self):
        yield from self._writer.finish_windowed()

    def pairs(self, element) -> Iterable[tuple[int, pa.RecordBatch]]:
        raise NotImplementedError
