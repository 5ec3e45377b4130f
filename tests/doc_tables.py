"""Markdown tables of the docs that tests read: worked examples are written once, on the page."""

from __future__ import annotations

from pathlib import Path

TARIFFS = Path(__file__).parent.parent / "docs" / "tariffs.md"


def cell(text: str) -> str:
    """A table cell: stripped, or verbatim inside backticks (surrounding spaces kept)."""
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "`" else text


def markdown_table(text: str) -> list[dict]:
    """The rows of the first Markdown table in ``text`` as dicts by header (cells: ``cell``)."""
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell(c) for c in line.strip()[1:-1].split("|")))) for line in lines[2:]]


def marked_table(marker: str, page: Path = TARIFFS) -> list[dict]:
    """The table between ``<!-- MARKER:start -->`` and ``<!-- MARKER:end -->`` on ``page``."""
    text = page.read_text()
    return markdown_table(text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0])


def rate_examples(reference_dir: Path, rows: list[dict]) -> tuple[dict, dict, dict]:
    """Rate a page's example rows with the engine and with the slow twin, each by record id:
    (rated events, rejected rows, twin results)."""
    from rating.engine import RatingEngine
    from rating.reference import load_reference
    from rating.twin import rate_rows_twin
    from tests.usage_rows import usage_batch

    reference = load_reference(reference_dir)
    rated, rejected = RatingEngine.from_reference(reference).rate(usage_batch(rows))
    twin = {r["record_id"]: t for r, t in zip(rows, rate_rows_twin(rows, reference))}
    return ({r["record_id"]: r for r in rated.to_pylist()}, {r["record_id"]: r for r in rejected.to_pylist()}, twin)
