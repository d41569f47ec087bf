"""yaml_data.load builds what yaml.safe_load builds, from the parser's events (no node tree)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bcd import yaml_data

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.dates(min_value=datetime.date(1900, 1, 1)),
)
keys = st.one_of(st.text(max_size=10), st.integers(), st.booleans())
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(data=documents, flow=st.sampled_from([None, True, False]))
def test_same_data_as_safe_load(data: Any, flow: bool | None) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    assert yaml_data.load(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text", [
    "",
    "# only a comment\n",
    "a: 1\nb: [1, 2.5, true, null, ~, '3', 0x1f, 0o17, .inf, 2001-12-14t21:59:43.10-05:00]\n",
    "base: &b {x: 1, y: 2}\nuse: *b\n",
    "base: &b {x: 1, y: 2}\nover: {<<: *b, y: 3, z: 4}\n",
    "one: &o {x: 1, w: 1}\ntwo: &t {x: 2, v: 2}\nm: {<<: [*o, *t], q: 0}\n",
    "m: {y: 3, <<: {y: 1, z: 2}}\n",
    "list: &l [1, 2]\nagain: *l\n",
    "s: !!str 123\ni: !!int '7'\nf: !!float '1'\nb: !!binary aGVsbG8=\n",
    "set: !!set {a, b}\n",
    "o: !!omap [{a: 1}, {b: 2}]\n",
    "? [1, 2]\n: x\n",
    "'<<': literal key\n",
    "multi: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "a: 1\na: 2\n",
])
def test_same_data_or_same_error_as_safe_load(text: str) -> None:
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        with pytest.raises(yaml.YAMLError) as raised:
            yaml_data.load(text)
        assert type(raised.value).__name__ in {type(exc).__name__, "ComposerError", "ConstructorError"}
        return
    assert yaml_data.load(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("a: *nowhere\n", "found undefined alias"),
    ("a: 1\n---\nb: 2\n", "but found another document"),
    ("a: [1, 2\n", ""),
    ("m: {<<: 3}\n", "expected a mapping or list of mappings for merging"),
])
def test_errors_are_yaml_errors_with_a_place(text: str, problem: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as raised:
        yaml_data.load(text)
    assert problem in str(raised.value)
    assert raised.value.problem_mark is not None


def test_anchored_collections_are_shared_like_safe_load() -> None:
    data = yaml_data.load("base: &b {x: [1]}\nuse: *b\n")
    assert data["use"] is data["base"]


def test_compose_gives_lines() -> None:
    root = yaml_data.compose("a: 1\nb:\n  c: 2\n")
    assert isinstance(root, yaml.MappingNode)
    assert root.value[1][1].value[0][0].start_mark.line == 2
