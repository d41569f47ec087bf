"""A real etcd cluster on loopback for the coordination tests, and a TCP proxy that can be cut.

Members run with `--heartbeat-interval 10 --election-timeout 100`, so a cluster accepts writes a fraction of a
second after start and elects a new leader within a few hundred milliseconds. Members are stopped with SIGKILL:
SIGTERM on the leader waits about 5 s to transfer leadership, which nothing here needs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from bcd.coordination.etcd import EtcdClient, EventType
from tests.helpers import CertFiles, free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _post(url: str, body: dict[str, object], timeout: float, hasleader: bool = True,
          context: ssl.SSLContext | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if hasleader:  # fail at once, rather than wait, on a member without a leader
        headers["Grpc-Metadata-hasleader"] = "true"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        data: dict[str, object] = json.loads(response.read())
        return data


@dataclass
class EtcdMember:
    """One member: its ports, data directory, and the process while it runs."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class EtcdCluster:
    """`size` members on free loopback ports under `base_dir`. Start with start(); stop with stop_all().
    With `tls`, clients must speak TLS and present a certificate signed by (here: equal to) that one."""

    base_dir: Path
    size: int = 3
    tls: CertFiles | None = None
    members: list[EtcdMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not Path(ETCD).exists():
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(EtcdMember(
                name=name, client_port=free_port(), peer_port=free_port(),
                data_dir=self.base_dir / name, log=self.base_dir / f"{name}.log",
                scheme="https" if self.tls else "http",
            ))

    def client_context(self) -> ssl.SSLContext | None:
        """What a client needs to talk to the members (None without TLS)."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=self.tls.cert)
        context.load_cert_chain(self.tls.cert, self.tls.key)
        return context

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def _argv(self, member: EtcdMember) -> list[str]:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        tls = [] if self.tls is None else [
            "--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key),
            "--client-cert-auth", "--trusted-ca-file", str(self.tls.cert),
        ]
        return [
            ETCD, "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.endpoint, "--advertise-client-urls", member.endpoint,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"bcd-test-{self.members[0].client_port}",
            "--heartbeat-interval", "10", "--election-timeout", "100",
            "--log-outputs", "stderr", "--logger", "zap", *tls,
        ]

    def _spawn(self, member: EtcdMember) -> None:
        with member.log.open("ab") as out:
            member.process = subprocess.Popen(
                self._argv(member), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    def _logs(self) -> str:
        return "\n".join(f"--- {m.name}\n{m.log.read_text(errors='replace')[-2000:]}" for m in self.members
                         if m.log.exists())

    def start(self, timeout: float = 15.0) -> None:
        """Start every member; return once a write through the first member succeeds."""
        for member in self.members:
            self._spawn(member)
        deadline = time.monotonic() + timeout
        while True:
            try:
                _post(self.members[0].endpoint + "/v3/kv/put", {"key": _b64("/ready"), "value": _b64("1")}, 0.5,
                      context=self.client_context())
                return
            except (OSError, urllib.error.URLError, ValueError):
                if not all(m.running for m in self.members) or time.monotonic() > deadline:
                    self.stop_all()
                    raise RuntimeError(f"etcd cluster did not accept a write\n{self._logs()}") from None
                time.sleep(0.02)  # polling a condition under a deadline

    def kill(self, index: int) -> None:
        """SIGKILL one member and reap it (its data directory stays, for restart())."""
        member = self.members[index]
        if member.process is not None:
            with suppress(ProcessLookupError):
                member.process.send_signal(signal.SIGKILL)
            member.process.wait()
            member.process = None

    async def restart(self, index: int, timeout: float = 10.0) -> None:
        """Start a killed member again; return once a write through it succeeds (it rejoined a quorum)."""
        member = self.members[index]
        assert not member.running, f"{member.name} is running"
        self._spawn(member)
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await asyncio.to_thread(
                        _post, member.endpoint + "/v3/kv/put", {"key": _b64("/ready"), "value": _b64("1")}, 0.5,
                        True, self.client_context())
                    return
                except (OSError, urllib.error.URLError, ValueError):
                    assert member.running, f"{member.name} exited\n{self._logs()}"
                    await asyncio.sleep(0.02)

    def status(self, index: int) -> tuple[int, int]:
        """(this member's id, the leader's id as this member sees it; 0 when it has none)."""
        data = _post(self.members[index].endpoint + "/v3/maintenance/status", {}, 1.0, hasleader=False,
                     context=self.client_context())
        header = data["header"]
        assert isinstance(header, dict)
        return int(header["member_id"]), int(str(data.get("leader", "0")))

    def leader_index(self) -> int:
        """The index of the current leader, asked of the first running member."""
        running = [i for i, m in enumerate(self.members) if m.running]
        member_ids = {self.status(i)[0]: i for i in running}
        leader = self.status(running[0])[1]
        return member_ids[leader]

    def stop_all(self) -> None:
        for index in range(len(self.members)):
            self.kill(index)


async def wait_for(check: Callable[[], object | Awaitable[object]], timeout: float = 5.0, every: float = 0.01) -> None:
    """Poll `check` (sync or async) until it returns something truthy; TimeoutError after `timeout`.
    For conditions no event announces (a lease expiring in etcd, a member stepping down)."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await asyncio.sleep(every)


async def wait_deleted(endpoints: list[str], key: str, since: int, timeout: float = 30.0) -> int:
    """Return once etcd reports `key` deleted at revision `since` or later (a deletion that already happened
    counts: the key is watched from `since` on); the deletion's revision. A key bound to a lease is deleted
    when the lease expires, so this is the event of a frozen or partitioned holder's lease running out."""
    async with EtcdClient(endpoints) as client, asyncio.timeout(timeout), \
            aclosing(client.watch(key, prefix=False, start_revision=since)) as events:
        async for event in events:
            if event.type is EventType.DELETE:
                return event.revision
    raise AssertionError(f"the watch on {key} ended")  # it does not: a broken stream is reopened


class CuttableProxy:
    """A TCP proxy to one upstream port on 127.0.0.1. `cut()` acts like a partition: bytes stop flowing both
    ways on open connections (nothing is closed or reset) and new connections are accepted but go nowhere.
    `heal()` lets the held bytes through, as TCP retransmission would once the link is back."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.accepted = 0  # connections accepted so far (a client's reconnects show here)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self.heal()
        if self._server is not None:
            await self._server.wait_closed()


@asynccontextmanager
async def cuttable_proxies(cluster: EtcdCluster) -> AsyncIterator[list[CuttableProxy]]:
    """One CuttableProxy per member of `cluster`."""
    proxies = [CuttableProxy(member.client_port) for member in cluster.members]
    try:
        for proxy in proxies:
            await proxy.start()
        yield proxies
    finally:
        for proxy in proxies:
            await proxy.close()
