"""systemd integration: sd_notify (READY, STATUS, RELOADING, STOPPING, WATCHDOG) in a few lines of our own.

systemd names a datagram socket in `$NOTIFY_SOCKET` (a leading `@` is the abstract namespace); every message
is one datagram of `KEY=value` lines. Without `$NOTIFY_SOCKET` (not started by systemd) every call is a
no-op. Sending never raises and never blocks the event loop: a failure is logged once per failing streak.

The watchdog is fed only while bcd is really working: the feeding task runs on the event loop (a stuck loop
cannot run it) and asks a `Liveness` whether the scheduler has finished a probe run recently enough; if it
has not, the pings stop and systemd restarts the daemon after `WatchdogSec=`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from bcd.config import Config
from bcd.scheduler import GRACE

log = structlog.get_logger("bcd.systemd")

# Beyond the slowest probe's interval + timeout, how long the scheduler may go without finishing a run
# before the watchdog stops being fed (covers event-loop lateness and the concurrency cap's queue).
STALL_SLACK = 5.0


class Notifier:
    """Sends sd_notify messages to `address` (the value of `$NOTIFY_SOCKET`), or does nothing without one."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._target: str | None = None
        self._sock: socket.socket | None = None
        self._failing = False
        if self.address is None:
            return
        if self.address.startswith("@"):
            self._target = "\0" + self.address[1:]
        elif self.address.startswith("/"):
            self._target = self.address
        else:  # vsock: and other forms systemd may grow: not ours to speak
            log.warning("sd_notify_unsupported", notify_socket=self.address)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def send(self, *lines: str) -> bool:
        """Send one message made of `lines`; True if it went out (False when disabled or on error)."""
        if self._target is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a full receive queue drops the message, never stalls the loop
            self._sock.sendto("\n".join(lines).encode(), self._target)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify_failed", notify_socket=self.address, error=str(exc),
                            hint="logged once until a message goes through again")
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", status_line(status))

    def status(self, status: str) -> bool:
        return self.send(status_line(status))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (Type=notify-reload, >= 253) tell this reload from an older one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", status_line("reloading"))

    def stopping(self) -> bool:
        return self.send("STOPPING=1", status_line("stopping"))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_line(text: str) -> str:
    return "STATUS=" + " ".join(text.split())  # one line: a newline would start another KEY=value


def summary(services: int, probes: int, blocked: int, runs: int, note: str = "") -> str:
    """The STATUS= text `systemctl status` shows, e.g. "5 services, 12 probes; 1 blocked; 0 runs"."""
    text = f"{_count(services, 'service')}, {_count(probes, 'probe')}; {blocked} blocked; {_count(runs, 'run')}"
    return f"{text}; {note}" if note else text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of `$WATCHDOG_USEC`), or None when no watchdog is ours."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


def stall_budget(config: Config) -> float | None:
    """How long the scheduler may finish no probe run before it counts as stuck; None without probes.

    Every probe is due once per interval and is cut off after timeout + GRACE, so some run must finish within
    the slowest probe's interval + timeout + GRACE (plus slack for lateness), whatever the concurrency cap.
    """
    spans = [(t := config.timing(service, probe)).interval + t.timeout for service, _, probe in config.all_probes()]
    if not spans:
        return None
    return max(spans) + GRACE + STALL_SLACK


class Liveness:
    """Decides whether to feed the watchdog: the scheduler's progress counter must have advanced within
    `budget()` seconds, unless there is nothing to run (budget None)."""

    def __init__(
        self,
        progress: Callable[[], int],
        budget: Callable[[], float | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._progress = progress
        self._budget = budget
        self._clock = clock
        self._seen = progress()
        self._since = clock()

    def check(self) -> str | None:
        """None if alive, else why not (one sentence)."""
        now = self._clock()
        progress = self._progress()
        budget = self._budget()
        if progress != self._seen or budget is None:
            self._seen, self._since = progress, now
            return None
        stalled = now - self._since
        if stalled <= budget:
            return None
        return f"the scheduler finished no probe run for {stalled:.1f}s (allowed {budget:.1f}s)"


async def feed_watchdog(notifier: Notifier, interval: float, liveness: Liveness) -> None:
    """Send WATCHDOG=1 every `interval` seconds while `liveness` holds; stop (and say why) when it does not."""
    loop = asyncio.get_running_loop()
    starved: str | None = None
    while True:
        planned = loop.time() + interval
        await asyncio.sleep(interval)
        lag = loop.time() - planned
        if lag > max(interval, 1.0):  # the loop was blocked: we still ping (it turns now), but say so
            log.warning("event_loop_lag", seconds=round(lag, 3))
        try:
            reason = liveness.check()
        except Exception as exc:  # the one catch-all of this task: a broken check must not feed a stuck daemon
            reason = f"liveness check failed: {exc!r}"
        if reason is None:
            if starved is not None:
                log.info("watchdog_fed_again", was=starved)
            starved = None
            notifier.watchdog()
        elif starved is None:
            starved = reason
            log.error("watchdog_starved", reason=reason,
                      hint="systemd restarts bcd after WatchdogSec= unless progress resumes")


async def keep_status(notifier: Notifier, text: Callable[[], str], every: float = 1.0) -> None:
    """Send STATUS= whenever `text()` changes (checked every `every` seconds)."""
    last = text()
    while True:
        await asyncio.sleep(every)
        try:
            current = text()
        except Exception:  # the one catch-all of this task: a status line is not worth dying for
            log.exception("status_failed")
            continue
        if current != last and notifier.status(current):
            last = current
