"""`mqtt_publish:` steps against a real mosquitto."""

from __future__ import annotations

import asyncio
import getpass
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from bcd.broker import broker_link, link_from_url
from bcd.config import MqttSettings
from tests.conftest import Broker
from tests.helpers import free_port, make_cert, silent_server, sockets_connected_to, start_mosquitto, stop_process
from tests.helpers.runner_kit import Kit


def topic() -> str:
    return f"bcd-test/{uuid.uuid4().hex}/active"


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            return message
    raise AssertionError("the subscription ended")


async def test_publish_reaches_a_subscriber_with_templates_filled(kit: Kit, mosquitto: Broker) -> None:
    name = topic()
    runner = kit.make_runner(broker=link_from_url(f"mqtt://{mosquitto.host}:{mosquitto.port}"))
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as subscriber:
        await subscriber.subscribe(name, qos=1)
        run = kit.start({"steps": [{"name": "announce", "mqtt_publish": {
            "topic": name, "payload": "{service} moves from {from_site} to {to_site} (run {run_id})",
        }}]}, runner=runner)
        message = await next_message(subscriber)
    assert run.task is not None
    await run.task
    record, steps = kit.finished(run.id)
    assert record.result == "succeeded"
    assert message.payload == f"payroll moves from dorset to hampshire (run {run.id})".encode()
    assert not message.retain
    assert steps[0].output == f"published {len(message.payload)} bytes to {name}"


async def test_retained_publish_is_kept_by_the_broker(kit: Kit, mosquitto: Broker) -> None:
    name = topic()
    run, _ = await kit.run({"steps": [{"name": "announce", "mqtt_publish": {
        "topic": name, "payload": "{to_site}", "retain": True, "qos": 1,
        "url": f"mqtt://{mosquitto.host}:{mosquitto.port}",
    }}]})
    assert run.result == "succeeded"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as late:  # subscribes after the publish
        await late.subscribe(name)
        message = await next_message(late)
        assert (message.payload, message.retain) == (b"hampshire", True)
        await late.publish(name, b"", retain=True)  # clear it


async def test_broker_down_is_retried_then_fails(kit: Kit) -> None:
    nowhere = f"mqtt://127.0.0.1:{free_port()}"
    run, steps = await kit.run({"steps": [{
        "name": "announce", "mqtt_publish": {"topic": topic(), "payload": "x", "url": nowhere},
        "retry": {"attempts": 3, "wait": "10ms"},
    }]})
    assert run.result == "failed"
    assert (steps[0].outcome, steps[0].attempts) == ("failed", 3)
    assert steps[0].output.startswith("publish to ")


async def test_no_broker_configured_fails_at_once(kit: Kit) -> None:
    run, steps = await kit.run({"steps": [{
        "name": "announce", "mqtt_publish": {"topic": topic()}, "retry": {"attempts": 3, "wait": "10ms"},
    }]})
    assert run.result == "failed"
    assert (steps[0].attempts, steps[0].output) == (1, "no broker: set mqtt.url or the step's url")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Path]]:
    """mosquitto speaking only TLS, with a self-signed certificate for 127.0.0.1; (broker, that certificate)."""
    directory = tmp_path_factory.mktemp("mqtt-step-tls")
    cert = make_cert(directory, days=1)
    port = free_port()
    conf = f"user {getpass.getuser()}\nallow_anonymous true\nlistener {port} 127.0.0.1\ncertfile {cert.cert}\nkeyfile {cert.key}\n"
    process, broker = start_mosquitto(directory, conf, port)
    yield broker, cert.cert
    stop_process(process)


async def test_the_mqtt_sections_ca_file_is_used_by_steps(kit: Kit, tls_broker: tuple[Broker, Path]) -> None:
    broker, ca = tls_broker
    url = f"mqtts://127.0.0.1:{broker.port}"
    name = topic()
    runbook = {"steps": [{"name": "announce", "mqtt_publish": {"topic": name, "payload": "{to_site}"}}]}
    trusted = kit.make_runner(broker=broker_link(MqttSettings(url=url, ca_file=str(ca))))
    context = ssl.create_default_context(cafile=str(ca))
    async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=context) as subscriber:
        await subscriber.subscribe(name, qos=1)
        run = kit.start(runbook, runner=trusted)
        message = await next_message(subscriber)
    assert run.task is not None
    await run.task
    assert kit.finished(run.id)[0].result == "succeeded"
    assert message.payload == b"hampshire"  # without the ca_file, the self-signed certificate fails verification


async def test_a_publish_cut_short_before_connack_leaves_no_socket_open(kit: Kit) -> None:
    async with silent_server() as server:  # accepts the TCP connection, never answers CONNECT
        run, steps = await kit.run({"steps": [{
            "name": "announce", "timeout": "300ms",
            "mqtt_publish": {"topic": topic(), "payload": "x", "url": f"mqtt://127.0.0.1:{server.port}"},
        }]})
        assert (run.result, steps[0].output) == ("failed", "timeout after 0.3s")
        assert server.accepted == 1  # the step did connect: the timeout cut it short waiting for CONNACK
        assert sockets_connected_to(server.port) == []
