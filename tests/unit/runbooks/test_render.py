"""Filling templates into step inputs, and masking secrets before inputs are journaled or shown."""

from __future__ import annotations

from typing import Any

import pytest

from bcd.runbooks.render import MASK, mask, render

VARIABLES = {"service": "payroll", "from_site": "dorset", "to_site": "hampshire", "run_id": "7", "trigger": "auto"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{service}", "payroll"),
        ("/dns/{service}/{to_site}?run={run_id}", "/dns/payroll/hampshire?run=7"),
        ("{from_site}->{to_site} by {trigger}", "dorset->hampshire by auto"),
        ('{{"service": "{service}"}}', '{"service": "payroll"}'),
        ("no templates", "no templates"),
        ("", ""),
        ("{unknown}", "{unknown}"),  # config validation rejects these; rendering leaves them be
    ],
)
def test_render_fills_templates_in_strings(value: str, expected: str) -> None:
    assert render(value, VARIABLES) == expected


def test_render_walks_dicts_and_lists_but_keeps_keys_and_other_types() -> None:
    value: dict[str, Any] = {
        "argv": ["/usr/bin/fence", "--service={service}", "{to_site}"],
        "headers": {"X-{service}": "{run_id}"},
        "retain": True,
        "qos": 1,
        "nested": [{"to": "{to_site}"}],
        "none": None,
    }
    assert render(value, VARIABLES) == {
        "argv": ["/usr/bin/fence", "--service=payroll", "hampshire"],
        "headers": {"X-{service}": "7"},
        "retain": True,
        "qos": 1,
        "nested": [{"to": "hampshire"}],
        "none": None,
    }


def test_render_leaves_its_input_untouched() -> None:
    value = {"argv": ["{service}"]}
    render(value, VARIABLES)
    assert value == {"argv": ["{service}"]}


@pytest.mark.parametrize(
    "key", ["Authorization", "authorization", "X-Auth-Token", "token", "client_secret", "password", "passwd",
            "X-Api-Key", "api_key", "apikey", "Cookie", "Set-Cookie"],
)
def test_values_under_secret_looking_keys_are_masked(key: str) -> None:
    assert mask({"headers": {key: "Bearer abc", "Accept": "text/plain"}}, frozenset()) == {
        "headers": {key: MASK, "Accept": "text/plain"}
    }


def test_known_secret_strings_are_masked_wherever_they_appear() -> None:
    value = {
        "url": "https://dns.example/api?key=hunter2",
        "argv": ["/usr/bin/fence", "--password-file=/x", "hunter2"],
        "json": {"note": "token hunter2 and hunter2", "count": 3},
    }
    assert mask(value, frozenset({"hunter2", ""})) == {
        "url": "https://dns.example/api?key=***",
        "argv": ["/usr/bin/fence", "--password-file=/x", "***"],
        "json": {"note": "token *** and ***", "count": 3},
    }


def test_masking_leaves_other_values_and_its_input_untouched() -> None:
    value = {"headers": {"Authorization": "Bearer abc"}, "retain": True, "qos": 1, "body": None}
    masked = mask(value, frozenset({"abc"}))
    assert masked == {"headers": {"Authorization": MASK}, "retain": True, "qos": 1, "body": None}
    assert value["headers"] == {"Authorization": "Bearer abc"}
