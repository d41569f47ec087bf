"""Composition root: builds every part from the config, runs them, reloads on SIGHUP, stops on SIGTERM.

The parts are built in one place (`Daemon.start`), in an order that matters: the state_dir lock and the journal
(in the constructor), `server.listen` bound, coordination, the MQTT output and the alert sender (subscribed before
anything happens), the runner (orphaned runs recovered before any probe starts), the scheduler, and last the
HTTP server, serving before READY=1. They stop in reverse (the runner before MQTT and coordination: its last
events and run records go out). The daemon's own loops (ticker, systemd, reloads) run under one task group.
Only this module switches the garbage collector and trims the C heap (bcd.heap): both change the whole process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import structlog
from aiohttp import web
from pydantic import TypeAdapter

from bcd import config as config_module
from bcd import heap, systemd
from bcd.broker import BrokerLink, broker_link
from bcd.bus import Bus
from bcd.cluster import ClusterLink
from bcd.config import Config, ConfigError, ProbeConfig
from bcd.coordination import EtcdCoordinator
from bcd.coordination.etcd import EtcdClient
from bcd.engine import Engine
from bcd.journal import Journal
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
from bcd.probes.base import Probe, ProbeContext, ProbeSetupError, user_agent
from bcd.probes.registry import build_probe
from bcd.runbooks.runner import Runner
from bcd.scheduler import Job, Scheduler
from bcd.state_dir import JOURNAL_NAME, StateLock, set_aside_lost_journal
from bcd.view import EngineView
from bcd.web import listen
from bcd.web.context import WebContext
from bcd.web.limits import LimitedSite, connection_stats
from bcd.web.server import build_app

log = structlog.get_logger("bcd.app")

STOP_TIMEOUT = 4.0
TICK = 1.0
T = TypeVar("T")
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
    """What a started daemon runs, built by `Daemon.start` in the order of these fields (the web server,
    which reads them, comes last). A lone instance has no etcd client and no cluster link."""

    context: ProbeContext
    step_http: aiohttp.ClientSession
    etcd: EtcdClient | None
    cluster: ClusterLink | None
    mqtt: MqttOutput
    alerts: AlertSender
    runner: Runner
    scheduler: Scheduler


class Daemon:
    """One running bcd. `run()` returns the process exit code. Constructing it locks `state_dir` and opens the
    journal (StateDirError if either cannot be done); `start()` binds `server.listen` before anything else
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
        self.engine = Engine(config, self.journal, self.bus)
        self.view = EngineView(self.engine)  # what the outputs and the web read
        self.operations = Operations(self.engine)  # what they act through
        self.metrics = Metrics(self.view)
        self.metrics.register(JournalCollector(self.engine.writer))
        self.metrics.reload.success_timestamp = time.time()
        self.shortages = Shortages()
        self.metrics.register(ShortageCollector(self.shortages))
        self.parts: Parts | None = None  # from start() on
        self._stops: list[Callable[[], Awaitable[object]]] = []  # of what start() built, in its order
        self._group: asyncio.TaskGroup | None = None  # the root task group, while `running()`
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reload_pending = False  # a SIGHUP that came before the task group

    # -- lifecycle -----------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)
        async with self.running():
            await self._stop.wait()
        return 0

    def stop(self) -> None:
        log.info("stopping")
        self._stop.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Parts]:
        """Start every part, run the daemon's own loops (the ticker, systemd's watchdog and status, reloads)
        under one task group, and on the way out cancel them and stop the parts in reverse order."""
        try:
            parts = await self.start()
            async with asyncio.TaskGroup() as group:
                self._group = group
                try:
                    self._spawn(self._ticker(parts.scheduler))
                    self._start_systemd(parts.scheduler)
                    if self._reload_pending:
                        self._spawn_reload()
                    yield parts
                finally:
                    self._group = None
                    for task in list(self._tasks):
                        task.cancel()  # a reload in progress too: SIGTERM never waits for its thread
        finally:
            await self.shutdown()

    async def start(self) -> Parts:
        """Build and start every part, in order; returns once the HTTP server is serving. Each part's stop is
        kept for shutdown(), also when a later part fails to start."""
        listeners = listen.bind(self.config.server.listen, *self.config.server.host_port)
        self._stops.append(lambda: _close_all(listeners))  # until the web server takes them
        open_files = raise_open_files_limit()
        if open_files < self.config.scheduler.max_concurrency * 2 + 100:
            log.warning("open_files_limit_low", limit=open_files, max_concurrency=self.config.scheduler.max_concurrency,
                        hint="raise LimitNOFILE, or lower scheduler.max_concurrency")
        context = ProbeContext(user_agent(self.config.vantage if self.config.cluster else None))
        step_http = aiohttp.ClientSession()
        self._stops.append(step_http.close)
        etcd, cluster = await self._start_coordination()  # before the runner: in a cluster no run without the lock
        mqtt = MqttOutput(self.view, self.operations, self.bus)  # subscribes now: recovery events go out
        self._stops.append(mqtt.stop)  # after the runner: its last events go out, then `offline`
        mqtt.apply(self.config)
        self.metrics.register(MqttCollector(mqtt))
        alerts = AlertSender(self.view, self.bus, self.config)
        self._stops.append(alerts.stop)
        alerts.start()
        self.metrics.register(AlertCollector(alerts))
        runner = self._start_runner(step_http)  # recovers orphaned runs before any probe starts
        scheduler = Scheduler(self._observe, self.config.scheduler.max_concurrency, self.config.vantage)
        self._stops.append(scheduler.stop)  # first of the parts: no observation starts a run while they stop
        if cluster is not None:  # what another vantage sees failing is probed again here too
            cluster.follow_doubts(scheduler.reprobe)
        self.metrics.register(SchedulerCollector(scheduler))
        self.parts = Parts(context, step_http, etcd, cluster, mqtt, alerts, runner, scheduler)
        scheduler.sync(jobs(self.config), self._prebuilt(self.config), self.config.bursts)
        await self._start_web(listeners)
        heap.settle()
        log.info("started", instance=self.config.instance, services=len(self.config.services),
                 probes=len(scheduler.keys), listen=self.config.server.listen,
                 state=str(self.journal.path))
        return self.parts

    def _start_runner(self, step_http: aiohttp.ClientSession) -> Runner:
        runner = Runner(
            self.engine.runs, self.engine, lambda: step_http, max_concurrent=self.config.runner.max_concurrent_runs,
            secrets=self.config.secrets, broker=self._broker(self.config), kill_orphans=self.config.runner.kill_orphans,
        )
        self._stops.append(runner.stop)
        for record in runner.recover():
            log.warning("run_interrupted", run_id=record.id, service=record.service,
                        hint="the service stays blocked until an operator acknowledges (bcd ack)")
        self.engine.attach(runner)
        self.metrics.register(RunnerCollector(runner.stats))
        return runner

    async def _start_coordination(self) -> tuple[EtcdClient | None, ClusterLink | None]:
        """A cluster member: an etcd client and coordinator, and the cluster link the engine decides and runs
        through. A lone instance has none: its runner runs alone, with the run id as `{fence_token}`."""
        cluster_config = self.config.cluster
        if cluster_config is None:
            return None, None
        assert self.config.vantage is not None  # the config refuses a cluster member without one
        etcd_config = cluster_config.etcd  # its *_file paths are resolved by the config (bcd.credentials)
        etcd = EtcdClient(
            etcd_config.endpoints, request_timeout=max(0.1, cluster_config.call_timeout / 2),
            deadline=cluster_config.call_timeout, ca_file=etcd_config.ca_file, cert_file=etcd_config.cert_file,
            key_file=etcd_config.key_file,
        )
        self._stops.append(etcd.close)
        link: ClusterLink

        def lost(service: str) -> None:  # the coordinator is made first: the link is made from it
            link.lost(service)

        coordinator = EtcdCoordinator(etcd, cluster=cluster_config.name, vantage=self.config.vantage,
                                      lease_ttl=cluster_config.lease_ttl, keepalive=cluster_config.keepalive_interval,
                                      on_lost=lost)
        link = ClusterLink(coordinator, self.engine, vantage=self.config.vantage, quorum=cluster_config.quorum,
                           lease_ttl=cluster_config.lease_ttl, call_timeout=cluster_config.call_timeout)
        self.engine.attach_cluster(link)
        self.metrics.register(ClusterCollector(link, self.view))
        self._stops.append(link.stop)  # stops its coordinator; after the runner: final run records, then locks
        await link.start()
        log.info("cluster_member", cluster=cluster_config.name, vantage=self.config.vantage,
                 endpoints=etcd_config.endpoints, quorum=cluster_config.quorum, lease_ttl=cluster_config.lease_ttl)
        return etcd, link

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
        runs = len(self.parts.runner.active) if self.parts is not None else 0
        probes = len(self.parts.scheduler.keys) if self.parts is not None else 0
        ready, why = self.ready()
        notes = [] if ready else [why]
        if not self.metrics.reload.successful:
            notes.append("last reload FAILED, running the previous config")
        return systemd.summary(len(self.config.services), probes, blocked, runs, "; ".join(notes))

    @staticmethod
    def _broker(config: Config) -> BrokerLink | None:
        if config.mqtt is None:
            return None
        try:
            return broker_link(config.mqtt)
        except (OSError, ssl.SSLError) as exc:  # mqtt_publish steps will fail and say so; the daemon goes on
            log.error("mqtt_broker_settings_unusable", error=str(exc), hint="fix the mqtt section's files, then reload")
            return None

    async def _start_web(self, listeners: list[socket.socket]) -> None:
        context = WebContext(view=self.view, operations=self.operations, metrics=self.metrics, ready=self.ready,
                             server=self.config.server)
        runner = web.AppRunner(
            build_app(context), access_log=None, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True,
            keepalive_timeout=self.config.server.idle_timeout,  # also closes a connection whose request head lags
        )
        # built last, stopped last but one: SSE clients see the runner's last events as it stops
        self._stops.insert(1, runner.cleanup)
        await runner.setup()
        connections = connection_stats(self.config.server)
        while listeners:
            await LimitedSite(runner, listeners[0], connections).start()
            listeners.pop(0)  # the site closes it now
        self.metrics.register(HttpCollector(runner, connections))

    async def shutdown(self) -> None:
        """Stop what start() built, in reverse order, within STOP_TIMEOUT; then close the journal and unlock."""
        self.notifier.stopping()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                while self._stops:
                    await self._stops.pop()()
        except TimeoutError:
            log.warning("shutdown_timeout", seconds=STOP_TIMEOUT)
        finally:
            self.engine.close()
            self.journal.close()
            self.state_lock.release()
            log.info("stopped")
            self.notifier.close()

    def _open_journal(self, path: Path) -> Journal:
        try:
            set_aside_lost_journal(path, self.state_lock)
            return Journal(path)
        except BaseException:
            self.state_lock.release()
            raise

    def ready(self) -> tuple[bool, str]:
        if self.parts is None:
            return False, "starting"
        refusal = self.engine.writer.refusal()
        if refusal is not None:
            return False, refusal
        if not self.parts.scheduler.all_ran_once():
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
        assert self.parts is not None
        probes: dict[ProbeKey, Probe] = {}
        problems: list[config_module.Problem] = []
        for service, site, probe in config.all_probes():
            key = ProbeKey(service, site, probe.name)
            try:
                probes[key] = build_probe(probe, config.timing(service, probe).timeout, self.parts.context)
            except ProbeSetupError as exc:
                problems.append((("services", service, "sites", site, "probes", probe.name, probe.kind), str(exc)))
        if problems:
            raise ConfigError(config_module.issues_in_file(self.config_path, problems))
        return lambda job: probes[job.key]

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
    def _spawn_reload(self) -> None:
        if self._group is None:  # still starting (or stopping): the reload follows once the group runs
            self._reload_pending = True
            return
        self._reload_pending = False
        self._spawn(self._notified_reload())

    async def _notified_reload(self) -> None:
        """SIGHUP: RELOADING=1, reload, READY=1 — also after a failed reload (the old config keeps running)."""
        self.notifier.reloading()
        try:
            await self.reload()
        finally:
            self.notifier.ready(self._status_text())

    async def reload(self) -> bool:
        """Load the config file again; keep the running config if the new one is invalid. One reload at a
        time; the file is read and validated in a thread (seconds for a very large estate), so probes keep
        their schedule meanwhile. Any failure, expected or not, is a `config_reload_failed` and a 0 in
        bcd_config_last_reload_successful."""
        async with self._reload_lock:
            try:
                return await self._reload()
            except Exception as exc:  # a bug must not leave a dead task and a metric saying all is well
                self.metrics.reload.successful = False
                log.error("config_reload_failed", config=self.config_path, reason=f"{type(exc).__name__}: {exc}",
                          exc_info=True)
                return False
            finally:
                heap.trim()  # what a failed load of a large file took goes back to the system too

    async def _reload(self) -> bool:
        log.info("reloading", config=self.config_path)
        try:
            new = await in_daemon_thread(load_config, self.config_path, self.overrides)
        except ConfigError as exc:
            self.metrics.reload.successful = False
            log.error("config_reload_failed", config=self.config_path, errors=[str(i) for i in exc.issues])
            return False
        if new.server != self.config.server or new.state_dir != self.config.state_dir:
            log.warning("reload_ignores", fields="server, state_dir", hint="restart to change them")
        if new.cluster != self.config.cluster or new.vantage != self.config.vantage:
            log.warning("reload_ignores", fields="cluster, vantage", hint="restart to change them")
        parts = self.parts
        assert parts is not None
        try:
            build = self._prebuilt(new)
        except ConfigError as exc:
            self.metrics.reload.successful = False
            log.error("config_reload_failed", config=self.config_path, errors=[str(i) for i in exc.issues])
            return False
        self.config = new
        self.engine.apply_config(new)
        parts.runner.secrets = new.secrets
        parts.runner.broker = self._broker(new)
        parts.mqtt.apply(new)
        parts.alerts.configure(new)
        parts.scheduler.sync(jobs(new), build, new.bursts)
        self.metrics.probes.retain(parts.scheduler.keys)
        heap.settle()
        self.metrics.reload.successful = True
        self.metrics.reload.success_timestamp = time.time()
        log.info("reloaded", services=len(new.services), probes=len(parts.scheduler.keys))
        return True


async def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:  # bound, but the start failed before the web server took them
        sock.close()


async def in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread of its own that never delays the exit: a thread cannot be stopped, and
    asyncio.to_thread's executor is joined when the loop closes, so SIGTERM during a long reload waited for
    it. A daemon thread is left behind at exit; its result, if it comes after the loop closed, is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    threading.Thread(target=_deliver, args=(loop, future, function, args), name="bcd-reload", daemon=True).start()
    try:
        return await future
    finally:
        # The frames an exception passed through stay in its traceback: none of them may hold the future, which
        # holds the exception (such a cycle would keep a failed load's data alive until a rare full collection).
        del future


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], function: Callable[..., Any],
             args: tuple[Any, ...]) -> None:
    setter: Callable[[Any], object]
    value: object
    try:
        setter, value = future.set_result, function(*args)
    except Exception as exc:  # raised in the awaiting task
        setter, value = future.set_exception, exc
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, setter, value)
    del future, setter, value  # (see in_daemon_thread)


def _settle(future: asyncio.Future[Any], setter: Callable[[Any], object], value: object) -> None:
    if not future.cancelled():  # the reload task was cancelled (shutdown)
        setter(value)
