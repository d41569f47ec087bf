"""Small helpers for tests that talk to real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.helpers import ports


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A 127.0.0.1 port, free for TCP and UDP, that nothing else is handed until this process exits: outside
    the kernel's ephemeral range and reserved across processes (`tests.helpers.ports` says how and why a port
    merely bound and released is not enough). `kind` stays for the callers that name the socket type they
    will bind; the port is checked free for both. The interface is the old one on purpose: every caller that
    cannot start its server on port 0 and read the port back (subprocesses: the daemon, mosquitto, etcd)
    gets the reservation without changing."""
    del kind  # checked free for both kinds
    return ports.POOL.take()


def wait_for_port(host: str, port: int, timeout: float = 10.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Return once host:port accepts TCP connections; raise TimeoutError after `timeout`, RuntimeError as
    soon as `alive()` turns false (the server process died)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if not alive():
                raise RuntimeError(f"the server for {host}:{port} exited before listening") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts connections on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)  # polling a condition with a deadline, not synchronising on time


@dataclass(frozen=True)
class CertFiles:
    """A self-signed certificate for CN=localhost, IP 127.0.0.1."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_cert(directory: Path, days: int, name: str = "server") -> CertFiles:
    """Generate a self-signed EC certificate valid for `days` days with the openssl CLI."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return CertFiles(cert, key)


CA_CONFIG = """[ca]
default_ca = test
[test]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = copy
[any]
commonName = supplied
"""


def make_expired_cert(directory: Path, name: str = "expired") -> CertFiles:
    """A self-signed EC certificate for localhost/127.0.0.1 that was valid on 1 January 2020 only (`openssl ca`
    is the openssl command that takes a start date)."""
    work = directory / f"{name}-ca"
    work.mkdir()
    (work / "ca.cnf").write_text(CA_CONFIG)
    (work / "index.txt").write_text("")
    (work / "serial").write_text("01\n")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    for argv in (
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", "request.csr", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        ["openssl", "ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", str(key), "-in", "request.csr",
         "-out", str(cert), "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext"],
    ):
        subprocess.run(argv, check=True, capture_output=True, cwd=work)
    return CertFiles(cert, key)


@asynccontextmanager
async def serve_http(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 on a port chosen by the kernel; yields the base URL (no trailing slash)."""
    # handlers are cancelled when the client hangs up, and a stuck one holds up shutdown for 2 s at most
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    try:
        await site.start()
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        sock.close()


class SilentServer:
    """A TCP server that accepts connections and never says a word; records when each one is closed."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.closed = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        self._changed.set()
        while await reader.read(65536):  # swallow whatever the client sends, until it hangs up
            pass
        self.closed += 1
        self._changed.set()
        writer.close()

    async def wait_accepted(self, count: int, timeout: float = 5.0) -> None:
        """Return once `count` connections were accepted."""
        async with asyncio.timeout(timeout):
            while self.accepted < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed_by_client(self, count: int, timeout: float = 5.0) -> None:
        """Return once `count` connections were closed by the client side."""
        async with asyncio.timeout(timeout):
            while self.closed < count:
                self._changed.clear()
                await self._changed.wait()


def sockets_connected_to(port: int) -> list[int]:
    """The file descriptors of this process that are TCP sockets whose remote end is 127.0.0.1/::1 `port`
    (read from /proc/self/fd and /proc/net/tcp{,6}: what the kernel holds, not what a library believes)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:  # rem_address is HEXADDR:HEXPORT
                    inodes.add(fields[9])
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found.append(int(fd))
    return found


@asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    """A SilentServer on 127.0.0.1 on a port chosen by the kernel."""
    silent = SilentServer()
    server = await asyncio.start_server(silent._handle, "127.0.0.1", 0)
    silent.port = server.sockets[0].getsockname()[1]
    try:
        yield silent
    finally:
        server.close()
        for writer in silent._writers:
            writer.close()
        await server.wait_closed()


@dataclass(frozen=True)
class Broker:
    """A running broker at host:port; `log` is the file with its output."""

    host: str
    port: int
    log: Path


def start_mosquitto(
    directory: Path, config: str | None = None, port: int | None = None
) -> tuple[subprocess.Popen[bytes], Broker]:
    """Start mosquitto: `-p PORT` (loopback, anonymous allowed), or `-c` with the `config` text, whose
    listener must use `port`. Returns once it accepts connections; stop it with stop_process()."""
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(executable).exists():
        raise RuntimeError("mosquitto is not installed (make deps installs it)")
    port = port or free_port()
    log = directory / f"mosquitto-{port}.log"
    if config is None:
        argv = [executable, "-p", str(port)]
    else:
        conf = directory / f"mosquitto-{port}.conf"
        conf.write_text(config)
        argv = [executable, "-c", str(conf)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, alive=lambda: process.poll() is None)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(process)
        raise RuntimeError(f"mosquitto did not start: {exc}\n{log.read_text(errors='replace')}") from None
    return process, Broker("127.0.0.1", port, log)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill after 5 s, and reap."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
