"""Read a YAML file safely and remember the line of every field, for error messages.

The document is composed with PyYAML's safe loader (no tags beyond the standard ones, no Python
objects) and built by walking the node tree, which gives each field path its line number and
catches duplicate keys that ``yaml.safe_load`` would silently overwrite. Anchors and aliases are
refused: they make the tree a graph, whose expansion can be exponential in the file's size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

Path_ = tuple  # a field path: keys (str) and list indexes (int), e.g. ("versions", 0, "rates")

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser when PyYAML was built with it (same safe constructor, ~10x faster on big tariffs).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclasses.dataclass(frozen=True)
class YamlProblem:
    path: Path_
    line: int | None
    message: str


@dataclasses.dataclass(frozen=True)
class YamlDocument:
    data: object                    # dicts, lists and scalars, as yaml.safe_load would give
    lines: dict[Path_, int]         # field path -> 1-based line of the key or list item
    problems: tuple[YamlProblem, ...]  # duplicate keys and disallowed tags (the rest is usable)


class YamlSyntaxError(ValueError):
    """The file is not YAML the safe loader accepts; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


def format_path(path: Path_) -> str:
    """``("versions", 0, "rates", 3, "price")`` -> ``"versions[0].rates[3].price"``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def read_yaml(path: Path) -> YamlDocument:
    """Parse ``path``; raises ``YamlSyntaxError`` for bad syntax, several documents, bad tags or
    anchors and aliases."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(f"not valid UTF-8 text ({exc.reason}: byte 0x{raw[exc.start]:02x}); save the "
                              f"file as UTF-8", raw.count(b"\n", 0, exc.start) + 1) from None
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_aliases(node)
        builder = _Builder(loader)
        data = builder.build(node, ()) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context else problem
        if isinstance(exc, yaml.constructor.ConstructorError):
            raise YamlSyntaxError(f"YAML value not allowed: {detail}; use plain YAML values "
                                  f"(no Python tags)", line) from None
        raise YamlSyntaxError(f"YAML syntax error: {detail}; fix the YAML syntax (indentation, "
                              f"quotes, colons)", line) from None
    finally:
        loader.dispose()
    return YamlDocument(data, builder.lines, tuple(builder.problems))


def _refuse_aliases(root: yaml.Node) -> None:
    """Raise ``YamlSyntaxError`` if the document uses an alias (``*name``) of an anchor (``&name``).

    The composer turns an alias into a second reference to its anchor's node, so the document is a
    graph: a few hundred bytes of aliases of aliases ("billion laughs") would expand to billions of
    values when built as a tree. Reference data has no need for them, so a node reached twice is
    refused before anything is built; the walk stops there, so time and memory stay linear in the
    size of the file.
    """
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, yaml.Node | None]] = [(root, None)]   # (node, the key or list above it)
    while stack:
        node, above = stack.pop()
        if id(node) in seen:
            raise YamlSyntaxError(
                f"anchors (&) and aliases (*) are not allowed in reference data: the value anchored at line "
                f"{node.start_mark.line + 1} is used again {_where(above)}; write the value out in full",
                (above or node).start_mark.line + 1)
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):   # pushed in reverse: visited in document order
            stack.extend((item, node) for item in reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in reversed(node.value):
                stack.append((value_node, key_node))
                stack.append((key_node, node))


def _where(above: yaml.Node | None) -> str:
    """Where a node is used, from the node above it: a key (its value), a list or a mapping (a key)."""
    if isinstance(above, yaml.SequenceNode):
        return f"in the list at line {above.start_mark.line + 1}"
    if isinstance(above, yaml.MappingNode):
        return f"as a key in the mapping at line {above.start_mark.line + 1}"
    return f"at line {above.start_mark.line + 1}" if above is not None else "at the top"


class _Builder:
    def __init__(self, loader: yaml.SafeLoader):
        self._loader = loader
        self.lines: dict[Path_, int] = {}
        self.problems: list[YamlProblem] = []

    def build(self, node: yaml.Node, path: Path_) -> object:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self._loader.construct_object(node, deep=True)
        expected = _MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG
        if node.tag != expected:
            self.problems.append(YamlProblem(
                path, node.start_mark.line + 1,
                f"tag {node.tag} is not allowed; remove it (only plain YAML is accepted)"))
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (index,)) for index, item in enumerate(node.value)]
        return self._mapping(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict:
        own_count = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
        self._loader.flatten_mapping(node)   # resolves "<<" merge keys: merged pairs come first
        merged_count = len(node.value) - own_count
        result: dict = {}
        own_keys: set = set()   # keys written in this mapping itself; they override merged ones
        for index, (key_node, value_node) in enumerate(node.value):
            key = self._loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                self.problems.append(YamlProblem(path, line, "a mapping key must be a plain value"))
                continue
            if index >= merged_count:
                if key in own_keys:
                    self.problems.append(YamlProblem(
                        path + (key,), line,
                        f"duplicate key {key!r} (first at line {self.lines[path + (key,)]}); "
                        f"keep only one"))
                    continue
                own_keys.add(key)
            self.lines[path + (key,)] = line
            result[key] = self.build(value_node, path + (key,))
        return result
