"""Run the real daemon as a subprocess on a config written by the test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bcd", "run", "-c", str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=self.env,
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
