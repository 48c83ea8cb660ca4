"""YAML for files from anyone: PyYAML's safe loader, bounded.

:func:`load_yaml` parses with a subclass of ``yaml.SafeLoader`` (no tags that run code) and refuses,
each with one line naming the line of the problem (:class:`YamlInputError`):

* a duplicate key in one mapping (PyYAML silently keeps the last value) -- both lines named;
* alias expansion beyond :data:`MAX_NODES` nodes (the "billion laughs" bomb: a 1 KB file of nested
  aliases expands to millions of nodes once anything walks or copies it) and recursive aliases;
* nesting deeper than :data:`MAX_DEPTH` (a 20,000-deep list is a ``RecursionError`` otherwise);
* binary or non-UTF-8 content, and files over :data:`MAX_BYTES`.

Merge keys (``<<: *base``) keep their YAML meaning: explicit keys override merged ones.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*; :func:`number_from_string` reads such
strings as the float a user meant.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YamlInputError", "decode_yaml_bytes", "load_yaml",
           "number_from_string"]

MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_BYTES = 4 * 2**20
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(yaml.YAMLError):
    """Input refused by :func:`load_yaml`; the message is one line and starts with ``line N:``."""


def _line(node_or_mark: Any) -> int:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return mark.line + 1 if mark is not None else 0


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlInputError(f"line {_line(self.peek_event())}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # noqa: D102
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                try:
                    seen = first_line.get(key)
                except TypeError:  # unhashable: PyYAML reports it
                    continue
                if seen is not None:
                    raise YamlInputError(f"line {_line(key_node)}: duplicate key {_quote(key)} "
                                         f"(first at line {seen}); keep one of them")
                first_line[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)


def _quote(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} chars)"


def _check_expansion(root: Any) -> None:
    """Refuse documents whose alias expansion exceeds :data:`MAX_NODES` nodes, or that alias themselves."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise YamlInputError(f"line {_line(node)}: recursive alias (a node contains itself)")
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise YamlInputError(f"line {_line(node)}: aliases expand to more than {MAX_NODES:,} nodes; "
                                     f"write the values out instead of nesting aliases")
        in_progress.discard(key)
        sizes[key] = total
        return total

    size(root)


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def decode_yaml_bytes(data: bytes) -> str:
    """UTF-8 text of a YAML file, or :class:`YamlInputError` for binary / non-UTF-8 / oversized input."""
    if len(data) > MAX_BYTES:
        raise YamlInputError(f"line 1: file is {len(data):,} bytes; recipes are at most {MAX_BYTES:,} bytes")
    if b"\x00" in data:
        offset = data.index(b"\x00")
        raise YamlInputError(f"line {_line_at(data, offset)}: binary file (NUL byte at offset "
                             f"{offset}), not YAML text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlInputError(f"line {_line_at(data, error.start)}: not UTF-8 text (byte "
                             f"0x{data[error.start]:02x} at offset {error.start}); save the file as UTF-8") from None


def load_yaml(text: str) -> Any:
    """Parse one YAML document with the bounds above.

    Raises:
        YamlInputError: a bound was exceeded or a key repeated (one line, naming the line).
        yaml.YAMLError: malformed YAML (PyYAML's message).

    Example:
        >>> load_yaml("a: 1\\nb: [2, 3]\\n")
        {'a': 1, 'b': [2, 3]}
    """
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expansion(root)
        return loader.construct_document(root)
    except RecursionError:
        raise YamlInputError(f"line 1: nested too deeply to parse (limit {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def number_from_string(value: Any) -> Any:
    """A string that YAML 1.1 left unparsed but reads as a finite float with ``.`` or ``e`` -> that float.

    Anything else is returned unchanged.

    Example:
        >>> number_from_string("1e-3"), number_from_string("12"), number_from_string("nan")
        (0.001, '12', 'nan')
    """
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number) and any(c in value.lower() for c in ".e"):
            return number
    return value
