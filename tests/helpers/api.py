"""The daemon subprocess with two tokens, two sites on real HTTP targets, and a client for its API."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.daemon import DaemonProcess, free_port, running, write_config
from tests.helpers.targets import HttpTarget, two_sites

OPERATOR = "operator-secret-token"
VIEWER = "viewer-secret-token"

CONFIG = """
state_dir: {state}
server: {{listen: "127.0.0.1:{port}"}}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 200ms, timeout: 150ms, rise: 1, fall: 2}}
auth:
  tokens:
    - {{name: alice, role: operator, sha256: {operator}}}
    - {{name: grafana, role: viewer, sha256: {viewer}}}
runbooks:
  move: {{steps: [{{name: pause, sleep: {{duration: 10ms}}}}]}}
  careful: {{steps: [{{name: ask, approval: {{timeout: 1h}}}}]}}
services:
  payroll:
    active: dorset
    labels: {{owner: dorset-cc}}
    failover: {{runbook: move, mode: manual}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "{dorset}"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "{hampshire}"}}}}]}}
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Api(DaemonProcess):
    async def call(self, method: str, path: str, token: str | None = OPERATOR, body: Any = None,
                   raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        async with aiohttp.ClientSession() as session, session.request(
            method, self.url + path, headers=headers, json=body, data=raw
        ) as response:
            text = await response.text()
            parsed = json.loads(text) if response.content_type.endswith("json") else text
            return response.status, response.content_type, parsed

    async def metrics_with(self, token: str) -> str:
        status, _, text = await self.call("GET", "/metrics", token=token)
        assert status == 200, (status, text)
        assert isinstance(text, str)
        return text

    def cli(self, *args: str, token: str = OPERATOR) -> subprocess.CompletedProcess[str]:
        """`bcd ARGS` against this daemon. It blocks: from an async test call it through `asyncio.to_thread`, so
        the event loop goes on serving the targets and recorder the daemon calls while `bcd` starts (a second or
        more under load; blocked that long, a loop's HTTP target misses the daemon's probes and its site goes
        degraded)."""
        env = {"BCD_URL": self.url, "BCD_TOKEN": token, "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-m", "bcd", *args], capture_output=True, text=True, env=env,
                              timeout=30, check=False)


@asynccontextmanager
async def api_daemon(tmp_path: Path, config: str = CONFIG) -> AsyncIterator[tuple[Api, HttpTarget, HttpTarget]]:
    """The daemon on `config` (CONFIG's placeholders filled in), ready, with its two targets; stopped after."""
    async with two_sites() as (dorset, hampshire):
        port = free_port()
        path = write_config(tmp_path / "bcd.yaml", config.format(
            state=tmp_path / "state", port=port, operator=sha(OPERATOR), viewer=sha(VIEWER), dorset=dorset.url,
            hampshire=hampshire.url))
        async with running(Api(path, port)) as daemon:
            yield daemon, dorset, hampshire
            assert await daemon.stop() == 0
