"""The `maintenance:` section: repeating and one-off windows, each bad one as FILE:LINE: path: message."""

from __future__ import annotations

import textwrap

import pytest

from bcd.config import ConfigError, parse

PROBES = "sites: {dorset: {probes: [{name: t, tcp: {host: h, port: 1}}]}, hampshire: {probes: [{name: t, tcp: {host: h, port: 1}}]}}"
ESTATE = f"""\
sites: {{dorset: {{}}, hampshire: {{}}}}
services:
  directory: {{active: dorset, labels: {{owner: dorset-cc}}, {PROBES}}}
  sql: {{active: dorset, {PROBES}}}
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(ESTATE + textwrap.dedent(text), "bcd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_repeating_and_one_off_windows() -> None:
    config = parse(ESTATE + textwrap.dedent("""\
        maintenance:
          patch: {sites: [dorset], services: all, every: "second Wednesday of each month 22:00", duration: 4h,
                  timezone: Europe/London, reason: "Dorset patching"}
          once: {sites: [hampshire], services: {labels: {owner: dorset-cc}}, from: "2099-12-10T22:00", for: 2h,
                 reason: "new switch"}
        """), "bcd.yaml")
    patch, once = config.maintenance["patch"], config.maintenance["once"]
    assert (patch.every, patch.duration, patch.timezone, once.duration) == (
        "second Wednesday of each month 22:00", 14400.0, "Europe/London", 7200.0)
    assert once.first_start() is not None and once.first_start().isoformat() == "2099-12-10T22:00:00+00:00"
    assert [once.selects(name, config.services[name]) for name in ("directory", "sql")] == [True, False]


def test_bad_windows_are_located() -> None:
    assert issues_of("""\
        maintenance:
          gone: {sites: [dorset], from: "2020-01-01T10:00", for: 1h, reason: x}
          never: {sites: [dorset], every: "fifth Monday of Feb 10:00", for: 1h, reason: x}
          nowhere: {sites: [nowhere], services: [nosuch], every: "every day 02:00", for: 1h, reason: x}
        """) == [
        "bcd.yaml:6: maintenance.gone.from: the window ended in the past (2020-01-01T10:00:00+00:00)",
        "bcd.yaml:7: maintenance.never.every: 'fifth Monday of Feb 10:00' never fires in the next 8 years",
        "bcd.yaml:8: maintenance.nowhere.sites: site 'nowhere' is not declared under sites",
        "bcd.yaml:8: maintenance.nowhere.services: unknown service 'nosuch'",
    ]


def test_a_window_leaving_a_service_no_site_is_an_error_unless_forced() -> None:
    assert issues_of("""\
        maintenance:
          all: {sites: [dorset, hampshire], services: [sql], every: "every day 02:00", for: 1h, reason: x}
        """) == ["bcd.yaml:6: maintenance.all.sites: would leave sql no site outside maintenance (dorset, "
                 "hampshire); set force: true if that is meant"]
    forced = parse(ESTATE + textwrap.dedent("""\
        maintenance:
          all: {sites: [dorset, hampshire], services: [sql], every: "every day 02:00", for: 1h, reason: x,
                force: true}
        """), "bcd.yaml")
    assert forced.maintenance["all"].force


def test_bad_values() -> None:
    assert issues_of("""\
        maintenance:
          a: {sites: [dorset], every: "every day", for: 1h, reason: x}
          b: {sites: [dorset], every: "every day 02:00", from: "2099-01-01T00:00", for: 1h, reason: x}
          c: {sites: [dorset], every: "every day 02:00", for: 1h, reason: x, timezone: Mars/Olympus}
          d: {sites: [dorset], every: "every day 02:00", for: 500d, reason: x}
        """) == [
        "bcd.yaml:6: maintenance.a.every: expected a time HH:MM at the end of 'every day'",
        "bcd.yaml:7: maintenance.b: a window needs either `every` (repeating) or `from` (one-off), "
        "not both",
        "bcd.yaml:8: maintenance.c.timezone: unknown time zone 'Mars/Olympus' (an IANA name such as "
        "Europe/London)",
        "bcd.yaml:9: maintenance.d.for: must be between 1s and 366d",
    ]
