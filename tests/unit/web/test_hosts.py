"""server.allowed_hosts: which Host headers the API answers."""

from __future__ import annotations

import pytest

from bcd.config import Server
from bcd.web.hosts import allowed_hosts


@pytest.mark.parametrize(("listen", "host", "allowed"), [
    ("127.0.0.1:9847", "127.0.0.1:9847", True),
    ("127.0.0.1:9847", "127.0.0.1", True),
    ("127.0.0.1:9847", "LOCALHOST:9847", True),
    ("127.0.0.1:9847", "localhost", True),
    ("127.0.0.1:9847", "[::1]:9847", True),
    ("127.0.0.1:9847", "10.1.2.3:9847", True),  # an address literal: no name for an attacker to re-point
    ("127.0.0.1:9847", "[2001:db8::1]", True),
    ("127.0.0.1:9847", "evil.example:9847", False),  # a rebound name
    ("127.0.0.1:9847", "evil.example", False),
    ("127.0.0.1:9847", "localhost.evil.example", False),
    ("127.0.0.1:9847", "127.0.0.1.evil.example", False),
    ("127.0.0.1:9847", "[::1", False),
    ("127.0.0.1:9847", "", False),
    ("bcd.dorset.example:9847", "bcd.dorset.example:9847", True),
    ("[::1]:9847", "[::1]:9847", True),
])
def test_default_hosts(listen: str, host: str, allowed: bool) -> None:
    assert allowed_hosts(Server(listen=listen)).allows(host) is allowed


@pytest.mark.parametrize(("host", "allowed"), [
    ("bcd.dorset.example", True), ("bcd.dorset.example:443", True), ("BCD.Dorset.Example", True),
    ("proxy.example:8443", True), ("proxy.example:9847", False), ("proxy.example", False),
    ("localhost", False), ("127.0.0.1", False),  # a configured list is the whole list: no addresses by default
])
def test_configured_hosts_are_the_whole_list(host: str, allowed: bool) -> None:
    server = Server(listen="127.0.0.1:9847", allowed_hosts=("bcd.dorset.example", "proxy.example:8443"))
    assert allowed_hosts(server).allows(host) is allowed
