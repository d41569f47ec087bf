"""bcd under systemd, without systemd: a real datagram socket stands in for $NOTIFY_SOCKET, the real daemon
runs as a subprocess; the unit file goes through `systemd-analyze verify` and `security`. Under systemd itself:
tests/integration/test_systemd_booted.py."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess, Daemons, free_port
from tests.helpers.targets import HttpTarget

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "systemd" / "bcd.service"
PLUGINS = Path("/usr/lib/nagios/plugins")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

CONFIG = """
instance: sd-test
vantage: dorset
state_dir: {state_dir}
server: {{listen: "127.0.0.1:{port}"}}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 200ms, timeout: 150ms, rise: 2, fall: 2}}
services:
  payroll:
    active: dorset
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "{url}"}}}}, {{name: port, tcp: {{host: 127.0.0.1, port: {tcp_port}}}}}]}}
      hampshire: {{probes: [{{name: plugin, interval: 500ms, timeout: 400ms, command: {{argv: {plugin}}}}}]}}
"""


# -- a stand-in for systemd's notify socket ------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    fields: dict[str, str]
    pid: int | None  # the sender, from SCM_CREDENTIALS (systemd checks it too: NotifyAccess=main)
    at: float  # loop time of arrival


class NotifySocket:
    """An AF_UNIX datagram socket bound at a path or (leading '@') in the abstract namespace."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.messages: list[Message] = []
        self._cursor = 0
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(Message(fields, pid, self._loop.time()))
            self._arrived.set()

    async def expect(self, predicate: Callable[[dict[str, str]], bool], timeout: float = 10.0) -> Message:
        """The next message (after the last one expected) matching `predicate`; waits for it to arrive."""
        async with asyncio.timeout(timeout):
            while True:
                for index in range(self._cursor, len(self.messages)):
                    if predicate(self.messages[index].fields):
                        self._cursor = index + 1
                        return self.messages[index]
                self._arrived.clear()
                await self._arrived.wait()

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def has(key: str, value: str | None = None) -> Callable[[dict[str, str]], bool]:
    return lambda fields: key in fields and (value is None or fields[key] == value)


# -- the daemon under test ----------------------------------------------------------------------------------

# Run under the kernel's own "memory deny write-execute" (prctl PR_SET_MDWE, Linux >= 6.3, kept across
# execve): what MemoryDenyWriteExecute=yes in the unit enforces. CPython and uvloop must not need W+X pages.
MDWE_LAUNCHER = """
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE): {os.strerror(ctypes.get_errno())}")
os.execv(sys.executable, [sys.executable, "-m", "bcd", *sys.argv[1:]])
"""


class SystemdDaemon(DaemonProcess):
    """`bcd run` with a controlled systemd environment (nothing inherited from whatever runs the tests)."""

    def __init__(self, config_path: Path, port: int, env: dict[str, str], mdwe: bool = False) -> None:
        super().__init__(config_path, port)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS"):
            self.env.pop(key, None)
        self.env.update(env)
        self.mdwe = mdwe

    def argv(self) -> list[str]:
        prefix = ["-c", MDWE_LAUNCHER] if self.mdwe else ["-m", "bcd"]
        return [sys.executable, *prefix, "run", "-c", str(self.config_path)]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Estate:
    def __init__(self, tmp_path: Path, target: HttpTarget, tcp_port: int) -> None:
        self.port = free_port()
        self.config_path = tmp_path / "bcd.yaml"
        plugin = [str(PLUGINS / "check_tcp"), "-H", "127.0.0.1", "-p", str(tcp_port)]
        if not (PLUGINS / "check_tcp").exists():
            plugin = ["/bin/true"]
        self.text = CONFIG.format(state_dir=tmp_path / "state", port=self.port, url=target.url, tcp_port=tcp_port,
                                  plugin="[" + ", ".join(f'"{arg}"' for arg in plugin) + "]")
        self.config_path.write_text(self.text)
        self.daemons = Daemons()  # the tests start them, and wait for READY=1

    def daemon(self, notify: NotifySocket, mdwe: bool = False, **env: str) -> SystemdDaemon:
        process = SystemdDaemon(self.config_path, self.port, {"NOTIFY_SOCKET": notify.address, **env}, mdwe)
        self.daemons.started.append(process)
        return process


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    target = await HttpTarget().start()
    listener = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    estate = Estate(tmp_path, target, listener.sockets[0].getsockname()[1])
    yield estate
    await estate.daemons.stop_all(signal.SIGKILL)
    listener.close()
    await listener.wait_closed()
    await target.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: an AF_UNIX socket path must fit in 108 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="bcd-sd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def notify(short_dir: Path) -> AsyncIterator[NotifySocket]:
    sock = NotifySocket(str(short_dir / "notify"))
    yield sock
    sock.close()


@pytest.fixture
async def abstract_notify() -> AsyncIterator[NotifySocket]:
    sock = NotifySocket(f"@bcd-test-{uuid.uuid4().hex}")
    yield sock
    sock.close()


def mdwe_available() -> bool:
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return sys.platform == "linux" and release is not None and tuple(map(int, release.groups())) >= (6, 3)


# -- sd_notify from the real daemon ----------------------------------------------------------------------


async def test_ready_after_http_is_bound_then_status_follows(estate: Estate, notify: NotifySocket) -> None:
    daemon = estate.daemon(notify)
    await daemon.start()
    ready = await notify.expect(has("READY", "1"))
    status, _ = await daemon.get("/healthz")  # no retry: READY=1 promises the API is already serving
    assert status == 200
    assert ready.pid == daemon.pid
    assert notify.messages[0] is ready, "nothing before READY=1"
    assert ready.fields["STATUS"].startswith("1 service, 3 probes; 0 blocked; 0 runs")
    # STATUS= follows the daemon: "waiting for every probe to run once" goes once every probe has run
    if ready.fields["STATUS"] != "1 service, 3 probes; 0 blocked; 0 runs":
        await notify.expect(has("STATUS", "1 service, 3 probes; 0 blocked; 0 runs"))
    daemon.send(signal.SIGTERM)
    stopping = await notify.expect(has("STOPPING", "1"))
    assert stopping.pid == daemon.pid
    assert await daemon.stop() == 0
    assert not any("WATCHDOG" in m.fields for m in notify.messages)  # no WATCHDOG_USEC, no pings


async def test_reload_is_announced_also_when_it_fails(estate: Estate, notify: NotifySocket) -> None:
    daemon = estate.daemon(notify)
    await daemon.start()
    await notify.expect(has("READY", "1"))

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.send(signal.SIGHUP)
    reloading = await notify.expect(has("RELOADING", "1"))
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= after  # the same clock systemd reads
    done = await notify.expect(has("READY", "1"))
    assert "FAILED" not in done.fields["STATUS"]
    await daemon.wait_log(lambda line: line.get("event") == "reloaded")

    estate.config_path.write_text(estate.text.replace("rise: 2", "rise: -2"))  # invalid: the old config stays
    daemon.send(signal.SIGHUP)
    await notify.expect(has("RELOADING", "1"))
    done = await notify.expect(has("READY", "1"))  # systemd must leave "reloading" even when it failed
    assert "last reload FAILED, running the previous config" in done.fields["STATUS"]

    daemon.send(signal.SIGTERM)
    await notify.expect(has("STOPPING", "1"))
    assert await daemon.stop() == 0


async def test_watchdog_pings_every_half_watchdog_usec(estate: Estate, notify: NotifySocket) -> None:
    # Under the kernel's write-xor-execute (what MemoryDenyWriteExecute=yes enforces) where the kernel has it:
    # CPython and uvloop must not need W+X pages, and probes and plugins must still work.
    daemon = estate.daemon(notify, mdwe=mdwe_available(), WATCHDOG_USEC="200000")
    await daemon.start()
    await notify.expect(has("READY", "1"))
    pings = [await notify.expect(has("WATCHDOG", "1"), timeout=2.0) for _ in range(12)]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(pings)]
    assert 0.08 <= statistics.median(gaps) <= 0.13, gaps
    assert max(gaps) < 0.2, gaps  # every ping inside WATCHDOG_USEC, or systemd would have killed us
    assert {ping.pid for ping in pings} == {daemon.pid}

    await daemon.wait_ready()
    data = await daemon.get_json("/api/v1/services/payroll")
    results = {name: probe["result"] for site in data["sites"].values() for name, probe in site["probes"].items()}
    assert results == {"health": "ok", "port": "ok", "plugin": "ok"}, data
    assert await daemon.stop() == 0


async def test_abstract_socket_and_a_watchdog_that_is_not_ours(
    estate: Estate, abstract_notify: NotifySocket
) -> None:
    notify = abstract_notify
    daemon = estate.daemon(notify, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    await daemon.start()
    ready = await notify.expect(has("READY", "1"))
    assert ready.pid == daemon.pid
    await daemon.wait_ready()  # every probe has run: several watchdog periods have passed
    daemon.send(signal.SIGTERM)
    await notify.expect(has("STOPPING", "1"))
    assert await daemon.stop() == 0
    assert not any("WATCHDOG" in m.fields for m in notify.messages)


async def test_unreachable_notify_socket_is_logged_once_and_harmless(estate: Estate, short_dir: Path) -> None:
    gone = NotifySocket(str(short_dir / "gone"))
    gone.close()  # the path stays, nobody listens: every send fails with ECONNREFUSED
    daemon = estate.daemon(gone, WATCHDOG_USEC="200000")
    await daemon.start()
    await daemon.wait_ready()  # READY=1 and several WATCHDOG=1 have failed by now
    assert await daemon.stop() == 0
    failures = [line for line in daemon.log_lines if line.get("event") == "sd_notify_failed"]
    assert len(failures) == 1, failures
    assert failures[0]["level"] == "warning"


# -- the unit file --------------------------------------------------------------------------------------


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_declares_the_contract() -> None:
    unit = directives(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == ["/usr/bin/bcd run -c /etc/bcd/bcd.yaml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["WatchdogSec"] == ["30s"]
    assert unit["LimitNOFILE"] == ["65536"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["StateDirectory"] == ["bcd"]
    assert unit["ConfigurationDirectory"] == ["bcd"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert unit["MemoryDenyWriteExecute"] == ["yes"]
    assert "#LoadCredential=mqtt_password:" in UNIT.read_text()


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's `bcd`: `verify` checks that the binary exists, and
    /usr/bin/bcd is only there once bcd is installed system-wide."""
    bcd = Path(sys.executable).parent / "bcd"
    assert bcd.exists(), "the package is installed in the venv (pip install -e .)"
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/bcd " in text
    path = tmp_path / "bcd.service"
    path.write_text(text.replace("ExecStart=/usr/bin/bcd ", f"ExecStart={bcd} "))
    return path


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_systemd_analyze_verify_is_clean(runnable_unit: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    check = subprocess.run([SYSTEMD_ANALYZE, "verify", str(runnable_unit)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_systemd_analyze_security_rates_the_unit_ok() -> None:
    assert SYSTEMD_ANALYZE is not None
    check = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", "--no-pager",
         str(UNIT)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    output = check.stdout + check.stderr
    match = re.search(r"Overall exposure level for bcd\.service: (\d+\.\d+) (\w+)", output)
    assert match is not None, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output
    assert match.group(2) == "OK", output
    assert check.returncode == 0, output
