"""`include:` in a config file: more files, each adding entries to the sections councils own.

The main file lists paths or globs relative to its own directory (`include: [conf.d/*.yaml]`); each glob's
matches are taken in sorted order, a glob matching nothing is allowed, a plain path that is missing is not.
An included file may hold only INCLUDABLE sections (no nested `include`); its entries join the main file's,
and a name defined twice (in any two files) is an error naming both places. `origins` remembers which file
each entry came from, so every later problem is placed on that file's own line.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

from bcd.config.yaml_lines import lines_of

INCLUDABLE = ("services", "runbooks", "plans", "maintenance")
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Source:
    """One file read: its name as shown in errors, its text and its data (None when it could not be read)."""

    name: str
    text: str | None
    data: Any


@dataclass
class Included:
    """The main file's data with the included entries merged in, where each entry came from, and the problems
    found while including: (source, location in it, message)."""

    data: dict[str, Any]
    sources: list[Source]
    origins: dict[tuple[str, str], Source] = field(default_factory=dict)
    problems: list[tuple[Source, Loc, str]] = field(default_factory=list)

    def source_of(self, loc: Loc) -> Source:
        """The file where the value at `loc` of the merged data is written."""
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], str):
            return self.origins.get((loc[0], loc[1]), self.sources[0])
        return self.sources[0]


def has_magic(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def paths(main: Source, report: Any) -> list[str]:
    """The files the main file includes, in order, each once; `report(loc, message)` for a bad entry."""
    patterns = main.data.get("include", [])
    if not isinstance(patterns, list) or not all(isinstance(item, str) and item for item in patterns):
        return []  # validation says what is wrong with it
    base = os.path.dirname(main.name)
    found: list[str] = []
    for index, pattern in enumerate(patterns):
        full = os.path.join(base, pattern)
        matches = sorted(glob.glob(full)) if has_magic(pattern) else [full]
        where = ("include", index)
        for path in matches:
            if os.path.isdir(path):
                report(where, f"{pattern}: is a directory ({path}): include its files, e.g. {pattern}/*.yaml")
            elif not has_magic(pattern) and not os.path.exists(path):
                report(where, f"{pattern}: no such file ({path}; a glob may match nothing, a path must exist)")
            elif os.path.abspath(path) == os.path.abspath(main.name):
                if not has_magic(pattern):  # a glob such as *.yaml next to the main file matches it
                    report(where, f"{pattern}: a file cannot include itself")
            elif path not in found:
                found.append(path)
    return found


def merge(included: Included, source: Source) -> None:
    """Add the entries of an included file (already read) to the merged data, noting bad sections and names
    defined twice."""
    data = source.data
    if data is None:
        return  # an empty file adds nothing (a council with nothing yet)
    if not isinstance(data, dict):
        included.problems.append((source, (), "the top level of an included file must be a mapping"))
        return
    for section, entries in data.items():
        if section == "include":
            included.problems.append((source, (section,), "nested includes are not supported: list every file "
                                                          "in the main file's include"))
        elif section not in INCLUDABLE:
            included.problems.append((source, (section,), f"not allowed in an included file (only "
                                                          f"{', '.join(INCLUDABLE)})"))
        elif not isinstance(entries, dict):
            included.problems.append((source, (section,), "must be a mapping of names to entries"))
        else:
            _add_entries(included, source, section, entries)


def _add_entries(included: Included, source: Source, section: str, entries: dict[Any, Any]) -> None:
    merged = included.data.get(section, {})
    if not isinstance(merged, dict):
        return  # the main file's section is not a mapping: validation says so there
    merged = included.data[section] = dict(merged)  # a copy: the main file's own data places its problems
    for name, entry in entries.items():
        key = (section, str(name))
        if name in merged:
            first = included.source_of(key)
            line = line_of(first, key)
            included.problems.append((source, key, f"{section} entry {name!r} is defined twice "
                                                   f"(also at {first.name}:{line})"))
            continue
        merged[name] = entry
        included.origins[key] = source


def line_of(source: Source, loc: Loc) -> int:
    if source.text is None:
        return 0
    return lines_of(source.text, source.data, [loc])[0]
