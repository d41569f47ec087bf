"""DNS rebinding: a request whose Host header names another server gets 421 problem+json, except /healthz and
/readyz; the loopback names and the listen address are answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.api import CONFIG, VIEWER, Api, api_daemon


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Api]:
    async with api_daemon(tmp_path) as (started, _, _):
        yield started


async def test_a_rebound_name_is_refused_and_loopback_names_are_answered(daemon: Api) -> None:
    for path in ("/api/v1/services", "/metrics", "/", "/api/v1/openapi.json"):
        status, content_type, problem = await daemon.call("GET", path, token=VIEWER,
                                                          headers={"Host": f"evil.example:{daemon.port}"})
        assert (status, content_type) == (421, "application/problem+json"), path
        assert "server.allowed_hosts" in problem["detail"]
    for path in ("/healthz", "/readyz"):
        status, _, _ = await daemon.call("GET", path, token=None, headers={"Host": "evil.example"})
        assert status == 200, path
    for host in (f"localhost:{daemon.port}", f"127.0.0.1:{daemon.port}", f"[::1]:{daemon.port}", "localhost"):
        status, _, _ = await daemon.call("GET", "/api/v1/services", token=VIEWER, headers={"Host": host})
        assert status == 200, host


async def test_configured_allowed_hosts_replace_the_default(tmp_path: Path) -> None:
    config = CONFIG.replace('server: {{listen: "127.0.0.1:{port}"}}',
                            'server: {{listen: "127.0.0.1:{port}", allowed_hosts: [bcd.dorset.example]}}')
    async with api_daemon(tmp_path, config) as (daemon, _, _):
        status, _, _ = await daemon.call("GET", "/api/v1/services", token=VIEWER,
                                         headers={"Host": f"bcd.dorset.example:{daemon.port}"})
        assert status == 200
        status, _, _ = await daemon.call("GET", "/api/v1/services", token=VIEWER, headers={"Host": "localhost"})
        assert status == 421
