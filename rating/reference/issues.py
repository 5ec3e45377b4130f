"""Problems found in a reference-data directory, and the collector that gathers all of them.

Loading never stops at the first problem: every check records a :class:`ReferenceIssue` in an
:class:`IssueLog` and carries on, so one run of ``validate-reference`` lists everything to fix.
"""

from __future__ import annotations

import collections
import dataclasses

# A file with more problems than this is almost always wrong in one systematic way (a shifted
# column, the wrong file); listing a million copies of the same message helps nobody.
MAX_ISSUES_PER_FILE = 1000


@dataclasses.dataclass(frozen=True)
class ReferenceIssue:
    """One problem: where it is and what to do about it.

    ``file`` is relative to the reference directory (``plans/MOBILE_S.yaml``); ``location`` is a
    line (``line 14``, the CSV header is line 1), a field path (``versions[0].rates[3].price``) or
    both (``line 3, column valid_to``); it is empty when the whole file is concerned.
    """

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        if self.location:
            return f"{self.file}: {self.location}: {self.message}"
        return f"{self.file}: {self.message}"


class ReferenceDataError(ValueError):
    """Invalid reference data; ``issues`` holds every problem found, ``str()`` lists them all."""

    def __init__(self, issues: list[ReferenceIssue], *, root: object = None):
        self.issues = list(issues)
        where = f" in {root}" if root is not None else ""
        count = len(self.issues)
        lines = [f"invalid reference data{where}: {count} issue{'s' if count != 1 else ''}"]
        lines.extend(f"  {issue}" for issue in self.issues)
        super().__init__("\n".join(lines))


class IssueLog:
    """Collects issues in the order found, keeping at most ``max_per_file`` per file."""

    def __init__(self, max_per_file: int = MAX_ISSUES_PER_FILE):
        self._max_per_file = max_per_file
        self._issues: list[ReferenceIssue] = []
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, file: str, location: str, message: str) -> None:
        self._counts[file] += 1
        if self._counts[file] <= self._max_per_file:
            self._issues.append(ReferenceIssue(file, location, message))

    def add_unlisted(self, file: str, count: int) -> None:
        """Count ``count`` further issues in ``file`` that were not worth building messages for
        (the file is already past the listing limit)."""
        self._counts[file] += count

    def count(self, file: str | None = None) -> int:
        """Issues found so far, in ``file`` or in total (including those not kept)."""
        if file is None:
            return sum(self._counts.values())
        return self._counts[file]

    def finish(self) -> list[ReferenceIssue]:
        """All kept issues, plus one line per file whose issues were cut at the limit."""
        issues = list(self._issues)
        for file, count in self._counts.items():
            if count > self._max_per_file:
                issues.append(ReferenceIssue(
                    file, "",
                    f"{count - self._max_per_file} more issues not listed (only the first "
                    f"{self._max_per_file} per file are); fix the ones above and check again"))
        return issues
