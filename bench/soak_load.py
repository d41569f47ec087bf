"""The chaos soak's load (bench/soak.py): operator and viewer traffic on the API, and signed and unsigned
commands on MQTT, counted by what came back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import aiomqtt


class ApiLoad:
    """GETs of /api/v1/services and /metrics, and acks (with an operator token) of services that are blocked
    or chosen at random. Any 5xx is a finding; refused connections while the daemon is down are counted."""

    def __init__(self, url: str, operator: str, viewer: str, services: list[str], rng: random.Random) -> None:
        self.url, self.operator, self.viewer, self.services, self.rng = url, operator, viewer, services, rng
        self.counts: Counter[str] = Counter()
        self.server_errors: list[str] = []

    async def _call(self, session: aiohttp.ClientSession, method: str, path: str, token: str,
                    body: Any = None) -> Any:
        label = path.rsplit("/", 1)[-1]
        try:
            async with session.request(method, self.url + path, json=body,
                                       headers={"Authorization": f"Bearer {token}"}) as response:
                text = await response.text()
                self.counts[f"{method} {label} {response.status}"] += 1
                if response.status >= 500:
                    self.server_errors.append(f"{method} {path} -> {response.status}: {text[:200]}")
                if response.status == 200 and response.content_type == "application/json":
                    return json.loads(text)
        except aiohttp.ClientConnectionError:
            self.counts[f"{method} {label} connection refused or reset"] += 1
        except TimeoutError:
            self.counts[f"{method} {label} timeout"] += 1
        return None

    async def get_json(self, path: str) -> Any:
        """GET `path` with the viewer's token: the JSON body, or None."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            return await self._call(session, "GET", path, self.viewer)

    async def run(self, until: Callable[[], bool]) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tick = 0
            while not until():
                tick += 1
                services = await self._call(session, "GET", "/api/v1/services", self.viewer)
                if tick % 5 == 0:
                    await self._call(session, "GET", "/metrics", self.viewer)
                blocked = [s["name"] for s in (services or {}).get("services", []) if s.get("status") == "blocked"]
                if tick % 10 == 0 and services is not None:
                    blocked.append(self.rng.choice(self.services))  # an ack nobody needs: 409, never 5xx
                for name in blocked:
                    await self._call(session, "POST", f"/api/v1/services/{name}/ack", self.operator,
                                     {"reason": "soak: re-arm after chaos"})
                await asyncio.sleep(0.2)


def sign(command: dict[str, Any], key: bytes) -> bytes:
    """The README's recipe: HMAC-SHA256 of the canonical JSON without `sig`."""
    body = json.dumps(command, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return json.dumps({**command, "sig": hmac.new(key, body, hashlib.sha256).hexdigest()}).encode()


class MqttLoad:
    """Publishes a command every 0.3 s: signed acks and failovers, and unsigned, forged or junk ones; reads
    the replies. A bad command answered `accepted` is a finding."""

    def __init__(self, port: int, prefix: str, key: bytes, *, services: list[str], sites: list[str],
                 rng: random.Random) -> None:
        self.port, self.prefix, self.key, self.services, self.sites, self.rng = port, prefix, key, services, sites, rng
        self.sent: dict[str, str] = {}  # id -> "signed" | "unsigned" | "forged"
        self.replies: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.wrongly_accepted: list[str] = []
        self.number = 0

    def _command(self, number: int) -> tuple[str, bytes]:
        command_id = f"soak-{number}"
        action = self.rng.choice(["ack", "ack", "failover"])
        command: dict[str, Any] = {"id": command_id, "action": action, "service": self.rng.choice(self.services),
                                   "reason": "soak", "by": "soak", "ts": int(time.time())}
        if action == "failover":
            command["to"] = self.rng.choice(self.sites)
        kind = self.rng.choices(["signed", "unsigned", "forged", "junk"], [6, 2, 1, 1])[0]
        self.sent[command_id] = kind
        if kind == "signed":
            return kind, sign(command, self.key)
        if kind == "unsigned":
            return kind, json.dumps(command).encode()
        if kind == "forged":
            forged = json.loads(sign(command, self.key))
            forged["reason"] = "changed after signing"
            return kind, json.dumps(forged).encode()
        return kind, b'{"id": "' + command_id.encode() + b'", "action": ' + b"[" * 8000  # under 8 KiB, deep

    def _reply(self, message: aiomqtt.Message) -> None:
        command_id = str(message.topic).rsplit("/", 1)[-1]
        text = bytes(message.payload).decode(errors="replace") if isinstance(message.payload, bytes) else ""
        kind = self.sent.get(command_id, "no usable id")
        verdict = text.split(":", 1)[0]
        self.replies[f"{kind} {verdict}"] += 1
        if kind != "signed" and verdict == "accepted":
            self.wrongly_accepted.append(f"{kind} command {command_id} was accepted: {text[:200]}")

    async def _session(self, until: Callable[[], bool]) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, timeout=5) as client:
            await client.subscribe(f"{self.prefix}/replies/#", qos=1)

            async def read() -> None:
                async for message in client.messages:
                    self._reply(message)

            reader = asyncio.create_task(read())
            try:
                while not until():
                    self.number += 1
                    kind, payload = self._command(self.number)
                    await client.publish(f"{self.prefix}/commands", payload, qos=1)
                    self.counts[f"sent {kind}"] += 1
                    await asyncio.sleep(0.3)
                    if reader.done():
                        break
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await reader

    async def answered(self, timeout: float) -> str | None:
        """Publish one signed ack and return the reply to it (None if none came within `timeout`)."""
        command_id = f"soak-final-{time.time_ns()}"
        command = {"id": command_id, "action": "ack", "service": self.services[0], "reason": "soak: is the command "
                   "channel alive?", "by": "soak", "ts": int(time.time())}
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(timeout), aiomqtt.Client("127.0.0.1", self.port, timeout=5) as client:
                await client.subscribe(f"{self.prefix}/replies/{command_id}", qos=1)
                while True:  # again every 5 s: a command sent while bcd reconnects is not delivered to it
                    await client.publish(f"{self.prefix}/commands", sign(command, self.key), qos=1)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5):
                            async for message in client.messages:
                                return bytes(message.payload).decode(errors="replace")
                    command = {**command, "id": f"{command_id}-{time.time_ns()}", "ts": int(time.time())}
                    await client.subscribe(f"{self.prefix}/replies/{command['id']}", qos=1)
        return None

    async def run(self, until: Callable[[], bool]) -> None:
        while not until():
            try:
                await self._session(until)
            except aiomqtt.MqttError:
                self.counts["broker away (reconnect)"] += 1
                await asyncio.sleep(0.5)
