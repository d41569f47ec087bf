"""Where things are in a YAML text: the line of each of many paths, found in one pass over the parser's events.

A path is a tuple of mapping keys and sequence indices (`("services", "payroll", "sites", "dorset")`); in a
sequence of mappings a part may also be the `name:` of an item (probes and steps are named in cross-field
problems), which the document's data turns into an index first. The line of a path is that of the deepest
node along it that exists in the text (a key's own line for a mapping entry; an alias ends the way, at its
own line), else the document's first line. One pass places every path: placing 100,000 problems costs what
reading the text once costs, and no node tree is built (the tree of a 20,000-probe file is about 130 MB).
The text must have passed yaml_data.read() (its limits), which gives the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yaml.events import (
    CollectionEndEvent,
    CollectionStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from bcd.config.yaml_data import LOADER

Path = tuple[str | int, ...]


class _Wanted:
    """The paths wanted below one node: a trie of path parts, with the line found for its node."""

    __slots__ = ("children", "line")

    def __init__(self) -> None:
        self.children: dict[str | int, _Wanted] = {}
        self.line = 0


def lines_of(text: str, data: Any, paths: Sequence[Path]) -> list[int]:
    """The 1-based line of each path in `text` (whose data is `data`), in the order given."""
    names = _Names()
    indexed = [names.as_indices(data, path) for path in paths]
    top = _Wanted()
    for path in indexed:
        wanted = top
        for part in path:
            wanted = wanted.children.setdefault(part, _Wanted())
    top.line = 1
    if top.children:
        _walk_document(text, top)
    return [_deepest(top, path) for path in indexed]


def _deepest(top: _Wanted, path: Path) -> int:
    wanted, line = top, top.line
    for part in path:
        wanted = wanted.children[part]
        if not wanted.line:
            break
        line = wanted.line
    return line


class _Names:
    """Item names of the sequences of mappings in the data, indexed once per sequence."""

    def __init__(self) -> None:
        self._index: dict[int, dict[str, int]] = {}

    def as_indices(self, data: Any, path: Path) -> Path:
        parts: list[str | int] = []
        for given in path:
            part = self._of(data).get(given, given) if isinstance(data, list) and isinstance(given, str) else given
            parts.append(part)
            data = _child(data, part)
        return tuple(parts)

    def _of(self, items: list[Any]) -> dict[str, int]:
        if id(items) not in self._index:
            named = ((item.get("name"), index) for index, item in enumerate(items) if isinstance(item, dict))
            self._index[id(items)] = {str(name): index for name, index in reversed(list(named)) if name is not None}
        return self._index[id(items)]


def _child(data: Any, part: str | int) -> Any:
    if isinstance(data, dict):
        return data.get(part)
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return None


def _walk_document(text: str, top: _Wanted) -> None:
    loader = LOADER(text)
    try:
        loader.get_event()  # stream start
        if not loader.check_event(StreamEndEvent):
            loader.get_event()  # document start
            first = loader.get_event()
            top.line = first.start_mark.line + 1
            _walk(loader, first, top)
    finally:
        loader.dispose()


def _walk(loader: Any, event: Any, wanted: _Wanted) -> None:
    """Consume the events of the value that starts with `event`, noting the lines of what `wanted` asks for
    (recursion only along wanted paths: as deep as the longest path)."""
    if not wanted.children:
        _skip(loader, event)
    elif isinstance(event, MappingStartEvent):
        by_text: dict[str, _Wanted] = {}
        for part, below in wanted.children.items():
            by_text.setdefault(str(part), below)
        while not loader.check_event(MappingEndEvent):
            key = loader.get_event()
            below_key = by_text.get(key.value) if isinstance(key, ScalarEvent) else None
            if below_key is None:
                _skip(loader, key)
                _skip(loader, loader.get_event())
                continue
            below_key.line = key.start_mark.line + 1  # of a key given twice, the last (its value is the data)
            _walk(loader, loader.get_event(), below_key)
        loader.get_event()
    elif isinstance(event, SequenceStartEvent):
        index = 0
        while not loader.check_event(SequenceEndEvent):
            item = loader.get_event()
            below_item = wanted.children.get(index)
            if below_item is None:
                _skip(loader, item)
            else:
                below_item.line = item.start_mark.line + 1
                _walk(loader, item, below_item)
            index += 1
        loader.get_event()


def _skip(loader: Any, event: Any) -> None:
    """Consume the rest of the value that starts with `event`."""
    if not isinstance(event, CollectionStartEvent):
        return
    depth = 1
    while depth:
        event = loader.get_event()
        if isinstance(event, CollectionStartEvent):
            depth += 1
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
