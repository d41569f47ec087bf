"""Estates that several in-process tests share, as config text (parsed by each test with `bcd.config.parse`)."""

from __future__ import annotations

from pathlib import Path

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
