"""Binding server.listen on real sockets: a port in use is a ListenError, even though bcd sets
SO_REUSEADDR (so a restart does not wait for TIME_WAIT)."""

from __future__ import annotations

import socket

import pytest

from bcd.web.listen import ListenError, bind
from tests.helpers.daemon import free_port


def test_binds_a_listening_socket() -> None:
    port = free_port()
    (sock,) = bind(f"127.0.0.1:{port}", "127.0.0.1", port)
    with sock, socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_second_bind_on_the_same_port_fails_despite_reuse_address() -> None:
    port = free_port()
    (first,) = bind(f"127.0.0.1:{port}", "127.0.0.1", port)
    with first, pytest.raises(ListenError) as refused:
        bind(f"127.0.0.1:{port}", "127.0.0.1", port)
    assert str(refused.value) == (
        f"cannot listen on 127.0.0.1:{port}: the address is in use (another bcd, or another program): stop it, "
        "or set server.listen to a free address")


def test_a_port_held_by_a_plain_bound_socket_is_in_use() -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))  # bound, not listening, no SO_REUSEADDR
        with pytest.raises(ListenError, match="the address is in use"):
            bind(f"127.0.0.1:{port}", "127.0.0.1", port)


def test_an_address_that_is_not_ours_says_so() -> None:
    with pytest.raises(ListenError, match=r"^cannot listen on 192\.0\.2\.1:9847 \(.+\): check server\.listen$"):
        bind("192.0.2.1:9847", "192.0.2.1", 9847)  # TEST-NET-1: never a local address; bind fails, nothing is sent
