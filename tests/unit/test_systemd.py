"""bcd.systemd: the sd_notify client, the watchdog's liveness rule and feeder; bcd.logging's journal prefixes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from bcd import config as config_module
from bcd import logging as bcd_logging
from bcd import systemd
from bcd.scheduler import GRACE

# -- Notifier ---------------------------------------------------------------------------------------------


class Receiver:
    """A bound AF_UNIX datagram socket, like the one systemd names in $NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(5.0)

    def fields(self) -> dict[str, str]:
        lines = self.sock.recv(4096).decode().split("\n")
        assert all("=" in line for line in lines), lines
        return dict(line.split("=", 1) for line in lines)

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(5.0)
        return True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    path = Path("/tmp") / f"bcd-sd-{uuid.uuid4().hex[:12]}"  # AF_UNIX paths: 108 bytes at most
    receiver = Receiver(str(path))
    yield receiver
    receiver.sock.close()
    path.unlink(missing_ok=True)


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = systemd.Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False
    assert notifier.watchdog() is False
    notifier.close()


def test_messages(receiver: Receiver) -> None:
    notifier = systemd.Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    assert notifier.enabled
    assert notifier.ready("2 services, 4 probes; 0 blocked; 0 runs")
    assert receiver.fields() == {"READY": "1", "STATUS": "2 services, 4 probes; 0 blocked; 0 runs"}
    assert notifier.status("two\nlines  and\ttabs")
    assert receiver.fields() == {"STATUS": "two lines and tabs"}  # a newline would start a new KEY=value

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading = receiver.fields()
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after

    assert notifier.watchdog()
    assert receiver.fields() == {"WATCHDOG": "1"}
    assert notifier.stopping()
    assert receiver.fields() == {"STOPPING": "1", "STATUS": "stopping"}
    notifier.close()
    assert not receiver.pending()


def test_abstract_namespace_address() -> None:
    receiver = Receiver(f"@bcd-sd-{uuid.uuid4().hex}")
    try:
        notifier = systemd.Notifier(receiver.address)
        assert notifier.watchdog()
        assert receiver.fields() == {"WATCHDOG": "1"}
        notifier.close()
    finally:
        receiver.sock.close()


def test_unsupported_address_is_disabled_with_a_warning() -> None:
    with capture_logs() as logs:
        notifier = systemd.Notifier("vsock:2:1234")
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert [entry["event"] for entry in logs] == ["sd_notify_unsupported"]


def test_send_errors_are_logged_once_per_failing_streak_and_never_raised(receiver: Receiver) -> None:
    notifier = systemd.Notifier(receiver.address + "-nobody")
    with capture_logs() as logs:
        assert [notifier.watchdog() for _ in range(5)] == [False] * 5
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("sd_notify_failed", "warning")]
    assert "No such file or directory" in logs[0]["error"]

    notifier.address, notifier._target = receiver.address, receiver.address  # the socket comes back
    with capture_logs() as logs:
        assert notifier.watchdog()
        receiver.fields()
        notifier._target = receiver.address + "-nobody"  # and goes away again: a new streak, logged again
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert [entry["event"] for entry in logs] == ["sd_notify_failed"]
    notifier.close()


def test_a_full_receive_queue_drops_instead_of_blocking(receiver: Receiver) -> None:
    notifier = systemd.Notifier(receiver.address)
    started = time.monotonic()
    with capture_logs() as logs:
        sent = [notifier.watchdog() for _ in range(5000)]  # nobody reads: the queue fills up
    assert time.monotonic() - started < 5.0
    assert sent[0] and not sent[-1]
    assert [entry["event"] for entry in logs] == ["sd_notify_failed"]
    notifier.close()


def test_summary() -> None:
    assert systemd.summary(5, 12, 1, 0) == "5 services, 12 probes; 1 blocked; 0 runs"
    assert systemd.summary(1, 1, 0, 1, "waiting") == "1 service, 1 probe; 0 blocked; 1 run; waiting"


# -- watchdog interval --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4242"}, 0.1),  # ours
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval(environ, pid=4242) == expected


def test_watchdog_interval_defaults_to_our_pid() -> None:
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 0.5


# -- liveness: when the watchdog is fed ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeScheduler:
    """The progress source: `progress` bumps when a run finishes; `working` makes every look see a new one."""

    def __init__(self) -> None:
        self.runs = 0
        self.working = True

    def progress(self) -> int:
        if self.working:
            self.runs += 1
        return self.runs


def test_liveness_needs_progress_within_the_budget() -> None:
    clock, scheduler = FakeClock(), FakeScheduler()
    liveness = systemd.Liveness(scheduler.progress, lambda: 10.0, clock)
    clock.now += 60
    assert liveness.check() is None  # progress since the last look, however long ago
    scheduler.working = False
    clock.now += 10
    assert liveness.check() is None  # no progress, but within the budget: a probe may be between runs
    clock.now += 0.5
    reason = liveness.check()
    assert reason == "the scheduler finished no probe run for 10.5s (allowed 10.0s)"
    clock.now += 100
    assert liveness.check() is not None
    scheduler.working = True
    assert liveness.check() is None  # progress again: fed again


def test_liveness_without_probes_is_alive() -> None:
    clock, scheduler = FakeClock(), FakeScheduler()
    scheduler.working = False
    budget: list[float | None] = [None]
    liveness = systemd.Liveness(scheduler.progress, lambda: budget[0], clock)
    clock.now += 3600
    assert liveness.check() is None  # nothing is due: nothing can be late
    budget[0] = 10.0  # a reload adds probes: the budget counts from now, not from the last run
    clock.now += 5
    assert liveness.check() is None
    clock.now += 6
    assert liveness.check() is not None


class RecordingNotifier(systemd.Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.pings = 0
        self.pinged = asyncio.Event()

    def watchdog(self) -> bool:
        self.pings += 1
        self.pinged.set()
        return True


class SpyLiveness(systemd.Liveness):
    """Counts the feeder's looks so the test waits on them instead of on the clock."""

    def __init__(
        self, progress: Callable[[], int], budget: Callable[[], float | None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(progress, budget, clock)
        self.verdicts: list[str | None] = []
        self.looked = asyncio.Event()

    def check(self) -> str | None:
        verdict = super().check()
        self.verdicts.append(verdict)
        self.looked.set()
        return verdict

    async def next_verdict(self) -> str | None:
        self.looked.clear()
        async with asyncio.timeout(2.0):
            await self.looked.wait()
        return self.verdicts[-1] if self.verdicts else None


async def test_feeder_stops_pinging_while_the_scheduler_is_stuck_and_resumes_after() -> None:
    clock, scheduler, notifier = FakeClock(), FakeScheduler(), RecordingNotifier()
    liveness = SpyLiveness(scheduler.progress, lambda: 10.0, clock)
    with capture_logs() as logs:
        task = asyncio.create_task(systemd.feed_watchdog(notifier, 0.005, liveness))
        try:
            for _ in range(3):
                assert await liveness.next_verdict() is None
            fed = notifier.pings
            assert fed >= 2

            scheduler.working = False  # probes are due (budget set) but none finishes
            clock.now += 11
            assert await liveness.next_verdict() is not None
            stuck_at = notifier.pings
            for _ in range(5):
                assert await liveness.next_verdict() is not None
            assert notifier.pings == stuck_at  # systemd's WatchdogSec= runs out: restart

            scheduler.working = True
            assert await liveness.next_verdict() is None
            async with asyncio.timeout(2.0):
                while notifier.pings == stuck_at:
                    notifier.pinged.clear()
                    await notifier.pinged.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    events = [entry["event"] for entry in logs]
    assert events.count("watchdog_starved") == 1
    assert events.count("watchdog_fed_again") == 1
    starved = next(entry for entry in logs if entry["event"] == "watchdog_starved")
    assert starved["log_level"] == "error"
    assert starved["reason"].startswith("the scheduler finished no probe run for 11.0s")


async def test_feeder_does_not_feed_when_the_check_itself_breaks() -> None:
    notifier = RecordingNotifier()

    class Broken(SpyLiveness):
        def check(self) -> str | None:
            self.looked.set()
            raise RuntimeError("boom")

    liveness = Broken(lambda: 0, lambda: 1.0)
    with capture_logs() as logs:
        task = asyncio.create_task(systemd.feed_watchdog(notifier, 0.001, liveness))
        try:
            for _ in range(3):
                await liveness.next_verdict()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert notifier.pings == 0
    starved = [entry for entry in logs if entry["event"].startswith("watchdog_")]
    assert [entry["event"] for entry in starved] == ["watchdog_starved"]
    assert starved[0]["reason"] == "liveness check failed: RuntimeError('boom')"


def test_stall_budget_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "bcd.yaml"
    path.write_text("""
state_dir: /nonexistent
sites: {a: {}, b: {}}
defaults: {interval: 10s, timeout: 2s}
services:
  web:
    active: a
    sites:
      a: {probes: [{name: h, tcp: {host: 127.0.0.1, port: 1}}]}
      b: {probes: [{name: slow, interval: 1m, timeout: 20s, tcp: {host: 127.0.0.1, port: 1}}]}
""")
    assert systemd.stall_budget(config_module.load(path)) == 80 + GRACE + systemd.STALL_SLACK
    path.write_text("state_dir: /nonexistent\nsites: {a: {}}\n")
    assert systemd.stall_budget(config_module.load(path)) is None


# -- journal priority prefixes (bcd.logging) ---------------------------------------------------------------


class Pipe:
    """A pipe standing in for stderr; `install()` must run inside the test, because pytest's capture puts its
    own sys.stderr back between a fixture's setup and the test call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read_fd, write_fd = os.pipe()
        self.stream = os.fdopen(write_fd, "w", buffering=1)
        self.stat = os.fstat(write_fd)
        self._monkeypatch = monkeypatch

    def install(self) -> None:
        self._monkeypatch.setattr(sys, "stderr", self.stream)

    def lines(self) -> list[str]:
        self.stream.flush()
        os.set_blocking(self.read_fd, False)
        return os.read(self.read_fd, 65536).decode().splitlines()


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipe]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("aiohttp.access").level
    pipe = Pipe(monkeypatch)
    yield pipe
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("aiohttp.access").setLevel(saved[2])
    structlog.reset_defaults()
    pipe.stream.close()
    os.close(pipe.read_fd)


def emit() -> None:
    log = structlog.get_logger(f"test-{uuid.uuid4().hex}")  # a fresh logger: configured by this setup()
    log.info("hello", n=1)
    log.warning("careful")
    log.error("broken")
    logging.getLogger("aiohttp.server").error("stdlib too")
    logging.getLogger("tenacity").debug("below the level: not written")


def test_json_lines_carry_syslog_priorities_under_the_journal(pipe: Pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe.install()
    monkeypatch.setenv("JOURNAL_STREAM", f"{pipe.stat.st_dev}:{pipe.stat.st_ino}")
    assert bcd_logging.under_journal()
    bcd_logging.setup("info", json=True)
    emit()
    lines = pipe.lines()
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>", "<3>"], lines
    records = [json.loads(line[3:]) for line in lines]
    assert [(r["event"], r["level"]) for r in records] == [
        ("hello", "info"), ("careful", "warning"), ("broken", "error"), ("stdlib too", "error"),
    ]


def test_no_prefix_when_journal_stream_names_another_file(pipe: Pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe.install()
    monkeypatch.setenv("JOURNAL_STREAM", f"{pipe.stat.st_dev}:{pipe.stat.st_ino + 1}")  # e.g. a parent's stream
    assert not bcd_logging.under_journal()
    bcd_logging.setup("info", json=True)
    emit()
    lines = pipe.lines()
    assert len(lines) == 4
    assert all(line.startswith("{") for line in lines), lines
