"""Loopback ports for the servers a test starts (the daemon, mosquitto, etcd, probes' targets), reserved so that
nothing else binds them before their user does.

A port found by binding port 0 and releasing it is only free at that moment: until the test's server binds it
(often a subprocess, a second later) the kernel may hand it to any bind(0) or outgoing connection on the
machine, and another test — in this session, another pytest-xdist worker or another checkout's suite — may be
handed it too. So a `PortPool` hands out ports

- outside the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), which bind(0) and connect()
  allocate from: the kernel never gives them away by itself;
- each reserved across processes: a POSIX record lock on the byte at the port's offset in one lock file under a
  shared temporary directory, held until the reserving process exits (the kernel drops it then, even after a
  SIGKILL: no stale reservation outlives its process), and remembered in the process so it is never handed out
  twice here;
- in turn, from a cursor shared through the same directory: a port freed by a finished run is the last to be
  handed out again (its servers' TIME_WAIT connections long gone);
- only if it can be bound right now on 127.0.0.1 for TCP and UDP, without SO_REUSEADDR (a listener, or a
  connection still in TIME_WAIT, from outside the pool: skipped).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Below: well-known and registered services' ports (postgres, etcd, prometheus, mosquitto, ...) and the demo
# estate's fixed ones (config/demo.yaml: 19100-19204), which a test may start while another holds a pool port.
FLOOR = 20_000
DIRECTORY = Path(tempfile.gettempdir()) / f"bcd-test-ports-{os.getuid()}"


def candidate_ports(ephemeral: Path = EPHEMERAL) -> list[int]:
    """The ports from FLOOR up that are outside the kernel's ephemeral range (Linux's default: 32768-60999).
    If that range leaves none, every port from FLOOR up (the bind check alone then keeps clear of others)."""
    try:
        low, high = (int(field) for field in ephemeral.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    ports = [port for port in range(FLOOR, 65536) if not low <= port <= high]
    return ports or list(range(FLOOR, 65536))


def bindable(port: int) -> bool:
    """True when nothing on this machine holds 127.0.0.1:`port` for TCP or UDP (TIME_WAIT included)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class PortPool:
    """Ports from `ports`, each handed out once among every process using the same `directory`."""

    def __init__(self, directory: Path, ports: Sequence[int]) -> None:
        self.directory = directory
        self.ports = list(ports)
        self._held: set[int] = set()
        self._mutex = threading.Lock()
        self._locks: int | None = None  # opened once and never closed: closing it would drop every reservation

    def take(self) -> int:
        """A port reserved for this process until it exits; RuntimeError when every port is taken."""
        with self._mutex, self._cursor() as cursor:
            start = _read_int(cursor)
            for step in range(len(self.ports)):
                index = (start + step) % len(self.ports)
                port = self.ports[index]
                if port not in self._held and self._reserve(port):
                    self._held.add(port)
                    os.pwrite(cursor, f"{index + 1:<12}".encode(), 0)
                    return port
        raise RuntimeError(f"no free port among the {len(self.ports)} of the pool in {self.directory}: each is "
                           "reserved by a running process or in use")

    def _reserve(self, port: int) -> bool:
        locks = self._lock_file()
        try:
            fcntl.lockf(locks, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:  # another process holds it
            return False
        if bindable(port):
            return True
        fcntl.lockf(locks, fcntl.LOCK_UN, 1, port)
        return False

    def _lock_file(self) -> int:
        if self._locks is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._locks = os.open(self.directory / "reserved", os.O_RDWR | os.O_CREAT, 0o600)
        return self._locks

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[int]:
        """The shared cursor file, locked (flock, per open file: apart from the record locks) while in use."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "cursor", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)


def _read_int(fd: int) -> int:
    try:
        return int(os.pread(fd, 12, 0).decode() or "0")
    except ValueError:
        return 0


POOL = PortPool(DIRECTORY, candidate_ports())
