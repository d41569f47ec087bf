"""One `bcd run` under a supervisor for the chaos soak (bench/soak.py): restarted when it dies, as systemd
would; every incarnation's stderr kept (in memory, parsed, and in `daemon[-NAME]-N.log`), its readiness,
its end and how it came, and its memory and open fds sampled; and a `Member` of the soak: one such daemon with
its API and MQTT load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from soak_checks import Incarnation, StepRun, resources
from soak_load import ApiLoad, MqttLoad

MAX_INCARNATIONS = 500
Current = tuple[Incarnation, asyncio.subprocess.Process]


class Supervised:
    def __init__(self, name: str, config_path: Path, api_port: int, work: Path, *, env: dict[str, str],
                 findings: list[str], say: Callable[[str], None]) -> None:
        self.name, self.config_path, self.api_port, self.work = name, config_path, api_port, work
        self.env, self.findings, self.say = env, findings, say
        self.incarnations: list[Incarnation] = []
        self.current: Current | None = None
        self.stopping = False
        self.log_changed = asyncio.Event()
        self.on_ready: Callable[[Incarnation], None] = lambda inc: None

    @property
    def label(self) -> str:
        return f"{self.name} " if self.name else ""

    async def _spawn(self) -> Current:
        spawned = time.time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bcd", "run", "-c", str(self.config_path), cwd=Path(__file__).parent.parent,
            env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=1 << 22,
        )
        number = len(self.incarnations) + 1
        log = self.work / (f"daemon-{self.name}-{number}.log" if self.name else f"daemon-{number}.log")
        inc = Incarnation(number, proc.pid, spawned, log)
        self.incarnations.append(inc)
        return inc, proc

    async def _read_log(self, inc: Incarnation, stream: asyncio.StreamReader) -> None:
        with inc.log_path.open("wb") as out:
            async for raw in stream:
                out.write(raw)
                try:
                    line = json.loads(raw)
                except ValueError:
                    line = {"event": "raw", "line": raw.decode(errors="replace").rstrip()}
                inc.lines.append(line if isinstance(line, dict) else {"event": "raw", "line": str(line)})
                self.log_changed.set()

    async def _await_ready(self, inc: Incarnation) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for _ in range(300):  # 60 s
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"http://127.0.0.1:{self.api_port}/readyz") as response:
                        if response.status == 200:
                            inc.ready_at = time.time()
                            self.say(f"{self.label}incarnation {inc.number} (pid {inc.pid}) ready")
                            self.on_ready(inc)
                            return
                await asyncio.sleep(0.2)
        self.findings.append(f"{self.label}incarnation {inc.number} was not ready within 60 s")

    async def supervise(self) -> None:
        """Start the daemon again whenever it ends, until `stopping`; five quick deaths in a row end the soak."""
        quick_deaths = 0
        for _ in range(MAX_INCARNATIONS):
            inc, proc = await self._spawn()
            self.current = (inc, proc)
            assert proc.stderr is not None
            reader = asyncio.create_task(self._read_log(inc, proc.stderr))
            ready = asyncio.create_task(self._await_ready(inc))
            inc.exit_code = await proc.wait()
            inc.died = inc.died or time.time()
            ready.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(reader), 5)
            except TimeoutError:  # something else holds the daemon's stderr open: a finding of its own
                reader.cancel()
                self.findings.append(f"{self.label}incarnation {inc.number}: stderr still open 5 s after it exited")
            self.current = None
            if not inc.ended_by:
                tail = [line.get("event") for line in inc.lines[-5:]]
                self.findings.append(f"{self.label}incarnation {inc.number} exited on its own with {inc.exit_code}; "
                                     f"last: {tail}")
                quick_deaths = quick_deaths + 1 if inc.died - inc.spawned < 5 else 0
            if self.stopping or quick_deaths >= 5:
                self.stopping = True
                return
            await asyncio.sleep(0.2)  # systemd's RestartSec default: 100 ms

    async def wait_ready(self, timeout: float) -> Current | None:
        for _ in range(int(timeout * 10)):
            current = self.current
            if current is not None and current[0].ready_at is not None and current[0].ended_by == "":
                return current
            if self.stopping:
                return None
            await asyncio.sleep(0.1)
        return None

    async def wait_log(self, inc: Incarnation, start: int, events: tuple[str, ...], count: int,
                       timeout: float) -> list[dict[str, Any]]:
        """The first `count` lines from index `start` whose event is one of `events` (fewer on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in inc.lines[start:] if line.get("event") in events]
            left = deadline - time.monotonic()
            if len(found) >= count or left <= 0 or inc.died is not None:
                return found[:count]
            self.log_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.log_changed.wait(), min(left, 1.0))

    def kill9(self, inc: Incarnation, proc: asyncio.subprocess.Process, how: str) -> None:
        inc.ended_by, inc.died = how, time.time()
        proc.send_signal(signal.SIGKILL)
        self.say(f"{how} of {self.label}incarnation {inc.number} (pid {inc.pid})")

    async def terminate(self, current: Current) -> None:
        """SIGTERM, as systemd stops: exit 0 within 5 s is expected."""
        inc, proc = current
        self.stopping = True
        inc.ended_by = "SIGTERM"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), 15)
            if code != 0 or time.monotonic() - began > 5.5:
                self.findings.append(f"{self.label}SIGTERM: exit {code} after {time.monotonic() - began:.1f} s "
                                     "(want 0 within 5 s)")
        except TimeoutError:
            self.findings.append(f"{self.label}SIGTERM: still running after 15 s; killed")
            proc.kill()
        inc.died = time.time()

    def kill_now(self) -> None:
        """On the way out (also on Ctrl-C): kill -9 whatever incarnation runs."""
        self.stopping = True
        if self.current is not None and self.current[1].returncode is None:
            self.current[0].ended_by = self.current[0].ended_by or "kill -9"
            with contextlib.suppress(ProcessLookupError):
                self.current[1].kill()

    async def sample_loop(self) -> None:
        while not self.stopping:
            current = self.current
            if current is not None and current[0].ready_at is not None and current[0].died is None:
                with contextlib.suppress(OSError, ValueError, StopIteration):
                    current[0].samples.append(resources(current[0].pid))
            await asyncio.sleep(2.0)


def daemon_env(work: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(work / "creds"), **extra}
    env.pop("NOTIFY_SOCKET", None)
    return env


@dataclass
class Member:
    """One daemon of the soak (the only one, named "", or a cluster vantage) and its load."""

    name: str
    port: int
    daemon: Supervised
    api: ApiLoad
    mqtt: MqttLoad
    alive_at_ready: set[tuple[int, str]] = field(default_factory=set)

    @property
    def state(self) -> Path:
        return self.daemon.work / (f"state-{self.name}" if self.name else "state")

    @property
    def prefix(self) -> str:
        return f"bcd/soak-{self.name}" if self.name else "bcd/soak"

    def executions(self, all_executions: list[StepRun]) -> list[StepRun]:
        """This member's step executions, with the step names as its journal has them."""
        mark = f"{self.name}." if self.name else ""
        return [replace(e, step=e.step.removeprefix(mark)) for e in all_executions
                if e.step.startswith(mark) and (self.name or "." not in e.step)]
