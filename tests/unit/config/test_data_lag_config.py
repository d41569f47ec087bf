"""`data_lag:` in the config: a site that measures its lag in a service without an rpo gets a warning at its
line (the lag is shown but holds nothing back); with an rpo, here or under defaults, none."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd import config as bcd_config

CONFIG = """\
sites: {{dorset: {{}}, hampshire: {{}}}}
{defaults}
services:
  payroll:
    active: dorset
    sites:
      dorset:
        probes: [{{name: web, tcp: {{host: 127.0.0.1, port: 443}}}}]
      hampshire:
        probes: [{{name: replica, command: {{argv: [/bin/true]}}}}]
        data_lag: {{probe: replica, value: lag}}
"""


@pytest.mark.parametrize(("defaults", "warned"), [
    ("", True),
    ("defaults: {objectives: {rto: 1h}}", True),
    ("defaults: {objectives: {rpo: 5m}}", False),
])
def test_a_data_lag_without_an_rpo_is_warned_about(tmp_path: Path, defaults: str, warned: bool) -> None:
    path = tmp_path / "bcd.yaml"
    path.write_text(CONFIG.format(defaults=defaults))
    warnings = bcd_config.load(path).warnings
    expected = (f"{path}:11: services.payroll.sites.hampshire.data_lag: warning: no rpo (objectives.rpo, or under "
                "defaults): the lag is shown but blocks nothing")
    assert warnings == ((expected,) if warned else ())
