"""Schemathesis against the daemon subprocess, driven by the OpenAPI document it serves: its coverage, fuzzing
and stateful phases, with an operator token; no 5xx and no response that breaks the document is allowed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.api import CONFIG as API_CONFIG
from tests.helpers.api import OPERATOR, api_daemon
from tests.helpers.daemon import DaemonProcess

# Like the demo estate: two services on two sites, runbooks that pause or wait for an approval, two tokens.
CONFIG = API_CONFIG + """
  social-care:
    active: hampshire
    failover: {{runbook: careful, mode: manual}}
    failback: {{runbook: move, mode: manual}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "{dorset}"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "{hampshire}"}}}}]}}
"""
MAX_EXAMPLES = 50  # about 20 s on this 2-core machine (the budget is about 60 s)
# Real names often enough that requests get past the 404s into the handlers.
SCHEMATHESIS_TOML = """
[dictionaries.services]
values = ["payroll", "social-care"]
[dictionaries.sites]
values = ["dorset", "hampshire"]

[dictionaries.durations]
values = ["30m", "2h", "1d"]

[parameters]
"path.service" = {dictionary = "services", probability = 0.8}
"query.service" = {dictionary = "services", probability = 0.5}
"query.site" = {dictionary = "sites", probability = 0.5}
"body.site" = {dictionary = "sites", probability = 0.5}
"body.to" = {dictionary = "sites", probability = 0.5}
"body.duration" = {dictionary = "durations", probability = 0.5}
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    async with api_daemon(tmp_path, CONFIG) as (started, _, _):
        yield started


@pytest.mark.timeout(240)
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_TOML)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{daemon.url}/api/v1/openapi.json",
        "--phases", "coverage,fuzzing,stateful", "--checks", "not_a_server_error,response_schema_conformance,negative_data_rejection",
        "--header", f"Authorization: Bearer {OPERATOR}", "--max-examples", str(MAX_EXAMPLES), "--seed", "11",
        "--workers", "1", "--request-timeout", "10", "--no-color", "--exclude-path", "/api/v1/events/stream",
    ]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=200,
                                     check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
    status, _ = await daemon.get("/healthz")
    assert status == 200
