"""The import report: everything the importer could not express, and the decisions it took.

Two kinds of finding:

* ``unsupported`` — a CGRateS rule the imported reference does not reproduce (dropped, or rated
  differently in some case the message names). Any of them makes ``import-cgrates`` fail unless
  ``--allow-partial`` is given.
* ``note`` — a decision or a selection the user should know about (a tenant not imported, a ``+``
  stripped from a prefix); the imported reference still rates as CGRateS does.
"""

from __future__ import annotations

import dataclasses

UNSUPPORTED = "unsupported"
NOTE = "note"


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str   # UNSUPPORTED or NOTE
    where: str      # "RatingPlans.csv:5", "timing NEW_YEAR", ... (what the user looks up)
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


class Report:
    """Findings in the order found, each at most once."""

    def __init__(self) -> None:
        self._findings: list[Finding] = []
        self._seen: set[Finding] = set()

    def unsupported(self, where: str, message: str) -> None:
        self._add(Finding(UNSUPPORTED, where, message))

    def note(self, where: str, message: str) -> None:
        self._add(Finding(NOTE, where, message))

    def _add(self, finding: Finding) -> None:
        if finding not in self._seen:
            self._seen.add(finding)
            self._findings.append(finding)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(self._findings)

    @property
    def partial(self) -> bool:
        """True when something could not be expressed."""
        return any(f.severity == UNSUPPORTED for f in self._findings)

    def count(self, severity: str) -> int:
        return sum(1 for f in self._findings if f.severity == severity)

    def to_json(self) -> list[dict]:
        return [dataclasses.asdict(f) for f in self._findings]

    def format_text(self) -> str:
        """Unsupported findings first, then notes; one line each."""
        ordered = ([f for f in self._findings if f.severity == UNSUPPORTED]
                   + [f for f in self._findings if f.severity == NOTE])
        return "\n".join(str(f) for f in ordered)
