"""The MQTT output against real mosquitto brokers: the daemon as a subprocess (lifecycle, broker restart,
signed commands) and the output in-process on a real Engine (passwords, TLS, buffering, reload, stop)."""

from __future__ import annotations

import asyncio
import gc
import getpass
import hashlib
import hmac
import json
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from bcd.bus import Bus, Subscription
from bcd.config import Config, parse
from bcd.engine import Engine
from bcd.events import Event, EventKind, JournalGap
from bcd.journal import Journal
from bcd.mqtt.output import Backoff, MqttOutput
from bcd.operations import Operations
from bcd.view import EngineView
from tests.helpers import (
    Broker,
    CertFiles,
    estates,
    free_port,
    make_cert,
    silent_server,
    sockets_connected_to,
    start_mosquitto,
    stop_process,
)
from tests.helpers.daemon import DaemonProcess, Daemons, metric_value, site_is, write_config
from tests.helpers.targets import HttpTarget, two_sites

KEY = "k3y-for-tests-0123456789abcdef"


# -- a subscriber that records what it gets ----------------------------------------------------------------

class Watcher:
    """A real MQTT client subscribed to `topics` (QoS 1), recording every message it receives."""

    def __init__(self, broker: Broker, *topics: str, identifier: str | None = None, clean_session: bool = True,
                 **client: Any) -> None:
        self.client = aiomqtt.Client(broker.host, broker.port, identifier=identifier, clean_session=clean_session,
                                     **client)
        self.topics = topics
        self.messages: list[aiomqtt.Message] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        self._reader = asyncio.create_task(self._read())
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._reader is not None
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.client.__aexit__(kind, exc, tb)

    async def _read(self) -> None:
        try:
            async for message in self.client.messages:
                self.messages.append(message)
                self._changed.set()
        except aiomqtt.MqttError:
            pass  # the broker went away: the test knows

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain)

    async def wait(self, topic: str, check: Callable[[aiomqtt.Message], bool] = lambda m: True,
                   timeout: float = 10.0, since: int = 0) -> aiomqtt.Message:
        """The first message on `topic` (from the `since`-th received on) for which `check` holds."""
        async with asyncio.timeout(timeout):
            seen = since
            while True:
                for message in self.messages[seen:]:
                    if message.topic.value == topic and check(message):
                        return message
                seen = len(self.messages)
                self._changed.clear()
                await self._changed.wait()

    async def json(self, topic: str, check: Callable[[dict[str, Any]], bool] = lambda d: True,
                   timeout: float = 10.0) -> dict[str, Any]:
        message = await self.wait(topic, lambda m: bool(m.payload) and check(json.loads(payload(m))), timeout)
        data: dict[str, Any] = json.loads(payload(message))
        return data


def payload(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes | bytearray)
    return bytes(message.payload)


async def retained(broker: Broker, topic: str, **client: Any) -> bytes:
    """What the broker retains on `topic`, read by a fresh subscriber."""
    async with Watcher(broker, topic, **client) as fresh:
        message = await fresh.wait(topic, lambda m: m.retain)
        return payload(message)


def sign(command: dict[str, Any], key: str = KEY) -> bytes:
    """The README's recipe, written out independently of bcd's own code."""
    body = json.dumps(command, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return json.dumps({**command, "sig": hmac.new(key.encode(), body, hashlib.sha256).hexdigest()}).encode()


def command(command_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": command_id, "action": "failover", "service": "payroll", "reason": "drill", "by": "olive",
            "ts": time.time(), **fields}


# -- the daemon as a subprocess ------------------------------------------------------------------------------

class Bcd(DaemonProcess):
    async def metric(self, sample: str) -> float | None:
        return metric_value(await self.metrics(), sample)

    async def wait_metric(self, sample: str, value: float, timeout: float = 15.0) -> None:
        async def holds() -> bool:
            return await self.metric(sample) == value

        await self.wait_until(holds, timeout)

    async def wait_site(self, site: str, state: str) -> None:
        """Until the API shows payroll's `site` in `state`."""
        await self.wait_until(lambda: site_is(self, "payroll", site, state))


class Estate:
    def __init__(self, tmp_path: Path, dorset: HttpTarget, hampshire: HttpTarget) -> None:
        self.tmp_path = tmp_path
        self.dorset, self.hampshire = dorset, hampshire
        self.port = free_port()
        self.prefix = f"bcd-test/{uuid.uuid4().hex[:12]}"
        (tmp_path / "mqtt_command_key").write_text(KEY + "\n")
        self.daemons = Daemons()

    def config(self, broker: Broker, **mqtt: Any) -> dict[str, Any]:
        return {
            "instance": "test-bcd",
            "state_dir": str(self.tmp_path / "state"),
            "server": {"listen": f"127.0.0.1:{self.port}"},
            "sites": {"dorset": {}, "hampshire": {}},
            "defaults": {"interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2},
            "runbooks": {"move": {"steps": [{"name": "pause", "sleep": {"duration": "100ms"}}]}},
            "services": {"payroll": estates.payroll_service(
                self.dorset.url, self.hampshire.url, labels={"team": "hr"},
                failover={"runbook": "move", "mode": "manual", "cooldown": "0s"})},
            "mqtt": {"url": f"mqtt://{broker.host}:{broker.port}", "topic_prefix": self.prefix, **mqtt},
        }

    async def start(self, config: dict[str, Any]) -> Bcd:
        path = write_config(self.tmp_path / "bcd.yaml", config)
        daemon = await self.daemons.start(Bcd(path, self.port, {"CREDENTIALS_DIRECTORY": str(self.tmp_path)}))
        await daemon.wait_metric("bcd_mqtt_connected", 1)
        return daemon


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    async with two_sites() as (dorset, hampshire):
        estate = Estate(tmp_path, dorset, hampshire)
        yield estate
        await estate.daemons.stop_all()


async def test_status_state_events_will_and_clean_stop(estate: Estate, mosquitto: Broker) -> None:
    prefix = estate.prefix
    status, state, events = f"{prefix}/status", f"{prefix}/services/payroll", f"{prefix}/events"
    daemon = await estate.start(estate.config(mosquitto))
    async with Watcher(mosquitto, f"{prefix}/#") as watcher:  # subscribed after connect: retained arrive as such
        first = await watcher.wait(status)
        assert (payload(first), first.retain) == (b"online", True)
        kept = await watcher.wait(state, lambda m: m.retain)
        assert json.loads(payload(kept))["labels"] == {"team": "hr"}
        await watcher.json(state, lambda d: d["status"] == "ok" and d["sites"]["dorset"]["state"] == "up")

        estate.dorset.status = 503
        # the startup transitions (unknown → up) may still be on their way: they are committed in groups
        event = await watcher.wait(events, lambda m: json.loads(payload(m))["kind"] == "site_transition"
                                   and json.loads(payload(m))["site"] == "dorset"
                                   and json.loads(payload(m))["from"] == "up")
        data = json.loads(payload(event))
        assert (event.qos, event.retain) == (1, False)
        assert (data["service"], data["from"], data["to"]) == ("payroll", "up", "degraded")
        assert "503" in data["reason"] and isinstance(data["id"], int)
        now = await watcher.json(state, lambda d: d["sites"]["dorset"]["state"] == "down")
        assert now["status"] != "ok" and now["active"] == "dorset"
        assert "503" in now["sites"]["dorset"]["reason"] and now["sites"]["dorset"]["since"] > 0

        estate.dorset.status = 200
        daemon.send(signal.SIGKILL)  # no goodbye: the broker sends the Will
        await watcher.wait(status, lambda m: payload(m) == b"offline")
    assert await retained(mosquitto, status) == b"offline"

    daemon = await estate.start(estate.config(mosquitto))  # same state, same prefix
    assert await retained(mosquitto, status) == b"online"
    assert await daemon.stop() == 0  # SIGTERM: a clean DISCONNECT voids the Will, bcd says offline itself
    assert await retained(mosquitto, status) == b"offline"
    assert any(line.get("event") == "mqtt_disconnected" for line in daemon.log_lines)


async def test_broker_restart_on_the_same_port(estate: Estate, tmp_path: Path) -> None:
    port = free_port()
    conf = (f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {tmp_path}/\n")
    process, broker = start_mosquitto(tmp_path, conf, port)
    try:
        prefix = estate.prefix
        daemon = await estate.start(estate.config(broker))
        # A persistent session (kept by the broker across its restart) so events sent while nobody could
        # say who reconnects first are still delivered to this watcher.
        events = Watcher(broker, f"{prefix}/events", identifier=f"watcher-{prefix[-6:]}", clean_session=False)
        async with events:
            # clear the retained state, so that finding it after the restart proves it was re-published
            await events.publish(f"{prefix}/status", b"", retain=True)
            await events.publish(f"{prefix}/services/payroll", b"", retain=True)
            stop_process(process)
            await daemon.wait_metric("bcd_mqtt_connected", 0)

        estate.dorset.status = 503  # events while the broker is away
        await daemon.wait_site("dorset", "down")
        assert (await daemon.get("/healthz"))[0] == 200

        process, broker = start_mosquitto(tmp_path, conf, port)
        async with Watcher(broker, identifier=f"watcher-{prefix[-6:]}", clean_session=False) as events:
            await daemon.wait_metric("bcd_mqtt_connected", 1)
            down = await events.json(f"{prefix}/events", lambda d: d["kind"] == "site_transition"
                                     and d["site"] == "dorset" and d["to"] == "down")
            assert "503" in down["reason"]
        assert await retained(broker, f"{prefix}/status") == b"online"
        state = json.loads(await retained(broker, f"{prefix}/services/payroll"))
        assert state["sites"]["dorset"]["state"] == "down"
        assert await daemon.metric("bcd_mqtt_dropped_messages_total") == 0
        assert daemon.proc is not None and daemon.proc.returncode is None
        log = [line["event"] for line in daemon.log_lines]
        assert "mqtt_connection_lost" in log and "mqtt_connect_failed" in log
    finally:
        stop_process(process)


async def test_signed_commands_act_and_every_bad_one_is_refused_with_a_reply(
    estate: Estate, mosquitto: Broker
) -> None:
    prefix = estate.prefix
    commands, replies = f"{prefix}/commands", f"{prefix}/replies"
    config = estate.config(mosquitto, commands={"enabled": True, "hmac_key_file": "mqtt_command_key"})
    async with Watcher(mosquitto, f"{replies}/#", f"{prefix}/events", f"{prefix}/services/#") as watcher:
        # a valid command left retained on the broker before bcd subscribes: delivered with retain=1
        await watcher.publish(commands, sign(command("kept-1")), retain=True)
        daemon = await estate.start(config)
        reply = await watcher.wait(f"{replies}/kept-1")
        assert payload(reply).startswith(b"refused: retained message")
        await watcher.publish(commands, b"", retain=True)  # clear it (bcd answers the empty message too)
        await watcher.wait(f"{replies}/invalid")

        await daemon.wait_site("hampshire", "up")
        good = sign(command("ok-1", to="hampshire"))
        await watcher.publish(commands, good)
        accepted = payload(await watcher.wait(f"{replies}/ok-1")).decode()
        assert accepted.startswith("accepted: run "), accepted
        finished = await watcher.json(f"{prefix}/events", lambda d: d["kind"] == "run_finished")
        assert finished["result"] == "succeeded"
        started = await watcher.json(f"{prefix}/events", lambda d: d["kind"] == "run_started")
        assert (started["trigger"], started["run_kind"]) == ("mqtt:olive", "failover")
        await watcher.json(f"{prefix}/services/payroll", lambda d: d["active"] == "hampshire")

        unsigned = json.dumps(command("unsigned-1")).encode()
        forged = json.loads(sign(command("forged-1")))
        forged["service"] = "library"  # changed after signing
        cases = [
            ("forged-1", json.dumps(forged).encode(), "refused: bad signature"),
            ("stale-1", sign(command("stale-1", ts=time.time() - 3600)), "refused: stale: ts is 3600s old"),
            ("future-1", sign(command("future-1", ts=time.time() + 3600)), "refused: ts is 3600s in the future"),
            ("ok-1", good, "refused: replayed"),
            ("unsigned-1", unsigned, "refused: unsigned"),
            ("types-1", sign(command("types-1", ts="yesterday")), "refused: ts must be a number"),
            ("types-2", sign(command("types-2", action="approve", run="7")), "refused: run must be a positive"),
            ("other-key", sign(command("other-key"), key="guess"), "refused: bad signature"),
            ("invalid", b"please fail over payroll", "refused: not JSON"),
            ("invalid", b"[1, 2, 3]", "refused: not a JSON object"),
            ("invalid", sign(command("huge-1", reason="x" * 9000)), "refused: payload too large"),
        ]
        for reply_id, body, expected in cases:
            count = len(watcher.messages)
            await watcher.publish(commands, body)
            reply = await watcher.wait(f"{replies}/{reply_id}", since=count)
            assert payload(reply).decode().startswith(expected), (reply_id, payload(reply))

    assert (await daemon.get("/healthz"))[0] == 200
    assert await daemon.metric('bcd_mqtt_commands_total{result="accepted"}') == 1
    assert await daemon.metric('bcd_mqtt_commands_total{result="refused"}') == 2 + len(cases)
    refusals = [line for line in daemon.log_lines if line.get("event") == "mqtt_command_refused"]
    assert len(refusals) == 2 + len(cases)
    assert daemon.proc is not None and daemon.proc.returncode is None


# -- the output in-process, on a real Engine ---------------------------------------------------------------

ENGINE_CONFIG = """
instance: inproc
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
services:
  payroll:
    active: dorset
    sites:
      dorset: {{probes: [{{name: health, tcp: {{host: 127.0.0.1, port: 9}}}}]}}
{library}
mqtt: {mqtt}
"""
LIBRARY = """  library:
    active: hampshire
    sites:
      hampshire: {probes: [{name: opac, tcp: {host: 127.0.0.1, port: 9}}]}
"""


class ListenedBus(Bus):
    """A real Bus that knows who listens to it (by subscription name)."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: set[Subscription] = set()

    def subscribe(self, name: str, size: int = 1000) -> Subscription:
        subscription = super().subscribe(name, size)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        super().unsubscribe(subscription)

    @property
    def listeners(self) -> list[str]:
        return [subscription.name for subscription in self.subscriptions]


class InProcess:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.bus = ListenedBus()
        self.engine = Engine(self.config({"url": "mqtt://127.0.0.1:1"}), Journal(tmp_path / "bcd.sqlite"), self.bus)
        self.output = MqttOutput(EngineView(self.engine), Operations(self.engine), self.bus, backoff=Backoff(initial=0.05, maximum=0.2))

    def config(self, mqtt: dict[str, Any] | None, library: bool = True) -> Config:
        return parse(ENGINE_CONFIG.format(state=self.tmp_path, library=LIBRARY if library else "",
                                          mqtt=json.dumps(mqtt)))

    def apply(self, config: Config) -> None:
        self.engine.apply_config(config)
        self.output.apply(config)


@pytest.fixture
async def inproc(tmp_path: Path) -> AsyncIterator[InProcess]:
    kit = InProcess(tmp_path)
    yield kit
    await kit.output.stop()
    kit.engine.journal.close()


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll an in-process condition with a deadline."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling a counter the code under test owns, with a deadline
            await asyncio.sleep(0.01)


def emit(engine: Engine, reason: str) -> None:
    now = time.time()
    engine.emit(Event(EventKind.JOURNAL_GAP, now, None, None, reason, JournalGap(0, now, now)))


async def test_buffered_while_away_newest_kept_then_flushed_in_order_after_new_settings(
    inproc: InProcess, mosquitto: Broker
) -> None:
    prefix = f"bcd-test/{uuid.uuid4().hex[:12]}"
    nowhere = {"url": f"mqtt://127.0.0.1:{free_port()}", "topic_prefix": prefix, "buffer": 3}
    with capture_logs() as logs:
        inproc.apply(inproc.config(nowhere))
        for n in range(5):
            emit(inproc.engine, f"e{n}")
        await wait_for(lambda: inproc.output.stats.dropped == 2)
        await wait_for(lambda: sum(entry["event"] == "mqtt_connect_failed" for entry in logs) >= 2)
    assert not inproc.output.stats.connected

    async with Watcher(mosquitto, f"{prefix}/#") as watcher:
        inproc.apply(inproc.config({**nowhere, "url": f"mqtt://{mosquitto.host}:{mosquitto.port}"}))
        await watcher.wait(f"{prefix}/status", lambda m: payload(m) == b"online")
        await watcher.wait(f"{prefix}/events", lambda m: json.loads(payload(m))["reason"] == "e4")
        reasons = [json.loads(payload(m))["reason"] for m in watcher.messages if m.topic.value == f"{prefix}/events"]
        assert reasons == ["e2", "e3", "e4"]
        assert (await watcher.json(f"{prefix}/services/library"))["active"] == "hampshire"

        inproc.apply(inproc.config({**nowhere, "url": f"mqtt://{mosquitto.host}:{mosquitto.port}"}, library=False))
        await watcher.wait(f"{prefix}/services/library", lambda m: payload(m) == b"")  # clears the retained state

        inproc.apply(inproc.config(None, library=False))  # a reload without `mqtt:`: goodbye, stop listening
        await watcher.wait(f"{prefix}/status", lambda m: payload(m) == b"offline")
        await wait_for(lambda: "mqtt" not in inproc.bus.listeners)
    assert await retained(mosquitto, f"{prefix}/status") == b"offline"
    assert inproc.output.stats.published >= 6


async def test_events_the_bus_dropped_are_counted_and_stay_counted_when_mqtt_is_removed(inproc: InProcess) -> None:
    nowhere = {"url": f"mqtt://127.0.0.1:{free_port()}", "topic_prefix": "bcd-test/drops", "buffer": 3}
    inproc.apply(inproc.config(nowhere))
    for n in range(1005):  # one group commit: published at once, and the bus keeps 1000 of them for MQTT
        emit(inproc.engine, f"e{n}")
    await wait_for(lambda: inproc.output.stats.dropped == 5 + 997)  # the bus's drops, then the buffer's
    inproc.apply(inproc.config(None))  # a reload without `mqtt:`: the subscription goes
    await wait_for(lambda: "mqtt" not in inproc.bus.listeners)
    assert inproc.output.stats.dropped == 1002  # a counter: the bus's drops are not forgotten with it


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A broker that wants a password on one listener and speaks TLS (certificate for 127.0.0.1) on another."""
    directory = tmp_path_factory.mktemp("mqtt-output-broker")
    cert: CertFiles = make_cert(directory, days=1)
    passwd = directory / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "bcd", "s3cret"], check=True, capture_output=True)
    (directory / "mqtt_password").write_text("s3cret\n")
    (directory / "wrong_password").write_text("guess\n")
    port, tls_port = free_port(), free_port()
    conf = (f"user {getpass.getuser()}\nper_listener_settings false\nallow_anonymous false\npassword_file {passwd}\n"
            f"listener {port} 127.0.0.1\n"
            f"listener {tls_port} 127.0.0.1\ncertfile {cert.cert}\nkeyfile {cert.key}\n")
    process, broker = start_mosquitto(directory, conf, port)
    yield directory, broker, Broker("127.0.0.1", tls_port, broker.log), cert
    stop_process(process)


async def test_password_auth(inproc: InProcess, secured: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    directory, broker, _, _ = secured
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    prefix = f"bcd-test/{uuid.uuid4().hex[:12]}"
    settings = {"url": f"mqtt://127.0.0.1:{broker.port}", "username": "bcd", "topic_prefix": prefix}
    with capture_logs() as logs:
        inproc.apply(inproc.config({**settings, "password_file": "wrong_password"}))
        await wait_for(lambda: any(e["event"] == "mqtt_connect_failed" for e in logs))
    refused = next(e for e in logs if e["event"] == "mqtt_connect_failed")
    assert "authori" in refused["error"].lower() or "password" in refused["error"].lower(), refused
    assert not inproc.output.stats.connected

    async with Watcher(broker, f"{prefix}/status", username="bcd", password="s3cret") as watcher:
        inproc.apply(inproc.config({**settings, "password_file": "mqtt_password"}))  # a reload fixes it
        await watcher.wait(f"{prefix}/status", lambda m: payload(m) == b"online")
    assert inproc.output.stats.connected


# paho-mqtt 2.x does not close its socket when the TLS handshake fails (Client._ssl_wrap_socket): the
# ResourceWarning at garbage collection comes from the dependency, and is collected here, not in a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_tls_with_a_ca_file(inproc: InProcess, secured: Any) -> None:
    _, _, tls_broker, cert = secured
    prefix = f"bcd-test/{uuid.uuid4().hex[:12]}"
    (inproc.tmp_path / "pw").write_text("s3cret")
    settings = {"url": f"mqtts://127.0.0.1:{tls_broker.port}", "username": "bcd",
                "password_file": str(inproc.tmp_path / "pw"), "topic_prefix": prefix}
    with capture_logs() as logs:
        inproc.apply(inproc.config(settings))  # no ca_file: the self-signed certificate is not trusted
        await wait_for(lambda: any(e["event"] == "mqtt_connect_failed" for e in logs))
    failed = next(e for e in logs if e["event"] == "mqtt_connect_failed")
    assert "certificate verify failed" in failed["error"], failed

    context = ssl.create_default_context(cafile=str(cert.cert))
    async with Watcher(tls_broker, f"{prefix}/status", username="bcd", password="s3cret",
                       tls_context=context) as watcher:
        inproc.apply(inproc.config({**settings, "ca_file": str(cert.cert)}))
        await watcher.wait(f"{prefix}/status", lambda m: payload(m) == b"online")
        await inproc.output.stop()
        await watcher.wait(f"{prefix}/status", lambda m: payload(m) == b"offline")
    gc.collect()  # the sockets of the failed handshakes, while the filter above applies


async def test_a_stop_while_waiting_for_connack_leaves_no_socket_open(inproc: InProcess) -> None:
    async with silent_server() as server:  # accepts the connection, never answers CONNECT
        inproc.apply(inproc.config({"url": f"mqtt://127.0.0.1:{server.port}"}))
        await server.wait_accepted(1)
        await inproc.output.stop()  # the session is cancelled waiting for CONNACK (after STOP_TIMEOUT)
        assert sockets_connected_to(server.port) == []
    assert not inproc.output.stats.connected
