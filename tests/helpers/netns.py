"""Real network partitions for tests: fresh network namespaces joined over veth pairs, with loopback addresses only.

`SiteNetwork` builds three namespaces named after the test process (`bcdtest-<pid>-<n>-hub|wan|<site>`):

    hub (the test itself, the etcd         wan (the link)              site (one data centre: a bcd
    majority, the other instances,                                     instance, maybe an etcd member)
    probe targets, step targets)
      lo       127.0.0.1/32                                              lo       up, no address
      to-site  127.77.0.1/24 <--veth--> hub-side [bridge] site-side <--veth--> to-hub  127.77.0.2/24
                                                                         route 127.0.0.1/32 dev to-hub

Loopback addresses are routable over a veth once `route_localnet` is on (else the kernel drops them as
martians) and once nothing on either side claims them as local: a new namespace's `lo` gets 127.0.0.1/8 when
it comes up, which puts `local 127.0.0.0/8 dev lo` in the local table. So the hub keeps 127.0.0.1 as a /32 (its
servers bind 127.0.0.1 as usual, and 127.77.0.0/24 goes out over the veth), and the site has no 127.0.0.1 at all:
there, 127.0.0.1 is the hub across the link, so one config file serves both sides. The site's own servers bind
127.77.0.2.

`cut()` sets both ports of the wan bridge down: the hub's and the site's ends lose their carrier but stay up and
keep their addresses and routes, so packets vanish silently both ways (connections hang; nothing is refused,
reset or reported unreachable), as when an inter-site link fails. `heal()` sets the ports up again.

The test joins the hub with `entered(hub)`: the calling thread (the event loop's) moves into it, so the sockets
it opens and the processes it starts live there; processes for the site start through `ip netns exec`. Nothing
in the host's own namespace is changed; `delete()` removes the namespaces this object made (and only them).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from tests.helpers import free_port
from tests.helpers.etcd import ETCD, EtcdCluster, EtcdMember

IP = shutil.which("ip") or "/usr/sbin/ip"
CLONE_NEWNET = 0x40000000
HUB_ADDRESS = "127.77.0.1"
SITE_ADDRESS = "127.77.0.2"
HUB_DEVICE = "to-site"  # in the hub
SITE_DEVICE = "to-hub"  # in the site
WAN_PORTS = ("hub-side", "site-side")  # in the wan, the peers of HUB_DEVICE and SITE_DEVICE, on bridge "wan"

T = TypeVar("T")
_serial = itertools.count(1)


def ip(*args: str) -> str:
    """Run `ip ARGS...` (argv, no shell); its stdout, or RuntimeError with what it said."""
    done = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _setns(fd: int) -> None:
    """Move the calling thread (only) into the network namespace open at `fd`."""
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _ns_path(name: str) -> str:
    return f"/run/netns/{name}"


def inside(name: str, work: Callable[[], T]) -> T:
    """Run `work` in a short-lived thread that has joined namespace `name`; its result (or its exception)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(_ns_path(name), os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(work())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


@contextmanager
def entered(name: str) -> Iterator[None]:
    """The calling thread inside namespace `name` for the block, then back where it was. Sockets it opens and
    processes and threads it starts meanwhile belong to `name`; threads that already exist (a thread pool made
    earlier) stay where they are, so network work must not be handed to them."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(_ns_path(name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def sysctl(name: str, key: str, value: str) -> None:
    """Set a net.* sysctl inside namespace `name` (/proc/sys/net shows the namespace of the thread asking)."""
    path = Path("/proc/sys") / key.replace(".", "/")
    inside(name, lambda: path.write_text(value))


@functools.cache
def unavailable() -> str | None:
    """Why this machine cannot build namespaces joined by veth pairs and a bridge (None when it can); checked
    once per test session."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    if not Path(IP).exists():
        return "iproute2 (`ip`) is not installed"
    probe = f"bcdtest-{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"`ip netns add` failed: {exc}"
    try:
        ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        ip("-n", probe, "link", "add", "probe2", "type", "bridge")
        inside(probe, lambda: None)  # setns() works for this process
    except (RuntimeError, OSError) as exc:
        return f"a veth pair or a bridge in a network namespace cannot be made: {exc}"
    finally:
        with suppress(RuntimeError):
            ip("netns", "del", probe)
    return None


class SiteNetwork:
    """A hub namespace and one site's namespace joined through a wan namespace whose link `cut()` and `heal()`
    take down and up (see the module docstring). As a context manager: created on entry, deleted on exit."""

    def __init__(self, site: str) -> None:
        stem = f"bcdtest-{os.getpid()}-{next(_serial)}"
        self.hub = f"{stem}-hub"
        self.wan = f"{stem}-wan"
        self.site = f"{stem}-{site}"
        self.hub_address = HUB_ADDRESS
        self.site_address = SITE_ADDRESS
        self.is_cut = False
        self._created: list[str] = []

    def create(self) -> None:
        for name in (self.hub, self.wan, self.site):
            ip("netns", "add", name)
            self._created.append(name)
        for name in (self.hub, self.site):
            ip("-n", name, "link", "set", "lo", "up")  # the kernel gives it 127.0.0.1/8 and ::1
            ip("-n", name, "address", "del", "127.0.0.1/8", "dev", "lo")
        ip("-n", self.hub, "address", "add", "127.0.0.1/32", "dev", "lo")
        ip("-n", self.wan, "link", "add", "wan", "type", "bridge")
        ip("-n", self.wan, "link", "set", "wan", "up")
        for name, device, port in ((self.hub, HUB_DEVICE, WAN_PORTS[0]), (self.site, SITE_DEVICE, WAN_PORTS[1])):
            ip("-n", name, "link", "add", device, "type", "veth", "peer", "name", port, "netns", self.wan)
            ip("-n", self.wan, "link", "set", port, "master", "wan")
            ip("-n", self.wan, "link", "set", port, "up")
        ip("-n", self.hub, "address", "add", f"{self.hub_address}/24", "dev", HUB_DEVICE)
        ip("-n", self.site, "address", "add", f"{self.site_address}/24", "dev", SITE_DEVICE)
        for name, device in ((self.hub, HUB_DEVICE), (self.site, SITE_DEVICE)):
            for scope in ("all", device):
                sysctl(name, f"net.ipv4.conf.{scope}.route_localnet", "1")
            ip("-n", name, "link", "set", device, "up")
        ip("-n", self.site, "route", "add", "127.0.0.1/32", "dev", SITE_DEVICE)
        self.check()

    def check(self, timeout: float = 2.0) -> None:
        """A TCP connection each way over the link: from the site to the hub's 127.0.0.1, and from the hub to the
        site's address. RuntimeError, with every namespace's addresses and routes, when the kernel does not route."""
        for server_ns, host, client_ns, source in ((self.hub, "127.0.0.1", self.site, self.site_address),
                                                   (self.site, self.site_address, self.hub, self.hub_address)):
            listener = inside(server_ns, functools.partial(socket.create_server, (host, 0)))
            with listener:
                port = listener.getsockname()[1]
                listener.settimeout(timeout)
                try:
                    client = inside(client_ns, functools.partial(socket.create_connection, (host, port), timeout))
                    with client:
                        peer, address = listener.accept()
                        peer.close()
                except OSError as exc:
                    raise RuntimeError(f"no TCP from {client_ns} to {host}:{port} over the link: {exc!r}\n"
                                       f"{self.describe()}") from exc
                if address[0] != source:
                    raise RuntimeError(f"{host}:{port} was reached from {address[0]}, not over the link\n"
                                       f"{self.describe()}")

    def describe(self) -> str:
        """Addresses and routes of every namespace, for error messages."""
        return "\n".join(f"--- {name}\n{ip('-n', name, 'address')}{ip('-n', name, 'route', 'show', 'table', 'all')}"
                         for name in self._created)

    def cut(self) -> None:
        """Take the link down: from now on no packet crosses, either way, and none is refused."""
        for port in WAN_PORTS:
            ip("-n", self.wan, "link", "set", port, "down")
        self.is_cut = True

    def heal(self) -> None:
        for port in WAN_PORTS:
            ip("-n", self.wan, "link", "set", port, "up")
        self.is_cut = False

    def exec_argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside the site's namespace."""
        return [IP, "netns", "exec", self.site, *argv]

    def delete(self) -> None:
        """Delete the namespaces this object created (each one, even when another fails)."""
        errors = []
        while self._created:
            name = self._created.pop()
            try:
                ip("netns", "del", name)
            except RuntimeError as exc:
                errors.append(str(exc))
        if errors:
            raise RuntimeError("; ".join(errors))

    def __enter__(self) -> SiteNetwork:
        try:
            self.create()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.delete()


@dataclass
class PlacedEtcdMember(EtcdMember):
    """A member listening on `host`, inside namespace `netns` (None: wherever the test's thread is)."""

    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


@dataclass
class PlacedEtcdCluster(EtcdCluster):
    """An EtcdCluster whose members sit where `placement` says: (name, host, namespace or None) per member;
    members in a namespace run through `ip netns exec`. Start it from inside the hub (`entered(hub)`)."""

    placement: list[tuple[str, str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not Path(ETCD).exists():
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        self.size = len(self.placement)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for name, host, netns in self.placement:
            self.members.append(PlacedEtcdMember(
                name=name, client_port=free_port(), peer_port=free_port(), data_dir=self.base_dir / name,
                log=self.base_dir / f"{name}.log", host=host, netns=netns,
            ))

    def _argv(self, member: EtcdMember) -> list[str]:
        argv = super()._argv(member)
        if isinstance(member, PlacedEtcdMember) and member.netns is not None:
            return [IP, "netns", "exec", member.netns, *argv]
        return argv
