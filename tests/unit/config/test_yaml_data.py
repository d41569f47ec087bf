"""yaml_data.load builds what yaml.safe_load builds, from the parser's events (no node tree)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bcd.config import yaml_data

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


# -------------------------------------------------------------------------------------------------------------
# Limits, checked while reading: nothing grows before they are enforced


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, cur in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(("text", "problem", "line"), [
    ("a: &x [*x]\n", "alias *x refers to a collection that contains it", 1),
    ("a: &x {b: [1, *x]}\n", "alias *x refers to a collection that contains it", 1),
    ("a:\n  b: " + "[" * 900 + "]" * 900 + "\n", "collections nested deeper than 64 levels", 2),
    ("a: " + "[" * 64 + "]" * 64 + "\n", "collections nested deeper than 64 levels", 1),
    ("a: &a " + "[" * 40 + "]" * 40 + "\nb: [[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]\n",
     "alias *a nests collections deeper than 64 levels", 2),
    (BOMB, "aliases add more than 32 MB to the document (at *g)", 8),
])
def test_limits_are_yaml_errors_at_their_line(text: str, problem: str, line: int) -> None:
    with pytest.raises(yaml_data.LimitError) as raised:
        yaml_data.load(text)
    assert raised.value.problem == problem
    assert raised.value.problem_mark is not None
    assert raised.value.problem_mark.line + 1 == line


def test_nesting_up_to_the_limit_is_read() -> None:
    assert yaml_data.load("a: " + "[" * 63 + "]" * 63 + "\n")["a"] == yaml.safe_load("[" * 63 + "]" * 63)


def test_merged_defaults_in_every_one_of_many_entries_are_within_the_limits() -> None:
    defaults = "defaults: &d {interval: 10s, timeout: 3s, rise: 2, fall: 3, labels: {team: payroll, tier: gold}}\n"
    text = defaults + "".join(f"s{i}: {{<<: *d, name: n{i}}}\n" for i in range(20_000))
    data = yaml_data.load(text)
    assert data["s19999"] == {"interval": "10s", "timeout": "3s", "rise": 2, "fall": 3,
                              "labels": {"team": "payroll", "tier": "gold"}, "name": "n19999"}


def test_a_document_over_the_size_limit_is_refused_before_parsing() -> None:
    with pytest.raises(yaml_data.LimitError) as raised:
        yaml_data.load("a: 1\n" + "#" * yaml_data.MAX_BYTES)
    assert raised.value.problem == yaml_data.TOO_LARGE


def test_unsupported_tags_are_loaded_within_the_limits_too() -> None:
    assert yaml_data.load("s: !!set {a, b}\n") == {"s": {"a", "b"}}
    with pytest.raises(yaml_data.LimitError):
        yaml_data.load("s: !!set {a, b}\nx: &x [*x]\n")


# -------------------------------------------------------------------------------------------------------------
# Duplicate keys: the data is safe_load's (the last wins), and every duplicate is noted with both lines


def test_duplicate_keys_are_noted_at_every_level() -> None:
    text = (
        "a: 1\n"
        "b:\n"
        "  list:\n"
        "    - {x: 1, y: 2, x: 3}\n"
        "  c: 1\n"
        "  c: 2\n"
        "a: 2\n"
        "m: {<<: {k: 1}, k: 2}\n"
    )
    document = yaml_data.read(text)
    assert document.data == yaml.safe_load(text)
    assert document.duplicates == [
        yaml_data.Duplicate(("b", "list", 0, "x"), 4, 4),
        yaml_data.Duplicate(("b", "c"), 6, 5),
        yaml_data.Duplicate(("a",), 7, 1),
    ]


def test_no_duplicates_in_an_ordinary_document() -> None:
    assert yaml_data.read("a: {b: 1, c: [{b: 1}, {b: 2}]}\nb: 1\n").duplicates == []
