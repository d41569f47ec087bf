"""Estates that several tests share: config text for in-process tests (parsed by each test with
`bcd.config.parse`), and config data for daemons (written by `tests.helpers.daemon.write_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PAYROLL = """
instance: unit
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 10s, timeout: 3s, rise: 1, fall: 1}}
runbooks:
  move: {{steps: [{step}]}}
services:
  payroll:
    active: dorset
    failover: {{runbook: move, mode: {mode}, cooldown: {cooldown}}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
{extra}"""


def payroll(state: Path, *, step: str, mode: str, extra: str = "", cooldown: str = "0s") -> str:
    """`payroll`, active in dorset, standby in hampshire (probes that never run: observations are fed in by the
    test), failed over by the runbook `move` of one `step` (YAML flow text) in `mode` with `cooldown`; `extra` is
    appended (at the top level, or indented by two: another service)."""
    return PAYROLL.format(state=state, step=step, mode=mode, extra=extra, cooldown=cooldown)


def payroll_service(dorset: str, hampshire: str, **fields: Any) -> dict[str, Any]:
    """`payroll` as data: active in dorset, each site checked by one HTTP probe `health` of the URL given
    (dorset's, hampshire's); `fields` (failover, labels, ...) added."""
    return {"active": "dorset", **fields, "sites": {
        "dorset": {"probes": [{"name": "health", "http": {"url": dorset}}]},
        "hampshire": {"probes": [{"name": "health", "http": {"url": hampshire}}]},
    }}
