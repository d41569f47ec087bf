"""The tests' reserved ports (tests.helpers.ports): never the same port to two processes, nothing from the
kernel's ephemeral range, no port something already holds, and a reservation gone with its process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.helpers.ports import POOL, PortPool, candidate_ports

ROOT = Path(__file__).resolve().parents[2]
# Takes `count` ports from a pool once told to go (stdin), prints them, holds them until stdin closes.
TAKER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.helpers.ports import PortPool
pool = PortPool(Path(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")])
sys.stdin.readline()
try:
    print(" ".join(str(pool.take()) for _ in range(int(sys.argv[4]))), flush=True)
except RuntimeError as exc:
    print("refused:", exc, flush=True)
sys.stdin.read()
"""


def taker(directory: Path, ports: list[int], count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", TAKER, str(ROOT), str(directory), ",".join(map(str, ports)),
                             str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def taken(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def go(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()


def finish(process: subprocess.Popen[str]) -> None:
    """Let the process end (its reservations end with it)."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.wait(timeout=10)
    process.stdout.close()


def test_two_processes_taking_at_once_never_get_the_same_port(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(40)]  # free, and held here in the suite's pool: nobody else binds them
    first, second = taker(tmp_path, ports, 20), taker(tmp_path, ports, 20)
    try:
        go(first)
        go(second)
        got = [taken(first).split(), taken(second).split()]
        assert len(got[0]) == len(got[1]) == 20
        assert sorted(int(port) for port in got[0] + got[1]) == sorted(ports)
        third = taker(tmp_path, ports, 1)
        go(third)
        assert taken(third).startswith("refused: no free port among the 40 of the pool")
        finish(third)
        finish(first)
        again = taker(tmp_path, ports, 20)
        go(again)
        assert sorted(taken(again).split()) == sorted(got[0])
        finish(again)
    finally:
        for process in (first, second):
            if not process.stdout.closed:  # type: ignore[union-attr]
                finish(process)


def test_a_port_in_use_for_tcp_or_udp_is_skipped(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    pool = PortPool(tmp_path, ports)
    with socket.socket() as listener, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagrams:
        listener.bind(("127.0.0.1", ports[0]))
        listener.listen(1)
        datagrams.bind(("127.0.0.1", ports[1]))
        assert pool.take() == ports[2]
    assert sorted([pool.take(), pool.take()]) == sorted(ports[:2])  # free again, and each handed out once
    with pytest.raises(RuntimeError, match="no free port among the 3"):
        pool.take()


def test_ports_come_from_outside_the_kernels_ephemeral_range(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("25000\t60000\n")
    assert candidate_ports(setting) == [*range(20_000, 25_000), *range(60_001, 65_536)]
    setting.write_text("1024 65535\n")  # nothing outside it: the bind check alone keeps clear of others
    assert candidate_ports(setting) == list(range(20_000, 65_536))
    low, high = (int(field) for field in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert not any(low <= port <= high for port in POOL.ports)
    assert not low <= free_port() <= high
