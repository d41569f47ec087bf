"""Durations in the config: `500ms`, `10s`, `2m`, `1h`, `14d`, or a bare number of seconds."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from bcd.durations import Duration, format_duration, parse_between, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("10s", 10.0),
        ("0s", 0.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("14d", 14 * 86400.0),
        ("1.5h", 5400.0),
        ("0.25s", 0.25),
        (" 10s ", 10.0),
        ("10 s", 10.0),
        (10, 10.0),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_parse(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10", "expected a duration such as 500ms, 10s, 2m, 1h; got '10'"),
        ("10 seconds", "got '10 seconds'"),
        ("1h30m", "got '1h30m'"),
        ("10S", "got '10S'"),
        ("1w", "got '1w'"),
        ("ms", "got 'ms'"),
        ("", "got ''"),
        (".5s", "got '.5s'"),
        ("-5s", "got '-5s'"),
        ("1e3s", "got '1e3s'"),
        (None, "got None"),
        ([10], "got [10]"),
        (True, "expected a duration such as 500ms, 10s, 2m, 1h"),
        (False, "expected a duration such as 500ms, 10s, 2m, 1h"),
        (-1, "a duration cannot be negative"),
        (-0.5, "a duration cannot be negative"),
        (math.inf, "a duration must be finite; got inf"),
        (-math.inf, "a duration must be finite"),
        (math.nan, "a duration must be finite; got nan"),
        ("9" * 400 + "d", "a duration must be finite"),
    ],
)
def test_parse_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.001, "1ms"),
        (0.5, "500ms"),
        (1.0, "1s"),
        (1.5, "1500ms"),
        (10.0, "10s"),
        (59.0, "59s"),
        (60.0, "1m"),
        (90.0, "90s"),
        (120.0, "2m"),
        (3600.0, "1h"),
        (5400.0, "90m"),
        (36 * 3600.0, "36h"),
        (86400.0, "1d"),
        (14 * 86400.0, "14d"),
        (10, "10s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


SCHEMA_PATTERN = re.compile(TypeAdapter(Duration).json_schema()["pattern"])
units = st.sampled_from(["ms", "s", "m", "h", "d"])


@given(amount=st.integers(min_value=0, max_value=10**9), unit=units)
def test_round_trip(amount: int, unit: str) -> None:
    seconds = parse_duration(f"{amount}{unit}")
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == text  # the formatted form is canonical
    assert SCHEMA_PATTERN.fullmatch(text)


@given(milliseconds=st.integers(min_value=0, max_value=10**12))
def test_format_picks_the_largest_exact_unit(milliseconds: int) -> None:
    text = format_duration(milliseconds / 1000)
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    assert match is not None
    amount, unit = int(match[1]), match[2]
    assert parse_duration(text) == milliseconds / 1000
    per_larger_unit = {"ms": 1000, "s": 60, "m": 60, "h": 24}
    if amount and unit in per_larger_unit:
        assert amount % per_larger_unit[unit] != 0, "a larger unit would have been exact"


class Timed(BaseModel):
    every: Duration
    within: Duration | None = None


def test_in_a_model() -> None:
    timed = Timed.model_validate({"every": "2m", "within": 1.5})
    assert (timed.every, timed.within) == (120.0, 1.5)
    assert timed.model_dump() == {"every": "2m", "within": "1500ms"}
    assert Timed.model_validate(timed.model_dump()) == timed


def test_in_a_model_error() -> None:
    with pytest.raises(ValidationError) as caught:
        Timed.model_validate({"every": "soon"})
    (error,) = caught.value.errors()
    assert error["loc"] == ("every",)
    assert error["msg"] == "Value error, expected a duration such as 500ms, 10s, 2m, 1h; got 'soon'"


def test_json_schema_is_a_string_with_a_unit() -> None:
    schema = TypeAdapter(Duration).json_schema()
    assert schema["type"] == "string"
    for good in ("500ms", "10s", "2m", "1h", "14d", "1.5h"):
        assert SCHEMA_PATTERN.fullmatch(good)
    for bad in ("10", "1h30m", "10 seconds"):
        assert not SCHEMA_PATTERN.fullmatch(bad)


@pytest.mark.parametrize(("value", "message"), [("0.0000001ms", "must be at least 1s; got '0.0000001ms'"),
                                                ("0s", "must be at least 1s"),
                                                ("99999999999999999d", "must be at most 366d"),
                                                ("367d", "must be at most 366d"), ("soon", "expected a duration")])
def test_parse_between_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_between(value, 1.0, 366 * 86400.0)


def test_parse_between_keeps_the_ends() -> None:
    assert parse_between("1s", 1.0, 366 * 86400.0) == 1.0
    assert parse_between("366d", 1.0, 366 * 86400.0) == 366 * 86400.0
