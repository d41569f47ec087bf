"""Run the real daemon as a subprocess on a config written by the test: `write_config`, then `Daemons.start`
(the `daemons` fixture) or `running` bring it up and wait until it serves, and stop it after the test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.helpers import free_port  # noqa: F401 (callers import the reserved ports from here too)


def metric_value(text: str, sample: str) -> float | None:
    """The value of `sample` (its name and labels as exposed) in a /metrics text; None when it is absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def write_config(path: Path, config: str | Mapping[str, Any]) -> Path:
    """Write `config` to `path`: YAML text as it is, data as JSON (which is YAML)."""
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


class DaemonProcess:
    """`bcd run` in a subprocess, with its stderr (JSON log lines) collected."""

    def __init__(self, config_path: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.log_lines: list[dict[str, Any]] = []
        self._log_changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.preexec_fn: Callable[[], None] | None = None  # run in the child before exec (e.g. to set limits)

    @property
    def running(self) -> bool:
        """Started and not exited yet."""
        return self.proc is not None and self.proc.returncode is None

    def argv(self) -> list[str]:
        """The command that runs the daemon (subclasses run it another way: in a namespace, under a launcher)."""
        return [sys.executable, "-m", "bcd", "run", "-c", str(self.config_path)]

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=self.env, preexec_fn=self.preexec_fn,
        )
        self._reader = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                self.log_lines.append(json.loads(line))
            except ValueError:
                self.log_lines.append({"event": "raw", "line": line})
            self._log_changed.set()

    async def wait_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        """The first log line matching `predicate`, waiting for new lines as they arrive."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for line in self.log_lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.log_lines)
                self._log_changed.clear()
                await self._log_changed.wait()

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as response:
            return response.status, await response.text()

    async def get_json(self, path: str) -> Any:
        status, text = await self.get(path)
        assert status == 200, (status, text)
        return json.loads(text)

    async def wait_until(self, check: Callable[[], Any], timeout: float = 15.0, every: float = 0.1) -> Any:
        """Poll an async check of the daemon's API until it returns something truthy."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    result = await check()
                except (aiohttp.ClientError, AssertionError):
                    result = None
                if result:
                    return result
                await asyncio.sleep(every)

    async def wait_ready(self, timeout: float = 15.0) -> None:
        async def ready() -> bool:
            status, _ = await self.get("/readyz")
            return status == 200

        await self.wait_until(ready, timeout)

    async def metrics(self) -> str:
        status, text = await self.get("/metrics")
        assert status == 200
        return text

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def exit_code(self, timeout: float = 15.0) -> int:
        """Its exit code once it exits by itself (TimeoutError after `timeout`), every line it wrote read."""
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            await self.proc.wait()
        return await self.stop()

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signum)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        if self._reader is not None:
            await self._reader
        return code


async def site_state(daemon: DaemonProcess, service: str, site: str) -> str:
    """The state of `service` at `site` as the daemon's API shows it."""
    data = await daemon.get_json(f"/api/v1/services/{service}")
    state: str = data["sites"][site]["state"]
    return state


async def site_is(daemon: DaemonProcess, service: str, site: str, state: str) -> bool:
    return await site_state(daemon, service, site) == state


async def status_is(daemon: DaemonProcess, service: str, status: str) -> bool:
    data = await daemon.get_json(f"/api/v1/services/{service}")
    return bool(data["status"] == status)


D = TypeVar("D", bound=DaemonProcess)


class Daemons:
    """The daemons a test starts; stop_all() stops every one still running (the `daemons` fixture calls it
    after the test)."""

    def __init__(self) -> None:
        self.started: list[DaemonProcess] = []

    async def start(self, daemon: D, *, ready: bool = True, timeout: float = 15.0) -> D:
        """Start `daemon`; return once it is ready (/readyz: every probe has run once), or at once when not
        `ready` (a test that waits for something else, or for the exit)."""
        self.started.append(daemon)
        await daemon.start()
        if ready:
            await daemon.wait_ready(timeout)
        return daemon

    async def stop_all(self, signum: int = signal.SIGTERM) -> None:
        for daemon in self.started:
            if daemon.running:
                await daemon.stop(signum)


@asynccontextmanager
async def running(daemon: D, *, ready: bool = True, timeout: float = 15.0) -> AsyncIterator[D]:
    """`daemon` started as Daemons.start() does, and stopped when the block ends if it still runs."""
    daemons = Daemons()
    try:
        yield await daemons.start(daemon, ready=ready, timeout=timeout)
    finally:
        await daemons.stop_all()
