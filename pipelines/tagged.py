"""Steps with several outputs, kept apart on every runner: the tag travels with each element.

A DoFn of such a step yields ``(tag, element)`` pairs; ``Tagged`` applies it and splits the pairs
into one PCollection per tag, with one filter per tag:

    outputs = batches | "Rate" >> Tagged(beam.ParDo(_RateShard(...)), {RATED: KeyedBatch, REJECTED: pa.RecordBatch})
    outputs[RATED], outputs[REJECTED]

Beam's ``ParDo.with_outputs`` does the same job, but Beam's DaskRunner (2.77) hands every tagged
output the elements of every tag, silently (runner_configs/README.md lists its limits); a tag held
as data reaches the right output on any runner. The filters run fused with the step, on elements
that are whole Arrow batches, so they cost nothing measurable.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import apache_beam as beam


class Tagged(beam.PTransform):
    """PCollection -> ``{tag: PCollection}`` for each tag of ``types`` (tag -> element type hint,
    ``Any`` for untyped). ``step`` is a ``beam.ParDo`` whose DoFn yields ``(tag, element)`` pairs."""

    def __init__(self, step: beam.ParDo, types: Mapping[str, Any]):
        super().__init__()
        self._step = step
        self._types = dict(types)

    def expand(self, pcoll):
        pairs = pcoll | "Step" >> self._step
        return {tag: pairs | f"Only{tag.title()}" >> beam.FlatMap(_only, tag).with_output_types(element_type)
                for tag, element_type in self._types.items()}


def _only(pair: tuple[str, Any], tag: str) -> Iterator:
    if pair[0] == tag:
        yield pair[1]
