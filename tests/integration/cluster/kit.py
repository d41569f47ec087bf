"""The cluster tests' estate: a real three-member etcd on loopback, `payroll` in dorset (active) and hampshire,
served by HTTP targets that can answer 503 to one vantage only (probes name their vantage in the User-Agent),
a recorder the runbook's steps call, and several `bcd run` subprocesses with different vantages over ONE config
file (port, state directory and vantage come from the environment)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.helpers import estates
from tests.helpers.daemon import free_port
from tests.helpers.etcd import EtcdCluster
from tests.helpers.recorder import Recorder
from tests.integration.runbooks.daemon_kit import OPERATOR_TOKEN, WAIT, Bcd, sha256

__all__ = ["OPERATOR_TOKEN", "WAIT", "Bcd", "ClusterEstate", "Member", "VantageTarget", "gauge"]


def gauge(metrics: str, name: str) -> float | None:
    """The value of an unlabelled sample."""
    match = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    return float(match[1]) if match else None


class VantageTarget:
    """Serves GET /health: `status` to everyone, 503 to the vantages in `down_for`."""

    def __init__(self) -> None:
        self.status = 200
        self.down_for: set[str] = set()
        self.requests: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    async def start(self) -> VantageTarget:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def _health(self, request: web.Request) -> web.Response:
        agent = request.headers.get("User-Agent", "")
        vantage = agent.partition("(vantage ")[2].rstrip(")")
        self.requests[vantage] = self.requests.get(vantage, 0) + 1
        status = 503 if vantage in self.down_for else self.status
        return web.Response(status=status, text="UP" if status == 200 else "DOWN")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Member(Bcd):
    """One cluster member: its vantage, and API helpers for cluster state."""

    def __init__(self, config_path: Path, vantage: str, state_dir: Path, env: dict[str, str] | None = None) -> None:
        port = free_port()
        super().__init__(config_path, port, {"BCD_VANTAGE": vantage, "BCD_PORT": str(port),
                                             "BCD_STATE": str(state_dir), **(env or {})})
        self.vantage = vantage

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines if line.get("event") == event]


class ClusterEstate:
    def __init__(self, tmp_path: Path, etcd: EtcdCluster, dorset: VantageTarget, hampshire: VantageTarget,
                 steps: Recorder, name: str) -> None:
        self.tmp_path = tmp_path
        self.etcd = etcd
        self.dorset = dorset
        self.hampshire = hampshire
        self.steps = steps
        self.name = name
        self.config_path = tmp_path / "bcd.yaml"
        self.members: list[Member] = []

    def step(self, name: str = "switch", path: str = "/switch") -> dict[str, Any]:
        """An http step that POSTs the run's facts and its fencing token to the recorder."""
        return {"name": name, "http": {"url": self.steps.url(path), "json": {
            "to": "{to_site}", "run": "{run_id}", "fence": "{fence_token}"}}}

    def config(self, *, steps: list[dict[str, Any]] | None = None, quorum: str | int = "majority",
               mode: str = "auto") -> dict[str, Any]:
        return {
            "instance": "bcd-{vantage}",
            "state_dir": "${BCD_STATE}",
            "server": {"listen": "127.0.0.1:${BCD_PORT}"},
            "sites": {"dorset": {}, "hampshire": {}, "witness": {}},
            "defaults": {"interval": "250ms", "timeout": "200ms", "rise": 1, "fall": 2},
            "services": {"payroll": estates.payroll_service(
                self.dorset.url, self.hampshire.url, failover={"runbook": "move", "mode": mode, "cooldown": "1h"})},
            "runbooks": {"move": {"steps": steps or [self.step()]}},
            "auth": {"anonymous_read": True,
                     "tokens": [{"name": "olive", "role": "operator", "sha256": sha256(OPERATOR_TOKEN)}]},
            "cluster": {"name": self.name, "etcd": {"endpoints": self.etcd.endpoints}, "lease_ttl": "3s",
                        "call_timeout": "500ms", "quorum": quorum},
        }

    async def start(self, config: dict[str, Any], *vantages: str, env: dict[str, str] | None = None,
                    cluster: dict[str, dict[str, Any]] | None = None) -> list[Member]:
        """Write `config` (once: every member reads the same file, except those given `cluster` settings of their
        own: vantage -> keys of its `cluster:` section), start one member per vantage (with `env` added to its
        environment); return once every member is ready, sees payroll ok and sees every other member's view,
        past its first probes (no site still unknown in it)."""
        text = json.dumps(config, indent=2).replace("bcd-{vantage}", "bcd")
        self.config_path.write_text(text)

        def path(vantage: str) -> Path:
            if vantage not in (cluster or {}):
                return self.config_path
            own = self.tmp_path / f"bcd-{vantage}.yaml"
            own_config = {**config, "cluster": {**config["cluster"], **(cluster or {})[vantage]}}
            own.write_text(json.dumps(own_config, indent=2).replace("bcd-{vantage}", "bcd"))
            return own

        started = [Member(path(vantage), vantage, self.tmp_path / f"state-{vantage}", env) for vantage in vantages]
        self.members.extend(started)
        await asyncio.gather(*(member.start() for member in started))
        await asyncio.gather(*(member.wait_ready(WAIT) for member in started))
        everyone = set(vantages)
        for member in started:
            await member.wait_service(lambda s: s["status"] == "ok" and set(s.get("views", {})) == everyone
                                      and not _unknown_sites(s["views"]))
        return started

    async def dorset_probed(self, members: list[Member], count: int) -> None:
        """Return after every member has probed dorset `count` more times (time passing, as they see it)."""
        goals = {member.vantage: self.dorset.requests.get(member.vantage, 0) + count for member in members}

        async def done() -> bool:
            return all(self.dorset.requests.get(vantage, 0) >= goal for vantage, goal in goals.items())

        await members[0].wait_until(done, WAIT, 0.05)

    async def close(self) -> None:
        for member in self.members:
            if member.running:
                await member.stop()


def _unknown_sites(views: dict[str, Any]) -> list[str]:
    return [f"{vantage}: {site}" for vantage, view in views.items()
            for site, state in view["sites"].items() if state["state"] == "unknown"]
