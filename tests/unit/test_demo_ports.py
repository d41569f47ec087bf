"""The cluster demo's ports are reserved, not merely found free: nothing else gets them before their user binds."""

from __future__ import annotations

import errno
import socket

import pytest

from bcd.demo_cluster import free_port


def test_a_reserved_port_is_refused_to_a_plain_bind_and_given_to_its_user() -> None:
    port = free_port()
    with socket.socket() as other, pytest.raises(OSError) as refused:
        other.bind(("127.0.0.1", port))  # no SO_REUSEADDR: what bind(0) and connect() allocation honour too
    assert refused.value.errno == errno.EADDRINUSE
    with socket.socket() as user:  # etcd, aiohttp and bcd's listener bind with SO_REUSEADDR
        user.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        user.bind(("127.0.0.1", port))
        user.listen(1)

