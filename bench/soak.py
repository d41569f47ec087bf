"""Chaos soak: the real daemon (`python -m bcd run`) under a supervisor that restarts it when it dies, as
systemd would, on an estate of a few services whose sites are real HTTP targets on loopback, with runbooks
whose `command` steps record each execution (bench/soak_step.py), while chaos strikes at seeded random
moments: kill -9 of the daemon (also in the middle of a step), restarts of a real mosquitto, target flaps
(so that automatic failovers and failbacks happen), SIGHUP storms with good and bad config files, API load
(viewer GETs, operator acks) and MQTT load (signed, unsigned, forged and junk commands).

At the end it checks, from the recorder, the journal (`state/bcd.sqlite`) and every incarnation's stderr:
no step ran twice, no run lost, no step outlived a crash, every transition journaled and logged, memory and
open fds flat; prints a summary and exits 1 if a check failed.

Usage: python bench/soak.py [SECONDS] [--seed N] [--workdir DIR]   (default 600 s; `make soak`)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import soak_checks as checks
from soak_checks import Check, Incarnation, read_recorder, resources, step_alive
from soak_load import ApiLoad, MqttLoad

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helpers: real targets, mosquitto on a free port
from tests.helpers import free_port, start_mosquitto, stop_process  # noqa: E402
from tests.helpers.targets import HttpTarget  # noqa: E402

STEP_SCRIPT = Path(__file__).resolve().parent / "soak_step.py"
STEP_SECONDS = 6  # longer than a restart, so that a step killed mid-way is still running when the next daemon is up
SERVICES = ["payroll", "library", "parking"]
SITES = ["dorset", "hampshire"]
OPERATOR, VIEWER = "soak-operator-token-0123456789", "soak-viewer-token-0123456789"
MQTT_KEY = b"soak-mqtt-command-key-0123456789"
PREFIX = "bcd/soak"
BAD_CONFIGS = {  # name -> how to spoil the good file's text
    "syntax error": lambda text: text + "\nservices: [\n",
    "unknown key": lambda text: text.replace('"instance"', '"bogus": 1, "instance"', 1),
    "timeout over interval": lambda text: text.replace('"timeout": "200ms"', '"timeout": "2s"', 1),
    "duplicate key": lambda text: text.replace('"instance": "soak"', '"instance": "soak", "instance": "soak2"', 1),
    "recursive alias": lambda text: text.replace("{", '{"x": &a [*a], ', 1),
}
OUTCOMES = ("reloaded", "config_reload_failed")
MAX_INCARNATIONS = 500


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Soak:
    def __init__(self, seconds: float, seed: int, work: Path) -> None:
        self.seconds, self.seed, self.work = seconds, seed, work
        self.rng = random.Random(seed)
        self.api_port = free_port()
        self.config_path = work / "bcd.yaml"
        self.recorder = work / "steps.log"
        self.incarnations: list[Incarnation] = []
        self.current: tuple[Incarnation, asyncio.subprocess.Process] | None = None
        self.targets: dict[tuple[str, str], HttpTarget] = {}
        self.broker: subprocess.Popen[bytes] | None = None
        self.broker_port = 0
        self.findings: list[str] = []  # each fails the soak
        self.broker_stops: list[float] = []
        self.alive_at_ready: set[tuple[int, str]] = set()
        self.chaos: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.stopping = False
        self.load_done = False
        self.flaps: set[asyncio.Task[None]] = set()
        self.log_changed = asyncio.Event()
        lo, hi = min(20.0, seconds / 5), min(120.0, seconds / 2)
        self.life_range = (lo, hi)  # how long an incarnation lives (after ready) before its kill -9
        self.api = ApiLoad(f"http://127.0.0.1:{self.api_port}", OPERATOR, VIEWER, SERVICES, self.rng)
        self.mqtt: MqttLoad | None = None
        self.began = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {text}", flush=True)

    # -- the estate -----------------------------------------------------------------------------------------
    def estate(self, description: str = "") -> dict[str, Any]:
        def step(name: str) -> dict[str, Any]:
            argv = [sys.executable, "-S", str(STEP_SCRIPT), str(self.recorder), "{run_id}", name, str(STEP_SECONDS)]
            return {"name": name, "command": {"argv": argv}, "timeout": "30s"}

        services = {
            name: {
                "description": description or f"soak service {name}", "active": "dorset",
                "failover": {"runbook": "move", "mode": "auto", "cooldown": "2s"},
                "failback": {"runbook": "move", "mode": "auto", "cooldown": "2s"},
                "sites": {site: {"probes": [{"name": "health", "http": {"url": self.targets[(name, site)].url}}]}
                          for site in SITES},
            } for name in SERVICES
        }
        return {
            "instance": "soak", "vantage": "dorset", "state_dir": str(self.work / "state"),
            "server": {"listen": f"127.0.0.1:{self.api_port}"},
            "sites": {site: {} for site in SITES},
            "defaults": {"interval": "250ms", "timeout": "200ms", "rise": 2, "fall": 2},
            "services": services,
            "runbooks": {"move": {"description": "Move {service} from {from_site} to {to_site}",
                                  "steps": [step("fence"), step("promote")]}},
            "runner": {"max_concurrent_runs": 4},
            "mqtt": {"url": f"mqtt://127.0.0.1:{self.broker_port}", "topic_prefix": PREFIX,
                     "commands": {"enabled": True, "hmac_key_file": "mqtt_command_key"}},
            "auth": {"anonymous_read": False, "tokens": [
                {"name": "soak-operator", "role": "operator", "sha256": sha256(OPERATOR)},
                {"name": "soak-viewer", "role": "viewer", "sha256": sha256(VIEWER)}]},
        }

    def write_config(self, text: str) -> None:
        """Replace the file atomically, so that a reload never reads half of it."""
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(self.config_path)

    def good_config(self, description: str = "") -> str:
        return json.dumps(self.estate(description), indent=2)

    # -- the daemon under a supervisor ----------------------------------------------------------------------
    async def _spawn(self) -> tuple[Incarnation, asyncio.subprocess.Process]:
        env = {**os.environ, "CREDENTIALS_DIRECTORY": str(self.work / "creds")}
        env.pop("NOTIFY_SOCKET", None)
        spawned = time.time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bcd", "run", "-c", str(self.config_path), cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, limit=1 << 22,
        )
        number = len(self.incarnations) + 1
        inc = Incarnation(number, proc.pid, spawned, self.work / f"daemon-{number}.log")
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
                            self.say(f"incarnation {inc.number} (pid {inc.pid}) ready")
                            self._look_for_orphans(inc)
                            return
                await asyncio.sleep(0.2)
        self.findings.append(f"incarnation {inc.number} was not ready within 60 s")

    def _look_for_orphans(self, inc: Incarnation) -> None:
        """Step processes of earlier incarnations still running now that this one is ready."""
        executions, _ = read_recorder(self.recorder)
        for e in executions:
            if e.start < inc.spawned and e.end is None and step_alive(e.pid):
                self.alive_at_ready.add((e.run_id, e.step))

    async def supervise(self) -> None:
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
                self.findings.append(f"incarnation {inc.number}: its stderr stayed open 5 s after it exited")
            self.current = None
            if not inc.ended_by:
                tail = [line.get("event") for line in inc.lines[-5:]]
                self.findings.append(f"incarnation {inc.number} exited on its own with {inc.exit_code}; last: {tail}")
                quick_deaths = quick_deaths + 1 if inc.died - inc.spawned < 5 else 0
            if self.stopping or quick_deaths >= 5:
                self.stopping = True
                return
            await asyncio.sleep(0.2)  # systemd's RestartSec default: 100 ms

    async def wait_ready(self, timeout: float) -> tuple[Incarnation, asyncio.subprocess.Process] | None:
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

    # -- chaos ----------------------------------------------------------------------------------------------
    async def chaos_loop(self, deadline: float) -> None:
        lives: dict[int, float] = {}
        while time.monotonic() < deadline:
            current = await self.wait_ready(min(60.0, max(0.1, deadline - time.monotonic())))
            if current is None:
                continue
            inc, proc = current
            life = lives.setdefault(inc.number, self.rng.uniform(*self.life_range))
            assert inc.ready_at is not None
            if time.time() - inc.ready_at >= life:
                await self.kill9(inc, proc, mid_step=self.rng.random() < 0.6)
                continue
            action = self.rng.choices(["flap", "broker", "sighup"], [5, 1, 2])[0]
            if action == "flap":
                self.flap(self.rng.choice(SERVICES), self.rng.choice(SITES), self.rng.uniform(1.0, 5.0))
            elif action == "broker":
                await self.restart_broker()
            else:
                await self.sighup_storm(inc, proc)
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))

    async def kill9(self, inc: Incarnation, proc: asyncio.subprocess.Process, mid_step: bool) -> None:
        how = "kill -9"
        if mid_step:
            start = len(inc.lines)
            self.flap(self.rng.choice(SERVICES), "dorset", 3.0)
            self.flap(self.rng.choice(SERVICES), "hampshire", 3.0)
            if await self.wait_log(inc, start, ("step_started",), 1, 25.0):
                await asyncio.sleep(self.rng.uniform(0.1, 1.5))
                how = "kill -9 mid-step"
        if inc.died is not None:
            return
        inc.ended_by, inc.died = how, time.time()
        proc.send_signal(signal.SIGKILL)
        self.chaos[how] += 1
        self.say(f"{how} of incarnation {inc.number} (pid {inc.pid})")

    def flap(self, service: str, site: str, hold: float) -> None:
        target = self.targets[(service, site)]
        if target.status != 200 or len(self.flaps) >= 4:
            return

        async def down_then_up() -> None:
            target.status = 503
            try:
                await asyncio.sleep(hold)
            finally:
                target.status = 200

        task = asyncio.create_task(down_then_up())
        self.flaps.add(task)
        task.add_done_callback(self.flaps.discard)
        self.chaos["target flap"] += 1

    async def restart_broker(self) -> None:
        assert self.broker is not None
        how = self.rng.choice([signal.SIGTERM, signal.SIGKILL])
        self.broker_stops.append(time.time())
        self.broker.send_signal(how)
        await asyncio.to_thread(self.broker.wait, 10)
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        for _ in range(10):
            try:
                self.broker, _broker = await asyncio.to_thread(start_mosquitto, self.work, None, self.broker_port)
                self.chaos[f"broker restart ({how.name})"] += 1
                self.say(f"mosquitto stopped with {how.name} and started again")
                return
            except RuntimeError:
                await asyncio.sleep(0.5)
        self.findings.append(f"mosquitto could not be started again on port {self.broker_port}")
        self.stopping = True

    async def sighup_storm(self, inc: Incarnation, proc: asyncio.subprocess.Process) -> None:
        """k SIGHUPs on one file (good or bad), each reload reported as it should be; then the good file again."""
        variant = self.rng.choice([*BAD_CONFIGS, "good", "good"])
        good = self.good_config(f"reloaded by the soak at {time.time():.0f}")
        self.write_config(good if variant == "good" else BAD_CONFIGS[variant](self.good_config()))
        storms = self.rng.randint(1, 5)
        try:
            await self._hup(inc, proc, storms, variant, "reloaded" if variant == "good" else "config_reload_failed")
        finally:
            self.write_config(self.good_config())
        await self._hup(inc, proc, 1, "good (restored)", "reloaded")
        self.chaos[f"SIGHUP storm ({variant})"] += 1
        self.say(f"{storms} SIGHUP on a {variant} config, then the good one again")

    async def _hup(self, inc: Incarnation, proc: asyncio.subprocess.Process, count: int, variant: str,
                   expected: str) -> None:
        start = len(inc.lines)
        for _ in range(count):
            if inc.died is not None:
                return
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(self.rng.uniform(0.0, 0.05))
        outcomes = await self.wait_log(inc, start, OUTCOMES, count, 10.0 + 2 * count)
        if inc.died is not None and not inc.ended_by:
            self.findings.append(f"SIGHUP x{count} with a {variant} config: the daemon died")
            return
        for line in outcomes:
            self.reloads[f"{variant}: {line['event']}"] += 1
            if line["event"] != expected:
                self.findings.append(f"SIGHUP with a {variant} config: {line['event']}, expected {expected}")
        if len(outcomes) < count and inc.died is None:
            self.reloads[f"{variant}: not reported"] += count - len(outcomes)
            self.findings.append(f"SIGHUP x{count} with a {variant} config: {count - len(outcomes)} reloads "
                                 f"neither `reloaded` nor `config_reload_failed` within {10 + 2 * count} s")

    # -- sampling -------------------------------------------------------------------------------------------
    async def sample_loop(self) -> None:
        while not self.stopping:
            current = self.current
            if current is not None and current[0].ready_at is not None and current[0].died is None:
                with contextlib.suppress(OSError, ValueError, StopIteration):
                    current[0].samples.append(resources(current[0].pid))
            await asyncio.sleep(2.0)

    # -- the whole run --------------------------------------------------------------------------------------
    async def run(self) -> bool:
        (self.work / "creds").mkdir(parents=True, exist_ok=True)
        (self.work / "creds" / "mqtt_command_key").write_bytes(MQTT_KEY)
        for service in SERVICES:
            for site in SITES:
                self.targets[(service, site)] = await HttpTarget().start()
        self.broker, broker = await asyncio.to_thread(start_mosquitto, self.work)
        self.broker_port = broker.port
        self.mqtt = MqttLoad(self.broker_port, PREFIX, MQTT_KEY, services=SERVICES, sites=SITES, rng=self.rng)
        self.write_config(self.good_config())
        deadline = time.monotonic() + self.seconds
        supervisor = asyncio.create_task(self.supervise())
        sampler = asyncio.create_task(self.sample_loop())
        loads = [asyncio.create_task(self.api.run(lambda: self.load_done)),
                 asyncio.create_task(self.mqtt.run(lambda: self.load_done))]
        if await self.wait_ready(90.0) is None:
            self.findings.append("the first daemon never became ready")
        else:
            await self.chaos_loop(deadline)
        self.load_done = True
        self.say("chaos over: calm, then SIGTERM")
        await asyncio.wait(loads, timeout=15)
        for task in [*loads, *self.flaps]:
            task.cancel()
        await self.stop_daemon()
        await asyncio.wait_for(supervisor, 30)
        sampler.cancel()
        return self.report()

    async def stop_daemon(self) -> None:
        """Calm: targets up, good config, running runs finished (up to 60 s); then SIGTERM, as systemd stops."""
        for target in self.targets.values():
            target.status = 200
        self.write_config(self.good_config())
        current = await self.wait_ready(60.0)
        if current is None:
            self.stopping = True
            if self.current is not None:
                self.current[0].ended_by = "kill -9"
                self.current[1].kill()
            return
        inc, proc = current
        start = len(inc.lines)
        finished = 0
        for _ in range(60):
            finished = sum(1 for line in inc.lines[start:] if line.get("event") == "run_finished")
            started = sum(1 for line in inc.lines[start:] if line.get("event") == "run_started")
            services = await self.api.get_json("/api/v1/services")
            busy = [s["name"] for s in (services or {}).get("services", []) if s.get("status") == "failing_over"]
            if not busy and finished >= started:
                break
            await asyncio.sleep(1.0)
        assert self.mqtt is not None
        reply = await self.mqtt.answered(45.0)
        if reply is None:
            self.findings.append("MQTT: a signed command sent after the chaos got no reply within 45 s")
        self.stopping = True
        inc.ended_by = "SIGTERM"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), 15)
            if code != 0 or time.monotonic() - began > 5.5:
                self.findings.append(f"SIGTERM: exit {code} after {time.monotonic() - began:.1f} s (want 0 within 5 s)")
        except TimeoutError:
            self.findings.append("SIGTERM: still running after 15 s; killed")
            proc.kill()
        inc.died = time.time()

    def cleanup(self) -> None:
        """End what this soak started: the daemon, mosquitto, and step processes left running."""
        if self.current is not None and self.current[1].returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.current[1].kill()
        if self.broker is not None and self.broker.poll() is None:
            stop_process(self.broker)
        executions, _ = read_recorder(self.recorder)
        for e in executions:
            if e.end is None and step_alive(e.pid):
                self.alive_at_ready.add((e.run_id, e.step))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(e.pid, signal.SIGKILL)

    # -- the verdict ----------------------------------------------------------------------------------------
    def report(self) -> bool:
        self.cleanup()
        assert self.mqtt is not None
        self.findings += [f"API: {line}" for line in self.api.server_errors]
        self.findings += [f"MQTT: {line}" for line in self.mqtt.wrongly_accepted]
        executions, bad = read_recorder(self.recorder)
        journal = checks.read_journal(self.work / "state" / "bcd.sqlite")
        ran_on, gap = checks.check_ran_on(executions, journal, self.incarnations, self.alive_at_ready)
        results: list[Check] = [
            checks.check_steps_once(executions, bad),
            checks.check_runs_kept(executions, journal),
            ran_on,
            checks.check_transitions(journal, self.incarnations),
            checks.check_memory(self.incarnations),
            checks.check_fds(self.incarnations),
            checks.check_logs(self.incarnations, self.broker_stops),
            Check("no other finding", not self.findings, f"{len(self.findings)} findings", tuple(self.findings)),
        ]
        assert self.mqtt is not None
        figures = {
            "incarnations": Counter(i.ended_by or "died on its own" for i in self.incarnations),
            "chaos": self.chaos, "reloads": self.reloads, "API": self.api.counts, "MQTT": self.mqtt.counts,
            "MQTT replies": self.mqtt.replies,
        }
        print(f"\nchaos soak: {self.seconds:.0f} s, seed {self.seed}, work dir {self.work}")
        checks.print_summary(figures, gap, results)
        ok = all(c.ok for c in results)
        print(f"\nsoak {'passed' if ok else 'FAILED'}")
        return ok


async def main_async(args: argparse.Namespace, work: Path) -> bool:
    soak = Soak(args.seconds, args.seed, work)
    print(f"chaos soak for {args.seconds:.0f} s, seed {args.seed}, work dir {work}", flush=True)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await soak.run()
    finally:
        soak.cleanup()
        for target in soak.targets.values():
            await target.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("duration", nargs="?", type=float, help="seconds of chaos (default 600)")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a new temp dir)")
    args = parser.parse_args()
    args.seconds = args.duration if args.duration is not None else args.seconds
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bcd-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return 0 if asyncio.run(main_async(args, work)) else 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything the soak started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
