"""bcd.mqtt.client against real sockets: a connect given up on never leaves a socket open, whenever it is
given up on (waiting for CONNACK is covered through the probe and the publish step; here, inside paho's
connect thread, which cancellation cannot stop)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bcd.broker import BrokerLink
from bcd.mqtt.client import connected
from tests.helpers import sockets_connected_to
from tests.helpers.etcd import wait_for


async def test_a_connect_cancelled_inside_pahos_thread_closes_the_socket_when_the_thread_returns() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port))  # fills the accept queue: the next SYN waits

        async def connect() -> None:
            async with connected(BrokerLink("127.0.0.1", port), identifier="bcd-test", call_timeout=5.0,
                                 connect_timeout=5.0):
                raise AssertionError("no broker here: the connect cannot succeed")

        task = asyncio.create_task(connect())
        await wait_for(lambda: len(sockets_connected_to(port)) == 2)  # the filler, and paho's SYN_SENT socket
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Make room: the thread's retried SYN gets through, its connect() returns with a socket, and that
        # socket is closed as soon as everything the thread queued on the loop has run.
        first, _ = await loop.sock_accept(listener)
        first.close()
        filler.close()
        second, _ = await asyncio.wait_for(loop.sock_accept(listener), 5.0)
        with second:
            async with asyncio.timeout(5.0):
                while await loop.sock_recv(second, 4096):  # CONNECT may have gone out; then the hang-up
                    pass
        assert sockets_connected_to(port) == []
