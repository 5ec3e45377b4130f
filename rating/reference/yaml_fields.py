"""Typed, located access to the fields of a parsed YAML document.

A :class:`FieldReader` turns every problem into an issue naming the file, the line and the field
path, and returns ``None`` in place of the bad value so the caller carries on and reports the
rest. Value parsers are plain functions that raise ``ValueError`` with a location-free message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from rating.reference import money, times
from rating.reference.issues import IssueLog
from rating.reference.yaml_doc import Path_, YamlDocument, YamlSyntaxError, format_path, read_yaml

MISSING = object()   # "no default": the field is required
Parser = Callable[[object], object]


def describe(value: object) -> str:
    """How a wrong YAML value is shown in a message, with a hint when quoting would fix it."""
    if isinstance(value, bool):
        return f"the YAML boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the YAML number {value!r} (quote it if it is meant as text)"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def text(pattern: re.Pattern[str] | None = None, expected: str = "a non-empty string") -> Parser:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value == "" or (
                pattern is not None and pattern.fullmatch(value) is None):
            raise ValueError(f"expected {expected}, got {describe(value)}")
        return value
    return parse


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            quoted_number = isinstance(value, str) and value.strip().isdigit()
            hint = "; remove the quotes" if quoted_number else ""
            raise ValueError(f"expected an integer, got {describe(value)}{hint}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            if maximum is None:
                bounds = f"an integer >= {minimum}"
            elif minimum is None:
                bounds = f"an integer <= {maximum}"
            else:
                bounds = f"an integer in {minimum}..{maximum}"
            raise ValueError(f"expected {bounds}, got {value}")
        if abs(value) > money.INT64_MAX:
            raise ValueError(f"expected an integer that fits in int64, got {value}")
        return value
    return parse


def choice(options: Iterable[str]) -> Parser:
    allowed = tuple(options)

    def parse(value: object) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {describe(value)}")
        return value
    return parse


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def price(value: object) -> int:
    """Non-negative money in micro-units."""
    micros = money.decimal_micros(value)
    if micros < 0:
        raise ValueError(f"expected a non-negative amount, got {value!r}; prices and fees cannot "
                         f"be negative (use an adjustment for credits)")
    return micros


def instant(value: object) -> int:
    return times.parse_instant_us(value)


def timezone(value: object) -> str:
    return times.check_timezone(value)


def start_minute(value: object) -> int:
    return times.parse_minute_of_day(value, allow_end_of_day=False)


def end_minute(value: object) -> int:
    return times.parse_minute_of_day(value, allow_end_of_day=True)


class FieldReader:
    """Reads fields of one YAML file, recording an issue for each problem it meets; call
    :meth:`finish` when done to log them."""

    def __init__(self, file: str, doc: YamlDocument, log: IssueLog):
        self.file = file
        self._lines = doc.lines
        self._log = log
        self._pending: list[tuple[int, str, str]] = []
        for problem in doc.problems:
            self.issue(problem.path, problem.message, line=problem.line)

    def line(self, path: Path_) -> int | None:
        """Line of ``path``, or of its nearest parent that has one (a missing field)."""
        probe = path
        while probe is not None:
            if probe in self._lines:
                return self._lines[probe]
            probe = probe[:-1] if probe else None
        return None

    def issue(self, path: Path_, message: str, *, line: int | None = None) -> None:
        """Record an issue at ``path``; kept until :meth:`finish` logs them in line order."""
        line = self.line(path) if line is None else line
        parts = [f"line {line}"] if line is not None else []
        if path:
            parts.append(format_path(path))
        self._pending.append((line or 0, ", ".join(parts), message))

    def finish(self) -> None:
        """Log the recorded issues, sorted by line (the order they were found in otherwise)."""
        self._pending.sort(key=lambda issue: issue[0])
        for _, location, message in self._pending:
            self._log.add(self.file, location, message)
        self._pending.clear()

    def mapping(self, value: object, path: Path_, fields: Iterable[str]) -> dict | None:
        """``value`` if it is a mapping; an issue for it otherwise and for each unknown field."""
        known = tuple(fields)
        if not isinstance(value, dict):
            self.issue(path, f"expected a mapping with fields {', '.join(known)}, "
                             f"got {describe(value)}")
            return None
        for key in value:
            if key not in known:
                self.issue(path + (key,), f"unknown field {key!r}; expected one of "
                                          f"{', '.join(known)} (check the spelling)")
        return value

    def field(self, parent: dict, path: Path_, key: str, parse: Parser,
              default: object = MISSING) -> object:
        """``parse(parent[key])``; ``default`` when absent or null; ``None`` after an issue."""
        value = parent.get(key)
        if value is None:
            if default is MISSING:
                self.issue(path + (key,), f"required field {key!r} is missing or null; add it")
                return None
            return default
        try:
            return parse(value)
        except ValueError as exc:
            self.issue(path + (key,), str(exc))
            return None

    def sequence(self, parent: dict, path: Path_, key: str, *, default: object = MISSING,
                 non_empty: bool = True) -> list | None:
        """The list at ``parent[key]`` (``default`` when absent), or ``None`` after an issue."""
        value = self.field(parent, path, key, _as_list, default)
        if value is not None and non_empty and not value:
            self.issue(path + (key,), f"expected at least one entry in {key!r}, got an empty list")
            return None
        return value


def _as_list(value: object) -> list:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {describe(value)}")
    return value


def open_yaml(root: Path, relative: str, log: IssueLog) -> tuple[FieldReader, object] | None:
    """Parse ``root/relative``; ``None`` after logging why it could not be read or parsed."""
    try:
        doc = read_yaml(root / relative)
    except YamlSyntaxError as exc:
        log.add(relative, f"line {exc.line}" if exc.line is not None else "", str(exc))
        return None
    except OSError as exc:
        log.add(relative, "", f"cannot read the file: {exc.strerror or exc}")
        return None
    return FieldReader(relative, doc, log), doc.data
