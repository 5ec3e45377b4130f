"""Compile a writer schema, resolved against the reader schema, into the Avro kernel's program.

:func:`compile_program` implements the part of Avro schema resolution the usage files need, for a
writer record of primitives, enums, fixed and unions of those:

* a writer field the reader has is read into that field's column: string, long (or int, promoted),
  int, enum (symbols matched by name: a writer symbol unknown to the reader fails the record),
  ``timestamp-micros`` as it is stored and ``timestamp-millis`` times 1000 for a timestamp column;
  a nullable reader field (``["null", T]`` either order) takes null or T; a writer union is
  resolved branch by branch (a branch that does not resolve, e.g. null for a required field,
  fails the record);
* a writer field the reader lacks is skipped;
* a reader field the writer lacks takes its default (a constant column, not in the program).

Anything else (nested records, arrays, maps, aliases, other logical types, a promotion this module
does not know) raises :class:`UnsupportedSchema`: the caller then decodes the whole file with the
per-datum path, so this module only has to be right about what it accepts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cdr_schemas.decoders import avro_kernel as k

_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_TIMESTAMP_LOGICAL = ("timestamp-micros", "timestamp-millis")


class UnsupportedSchema(ValueError):
    """The writer or reader schema uses something the kernel does not decode; use the datum path."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One reader field's output column.

    ``kind`` is ``"long"``, ``"int"``, ``"enum"`` or ``"string"``; ``slot`` its row in the kernel's
    buffer of that kind (-1 for a default column); ``valid_slot`` its row in ``valid`` (-1 when the
    field is not nullable or is a default column). A field the writer lacks has ``from_writer``
    False and every value ``default`` (None: null).
    """

    name: str
    kind: str
    slot: int
    valid_slot: int
    from_writer: bool
    default: object = None
    symbols: tuple[str, ...] = ()   # reader symbols of an enum column
    enum_name: str | None = None    # full name of the reader's enum


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """A compiled program and the output layout it writes (see ``avro_kernel``)."""

    ops: np.ndarray            # (rows, PROGRAM_WIDTH) int64; the first n_fields rows are the fields
    n_fields: int
    enum_map: np.ndarray       # int64: writer symbol index -> reader symbol index, -1 if unknown
    columns: tuple[Column, ...]  # reader fields, in reader order
    n_long: int
    n_int: int
    n_enum: int
    n_string: int
    n_valid: int


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _namespace_of(full_name: str) -> str | None:
    return full_name.rpartition(".")[0] or None


class _Names:
    """The named types (enum, fixed) a schema defines, for references by name."""

    def __init__(self):
        self._types: dict[str, dict] = {}

    def define(self, schema: dict, namespace: str | None) -> str:
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        if full in self._types:
            raise UnsupportedSchema(f"named type {full!r} defined twice")
        self._types[full] = schema
        return full

    def resolve(self, avro_type, namespace: str | None):
        """(type with references replaced, full name or None) of a field type."""
        if isinstance(avro_type, str) and avro_type not in _PRIMITIVES:
            for candidate in (_full_name(avro_type, namespace), avro_type):
                if candidate in self._types:
                    return self._types[candidate], candidate
            raise UnsupportedSchema(f"unknown named type {avro_type!r}")
        if isinstance(avro_type, dict) and avro_type.get("type") in ("enum", "fixed"):
            if not isinstance(avro_type.get("name"), str):
                raise UnsupportedSchema("a named type without a name")
            return avro_type, self.define(avro_type, namespace)
        return avro_type, None


def _primitive(avro_type) -> tuple[str, str | None]:
    """(primitive name, logical type) of a non-union, non-named type; UnsupportedSchema otherwise."""
    if isinstance(avro_type, str) and avro_type in _PRIMITIVES:
        return avro_type, None
    if isinstance(avro_type, dict) and avro_type.get("type") in _PRIMITIVES:
        logical = avro_type.get("logicalType")
        if logical is not None and not (avro_type["type"] == "long" and logical in _TIMESTAMP_LOGICAL):
            raise UnsupportedSchema(f"logical type {logical!r} on {avro_type['type']!r}")
        return avro_type["type"], logical
    raise UnsupportedSchema(f"type {avro_type!r}")


@dataclasses.dataclass(frozen=True)
class _ReaderField:
    column: Column
    timestamp: bool           # a timestamp-micros long


def _reader_fields(reader: dict, writer_names: set[str]) -> list[_ReaderField]:
    """The reader's fields with their columns; only fields the writer has get buffer slots."""
    counts = dict(long=0, int=0, enum=0, string=0, valid=0)
    names = _Names()
    namespace = _namespace_of(_full_name(reader.get("name", ""), reader.get("namespace")))
    out = []
    for field in reader["fields"]:
        if field.get("aliases"):
            raise UnsupportedSchema(f"reader field {field['name']!r} has aliases")
        avro_type = field["type"]
        nullable = isinstance(avro_type, list)
        if nullable:
            others = [t for t in avro_type if t != "null"]
            if len(avro_type) != 2 or len(others) != 1:
                raise UnsupportedSchema(f"reader field {field['name']!r}: only [\"null\", T] unions")
            avro_type = others[0]
        avro_type, full_name = names.resolve(avro_type, namespace)
        symbols: tuple[str, ...] = ()
        timestamp = False
        if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
            if "default" in avro_type:
                raise UnsupportedSchema(f"reader enum of {field['name']!r} has a default symbol")
            kind, symbols = "enum", tuple(avro_type["symbols"])
        else:
            if full_name is not None:
                raise UnsupportedSchema(f"reader field {field['name']!r} of type {full_name!r}")
            primitive, logical = _primitive(avro_type)
            if primitive not in ("string", "long", "int") or logical == "timestamp-millis":
                raise UnsupportedSchema(f"reader field {field['name']!r} of type {avro_type!r}")
            kind, timestamp = primitive, logical == "timestamp-micros"
        if field["name"] in writer_names:
            column = Column(field["name"], kind, counts[kind], counts["valid"] if nullable else -1, True,
                            symbols=symbols, enum_name=full_name)
            counts[kind] += 1
            counts["valid"] += nullable
        else:
            if "default" not in field or not _default_fits(field["default"], kind, nullable, symbols):
                raise UnsupportedSchema(f"reader field {field['name']!r}: no usable default")
            column = Column(field["name"], kind, -1, -1, False, field["default"], symbols, full_name)
        out.append(_ReaderField(column, timestamp))
    return out


def _default_fits(default, kind: str, nullable: bool, symbols: tuple[str, ...]) -> bool:
    if default is None:
        return nullable
    if kind in ("long", "int"):
        return isinstance(default, int) and not isinstance(default, bool)
    if kind == "enum":
        return default in symbols
    return isinstance(default, str)


class _Compiler:
    """Accumulates program rows and the enum symbol map."""

    def __init__(self):
        self.branches: list[list[int]] = []     # union branch rows, placed after the field rows
        self.enum_map: list[int] = []
        self.names = _Names()                  # the writer's named types

    def union(self, rows: list[list[int]]) -> list[int]:
        first = len(self.branches)
        self.branches.extend(rows)
        return _row(k.OP_UNION, arg0=first, arg1=len(rows))  # arg0 made absolute in compile_program

    def enum(self, writer_symbols, reader_symbols) -> int:
        first = len(self.enum_map)
        index = {symbol: i for i, symbol in enumerate(reader_symbols)}
        self.enum_map.extend(index.get(symbol, -1) for symbol in writer_symbols)
        return first


def compile_program(writer: dict, reader: dict) -> Program:
    """The kernel program that reads datums of ``writer`` as ``reader`` (both parsed ``.avsc``
    record dicts). Raises :class:`UnsupportedSchema` for anything the kernel cannot decode exactly."""
    if not (isinstance(writer, dict) and writer.get("type") == "record" and isinstance(writer.get("fields"), list)):
        raise UnsupportedSchema("the writer schema is not a record")
    writer_names: list[str] = [f.get("name") if isinstance(f, dict) else None for f in writer["fields"]]
    if not all(isinstance(n, str) for n in writer_names) or len(set(writer_names)) != len(writer_names):
        raise UnsupportedSchema("a writer field name is missing or repeated")
    readers = {r.column.name: r for r in _reader_fields(reader, set(writer_names))}
    namespace = _namespace_of(_full_name(writer.get("name", ""), writer.get("namespace")))
    compiler = _Compiler()
    rows = []
    for field in writer["fields"]:
        target = readers.get(field["name"])
        if target is None:
            rows.append(_field(field["type"], None, namespace, compiler))
        else:
            rows.append(_field(field["type"], target, namespace, compiler))
    for row in rows:
        if row[k.OPCODE] == k.OP_UNION:
            row[k.ARG0] += len(rows)
    columns = tuple(r.column for r in readers.values())
    fed = [c for c in columns if c.from_writer]
    return Program(
        ops=np.array(rows + compiler.branches, np.int64).reshape(-1, k.PROGRAM_WIDTH), n_fields=len(rows),
        enum_map=np.array(compiler.enum_map, np.int64), columns=columns,
        n_long=sum(c.kind == "long" for c in fed), n_int=sum(c.kind == "int" for c in fed),
        n_enum=sum(c.kind == "enum" for c in fed), n_string=sum(c.kind == "string" for c in fed),
        n_valid=sum(c.valid_slot >= 0 for c in fed))


def _row(op: int, target: int = -1, valid: int = -1, arg0: int = 0, arg1: int = 0) -> list[int]:
    return [op, target, valid, arg0, arg1]


def _field(writer_type, target: _ReaderField | None, namespace, compiler: _Compiler) -> list[int]:
    """The program row of one writer field: read into ``target``, or skipped when it is None."""
    if not isinstance(writer_type, list):
        return _value(writer_type, target, namespace, compiler, in_union=False)
    keys = [_branch_key(t, namespace) for t in writer_type]
    if not writer_type or len(set(keys)) != len(keys) or any(isinstance(t, list) for t in writer_type):
        raise UnsupportedSchema(f"union {writer_type!r}: empty, repeated branch or nested union")
    return compiler.union([_value(t, target, namespace, compiler, in_union=True) for t in writer_type])


def _branch_key(avro_type, namespace) -> str:
    """A union branch's identity: its type name (primitive, or named type's full name)."""
    if isinstance(avro_type, dict):
        if avro_type.get("type") in ("enum", "fixed", "record") and isinstance(avro_type.get("name"), str):
            return _full_name(avro_type["name"], avro_type.get("namespace", namespace))
        return str(avro_type.get("type"))
    return str(avro_type)


def _value(writer_type, target: _ReaderField | None, namespace, compiler: _Compiler, in_union: bool) -> list[int]:
    writer_type, writer_name = compiler.names.resolve(writer_type, namespace)
    if target is None:
        return _skip(writer_type)
    column = target.column
    if writer_type == "null" or (isinstance(writer_type, dict) and writer_type.get("type") == "null"):
        if column.valid_slot < 0:
            if in_union:
                return _row(k.OP_FAIL)   # as in fastavro: a resolution error for that record only
            raise UnsupportedSchema(f"writer field {column.name!r} is null, the reader's is not nullable")
        null_kind = {"long": k.COL_LONG, "int": k.COL_INT, "enum": k.COL_ENUM, "string": k.COL_STRING}[column.kind]
        return _row(k.OP_NULL, column.slot, column.valid_slot, null_kind)
    if column.kind == "enum":
        if not (isinstance(writer_type, dict) and writer_type.get("type") == "enum"):
            raise UnsupportedSchema(f"writer field {column.name!r}: {writer_type!r} for an enum")
        if writer_name != column.enum_name:
            raise UnsupportedSchema(f"enum {writer_name!r} read as {column.enum_name!r}")
        symbols = writer_type.get("symbols")
        if not isinstance(symbols, list) or len(set(symbols)) != len(symbols):
            raise UnsupportedSchema(f"enum {writer_name!r}: bad symbols")
        return _row(k.OP_ENUM, column.slot, column.valid_slot, compiler.enum(symbols, column.symbols), len(symbols))
    if writer_name is not None:
        raise UnsupportedSchema(f"writer field {column.name!r}: named type {writer_name!r}")
    primitive, logical = _primitive(writer_type)
    if column.kind == "string" and primitive == "string":
        return _row(k.OP_STRING, column.slot, column.valid_slot)
    if column.kind == "int" and primitive == "int":
        return _row(k.OP_INT, column.slot, column.valid_slot)
    if column.kind == "long" and primitive in ("int", "long"):
        if logical == "timestamp-millis":
            if not target.timestamp:
                raise UnsupportedSchema(f"writer field {column.name!r}: timestamp-millis for a plain long")
            return _row(k.OP_MILLIS, column.slot, column.valid_slot)
        return _row(k.OP_LONG, column.slot, column.valid_slot)
    raise UnsupportedSchema(f"writer field {column.name!r}: {writer_type!r} read as {column.kind}")


def _skip(writer_type) -> list[int]:
    """The row skipping a value of a field the reader does not have."""
    if isinstance(writer_type, dict) and writer_type.get("type") == "enum":
        symbols = writer_type.get("symbols")
        if not isinstance(symbols, list):
            raise UnsupportedSchema("enum without symbols")
        return _row(k.OP_SKIP_ENUM, arg1=len(symbols))
    if isinstance(writer_type, dict) and writer_type.get("type") == "fixed":
        size = writer_type.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or "logicalType" in writer_type:
            raise UnsupportedSchema(f"fixed {writer_type!r}")
        return _row(k.OP_SKIP_FIXED, arg0=size)
    primitive, logical = _primitive(writer_type)
    if logical not in (None, "timestamp-micros"):   # the datum path turns millis into datetimes (may fail)
        raise UnsupportedSchema(f"skipped field with logical type {logical!r}")
    return {
        "null": _row(k.OP_SKIP_NULL), "boolean": _row(k.OP_SKIP_BOOLEAN),
        "int": _row(k.OP_SKIP_VARINT), "long": _row(k.OP_SKIP_VARINT),
        "float": _row(k.OP_SKIP_FIXED, arg0=4), "double": _row(k.OP_SKIP_FIXED, arg0=8),
        "string": _row(k.OP_SKIP_STRING), "bytes": _row(k.OP_SKIP_BYTES),
    }[primitive]
