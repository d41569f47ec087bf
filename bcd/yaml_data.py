"""YAML to plain data straight from the parser's events, without PyYAML's node tree.

`yaml.safe_load` first composes a node for every scalar and collection, each with two `Mark` objects,
and only then builds the data. For a 20,000-probe config that tree peaks at about 130 MB, and the daemon
keeps the memory it needed at the peak for the rest of its life. `load()` builds the same data from the
event stream with SafeLoader's own resolver and scalar constructors, keeping only the data. What it does
not handle (explicit collection tags such as `!!set` or `!!omap`) is left to `yaml.safe_load`. `compose()`
gives the node tree for line numbers, which only a config with problems needs.
"""

from __future__ import annotations

import sys
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


class _Unsupported(Exception):
    """A feature this builder leaves to yaml.safe_load."""


def load(text: str) -> Any:
    """The data of a single-document YAML text, as `yaml.safe_load` would build it."""
    try:
        return _Builder(LOADER(text)).document()
    except _Unsupported:
        return yaml.load(text, Loader=LOADER)  # a safe loader: SafeLoader or CSafeLoader


def compose(text: str) -> yaml.Node | None:
    """The node tree of a single-document YAML text (for the line numbers of problems)."""
    loader = LOADER(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def _problem(problem: str, event: Any) -> yaml.composer.ComposerError:
    return yaml.composer.ComposerError(None, None, problem, event.start_mark)


class _Builder:
    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.anchors: dict[str, Any] = {}

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
        if isinstance(event, AliasEvent):
            if event.anchor not in self.anchors:
                raise _problem(f"found undefined alias {event.anchor!r}", event)
            return self.anchors[event.anchor]
        if isinstance(event, ScalarEvent):
            value = self.scalar(event, key)
        elif isinstance(event, CollectionStartEvent):
            if event.tag not in (None, "!", PLAIN_TAGS[type(event)]):
                raise _Unsupported(event.tag)
            value = {} if isinstance(event, MappingStartEvent) else []
            if event.anchor is not None:
                self.anchors[event.anchor] = value  # before its contents: they may refer to it
            return self.mapping(value) if isinstance(value, dict) else self.sequence(value)
        else:
            raise _problem(f"unexpected {type(event).__name__}", event)
        if event.anchor is not None:
            self.anchors[event.anchor] = value
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
            raise _Unsupported(tag)
        constructor = self.loader.yaml_constructors.get(tag) or self.loader.yaml_constructors[None]
        return constructor(self.loader, node)

    def sequence(self, items: list[Any]) -> list[Any]:
        while not self.loader.check_event(SequenceEndEvent):
            items.append(self.value(self.loader.get_event()))
        self.loader.get_event()
        return items

    def mapping(self, result: dict[Any, Any]) -> dict[Any, Any]:
        """Keys in order, later ones winning; `<<` merges (explicit keys win over merged ones, and of a
        list of merged mappings the first wins), as SafeConstructor does."""
        own: list[tuple[Any, Any]] = []
        merged: list[dict[Any, Any]] = []
        while not self.loader.check_event(MappingEndEvent):
            start = self.loader.peek_event()
            key = self.value(self.loader.get_event(), key=True)
            value = self.value(self.loader.get_event())
            if isinstance(key, ScalarNode):
                merged.extend(reversed(self._merge_sources(value, start)))  # of one list, the first wins
            elif isinstance(key, dict | list):
                raise yaml.constructor.ConstructorError("while constructing a mapping", None, "found unhashable key",
                                                        start.start_mark)
            else:
                own.append((key, value))
        self.loader.get_event()
        for source in merged:
            result.update(source)
        result.update(own)
        return result

    @staticmethod
    def _merge_sources(value: Any, event: Any) -> list[dict[Any, Any]]:
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(source, dict) for source in sources):
            raise yaml.constructor.ConstructorError("while constructing a mapping", None,
                                                    "expected a mapping or list of mappings for merging",
                                                    event.start_mark)
        return sources


__all__ = ["LOADER", "MappingNode", "SequenceNode", "compose", "load"]
