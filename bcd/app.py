"""Composition root: builds every part from the config, runs them, reloads on SIGHUP, stops on SIGTERM.

Lifetimes, one pattern (bcd.lifetime): each long-lived part is an `async def run(ready)` that starts what it runs,
sets `ready` once the next part may rely on it, runs until cancelled and cleans up in its own `finally`. The root
(`Daemon.running`) starts them one after another under one TaskGroup, each once the one before is ready, and
stops them in the reverse order, one at a time, within STOP_TIMEOUT. The order, which matters:

  the state_dir lock and the journal, then every part is made, none started (in the constructor: the scheduler,
  the engine with its runner and cluster link (which re-probes through the scheduler), the view, metrics, plan
  runner, bookings, calendar, drills, operations, web server, MQTT output, alert sender: `Daemon.parts`);
  `server.listen` bound and every probe built (an address in use or an unusable TLS file stops the start here);
  the web server, set up but not yet serving (bcd.web.serving: stops last, so SSE sees the runner's last events);
  the runbook steps' HTTP session; in a cluster the etcd client and the cluster link (before the runner: no
  run without the lock; stopped after it: final run records, then the locks);
  the MQTT output and the alert sender, subscribed to the bus before anything happens (stopped after the
  runner: its last events go out, then `offline`); a flush of the journal's group commit (stopped right after
  the runner, so that its last events are journaled and published while the outputs still run);
  the runner (orphaned runs recovered first, then the engine acts); the plan runner (stopped before the runner: a
  plan run is interrupted, then its moves); the bookings and the calendar; the drills (those left unfinished end
  `interrupted` first); the scheduler (stopped first: no observation starts a run meanwhile); then the web server
  opens on the listeners, and READY=1. The daemon's own loops
  (ticker, systemd, reloads) run in the same TaskGroup, cancelled first; a failing part stops the daemon with its
  error. Only here are the GC and C heap (bcd.heap) tuned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter

from bcd import booked_runs, config_record, drills, heap, sighup, systemd
from bcd import config as config_module
from bcd.booked_runs import BookedRuns
from bcd.broker import steps_broker_link
from bcd.bus import Bus
from bcd.cluster import ClusterLink
from bcd.cluster.member import coordination
from bcd.config import Config, ConfigError, ProbeConfig
from bcd.coordination.etcd import EtcdClient
from bcd.daemon_thread import in_daemon_thread
from bcd.engine import Engine
from bcd.journal import Journal, RunJournal
from bcd.journal.uptime import Uptime
from bcd.lifetime import Lifetimes, Run, closing, leaves
from bcd.model import SETTLED, Observation, ProbeKey, ServiceStatus
from bcd.mqtt.output import MqttOutput
from bcd.operations import Operations
from bcd.outputs.alerts.sender import AlertSender
from bcd.outputs.metrics import (
    AlertCollector,
    ClusterCollector,
    HttpCollector,
    JournalCollector,
    Metrics,
    MqttCollector,
    RunnerCollector,
    SchedulerCollector,
    ShortageCollector,
)
from bcd.outputs.shortages import Shortages
from bcd.plans.runner import PlanRunner, daemon_plans
from bcd.probes.base import Probe, ProbeContext, ProbeSetupError, user_agent
from bcd.probes.registry import build_probe
from bcd.runbooks.runner import RunHooks, Runner
from bcd.runbooks.session import StepSession
from bcd.scheduler import Job, Scheduler
from bcd.state_dir import JOURNAL_NAME, StateLock, set_aside_lost_journal
from bcd.view import EngineView
from bcd.web import listen
from bcd.web.context import WebContext
from bcd.web.server import build_app
from bcd.web.serving import WebServer

log = structlog.get_logger("bcd.app")

STOP_TIMEOUT = 4.0
TICK = 1.0
_PROBE = TypeAdapter(ProbeConfig)  # dumps a probe's config (a pydantic dataclass: no model_dump)


def jobs(config: Config) -> Iterator[Job]:
    for service, site, probe in config.all_probes():
        timing = config.timing(service, probe)
        spec = json.dumps([_PROBE.dump_python(probe, mode="json"), timing.interval, timing.timeout], sort_keys=True)
        yield Job.of(ProbeKey(service, site, probe.name), timing, spec)


def load_config(path: str, overrides: dict[str, Any] | None = None) -> Config:
    """`bcd.config.load` with the garbage collector off, process-wide, for the duration: a load allocates
    millions of objects, and the collections they would trigger walk them all again and again (twice the time
    of the load). Also when a reload runs in its thread: a collection then would hold the GIL and stop the
    event loop too, longer and more often than the load does; the full collection after it (heap.settle)
    picks up whatever cycles the loop made meanwhile."""
    with heap.paused():
        return config_module.load(path, overrides)


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard limit: every probe in flight holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


@dataclass(frozen=True, slots=True)
class Parts:
    """What a daemon runs, all made by `Daemon.__init__` and started by `Daemon.running` in the order of these
    fields (see the module docstring). A lone instance has no etcd client and no cluster link."""

    web: WebServer
    step_http: StepSession
    etcd: EtcdClient | None
    cluster: ClusterLink | None
    mqtt: MqttOutput
    alerts: AlertSender
    runner: Runner
    plans: PlanRunner
    bookings: BookedRuns
    drills: Run
    scheduler: Scheduler


class Daemon:
    """One running bcd. `run()` returns the process exit code. Constructing it locks `state_dir` and opens the
    journal (StateDirError if either cannot be done); `running()` binds `server.listen` before anything else
    (ListenError)."""

    def __init__(
        self, config_path: str, config: Config, overrides: dict[str, Any] | None = None,
        notifier: systemd.Notifier | None = None,
    ) -> None:
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else systemd.Notifier.from_env()
        self.config = config
        self.overrides = overrides or {}
        self.bus = Bus()
        self.state_lock = StateLock.acquire(Path(config.state_dir))  # first: a second daemon touches nothing
        self.journal = self._open_journal(Path(config.state_dir) / JOURNAL_NAME)
        self.step_http = StepSession()  # the runbook steps' (made on first use: it needs the running loop)
        # made before the cluster link, which re-probes here what another vantage sees failing; runs from `_start`
        self.scheduler = Scheduler(self._observe, config.scheduler.max_concurrency, config.vantage)
        self.etcd, self.coordinator, link = coordination(config, self.scheduler.reprobe)  # a lone instance: none
        # the engine makes its runner and cluster link, with itself as their hooks; it acts once started (`_start`)
        self.engine = Engine(config, self.journal, self.bus, runner=self._runner, cluster=link)
        config_record.record(self.journal, config_path, config_record.effective(config), "start")
        self.view = EngineView(self.engine)  # what the outputs and the web read
        self.view.monitored_since()  # services and plans new to the journal are dated from this load
        self.view.plans_monitored_since()
        self.metrics = Metrics(self.view)
        self.metrics.register(JournalCollector(self.engine.writer.stats))
        self.metrics.reload.success_timestamp = time.time()
        self.shortages = Shortages()
        self.metrics.register(ShortageCollector(self.shortages))
        self.context = ProbeContext(user_agent(config.vantage if config.cluster else None))
        self.parts = self._parts()  # made, not running: nothing is bound, subscribed or journaled until `_start`
        self._started = False  # every part runs (set by `_start`, cleared by `_stop_all`): until then "starting"
        self._group: asyncio.TaskGroup | None = None  # the root task group, once every part runs
        self._tasks: set[asyncio.Task[None]] = set()  # the daemon's own loops: ticker, systemd, reloads
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reload_pending: str | None = None  # who sent a SIGHUP that came before every part ran
        self._reload_problems: list[str] = []  # the last reload's: what kept the running config
        self._said_stopping = False

    # -- lifecycle -----------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)  # sender unknown: see bcd.sighup
        sighup.watch(loop, self._spawn_reload)  # `bcd run` blocked SIGHUP: this thread takes it, with its sender
        async with self.running():
            await self._stop.wait()
        return 0

    def stop(self) -> None:
        log.info("stopping")
        self._stop.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Parts]:
        """Start every part in order under one task group (returning once the HTTP server serves) and the
        daemon's own loops beside them; on the way out stop them all (`_stop_all`), close the journal and
        unlock. A part's failure stops the daemon and is raised (as itself if it is the only one)."""
        try:
            listeners = listen.bind(self.config.server.listen, *self.config.server.host_port)
            try:
                probes = self._prebuilt(self.config)  # a probe that cannot be set up stops the start here
                async with self._task_group() as lifetimes:
                    parts = await self._start(lifetimes, listeners, probes)
                    self._group = lifetimes.group  # from now on a SIGHUP reloads at once (before: once started)
                    self._spawn(self._ticker(self.scheduler))
                    self._start_systemd(self.scheduler)
                    if self._reload_pending is not None:
                        self._spawn_reload(self._reload_pending)
                    yield parts
            finally:
                for sock in listeners:  # those the web server never took
                    sock.close()
        finally:
            if not self._said_stopping:  # the start failed before the task group
                self.notifier.stopping()
            self.engine.close()
            self.journal.close()
            self.state_lock.release()
            log.info("stopped")
            self.notifier.close()

    @contextlib.asynccontextmanager
    async def _task_group(self) -> AsyncIterator[Lifetimes]:
        """The root task group, stopped by `_stop_all` however its body ends."""
        try:
            async with asyncio.TaskGroup() as group:
                lifetimes = Lifetimes(group)
                try:
                    yield lifetimes
                finally:
                    await self._stop_all(lifetimes)
        except BaseExceptionGroup as failed:
            raise _alone(failed) from None

    async def _stop_all(self, lifetimes: Lifetimes) -> None:
        """Cancel the daemon's own loops, then stop the parts in reverse order, within STOP_TIMEOUT."""
        self._group = None
        for task in list(self._tasks):
            task.cancel()  # a reload in progress too: SIGTERM never waits for its thread
        self._said_stopping = True
        self.notifier.stopping()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await lifetimes.stop()
        except TimeoutError:
            log.warning("shutdown_timeout", seconds=STOP_TIMEOUT)
            lifetimes.abandon()
        self._started = False

    def _parts(self) -> Parts:
        """Make every part (what operations need first), none started; the collectors in the order of the parts."""
        etcd, cluster = self.etcd, self.engine.cluster
        assert cluster is None or isinstance(cluster, ClusterLink)  # what `coordination` has the engine make
        runner = self.engine.runner
        assert runner is not None  # what `_runner` has the engine make
        plans = daemon_plans(self.journal, self.engine, self.view, cluster)
        bookings = booked_runs.make(self.journal, Operations(self.engine, plans=plans), self.view, self.engine.emit,
                                    cluster, self.metrics)
        drills_made, run_drills = drills.make(self.journal, Operations(self.engine, plans=plans), self.view,
                                              self.engine.emit)  # with plans: a scheduled drill may be a plan's
        operations = Operations(self.engine, plans=plans, calendar=bookings.calendar, drills=drills_made,
                                bookings=bookings, reload=self._asked_reload)  # what the outputs and web act through
        context = WebContext(view=self.view, operations=operations, metrics=self.metrics, ready=self.ready,
                             server=self.config.server)
        web_server = WebServer(build_app(context), self.config.server)
        self.metrics.register(HttpCollector(web_server.connections))
        if cluster is not None:
            self.metrics.register(ClusterCollector(cluster.figures))
        mqtt = MqttOutput(self.view, operations, self.bus)  # subscribes when started (`apply`)
        self.metrics.register(MqttCollector(mqtt.stats))
        alerts = AlertSender(self.view, self.bus, self.config)  # subscribes when started (`run`)
        self.metrics.register(AlertCollector(alerts.stats))
        self.metrics.register(RunnerCollector(runner.stats))
        self.metrics.register(SchedulerCollector(self.scheduler.stats))
        return Parts(web_server, self.step_http, etcd, cluster, mqtt, alerts, runner, plans, bookings, run_drills,
                     self.scheduler)

    async def _start(self, lifetimes: Lifetimes, listeners: list[socket.socket],
                     probes: Callable[[Job], Probe]) -> Parts:
        """Start every part, in order; returns once the HTTP server serves `listeners`."""
        parts = self.parts
        await lifetimes.start("web", parts.web.run)  # serves last (open() below), stops last
        open_files = raise_open_files_limit()
        if open_files < self.config.scheduler.max_concurrency * 2 + 100:
            log.warning("open_files_limit_low", limit=open_files, max_concurrency=self.config.scheduler.max_concurrency,
                        hint="raise LimitNOFILE, or lower scheduler.max_concurrency")
        await lifetimes.start("step-http", closing(self.step_http.close))
        if parts.etcd is not None and parts.cluster is not None:  # before the runner: no run without the lock
            await lifetimes.start("etcd", closing(parts.etcd.close))
            await lifetimes.start("cluster", parts.cluster.run)  # stops after the runner: final run records, locks
        parts.mqtt.apply(self.config)  # subscribes now: recovery events go out
        await lifetimes.start("mqtt", parts.mqtt.run)  # stops after the runner: its last events go out, `offline`
        await lifetimes.start("alerts", parts.alerts.run)
        # stops right after the runner: its last events are journaled and published while the outputs still run
        # the daemon's span in the journal (bcd.journal.uptime, for continuity reports): its stop comes after this flush
        await lifetimes.start("journal-flush", Uptime(self.journal, flush=self.engine.writer.flush).run)
        self._recover_runs()  # before any probe starts
        await lifetimes.start("runner", parts.runner.run)
        parts.plans.start()  # plan runs left unfinished are recovered
        await lifetimes.start("plans", closing(parts.plans.stop))  # stops before the runner: the plan run, its moves
        await lifetimes.start("bookings", parts.bookings.run)  # the booked runs and the maintenance calendar
        await lifetimes.start("drills", parts.drills)
        await lifetimes.start("scheduler", parts.scheduler.run)  # stops first: no observation starts a run meanwhile
        self._started = True
        parts.scheduler.sync(jobs(self.config), probes, self.config.bursts)
        await parts.web.open(listeners)
        heap.settle()
        log.info("started", instance=self.config.instance, services=len(self.config.services),
                 probes=parts.scheduler.stats.probes, listen=self.config.server.listen, state=str(self.journal.path))
        return parts

    def _runner(self, runs: RunJournal, hooks: RunHooks) -> Runner:
        return Runner(runs, hooks, self.step_http, max_concurrent=self.config.runner.max_concurrent_runs,
                      secrets=self.config.secrets, broker=steps_broker_link(self.config.mqtt),
                      kill_orphans=self.config.runner.kill_orphans)

    def _recover_runs(self) -> None:
        """The runner recovers orphaned runs; the engine acts from now on (in the loop)."""
        for record in self.parts.runner.recover():
            log.warning("run_interrupted", run_id=record.id, service=record.service,
                        hint="the service stays blocked until an operator acknowledges (bcd ack)")
        self.engine.act()

    def _start_systemd(self, scheduler: Scheduler) -> None:
        """READY=1 (config loaded, HTTP bound), then STATUS= updates and, under WatchdogSec=, WATCHDOG=1 pings
        for as long as the scheduler keeps finishing probe runs."""
        if not self.notifier.enabled:
            return
        interval = systemd.watchdog_interval()
        if interval is not None:
            liveness = systemd.Liveness(lambda: scheduler.progress, lambda: systemd.stall_budget(self.config))
            self._spawn(systemd.feed_watchdog(self.notifier, interval, liveness))
        self._spawn(systemd.keep_status(self.notifier, self._status_text))
        self.notifier.ready(self._status_text())

    def _status_text(self) -> str:
        blocked = sum(view.status is ServiceStatus.BLOCKED for view in self.engine.services.values())
        runs = len(self.engine.runner.active) if self.engine.runner is not None else 0
        probes = self.scheduler.stats.probes  # 0 before the start
        ready, why = self.ready()
        notes = [] if ready else [why]
        if not self.metrics.reload.successful:
            notes.append("last reload FAILED, running the previous config")
        return systemd.summary(len(self.config.services), probes, blocked, runs, "; ".join(notes))

    def _open_journal(self, path: Path) -> Journal:
        try:
            set_aside_lost_journal(path, self.state_lock)
            return Journal(path)
        except BaseException:
            self.state_lock.release()
            raise

    def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        refusal = self.engine.writer.refusal()
        if refusal is not None:
            return False, refusal
        if not self.scheduler.all_ran_once():
            return False, "waiting for every probe to run once"
        return True, "config loaded, every probe has run"

    # -- the flow ------------------------------------------------------------------------------------
    def _observe(self, obs: Observation) -> int:
        if obs.internal is not None:  # bcd's own shortage, not the target's failure: counted, health untouched
            self.shortages.record(obs)
            return SETTLED
        self.metrics.probes.record(obs)
        return self.engine.observe(obs)

    def _prebuilt(self, config: Config) -> Callable[[Job], Probe]:
        """Build every probe of `config` up front; raise ConfigError if any cannot be set up (a TLS file
        that cannot be loaded must stop a start or a reload, not look like a dead site)."""
        probes: dict[ProbeKey, Probe] = {}
        problems: list[config_module.Problem] = []
        for service, site, probe in config.all_probes():
            key = ProbeKey(service, site, probe.name)
            try:
                probes[key] = build_probe(probe, config.timing(service, probe).timeout, self.context)
            except ProbeSetupError as exc:
                problems.append((("services", service, "sites", site, "probes", probe.name, probe.kind), str(exc)))
        if problems:
            raise ConfigError(config_module.issues_in_file(self.config_path, problems))
        return lambda job: probes.pop(job.key)  # each once: held by the scheduler, not also here (1 MB at 20,000)

    async def _ticker(self, scheduler: Scheduler) -> None:
        settled = False
        trims = heap.TrimTimer()
        while True:
            await asyncio.sleep(TICK)
            if not settled and scheduler.all_ran_once():
                heap.freeze_survivors()
                settled = True
            if trims.due(self.metrics.scrapes, time.monotonic()):
                heap.trim()
            try:
                self.engine.tick()
            except Exception:
                log.exception("tick_failed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reload --------------------------------------------------------------------------------------
    def _spawn_reload(self, by: str = "SIGHUP") -> None:
        if self._group is None:  # still starting (or stopping): the reload follows once the group runs
            self._reload_pending = by
            return
        self._reload_pending = None
        self._spawn(self._notified_reload(by))

    async def _notified_reload(self, by: str) -> None:
        """SIGHUP: RELOADING=1, reload, READY=1 — also after a failed reload (the old config keeps running)."""
        self.notifier.reloading()
        try:
            await self.reload(by)
        finally:
            self.notifier.ready(self._status_text())

    async def _asked_reload(self, by: str) -> list[str] | None:
        """An operator's reload (bcd.operations), told to systemd as a SIGHUP's: the problems that kept the running
        config (none: reloaded); None while starting or stopping."""
        if self._group is None:
            return None
        await self._notified_reload(by)
        return self._reload_problems  # this reload's: nothing ran since it ended

    async def reload(self, by: str = "SIGHUP") -> bool:
        """Load the config again, journaled as asked `by`; keep the running one if the new one is invalid. One at a
        time, in a thread (probes keep their schedule). Any failure is a `config_reload_failed` (metric: 0)."""
        async with self._reload_lock:
            try:
                self._reload_problems = await self._reload(by)
            except Exception as exc:  # a bug must not leave a dead task and a metric saying all is well
                self.metrics.reload.successful = False
                self._reload_problems = [f"{type(exc).__name__}: {exc} (a bug: the log has its traceback)"]
                log.error("config_reload_failed", config=self.config_path, reason=f"{type(exc).__name__}: {exc}",
                          exc_info=True)
            finally:
                heap.trim()  # what a failed load of a large file took goes back to the system too
            return not self._reload_problems

    async def _reload(self, by: str) -> list[str]:
        """The reload; the problems that kept the running config (none: reloaded)."""
        log.info("reloading", config=self.config_path)
        try:
            new = await in_daemon_thread(load_config, self.config_path, self.overrides)
        except ConfigError as exc:
            return self._invalid(exc)
        if new.server != self.config.server or new.state_dir != self.config.state_dir:
            log.warning("reload_ignores", fields="server, state_dir", hint="restart to change them")
        if new.cluster != self.config.cluster or new.vantage != self.config.vantage:
            log.warning("reload_ignores", fields="cluster, vantage", hint="restart to change them")
        parts = self.parts
        try:
            build = self._prebuilt(new)
        except ConfigError as exc:
            return self._invalid(exc)
        self.config = new
        self.engine.apply_config(new)
        parts.runner.secrets = new.secrets
        parts.runner.broker = steps_broker_link(new.mqtt)
        parts.mqtt.apply(new)
        parts.alerts.configure(new)
        parts.scheduler.sync(jobs(new), build, new.bursts)
        self.metrics.probes.retain(parts.scheduler.keys)
        config_record.record(self.journal, self.config_path, await in_daemon_thread(config_record.effective, new), by)
        self.view.monitored_since()
        self.view.plans_monitored_since()
        heap.settle()
        self.metrics.reload.successful = True
        self.metrics.reload.success_timestamp = time.time()
        log.info("reloaded", services=len(new.services), probes=parts.scheduler.stats.probes)
        return []

    def _invalid(self, exc: ConfigError) -> list[str]:
        """A reload refused for `exc`'s problems (logged, metric 0): the running config stays."""
        self.metrics.reload.successful = False
        problems = [str(issue) for issue in exc.issues]
        log.error("config_reload_failed", config=self.config_path, errors=problems)
        return problems


def _alone(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    """The task groups' one error as itself (a part's own task group nests in the root's), else all of them."""
    errors = [error for error in leaves(failed) if not isinstance(error, asyncio.CancelledError)]
    return errors[0] if len(errors) == 1 else failed
