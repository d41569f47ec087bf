"""Perfdata read into numbers: base units for the metrics, the plugin's own words for the API."""

from __future__ import annotations

import pytest

from bcd.probes.perfdata import as_json, base_value, perfdata_entry, samples

BASE_VALUES = [
    # (item text, value in base units)
    ("12ms;100;200;0;", 0.012),
    ("1.5s", 1.5),
    ("250us", 0.00025),
    ("42%;80;90", 0.42),
    ("2KB", 2048.0),
    ("3MB", 3 * 1024.0**2),
    ("1.5GB", 1.5 * 1024.0**3),
    ("1TB", 1024.0**4),
    ("4MiB", 4 * 1024.0**2),
    ("512B", 512.0),
    ("7c", 7.0),
    ("0.5;1;2;0;", 0.5),
    ("-3", -3.0),
    ("21.5C", 21.5),  # a unit bcd does not know: the number as reported
    ("1e3", 1000.0),
    ("U", None),
    ("U;1;2", None),
    ("fast", None),
    ("1e999", None),  # not finite
    ("", None),
]


@pytest.mark.parametrize(("text", "value"), BASE_VALUES, ids=[row[0] or "empty" for row in BASE_VALUES])
def test_base_value(text: str, value: float | None) -> None:
    assert base_value(text) == (pytest.approx(value) if value is not None else None)


def test_the_api_shows_what_the_plugin_said() -> None:
    assert as_json("time", "12ms;100;200;0;") == {
        "label": "time", "value": 12.0, "unit": "ms", "warn": "100", "crit": "200", "min": 0.0, "max": None,
    }
    assert as_json("used", "42%;@10:20;~:90;0;100") == {
        "label": "used", "value": 42.0, "unit": "%", "warn": "@10:20", "crit": "~:90", "min": 0.0, "max": 100.0,
    }
    assert as_json("load", "U") == {
        "label": "load", "value": None, "unit": "", "warn": None, "crit": None, "min": None, "max": None,
    }


def test_a_probe_without_perfdata_keeps_its_entry_as_it_was() -> None:
    assert perfdata_entry(()) == {}
    assert perfdata_entry((("a", "1"),)) == {"perfdata": [as_json("a", "1")]}


def test_samples_leave_out_unknown_values_and_repeated_labels() -> None:
    items = (("a", "1ms"), ("b", "U"), ("a", "2ms"), ("c", "50%"))
    assert list(samples(items)) == [("a", 0.001), ("c", 0.5)]
