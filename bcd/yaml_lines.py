"""Where things are in a YAML text: the line of each of many paths, found in one walk of the node tree.

A path is a tuple of mapping keys and sequence indices (`("services", "payroll", "sites", "dorset")`); in a
sequence of mappings a part may also be the `name:` of an item (probes and steps are named in cross-field
problems). The line of a path is that of the deepest node along it that exists (a key's own line for a
mapping entry), else the document's first line. The walk looks at each node on the way once for all the
paths that pass through it, so placing 100,000 problems costs one pass over the tree, not one per problem.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

Path = tuple[str | int, ...]


class _Wanted:
    """The paths still wanted below one node: a trie of path parts, with the line found for its node."""

    __slots__ = ("children", "line")

    def __init__(self) -> None:
        self.children: dict[str | int, _Wanted] = {}
        self.line = 0


def lines_of(root: yaml.Node | None, paths: Sequence[Path]) -> list[int]:
    """The 1-based line of each path (see the module's docstring), in the order given."""
    top = _Wanted()
    for path in paths:
        wanted = top
        for part in path:
            wanted = wanted.children.setdefault(part, _Wanted())
    top.line = root.start_mark.line + 1 if root is not None else 1
    pending: list[tuple[yaml.Node, _Wanted]] = [(root, top)] if root is not None else []
    while pending:
        node, wanted = pending.pop()
        for child, line, below in _children(node, wanted):
            below.line = line
            if below.children:
                pending.append((child, below))
    return [_deepest(top, path) for path in paths]


def _deepest(top: _Wanted, path: Path) -> int:
    wanted, line = top, top.line
    for part in path:
        wanted = wanted.children[part]
        if not wanted.line:
            break
        line = wanted.line
    return line


def _children(node: yaml.Node, wanted: _Wanted) -> list[tuple[yaml.Node, int, _Wanted]]:
    """The children of `node` that `wanted` asks for, each with its line and what is wanted below it."""
    found: list[tuple[yaml.Node, int, _Wanted]] = []
    if isinstance(node, yaml.MappingNode):
        by_text: dict[str, list[_Wanted]] = {}
        for part, below in wanted.children.items():
            by_text.setdefault(str(part), []).append(below)
        entries = {key.value: (value, key) for key, value in node.value  # of duplicate keys the last, as in the data
                   if isinstance(key, yaml.ScalarNode) and key.value in by_text}
        for text, (value, key) in entries.items():
            found.extend((value, key.start_mark.line + 1, below) for below in by_text[text])
    elif isinstance(node, yaml.SequenceNode):
        names: dict[str, _Wanted] = {}
        for part, below in wanted.children.items():
            if isinstance(part, str):
                names[part] = below
            elif 0 <= part < len(node.value):
                found.append((node.value[part], node.value[part].start_mark.line + 1, below))
        for item in node.value if names else ():  # a probe or step named in a cross-field problem
            name = _name_of(item)
            if name is not None and name in names:
                found.append((item, item.start_mark.line + 1, names.pop(name)))
    return found


def _name_of(item: yaml.Node) -> str | None:
    if isinstance(item, yaml.MappingNode):
        for key, value in item.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "name" and isinstance(value, yaml.ScalarNode):
                name: str = value.value
                return name
    return None
