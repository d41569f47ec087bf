"""What every probe kind shares: the `Probe` protocol, the context, and the run-under-deadline helper.

A probe is built once per (service, site, probe) and `run()` is called every interval. `run()` never
raises (except CancelledError), finishes within its timeout, and says in one line what it saw.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from bcd import __version__
from bcd.model import ProbeResult, Result

REASON_LIMIT = 200


class ProbeSetupError(ValueError):
    """A probe cannot be built from its spec (e.g. a certificate file that cannot be loaded)."""


class Probe(Protocol):
    async def run(self) -> ProbeResult:
        """Check once; never raises except CancelledError; returns within the probe's timeout."""
        ...


SpecT = TypeVar("SpecT")


@dataclass(frozen=True, slots=True)
class ProbeKind(Generic[SpecT]):
    """One probe kind, declared at the end of its module (`KIND = ProbeKind("http", HttpSpec, HttpProbe)`) and
    listed in `registry.py`: the config key, the spec under that key, and what builds a probe from that spec
    (mypy checks that `build` takes this kind's spec)."""

    name: str
    spec: type[SpecT]
    build: Callable[[SpecT, float, ProbeContext], Probe]


def user_agent(vantage: str | None = None) -> str:
    """The User-Agent of HTTP probes; a cluster member names its vantage, e.g. "bcd/0.1.0 (vantage dorset)"."""
    return f"bcd/{__version__}" + (f" (vantage {vantage})" if vantage else "")


@dataclass(frozen=True)
class ProbeContext:
    """What the probes of one daemon share. `clock` times latency, `wall_clock` judges cert expiry."""

    user_agent: str = field(default_factory=user_agent)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time


# ---------------------------------------------------------------------------------------------------------
# Running one check under its deadline


@dataclass
class Attempt:
    """One run of a probe: when it started and what it is waiting for now (named if the deadline hits)."""

    timeout: float
    clock: Callable[[], float]
    doing: str
    started: float = field(init=False)
    deadline: float | None = field(init=False, default=None)  # event-loop time, set by guarded()

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def result(
        self,
        result: Result,
        reason: str,
        cert_expiry: float | None = None,
        perfdata: tuple[tuple[str, str], ...] = (),
    ) -> ProbeResult:
        return ProbeResult(result, self.elapsed(), one_line(reason), cert_expiry, perfdata)


async def guarded(
    attempt: Attempt,
    check: Coroutine[Any, Any, ProbeResult],
    describe: Callable[[Exception], str],
) -> ProbeResult:
    """Await `check` under the attempt's deadline; a timeout or an exception becomes a FAIL result."""
    try:
        async with asyncio.timeout(attempt.timeout) as deadline:
            attempt.deadline = deadline.when()
            return await check
    except TimeoutError:
        return attempt.result(Result.FAIL, f"timeout after {seconds(attempt.timeout)} {attempt.doing}")
    except Exception as exc:
        if (internal := local_shortage(exc)) is not None:
            return replace(attempt.result(Result.FAIL, f"bcd could not run the check: {describe(exc)}"),
                           internal=internal)
        return attempt.result(Result.FAIL, describe(exc))


LOCAL_SHORTAGES = {errno.EMFILE: "EMFILE", errno.ENFILE: "ENFILE", errno.ENOMEM: "ENOMEM", errno.ENOBUFS: "ENOBUFS"}


def local_shortage(exc: BaseException) -> str | None:
    """The errno name if `exc` (or what caused it) says bcd's own host ran out of something (file descriptors,
    memory, buffers): that is no evidence against the target. None otherwise."""
    seen: BaseException | None = exc
    for _ in range(8):  # a library may wrap the OSError a few levels deep
        if seen is None:
            return None
        if isinstance(seen, MemoryError):
            return "ENOMEM"
        if isinstance(seen, OSError) and seen.errno in LOCAL_SHORTAGES:
            return LOCAL_SHORTAGES[seen.errno]
        seen = seen.__cause__ or seen.__context__
    return None


async def close_politely(writer: asyncio.StreamWriter, attempt: Attempt, grace: float = 1.0) -> None:
    """Close a stream and wait for it (TLS close_notify included) for at most `grace` seconds, and never
    past the attempt's deadline: a check that succeeded is not turned into a timeout by a slow goodbye."""
    writer.close()
    loop = asyncio.get_running_loop()
    until = loop.time() + grace
    if attempt.deadline is not None:
        until = min(until, attempt.deadline - 0.01)
    try:
        async with asyncio.timeout_at(until):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()


def describe_os_error(exc: Exception, target: str) -> str:
    """One line for the network errors every kind meets; falls back to the exception's own text."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused to {target}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by {target}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target}: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed for {target}: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error with {target}: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror.lower()} ({target})"
    return f"{type(exc).__name__}: {exc} ({target})"


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """Whitespace collapsed to single spaces, other unprintable characters (ESC, NUL, DEL, C1 controls,
    bidi overrides: a target's bytes, never to reach an operator's terminal raw) escaped as `\x1b`,
    `\u202e`; cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    if not flat.isprintable():
        flat = "".join(char if char.isprintable() else char.encode("unicode_escape").decode() for char in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def seconds(value: float) -> str:
    """3 → '3s', 0.25 → '0.25s', 90 → '90s' (millisecond precision)."""
    return f"{round(value, 3):g}s"
