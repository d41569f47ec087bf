"""`bcd check-config` on runbooks: what it rejects (exit 2, FILE:LINE: path: message) and what it only
warns about (exit 0, a warning line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.cli import main
from tests.helpers.runner_kit import SCRIPTS

CONFIG = """\
sites: {{dorset: {{}}, hampshire: {{}}}}
services:
  payroll:
    active: dorset
    failover: {{runbook: {runbook}, mode: auto}}
    sites:
      dorset: {{probes: [{{name: health, tcp: {{host: 127.0.0.1, port: 9}}}}]}}
      hampshire: {{probes: [{{name: health, tcp: {{host: 127.0.0.1, port: 9}}}}]}}
runbooks:
  move:
    steps:
      - name: switch
        {step}
"""
GOOD_STEP = 'http: {url: "https://dns.example/{service}/{to_site}"}'


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *, runbook: str = "move",
          step: str = GOOD_STEP) -> tuple[int, str, str]:
    path = tmp_path / "bcd.yaml"
    path.write_text(CONFIG.format(runbook=runbook, step=step))
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out.replace(str(path), "FILE"), err.replace(str(path), "FILE")


def test_a_good_runbook_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(tmp_path, capsys)
    assert (code, err) == (0, "")
    assert out.startswith("FILE: OK\n")


@pytest.mark.parametrize(
    ("runbook", "step", "error"),
    [
        ("nope", GOOD_STEP, "FILE:5: services.payroll.failover.runbook: unknown runbook 'nope'"),
        ("move", 'http: {url: "https://dns.example/{nope}"}',
         "FILE:13: runbooks.move.steps.0.http: unknown template {nope}; known: {fence_token}, {from_site}, "
         "{plan}, {plan_run}, {run_id}, {service}, {to_site}, {trigger}"),
        ("move", 'command: {argv: [/bin/true, "{to_site}", "{nope}"]}',
         "FILE:13: runbooks.move.steps.0.command: unknown template {nope}"),
        ("move", "command: {argv: [fence, --now]}",
         "FILE:13: runbooks.move.steps.0.command.argv: argv[0] must be an absolute path, got 'fence'"),
        ("move", "wait_healthy: {site: mars}",
         "FILE:13: runbooks.move.steps.switch.wait_healthy.site: site 'mars' is not declared under sites"),
        ("move", "sleep: {duration: 1s}\n        approval: {}",
         "FILE:12: runbooks.move.steps.0: a step needs exactly one of http, command, mqtt_publish, wait_healthy, "
         "sleep, approval; got 2"),
    ],
    ids=["unknown runbook", "unknown template", "unknown template in argv", "relative command",
         "wait_healthy undeclared site", "two kinds"],
)
def test_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str], runbook: str, step: str, error: str) -> None:
    code, out, err = check(tmp_path, capsys, runbook=runbook, step=step)
    assert code == 2
    assert out == ""
    assert err.splitlines()[0].startswith(error), err


def test_a_command_that_is_not_executable_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "fence"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    code, _, err = check(tmp_path, capsys, step=f"command: {{argv: [{plain}]}}")
    assert code == 2
    assert f"runbooks.move.steps.switch.command.argv: {plain} is not an executable file" in err


def test_a_missing_absolute_command_is_only_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(tmp_path, capsys, step="command: {argv: [/nonexistent/fence, --now]}")
    assert code == 0
    assert err == "FILE:13: runbooks.move.steps.0.command.argv: warning: /nonexistent/fence does not exist on this host\n"
    assert out.startswith("FILE: OK\n")


def test_an_existing_absolute_command_passes_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(tmp_path, capsys, step=f'command: {{argv: [{SCRIPTS / "runbook-record-args"}, "{{run_id}}"]}}')
    assert (code, err) == (0, "")
