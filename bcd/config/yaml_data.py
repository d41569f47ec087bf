"""YAML to plain data straight from the parser's events, without PyYAML's node tree.

`yaml.safe_load` first composes a node for every scalar and collection, each with two `Mark` objects,
and only then builds the data. For a 20,000-probe config that tree peaks at about 130 MB, and the daemon
keeps the memory it needed at the peak for the rest of its life. `load()` builds the same data from the
event stream with SafeLoader's own resolver and scalar constructors, keeping only the data. What it does
not handle (explicit collection tags such as `!!set` or `!!omap`) is left to `yaml.safe_load` (line numbers
come from bcd.config.yaml_lines, which needs no node tree either).

It refuses, while reading and before memory grows, what would otherwise grow without bound further on (in
`${ENV}` expansion, validation, or the recursion of either): a text over MAX_BYTES, collections nested deeper
than MAX_DEPTH (aliases expanded), an alias inside the collection it names, and aliases that stand for more
than ALIAS_TEXT characters of YAML in all ("billion laughs"). `read()` also notes every key given twice.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML was built with it
STR = "tag:yaml.org,2002:str"
MERGE = "tag:yaml.org,2002:merge"
VALUE = "tag:yaml.org,2002:value"
INTERN_UP_TO = 40  # characters
PLAIN_TAGS = {MappingStartEvent: "tag:yaml.org,2002:map", SequenceStartEvent: "tag:yaml.org,2002:seq"}

# Limits, checked while reading (before memory grows): a config is a few MB, a few levels deep, and uses aliases
# for shared defaults. The 20,000-probe benchmark estate is 3 MB, 7 levels deep.
MAX_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 64  # nested collections, aliases expanded
ALIAS_TEXT = MAX_BYTES  # characters of YAML that aliases may add (merged defaults in every probe fit easily)


class _Unsupported(Exception):
    """A feature this builder leaves to yaml.safe_load."""


class LimitError(yaml.MarkedYAMLError):
    """The document is too large, too deep, or its aliases expand too far (or into themselves)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)


@dataclass(frozen=True)
class Duplicate:
    """A key given twice in one mapping: `path` ends with the key; lines are 1-based."""

    path: tuple[Any, ...]
    line: int
    first_line: int


@dataclass(frozen=True)
class Document:
    data: Any
    duplicates: list[Duplicate]


TOO_LARGE = f"the file is larger than the limit of {MAX_BYTES // (1024 * 1024)} MB"


def read(text: str) -> Document:
    """The data of a single-document YAML text, as `yaml.safe_load` would build it (later keys winning), and
    the keys given twice. Raises LimitError past the limits above, other YAMLErrors as PyYAML does."""
    if len(text) > MAX_BYTES:
        raise LimitError(TOO_LARGE, yaml.Mark("<document>", 0, 0, 0, "", 0))
    builder = _Builder(LOADER(text))
    try:
        return Document(builder.document(), builder.duplicates)
    except _Unsupported:
        _Builder(LOADER(text), scan=True).document()  # the limits hold for the whole text, and then
        return Document(yaml.load(text, Loader=LOADER), [])  # a safe loader: SafeLoader or CSafeLoader


def load(text: str) -> Any:
    """The data of a single-document YAML text, as `yaml.safe_load` would build it (within the limits)."""
    return read(text).data


def _plain(path: list[Any]) -> list[Any]:
    return ["<<" if isinstance(part, ScalarNode) else part for part in path]


def _problem(problem: str, event: Any) -> yaml.composer.ComposerError:
    return yaml.composer.ComposerError(None, None, problem, event.start_mark)


class _Builder:
    """Builds the data from the events, measuring as it goes what aliases add: `added` (characters of YAML
    they stand for, beyond the text itself), `depth` and `deepest` (aliases expanded). An anchor records its
    value, its size (the characters it stands for, -1 while its collection is still being read: an alias to
    it then is recursive) and its height."""

    def __init__(self, loader: Any, scan: bool = False) -> None:
        self.loader = loader
        self.scan = scan  # check the limits only: any tag is read as a plain collection or string
        self.anchors: dict[str, tuple[Any, int, int]] = {}
        self.added = 0
        self.depth = 0
        self.deepest = 0
        self.path: list[Any] = [None] * (MAX_DEPTH + 1)  # path[1:depth + 1]: where the builder is
        self.duplicates: list[Duplicate] = []

    def document(self) -> Any:
        loader = self.loader
        try:
            loader.get_event()  # stream start
            if loader.check_event(StreamEndEvent):
                return None
            loader.get_event()  # document start
            data = self.value(loader.get_event())
            end = loader.get_event()
            if not isinstance(end, DocumentEndEvent):
                raise _problem("expected the end of the document", end)
            if not loader.check_event(StreamEndEvent):
                event = loader.get_event()
                raise yaml.composer.ComposerError("expected a single document in the stream", None,
                                                  "but found another document", event.start_mark)
            return data
        finally:
            loader.dispose()

    def value(self, event: Any, key: bool = False) -> Any:
        if isinstance(event, ScalarEvent):
            value = self.scalar(event, key)
            if event.anchor is not None:
                self.anchors[event.anchor] = (value, len(event.value) + 1, 0)
            return value
        if isinstance(event, CollectionStartEvent):
            return self.collection(event)
        if isinstance(event, AliasEvent):
            return self.alias(event)
        raise _problem(f"unexpected {type(event).__name__}", event)

    def alias(self, event: Any) -> Any:
        if event.anchor not in self.anchors:
            raise _problem(f"found undefined alias {event.anchor!r}", event)
        value, size, height = self.anchors[event.anchor]
        if size < 0:
            raise LimitError(f"alias *{event.anchor} refers to a collection that contains it", event.start_mark)
        self.added += size
        if self.added > ALIAS_TEXT:
            raise LimitError(f"aliases add more than {ALIAS_TEXT // (1024 * 1024)} MB to the document "
                             f"(at *{event.anchor})", event.start_mark)
        if self.depth + height > MAX_DEPTH:
            raise LimitError(f"alias *{event.anchor} nests collections deeper than {MAX_DEPTH} levels",
                             event.start_mark)
        self.deepest = max(self.deepest, self.depth + height)
        return value

    def collection(self, event: Any) -> Any:
        if event.tag not in (None, "!", PLAIN_TAGS[type(event)]) and not self.scan:
            raise _Unsupported(event.tag)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise LimitError(f"collections nested deeper than {MAX_DEPTH} levels", event.start_mark)
        anchor, added, deepest = event.anchor, self.added, self.deepest
        if anchor is not None:
            self.anchors[anchor] = (None, -1, 0)  # while its contents are read: they must not refer to it
            self.deepest = self.depth
        elif self.depth > self.deepest:
            self.deepest = self.depth
        value: Any
        if isinstance(event, MappingStartEvent):
            value, end = self.mapping()
        else:
            value, end = self.sequence()
        if anchor is not None:
            size = end.end_mark.index - event.start_mark.index + self.added - added
            self.anchors[anchor] = (value, size, self.deepest - self.depth + 1)
            self.deepest = max(deepest, self.deepest)
        self.depth -= 1
        return value

    def scalar(self, event: Any, key: bool) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
        if tag == STR:  # names recur in every service (probe and site names): one copy of each short text
            return sys.intern(event.value) if len(event.value) <= INTERN_UP_TO else event.value
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        if tag == MERGE and key:
            return node  # a marker for mapping(): merge the value that follows
        if tag in (MERGE, VALUE):
            if self.scan:
                return event.value
            raise _Unsupported(tag)
        constructor = self.loader.yaml_constructors.get(tag) or self.loader.yaml_constructors[None]
        return constructor(self.loader, node)

    def sequence(self) -> tuple[list[Any], Any]:
        items: list[Any] = []
        path, depth = self.path, self.depth
        while not self.loader.check_event(SequenceEndEvent):
            path[depth] = len(items)
            items.append(self.value(self.loader.get_event()))
        return items, self.loader.get_event()

    def mapping(self) -> tuple[dict[Any, Any], Any]:
        """Keys in order, later ones winning (each duplicate noted); `<<` merges (explicit keys win over merged
        ones, and of a list of merged mappings the first wins), as SafeConstructor does."""
        own: dict[Any, Any] = {}
        starts: dict[Any, Any] = {}
        merged: list[dict[Any, Any]] = []
        path, depth = self.path, self.depth
        while not self.loader.check_event(MappingEndEvent):
            start = self.loader.get_event()
            key = self.value(start, key=True)
            if isinstance(key, (dict, list)):
                raise yaml.constructor.ConstructorError("while constructing a mapping", None, "found unhashable key",
                                                        start.start_mark)
            path[depth] = key  # the merge marker (a ScalarNode) too: a duplicate below it shows as <<
            value = self.value(self.loader.get_event())
            if isinstance(key, ScalarNode):
                merged.extend(reversed(self._merge_sources(value, start)))  # of one list, the first wins
            elif key in starts:
                self.duplicates.append(Duplicate((*_plain(path[1:depth]), key), start.start_mark.line + 1,
                                                 starts[key].start_mark.line + 1))
                own[key] = value
            else:
                own[key] = value
                starts[key] = start
        end = self.loader.get_event()
        if not merged:
            return own, end
        result: dict[Any, Any] = {}
        for source in merged:
            result.update(source)
        result.update(own)
        return result, end

    @staticmethod
    def _merge_sources(value: Any, event: Any) -> list[dict[Any, Any]]:
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(source, dict) for source in sources):
            raise yaml.constructor.ConstructorError("while constructing a mapping", None,
                                                    "expected a mapping or list of mappings for merging",
                                                    event.start_mark)
        return sources


__all__ = ["LOADER", "MAX_BYTES", "TOO_LARGE", "Document", "Duplicate", "LimitError", "MappingNode", "SequenceNode",
           "load", "read"]
