"""Read a reference CSV file into string columns, keeping the 1-based line of every row.

The header is line 1. Required columns may come in any order; a missing, duplicated or unexpected
column is an issue (a typo is caught, not ignored). Values are kept as written (no trimming, ``""``
for an empty value).

Big files (a million subscriptions) are parsed by ``pyarrow.csv`` into Arrow string columns. Its
row numbers equal line numbers only when no value spans lines and no line is blank; when that does
not hold, or Arrow rejects the file (bad UTF-8 among others), the file is read again with the
``csv`` module, which reports each malformed line (wrong number of fields, bad UTF-8) and skips
blank lines. Both read quotes the same way (``"`` quotes a value, ``""`` is a quote inside one).
Bytes that are not UTF-8 are decoded as lone surrogates (``surrogateescape``), so each bad row is
found where it is rather than where a decoder's read-ahead buffer happened to start.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from typing import TextIO
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rating.reference.issues import IssueLog


def column(line: int, name: str) -> str:
    """The location of one value: ``"line 3, column valid_to"``."""
    return f"line {line}, column {name}"


@dataclasses.dataclass(frozen=True)
class CsvTable:
    file: str            # relative to the reference directory
    table: pa.Table      # the requested columns, in the requested order, all of type string
    lines: np.ndarray    # int64: the 1-based line of each row

    def rows(self) -> Iterator[tuple]:
        """``(line, value, value, ...)`` per row, values in the requested column order."""
        columns = [self.table.column(index).to_pylist() for index in range(self.table.num_columns)]
        return zip(self.lines.tolist(), *columns)


def read_csv_table(root: Path, relative: str, columns: tuple[str, ...], log: IssueLog,
                   optional: tuple[str, ...] = ()) -> CsvTable | None:
    """Read ``root/relative``; ``None`` (after logging why) if it is missing or its header is
    unusable. Rows with the wrong number of fields are logged and left out. ``optional`` columns
    may be absent from the header: their values are then ``""``; the table holds ``columns`` and
    then ``optional``, in that order."""
    header = _read_header(root / relative, relative, columns, log, optional)
    if header is None:
        return None
    present = columns + tuple(name for name in optional if name in header)
    table = _read_with_arrow(root / relative, header, present)
    if table is not None:
        read = CsvTable(relative, table, np.arange(2, table.num_rows + 2, dtype=np.int64))
    else:
        read = _read_with_csv_module(root / relative, relative, header, present, log)
    if present == columns + optional:
        return read
    full = read.table
    for name in optional:
        if name not in present:
            full = full.append_column(name, pa.array([""] * full.num_rows, pa.string()))
    return dataclasses.replace(read, table=full.select(list(columns + optional)))


def _read_header(path: Path, relative: str, columns: tuple[str, ...], log: IssueLog,
                 optional: tuple[str, ...] = ()) -> list[str] | None:
    expected = ",".join(columns) + "".join(f" (optional: {name})" for name in optional)
    try:
        with open_csv_text(path) as handle:
            header = next(csv.reader(handle), None)
    except FileNotFoundError:
        log.add(relative, "", f"missing required file; create it with the header {expected}")
        return None
    except csv.Error as exc:
        log.add(relative, "line 1", f"unreadable header ({exc}); save the file as UTF-8 CSV with "
                                    f"the header {expected}")
        return None
    except OSError as exc:
        log.add(relative, "", f"cannot read the file: {exc.strerror or exc}")
        return None
    if not header:
        log.add(relative, "line 1", f"empty file; expected the header {expected}")
        return None
    bad_byte = undecodable_byte(header)
    if bad_byte is not None:
        log.add(relative, "line 1", f"{bad_byte}; save the file as UTF-8 CSV with the header {expected}")
        return None
    usable = True
    for name in sorted({name for name in header if header.count(name) > 1}):
        log.add(relative, "line 1", f"column {name!r} appears more than once; keep one")
        usable = False
    for name in header:
        if name not in columns and name not in optional:
            log.add(relative, "line 1", f"unexpected column {name!r}; the columns are exactly "
                                        f"{expected} (check spelling and spaces)")
    for name in columns:
        if name not in header:
            log.add(relative, "line 1", f"missing column {name!r}; the columns are exactly "
                                        f"{expected}")
            usable = False
    return header if usable else None


def _read_with_arrow(path: Path, header: list[str], columns: tuple[str, ...]) -> pa.Table | None:
    """The table, or ``None`` when Arrow rejects the file or its rows are not one per line.

    Arrow skips blank lines and lets a quoted value span lines; either makes the file have more
    lines than header + rows, so comparing the counts tells whether row i is on line i + 2.
    """
    try:
        data = path.read_bytes()
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=header),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=list(columns)))
    except (OSError, pa.ArrowInvalid):
        return None
    line_count = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return table if line_count == table.num_rows + 1 else None


def _read_with_csv_module(path: Path, relative: str, header: list[str],
                          columns: tuple[str, ...], log: IssueLog) -> CsvTable:
    indexes = [header.index(name) for name in columns]
    width = len(header)
    lines: list[int] = []
    values: list[list[str]] = [[] for _ in columns]
    with open_csv_text(path) as handle:
        reader = csv.reader(handle)
        try:
            next(reader)
            start = reader.line_num + 1          # a quoted value may span lines: report the first
            for row in reader:
                line, start = start, reader.line_num + 1
                if len(row) != width:
                    if row:
                        log.add(relative, f"line {line}",
                                f"expected {width} fields ({','.join(header)}), found {len(row)}; "
                                f"quote values that contain commas")
                    continue
                bad_byte = undecodable_byte(row)
                if bad_byte is not None:
                    log.add(relative, f"line {line}", f"{bad_byte}; save the file as UTF-8")
                    continue
                lines.append(line)
                for target, index in zip(values, indexes):
                    target.append(row[index])
        except csv.Error as exc:
            log.add(relative, f"line {reader.line_num}",
                    f"malformed CSV ({exc}); check the quoting on this line (the rest of the file "
                    f"was not checked)")
    table = pa.table({name: pa.array(column_values, pa.string())
                      for name, column_values in zip(columns, values)})
    return CsvTable(relative, table, np.asarray(lines, dtype=np.int64))


def open_csv_text(path: Path) -> TextIO:
    """``path`` opened as CSV text: UTF-8 (a byte order mark is dropped), bytes that are not UTF-8
    kept as lone surrogates for :func:`undecodable_byte` to report on the row that holds them."""
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def undecodable_byte(values: list[str]) -> str | None:
    """``"not valid UTF-8 (byte 0xff)"`` when a value read by :func:`open_csv_text` holds a byte
    that is not UTF-8, else None."""
    for value in values:
        if value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"not valid UTF-8 (byte 0x{ord(value[exc.start]) - 0xDC00:02x})"
    return None
