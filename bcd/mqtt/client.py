"""The one place bcd builds and connects MQTT clients: every workaround aiomqtt 2.5 / paho 2.x need lives here,
used by the MQTT output, the `mqtt:` probe and `mqtt_publish:` steps alike.

- A fresh `aiomqtt.Client` per attempt (it is not reentrant), built inside a coroutine (it needs the loop).
- paho's TCP connect runs in an executor thread that cancellation cannot stop: `connect_timeout` bounds it.
- A connect that fails or is cancelled before CONNACK leaves paho's socket open and registered with the loop
  (aiomqtt 2.5 only cleans up after a CONNACK): `connected()` closes it (`_Abandon`), at once when the
  connect thread is done, else as soon as it is.
- aiomqtt queues every incoming message, unbounded or dropping with only a log line: `on_message` takes each
  one at once instead (`arrivals`).
- A refused subscription is a SUBACK code, not an exception (`refused`); a refused CONNACK carries a code
  that paho words (`connack_text`).

aiomqtt and paho are loaded on first use (`bcd.lazy`): a daemon without MQTT never loads them. The
workarounds lean on private names (aiomqtt's `_client` and `_client_connect`, paho's `_sock_close`), all
here: tests/integration/test_mqtt_client.py and the publish step's and the output's socket tests fail if a
release moves them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from bcd.broker import BrokerLink
from bcd.lazy import lazy_import

if TYPE_CHECKING:
    import aiomqtt
    import paho.mqtt.client as paho
else:  # loaded on first use: only configs that talk MQTT need them
    aiomqtt = lazy_import("aiomqtt")
    paho = lazy_import("paho.mqtt.client")

CONNECT_TIMEOUT = 5.0  # paho's TCP (and TLS) connect, in its executor thread


@contextlib.asynccontextmanager
async def connected(
    link: BrokerLink,
    *,
    identifier: str,
    call_timeout: float,
    connect_timeout: float = CONNECT_TIMEOUT,
    keepalive: int = 60,
    will: tuple[str, bytes] | None = None,
    on_message: Callable[[aiomqtt.Message], None] | None = None,
) -> AsyncIterator[aiomqtt.Client]:
    """A client connected to `link` (MQTT 3.1.1, clean session) for the body of the `async with`.

    `call_timeout` bounds each wait for the broker (CONNACK, SUBACK, PUBACK, disconnect); `connect_timeout` the
    TCP/TLS connect; `will` is a retained QoS 1 (topic, payload); `on_message` gets every incoming message
    at once (quick, must not raise). Raises aiomqtt.MqttError when the connect fails; a connect that fails or
    is cancelled leaves no socket behind. After a CONNACK, leaving the body disconnects as aiomqtt does."""
    client = aiomqtt.Client(
        link.host, link.port, username=link.username, password=link.password, identifier=identifier,
        clean_session=True, timeout=call_timeout, keepalive=keepalive,
        will=aiomqtt.Will(will[0], will[1], qos=1, retain=True) if will is not None else None,
        tls_context=link.tls, tls_insecure=link.tls_insecure,
        queue_type=arrivals(on_message) if on_message is not None else None,
    )
    inner: paho.Client = client._client  # aiomqtt 2.x hides its paho client
    inner.connect_timeout = connect_timeout  # paho's default is 5 s whatever aiomqtt's timeout says
    abandon = _Abandon(client, inner)
    entered = False
    try:
        async with client:
            entered = True
            yield client
    except BaseException:
        if not entered:
            abandon()
        raise


class _Abandon:
    """Closes the socket of a client whose connect failed or was cancelled before CONNACK.

    aiomqtt's `__aenter__` runs paho's connect in an executor thread, which opens the socket and queues its
    registration with the loop (`call_soon_threadsafe`). Closing it while that thread may still queue work
    would leave a reader/writer registered on a closed (or reused) fd, so this wraps the thread's function
    to queue one last callback: once that has run, every registration has too, and the socket is closed on
    the loop, synchronously. paho's `disconnect()` would only queue a DISCONNECT and close later; the
    broker, having sent no CONNACK, expects nothing more."""

    __slots__ = ("_done", "_inner", "_wanted")

    def __init__(self, client: aiomqtt.Client, inner: paho.Client) -> None:
        self._inner = inner
        self._done = False  # the connect thread returned and everything it queued has run
        self._wanted = False
        loop = asyncio.get_running_loop()
        run_connect: Callable[[], None] = client._client_connect

        def connect_then_report() -> None:
            try:
                run_connect()
            finally:
                loop.call_soon_threadsafe(self._thread_done)

        client._client_connect = connect_then_report  # type: ignore[method-assign]

    def __call__(self) -> None:
        self._wanted = True
        if self._done:
            self._close()

    def _thread_done(self) -> None:
        self._done = True
        if self._wanted:
            self._close()

    def _close(self) -> None:
        # paho's own close: unregisters reader and writer (aiomqtt's callbacks, which also stop its misc
        # task), then closes the socket; a no-op when there is none (refused, or closed by the broker)
        with contextlib.suppress(Exception):
            self._inner._sock_close()


def arrivals(take: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt's `queue_type` that hands each incoming message to `take` at once (in paho's
    callback, on the event loop) and queues none: aiomqtt's own queue cannot overflow, and `client.messages`
    only ever ends, with MqttError, when the link is lost. `take` must be quick and must not raise."""

    class Arrivals(asyncio.Queue[Any]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            take(item)

        async def put(self, item: aiomqtt.Message) -> None:  # aiomqtt 2.5 uses put_nowait; this too, in case
            take(item)

    return Arrivals


def refused(granted: Iterable[Any]) -> bool:
    """Whether a SUBACK refused any of the topics (a code >= 0x80: an ACL, say)."""
    return any(getattr(code, "value", code) >= 0x80 for code in granted)


def connack_text(exc: aiomqtt.MqttCodeError) -> str:
    """Why the broker refused a connection, in paho's words ("Not authorized")."""
    rc = exc.rc
    return paho.connack_string(rc) if isinstance(rc, int) else str(rc)

