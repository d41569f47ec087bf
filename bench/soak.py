"""Chaos soak: the real daemon (`python -m bcd run`) under a supervisor that restarts it when it dies, as
systemd would, on an estate of a few services whose sites are real HTTP targets on loopback, with runbooks
whose `command` steps record each execution (bench/soak_step.py), while chaos strikes at seeded random
moments: kill -9 of the daemon (also in the middle of a step), restarts of a real mosquitto, target flaps
(so that automatic failovers and failbacks happen), SIGHUP storms with good and bad config files, API load
(viewer GETs, operator acks) and MQTT load (signed, unsigned, forged and junk commands). With --cluster, two
daemons (vantages dorset and hampshire) coordinate through a real three-member etcd, whose members are
killed and started again too.

At the end it checks, from the recorder, the journal (`state*/bcd.sqlite`) and every incarnation's stderr:
no step ran twice, no run lost, no step outlived a crash, one run per service at a time, every transition
journaled and logged, memory and open fds flat; prints a summary and exits 1 if a check failed.

Usage: python bench/soak.py [SECONDS] [--seed N] [--workdir DIR] [--cluster]   (default 600 s; `make soak`)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
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

import soak_checks as checks
from soak_checks import Check, Incarnation, StepRun, read_recorder, step_alive
from soak_daemon import Member, Supervised, daemon_env
from soak_load import ApiLoad, MqttLoad

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helpers: real targets, mosquitto and etcd on free ports
from tests.helpers import free_port, start_mosquitto, stop_process  # noqa: E402
from tests.helpers.etcd import EtcdCluster  # noqa: E402
from tests.helpers.targets import HttpTarget  # noqa: E402

STEP_SCRIPT = Path(__file__).resolve().parent / "soak_step.py"
STEP_SECONDS = 6  # longer than a restart, so that a step killed mid-way is still running when the next daemon is up
SERVICES = ["payroll", "library", "parking"]
SITES = ["dorset", "hampshire"]
OPERATOR, VIEWER = "soak-operator-token-0123456789", "soak-viewer-token-0123456789"
MQTT_KEY = b"soak-mqtt-command-key-0123456789"
BAD_CONFIGS = {  # name -> how to spoil the good file's text
    "syntax error": lambda text: text + "\nservices: [\n",
    "unknown key": lambda text: text.replace('"instance"', '"bogus": 1, "instance"', 1),
    "timeout over interval": lambda text: text.replace('"timeout": "200ms"', '"timeout": "2s"', 1),
    "duplicate key": lambda text: text.replace('"instance": ', '"instance": "x", "instance": ', 1),
    "recursive alias": lambda text: text.replace("{", '{"x": &a [*a], ', 1),
}
OUTCOMES = ("reloaded", "config_reload_failed")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Soak:
    def __init__(self, seconds: float, seed: int, work: Path, cluster: bool) -> None:
        self.seconds, self.seed, self.work, self.cluster = seconds, seed, work, cluster
        self.rng = random.Random(seed)
        self.recorder = work / "steps.log"
        self.members: list[Member] = []
        self.targets: dict[tuple[str, str], HttpTarget] = {}
        self.broker: subprocess.Popen[bytes] | None = None
        self.broker_port = 0
        self.etcd: EtcdCluster | None = None
        self.findings: list[str] = []  # each fails the soak
        self.broker_stops: list[float] = []
        self.chaos: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.load_done = False
        self.flaps: set[asyncio.Task[None]] = set()
        self.life_range = (min(20.0, seconds / 5), min(120.0, seconds / 2))  # an incarnation's life before kill -9
        self.began = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {text}", flush=True)

    # -- the estate -----------------------------------------------------------------------------------------
    def estate(self, member: Member, description: str = "") -> dict[str, Any]:
        def step(name: str) -> dict[str, Any]:
            token = f"{member.name}.{name}" if member.name else name
            argv = [sys.executable, "-S", str(STEP_SCRIPT), str(self.recorder), "{run_id}", token, str(STEP_SECONDS)]
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
        config: dict[str, Any] = {
            "instance": f"soak-{member.name}" if member.name else "soak", "vantage": member.name or "dorset",
            "state_dir": str(member.state), "server": {"listen": f"127.0.0.1:{member.port}"},
            "sites": {site: {} for site in SITES},
            "defaults": {"interval": "250ms", "timeout": "200ms", "rise": 2, "fall": 2},
            "services": services,
            "runbooks": {"move": {"description": "Move {service} from {from_site} to {to_site}",
                                  "steps": [step("fence"), step("promote")]}},
            "runner": {"max_concurrent_runs": 4},
            "mqtt": {"url": f"mqtt://127.0.0.1:{self.broker_port}", "topic_prefix": member.prefix,
                     "commands": {"enabled": True, "hmac_key_file": "mqtt_command_key"}},
            "auth": {"anonymous_read": False, "tokens": [
                {"name": "soak-operator", "role": "operator", "sha256": sha256(OPERATOR)},
                {"name": "soak-viewer", "role": "viewer", "sha256": sha256(VIEWER)}]},
        }
        if self.etcd is not None:
            config["cluster"] = {"name": f"soak-{self.seed}", "etcd": {"endpoints": self.etcd.endpoints},
                                 "lease_ttl": "3s", "call_timeout": "500ms", "quorum": "majority"}
        return config

    def write_config(self, member: Member, text: str | None = None) -> None:
        """Replace the file atomically (so that a reload never reads half of it); the good config by default."""
        path = member.daemon.config_path
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text if text is not None else self.good_config(member))
        temporary.replace(path)

    def good_config(self, member: Member, description: str = "") -> str:
        return json.dumps(self.estate(member, description), indent=2)

    def add_member(self, name: str) -> Member:
        port = free_port()
        config = self.work / (f"bcd-{name}.yaml" if name else "bcd.yaml")
        daemon = Supervised(name, config, port, self.work, env=daemon_env(self.work), findings=self.findings,
                            say=self.say)
        api = ApiLoad(f"http://127.0.0.1:{port}", OPERATOR, VIEWER, SERVICES, self.rng)
        mqtt = MqttLoad(self.broker_port, f"bcd/soak-{name}" if name else "bcd/soak", MQTT_KEY, services=SERVICES,
                        sites=SITES, rng=self.rng)
        member = Member(name, port, daemon, api, mqtt)
        daemon.on_ready = lambda inc: self._look_for_orphans(member, inc)
        self.write_config(member)
        self.members.append(member)
        return member

    def _look_for_orphans(self, member: Member, inc: Incarnation) -> None:
        """Step processes of earlier incarnations still running now that this one is ready."""
        executions, _ = read_recorder(self.recorder)
        for e in member.executions(executions):
            if e.start < inc.spawned and e.end is None and step_alive(e.pid):
                member.alive_at_ready.add((e.run_id, e.step))

    # -- chaos ----------------------------------------------------------------------------------------------
    async def chaos_loop(self, deadline: float) -> None:
        lives: dict[tuple[str, int], float] = {}
        while time.monotonic() < deadline:
            member = self.rng.choice(self.members)
            current = await member.daemon.wait_ready(min(60.0, max(0.1, deadline - time.monotonic())))
            if current is None:
                continue
            inc, proc = current
            life = lives.setdefault((member.name, inc.number), self.rng.uniform(*self.life_range))
            assert inc.ready_at is not None
            if time.time() - inc.ready_at >= life:
                await self.kill9(member, mid_step=self.rng.random() < 0.6, deadline=deadline)
                continue
            actions, weights = ["flap", "broker", "sighup", "etcd"], [5, 1, 2, 2 if self.etcd else 0]
            action = self.rng.choices(actions, weights)[0]
            if action == "broker" and time.time() - max(self.broker_stops, default=0.0) < 30:
                action = "flap"  # a broker restart at most every 30 s: bcd's reconnect backoff reaches 30 s
            if action == "flap":
                self.flap(self.rng.choice(SERVICES), self.rng.choice(SITES), self.rng.uniform(1.0, 5.0))
            elif action == "broker":
                await self.restart_broker()
            elif action == "etcd":
                await self.restart_etcd_member()
            else:
                await self.sighup_storm(member, inc, proc)
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))

    async def kill9(self, member: Member, *, mid_step: bool, deadline: float) -> None:
        """kill -9 of `member`'s daemon; mid-step: provoke runs, kill whichever daemon starts a step first."""
        how = "kill -9"
        if mid_step:
            starts = {m.name: len(m.daemon.incarnations[-1].lines) for m in self.members}
            self.flap(self.rng.choice(SERVICES), "dorset", 3.0)
            self.flap(self.rng.choice(SERVICES), "hampshire", 3.0)
            for _ in range(250):  # 25 s at most, and not past the end of the chaos
                if time.monotonic() > deadline:
                    break
                started = [m for m in self.members if any(line.get("event") == "step_started" for line in
                                                          m.daemon.incarnations[-1].lines[starts[m.name]:])]
                if started:
                    member, how = started[0], "kill -9 mid-step"
                    await asyncio.sleep(self.rng.uniform(0.1, 1.5))
                    break
                await asyncio.sleep(0.1)
        current = member.daemon.current
        if current is None or current[0].died is not None or current[0].ended_by:
            return
        member.daemon.kill9(current[0], current[1], how)
        self.chaos[how] += 1

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
        self.load_done = True

    async def restart_etcd_member(self) -> None:
        """kill -9 one etcd member (two of three keep the quorum), then start it again."""
        assert self.etcd is not None
        index = self.rng.randrange(len(self.etcd.members))
        self.etcd.kill(index)
        await asyncio.sleep(self.rng.uniform(1.0, 5.0))
        try:
            await self.etcd.restart(index, timeout=30.0)
        except (TimeoutError, AssertionError) as exc:
            self.findings.append(f"etcd member {index} did not come back: {exc}")
            self.load_done = True
            return
        self.chaos["etcd member kill -9 and restart"] += 1
        self.say(f"etcd member m{index} killed and started again")

    async def sighup_storm(self, member: Member, inc: Incarnation, proc: asyncio.subprocess.Process) -> None:
        """k SIGHUPs on one file (good or bad), each reload reported as it should be; then the good file again."""
        variant = self.rng.choice([*BAD_CONFIGS, "good", "good"])
        good = self.good_config(member, f"reloaded by the soak at {time.time():.0f}")
        self.write_config(member, good if variant == "good" else BAD_CONFIGS[variant](self.good_config(member)))
        storms = self.rng.randint(1, 5)
        try:
            expected = "reloaded" if variant == "good" else "config_reload_failed"
            await self._hup(member, inc, proc, storms, variant=variant, expected=expected)
        finally:
            self.write_config(member)
        await self._hup(member, inc, proc, 1, variant="good (restored)", expected="reloaded")
        self.chaos[f"SIGHUP storm ({variant})"] += 1
        self.say(f"{storms} SIGHUP {'to ' + member.name + ' ' if member.name else ''}on a {variant} config, "
                 "then the good one again")

    async def _hup(self, member: Member, inc: Incarnation, proc: asyncio.subprocess.Process, count: int, *,
                   variant: str, expected: str) -> None:
        """Send `count` SIGHUPs; every reload the daemon then starts (`reloading`) must end in the expected
        outcome. The kernel merges a SIGHUP sent while the last one is still pending, so fewer reloads may
        start (at least one)."""
        start, label = len(inc.lines), member.daemon.label
        for _ in range(count):
            if inc.died is not None:
                return
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(self.rng.uniform(0.0, 0.05))
        started, outcomes = await self._reloads(member, inc, start, 10.0 + 2 * count)
        if inc.died is not None:
            if not inc.ended_by:
                self.findings.append(f"{label}SIGHUP x{count} with a {variant} config: the daemon died")
            return
        if count > started:
            self.reloads["SIGHUPs merged by the kernel"] += count - started
        for line in outcomes:
            self.reloads[f"{variant}: {line['event']}"] += 1
            if line["event"] != expected:
                self.findings.append(f"{label}SIGHUP with a {variant} config: {line['event']}, expected {expected}")
        if started == 0:
            self.findings.append(f"{label}SIGHUP x{count} with a {variant} config: no reload started")
        elif len(outcomes) < started:
            self.reloads[f"{variant}: not reported"] += started - len(outcomes)
            self.findings.append(f"{label}SIGHUP with a {variant} config: {started - len(outcomes)} of {started} "
                                 "reloads neither `reloaded` nor `config_reload_failed` (`reloading` logged)")

    async def _reloads(self, member: Member, inc: Incarnation, start: int, timeout: float
                       ) -> tuple[int, list[dict[str, Any]]]:
        """(reloads started, their outcomes) from line `start`, once each has its outcome and no other reload
        began for 1.5 s (one waiting for the reload lock starts as soon as the last one ends), or at `timeout`."""
        deadline, quiet_since, seen = time.monotonic() + timeout, time.monotonic(), -1
        while True:
            lines = [line for line in inc.lines[start:] if line.get("event") in ("reloading", *OUTCOMES)]
            started = sum(1 for line in lines if line["event"] == "reloading")
            outcomes = [line for line in lines if line["event"] in OUTCOMES]
            if len(lines) != seen:
                seen, quiet_since = len(lines), time.monotonic()
            settled = started >= 1 and len(outcomes) >= started and time.monotonic() - quiet_since >= 1.5
            if settled or time.monotonic() > deadline or inc.died is not None:
                return started, outcomes
            await member.daemon.wait_log(inc, start + len(inc.lines[start:]), ("reloading", *OUTCOMES), 1, 0.5)

    # -- the whole run --------------------------------------------------------------------------------------
    async def run(self) -> bool:
        (self.work / "creds").mkdir(parents=True, exist_ok=True)
        (self.work / "creds" / "mqtt_command_key").write_bytes(MQTT_KEY)
        for service in SERVICES:
            for site in SITES:
                self.targets[(service, site)] = await HttpTarget().start()
        self.broker, broker = await asyncio.to_thread(start_mosquitto, self.work)
        self.broker_port = broker.port
        if self.cluster:
            (self.work / "etcd").mkdir(exist_ok=True)
            self.etcd = EtcdCluster(self.work / "etcd")
            await asyncio.to_thread(self.etcd.start)
        for name in (SITES if self.cluster else [""]):
            self.add_member(name)
        deadline = time.monotonic() + self.seconds
        tasks = [asyncio.create_task(m.daemon.supervise()) for m in self.members]
        samplers = [asyncio.create_task(m.daemon.sample_loop()) for m in self.members]
        loads = [asyncio.create_task(load.run(lambda: self.load_done))
                 for m in self.members for load in (m.api, m.mqtt)]
        ready = [await m.daemon.wait_ready(90.0) for m in self.members]
        if None in ready:
            self.findings.append("a first daemon never became ready")
        else:
            await self.chaos_loop(deadline)
        self.load_done = True
        self.say("chaos over: calm, then SIGTERM")
        await asyncio.wait(loads, timeout=15)
        for task in [*loads, *self.flaps]:
            task.cancel()
        for target in self.targets.values():
            target.status = 200
        for member in self.members:
            self.write_config(member)
        await asyncio.gather(*(self.stop_member(m) for m in self.members))
        await asyncio.wait(tasks, timeout=30)
        for task in samplers:
            task.cancel()
        return self.report()

    async def stop_member(self, member: Member) -> None:
        """Calm: runs in progress finished (up to 60 s), the command channel answers; then SIGTERM."""
        current = await member.daemon.wait_ready(60.0)
        if current is None:
            member.daemon.kill_now()
            return
        inc = current[0]
        start = len(inc.lines)
        for _ in range(60):
            finished = sum(1 for line in inc.lines[start:] if line.get("event") == "run_finished")
            started = sum(1 for line in inc.lines[start:] if line.get("event") == "run_started")
            services = await member.api.get_json("/api/v1/services")
            busy = [s["name"] for s in (services or {}).get("services", []) if s.get("status") == "failing_over"]
            if not busy and finished >= started:
                break
            await asyncio.sleep(1.0)
        if await member.mqtt.answered(45.0) is None:
            self.findings.append(f"{member.daemon.label}MQTT: a signed command sent after the chaos got no reply "
                                 "within 45 s")
        await member.daemon.terminate(current)

    def cleanup(self) -> None:
        """End what this soak started: daemons, mosquitto, etcd, and step processes left running."""
        for member in self.members:
            member.daemon.kill_now()
        if self.broker is not None and self.broker.poll() is None:
            stop_process(self.broker)
        if self.etcd is not None:
            self.etcd.stop_all()
        executions, _ = read_recorder(self.recorder)
        for member in self.members:
            for e in member.executions(executions):
                if e.end is None and step_alive(e.pid):
                    member.alive_at_ready.add((e.run_id, e.step))
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(e.pid, signal.SIGKILL)

    # -- the verdict ----------------------------------------------------------------------------------------
    def member_checks(self, member: Member, executions: list[StepRun], bad: list[str]
                      ) -> tuple[list[Check], list[str], checks.JournalView]:
        self.findings += [f"{member.daemon.label}API: {line}" for line in member.api.server_errors]
        self.findings += [f"{member.daemon.label}MQTT: {line}" for line in member.mqtt.wrongly_accepted]
        mine, incarnations = member.executions(executions), member.daemon.incarnations
        journal = checks.read_journal(member.state / "bcd.sqlite")
        ran_on, gap = checks.check_ran_on(mine, journal, incarnations, member.alive_at_ready)
        results = [
            checks.check_steps_once(mine, bad), checks.check_runs_kept(mine, journal), ran_on,
            checks.check_transitions(journal, incarnations), checks.check_memory(incarnations),
            checks.check_fds(incarnations), checks.check_logs(incarnations, self.broker_stops),
        ]
        if member.name:
            results = [dataclasses.replace(c, name=f"{c.name} ({member.name})") for c in results]
        return results, [f"{member.daemon.label}{line}" for line in gap], journal

    def report(self) -> bool:
        self.cleanup()
        executions, bad = read_recorder(self.recorder)
        results: list[Check] = []
        notes: list[str] = []
        runs: list[tuple[list[StepRun], checks.JournalView, list[Incarnation]]] = []
        for member in self.members:
            more, gap, journal = self.member_checks(member, executions, bad)
            results += more
            notes += gap
            runs.append((member.executions(executions), journal, member.daemon.incarnations))
        results.append(checks.check_one_run_at_a_time(runs))
        counted = Counter(self.findings)
        results.append(Check("no other finding", not self.findings, f"{len(self.findings)} findings",
                             tuple(f"{n}x {line}" if n > 1 else line for line, n in counted.items())))
        figures: dict[str, Counter[str]] = {
            "incarnations": Counter(f"{m.daemon.label}{i.ended_by or 'died on its own'}"
                                    for m in self.members for i in m.daemon.incarnations),
            "chaos": self.chaos, "reloads": self.reloads,
            "API": sum((m.api.counts for m in self.members), Counter()),
            "MQTT": sum((m.mqtt.counts for m in self.members), Counter()),
            "MQTT replies": sum((m.mqtt.replies for m in self.members), Counter()),
        }
        mode = "cluster of 2 daemons, 3 etcd members" if self.cluster else "one daemon"
        print(f"\nchaos soak: {self.seconds:.0f} s, {mode}, seed {self.seed}, work dir {self.work}")
        checks.print_summary(figures, notes, results)
        ok = all(c.ok for c in results)
        print(f"\nsoak {'passed' if ok else 'FAILED'}")
        return ok


async def main_async(args: argparse.Namespace, work: Path) -> bool:
    soak = Soak(args.seconds, args.seed, work, args.cluster)
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
    parser.add_argument("--cluster", action="store_true", help="two daemons over a three-member etcd")
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
