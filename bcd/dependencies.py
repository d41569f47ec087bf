"""The dependency graph between services (`depends_on`): pure functions, no I/O.

One graph is used three ways: the order of a recovery plan (groups by depth), the order of automatic
failovers that happen at once (a dependent waits for what it needs), and alert suppression (a dependent's
page waits for its root cause). The config refuses unknown names and cycles, so every function here may
assume a graph without cycles whose names are all services; `cycle()` is what the config checks with.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

Graph = Mapping[str, Sequence[str]]  # service -> the services it depends on


def cycle(graph: Graph) -> list[str] | None:
    """A cycle of the graph as a closed path (`[a, b, c, a]`: a needs b, b needs c, c needs a), or None.
    Names not in the graph's keys are leaves. Iterative: a deep chain cannot exhaust the stack."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            needs = graph.get(node, ())
            if index < len(needs):
                stack.append((node, index + 1))
                following = needs[index]
                if state.get(following) == 1:
                    return [*path[path.index(following):], following]
                if not state.get(following):
                    stack.append((following, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def closure(graph: Graph, service: str) -> set[str]:
    """Every service `service` needs, directly or through others (itself excluded)."""
    seen: set[str] = set()
    todo = list(graph.get(service, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def dependents(graph: Graph) -> dict[str, set[str]]:
    """Service -> the services that need it directly (the graph's edges reversed); a service nothing needs is
    left out (most are: an empty set each would be 2 MB at 10,000 services)."""
    reverse: dict[str, set[str]] = {}
    for name, needs in graph.items():
        for need in needs:
            reverse.setdefault(need, set()).add(name)
    return reverse


def within(graph: Graph, chosen: Collection[str]) -> dict[str, list[str]]:
    """The graph among `chosen` only: a chosen service needs the nearest chosen services it reaches, also
    through services that are not chosen (a needs b needs c, only a and c chosen: a needs c)."""
    result: dict[str, list[str]] = {}
    for name in chosen:
        nearest: set[str] = set()
        seen: set[str] = set()
        todo = list(graph.get(name, ()))
        while todo:
            need = todo.pop()
            if need in seen:
                continue
            seen.add(need)
            if need in chosen:
                nearest.add(need)
            else:
                todo.extend(graph.get(need, ()))
        result[name] = sorted(nearest)
    return result


def groups(graph: Graph, chosen: Iterable[str]) -> list[list[str]]:
    """`chosen` in groups by depth: group 1 needs nothing chosen; a service's group is one more than its
    deepest chosen dependency's. Names sorted within a group, so the order is stable."""
    sub = within(graph, set(chosen))
    depth: dict[str, int] = {}
    for name in _topological(sub):
        depth[name] = 1 + max((depth[need] for need in sub[name]), default=0)
    layers: dict[int, list[str]] = {}
    for name, level in depth.items():
        layers.setdefault(level, []).append(name)
    return [sorted(layers[level]) for level in sorted(layers)]


@dataclass(frozen=True, slots=True)
class CriticalPath:
    seconds: float
    services: tuple[str, ...]  # from the first to move to the last


def critical_path(graph: Graph, chosen: Iterable[str], seconds: Mapping[str, float]) -> CriticalPath:
    """The longest chain of moves among `chosen` by the expected duration of each (missing: 0 s): the least
    time a plan can take however many moves run at once."""
    sub = within(graph, set(chosen))
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for name in _topological(sub):
        start, previous = 0.0, None
        for need in sub[name]:
            if previous is None or finish[need] > start:
                start, previous = finish[need], need
        finish[name] = start + seconds.get(name, 0.0)
        before[name] = previous
    if not finish:
        return CriticalPath(0.0, ())
    last = max(sorted(finish), key=lambda name: finish[name])
    chain: list[str] = []
    node: str | None = last
    while node is not None:
        chain.append(node)
        node = before[node]
    return CriticalPath(finish[last], tuple(reversed(chain)))


def _topological(sub: Mapping[str, Sequence[str]]) -> list[str]:
    """Names of an acyclic graph, each after everything it needs (Kahn's algorithm, stable by name)."""
    waiting = {name: len(needs) for name, needs in sub.items()}
    reverse: dict[str, list[str]] = {name: [] for name in sub}
    for name, needs in sub.items():
        for need in needs:
            reverse[need].append(name)
    ready = sorted(name for name, count in waiting.items() if count == 0)  # a sorted list is a heap
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for following in reverse[name]:
            waiting[following] -= 1
            if waiting[following] == 0:
                heapq.heappush(ready, following)
    if len(order) != len(sub):
        raise ValueError(f"the dependency graph has a cycle: {cycle(sub)}")
    return order
