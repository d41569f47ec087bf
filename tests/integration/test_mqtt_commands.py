"""The MQTT command reader against real mosquitto brokers: payloads that used to break it (refused, the
reader alive after a reconnect), a flood of junk and signed commands (every command counted, none silently
lost, none executed twice), and a reader that dies (the session restarts; `bcd_mqtt_connected` says so)."""

from __future__ import annotations

import asyncio
import getpass
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bcd.outputs.metrics import MqttCollector
from tests.helpers import Broker, free_port, start_mosquitto, stop_process
from tests.integration.test_mqtt import (
    KEY,
    Estate,
    InProcess,
    Watcher,
    command,
    estate,
    inproc,
    payload,
    sign,
    wait_for,
)

SHARED_FIXTURES = (estate, inproc)  # pytest finds fixtures by their name in this module

DEEP = b"[" * 8000  # raised RecursionError out of verify(): the link dropped, a retained copy killed the reader


async def test_deep_nesting_live_retained_and_after_a_reconnect_is_refused_and_commands_still_act(
    estate: Estate, tmp_path: Path
) -> None:
    port = free_port()
    conf = (f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {tmp_path}/\n")
    process, broker = start_mosquitto(tmp_path, conf, port)
    prefix, name = estate.prefix, f"watcher-{uuid.uuid4().hex[:6]}"
    commands, replies = f"{prefix}/commands", f"{prefix}/replies"

    async def restart_broker() -> Broker:
        nonlocal process
        stop_process(process)  # the retained command is persisted
        await daemon.wait_metric("bcd_mqtt_connected", 0)
        process, restarted = start_mosquitto(tmp_path, conf, port)
        return restarted

    try:
        daemon = await estate.start(estate.config(
            broker, commands={"enabled": True, "hmac_key_file": "mqtt_command_key"}))
        # a persistent session, so that replies sent while the broker restarts are kept for this watcher
        async with Watcher(broker, f"{replies}/#", identifier=name, clean_session=False) as watcher:
            await watcher.publish(commands, DEEP)
            reply = payload(await watcher.wait(f"{replies}/invalid"))
            assert reply.startswith(b"refused: not a command: more than 64 brackets"), reply
            count = len(watcher.messages)
            await watcher.publish(commands, DEEP, retain=True)  # live: the broker clears the flag
            await watcher.wait(f"{replies}/invalid", since=count)
        broker = await restart_broker()
        async with Watcher(broker, identifier=name, clean_session=False) as watcher:
            await daemon.wait_metric("bcd_mqtt_connected", 1)
            reply = await daemon.wait_log(lambda line: line.get("event") == "mqtt_command_refused"
                                          and line.get("retained") is True)
            assert "more than 64 brackets" in reply["why"]
            # a signed command published with retain while bcd listens: acted on once, like any live one
            await watcher.publish(commands, sign(command("after-1", action="ack")), retain=True)
            accepted = payload(await watcher.wait(f"{replies}/after-1"))
            assert accepted == b"accepted: nothing to acknowledge", accepted
        broker = await restart_broker()
        async with Watcher(broker, identifier=name, clean_session=False) as watcher:
            await daemon.wait_metric("bcd_mqtt_connected", 1)
            # its retained copy, at resubscription, is refused. The reply "accepted" may come once more first:
            # QoS 1 is at least once, and the broker stopped right after delivering it (the counts below
            # show the command was carried out once)
            again = payload(await watcher.wait(f"{replies}/after-1",
                                               lambda m: not payload(m).startswith(b"accepted: ")))
            assert again.startswith(b"refused: retained message"), again
            await watcher.publish(commands, b"", retain=True)  # clear it (the empty message is refused too)
            await watcher.wait(f"{replies}/invalid", lambda m: payload(m).startswith(b"refused: not JSON"))
        assert await daemon.metric('bcd_mqtt_commands_total{result="refused"}') == 5  # 3 deep, 1 retained, 1 empty
        assert await daemon.metric('bcd_mqtt_commands_total{result="accepted"}') == 1
        assert await daemon.metric("bcd_mqtt_connected") == 1
        assert not [line for line in daemon.log_lines if line.get("event") == "mqtt_session_failed"]
    finally:
        stop_process(process)


def junk(n: int) -> bytes:
    """Unsigned payloads of every kind the reader refuses, as one line each."""
    kinds = [json.dumps(command(f"junk-{n}", action="ack")).encode(), b"please fail over payroll",
             b"[" * 3000, b"x" * 9000, json.dumps({"id": f"junk-{n}", "sig": "0" * 64}).encode()]
    return kinds[n % len(kinds)]


async def flood(estate: Estate, broker: Broker, signed_count: int, junk_count: int) -> dict[str, float]:
    """Send `signed_count` signed acks mixed with `junk_count` junk payloads as fast as a client can,
    wait until every one is counted, and check that nothing was lost silently nor executed twice."""
    prefix = estate.prefix
    daemon = await estate.start(estate.config(broker, commands={"enabled": True, "hmac_key_file": "mqtt_command_key"}))
    signed_ids = [f"flood-{n}" for n in range(signed_count)]
    lines = [sign(command(command_id, action="ack")) for command_id in signed_ids]
    for n in range(junk_count):
        lines.insert((n * (signed_count + 1)) // max(junk_count, 1) + n, junk(n))
    sent = len(lines)
    async with Watcher(broker, f"{prefix}/replies/#") as watcher:
        started = time.monotonic()
        async with Watcher(broker) as sender:
            for start in range(0, sent, 500):  # QoS 1, in order, as fast as the sender's client goes
                await asyncio.gather(*(sender.publish(f"{prefix}/commands", line) for line in lines[start:start + 500]))
        published = time.monotonic() - started

        async def counted() -> bool:
            total = 0.0
            for result in ("accepted", "refused", "busy", "dropped"):
                total += await daemon.metric(f'bcd_mqtt_commands_total{{result="{result}"}}') or 0
            return total == sent

        await daemon.wait_until(counted, timeout=120)
        handled = time.monotonic() - started
        wanted = {f"{prefix}/replies/{command_id}" for command_id in signed_ids}
        await watcher.wait(f"{prefix}/replies/{signed_ids[-1]}", timeout=60)
        await wait_for(lambda: wanted <= {message.topic.value for message in watcher.messages}, timeout=60)
        replies = {message.topic.value.rsplit("/", 1)[1]: payload(message).decode()
                   for message in watcher.messages if message.topic.value in wanted}
    accepted = [i for i, text in replies.items() if text.startswith("accepted")]
    dropped = [i for i, text in replies.items() if text.startswith("dropped: too many commands in flight")]
    busy = [i for i, text in replies.items() if text.startswith("refused: busy: ")]
    assert len(accepted) + len(dropped) + len(busy) == signed_count, (
        set(replies.values()) - {"accepted: nothing to acknowledge"})
    metric = {result: await daemon.metric(f'bcd_mqtt_commands_total{{result="{result}"}}') or 0
              for result in ("accepted", "refused", "busy", "dropped")}
    assert metric["accepted"] == len(accepted)  # each accepted once: nothing executed twice
    assert metric["dropped"] == len(dropped)
    assert metric["busy"] == len(busy)
    assert metric["refused"] == junk_count
    assert sum(metric.values()) == sent
    executed = [line["id"] for line in daemon.log_lines if line.get("event") == "mqtt_command_accepted"]
    assert sorted(executed) == sorted(accepted)
    assert await daemon.metric("bcd_mqtt_connected") == 1
    return {"sent": sent, "published_s": published, "handled_s": handled, "per_s": sent / handled,
            **metric, "dropped_replies": await daemon.metric("bcd_mqtt_dropped_replies_total") or 0}


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker that queues any number of QoS 1 messages per client: mosquitto's default (1000 beyond the
    20 in flight) drops what a slow subscriber has not taken, the test's watcher included."""
    directory = tmp_path_factory.mktemp("roomy-broker")
    port = free_port()
    conf = f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
    process, broker = start_mosquitto(directory, conf, port)
    yield broker
    stop_process(process)


async def test_a_flood_of_junk_and_signed_commands_is_counted_to_the_last_command(
    estate: Estate, roomy: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = await flood(estate, roomy, signed_count=1000, junk_count=1000)
    with capsys.disabled():
        print(f"\nmqtt flood: {figures}")


async def test_a_reader_that_dies_restarts_the_session_and_connected_says_so(
    inproc: InProcess, mosquitto: Broker
) -> None:
    prefix = f"bcd-test/{uuid.uuid4().hex[:12]}"
    (inproc.tmp_path / "key").write_text(KEY)
    settings = {"url": f"mqtt://{mosquitto.host}:{mosquitto.port}", "topic_prefix": prefix,
                "commands": {"enabled": True, "hmac_key_file": str(inproc.tmp_path / "key")}}
    collector = MqttCollector(inproc.output.stats)

    def connected() -> float:
        return next(family for family in collector.collect() if family.name == "bcd_mqtt_connected").samples[0].value

    async with Watcher(mosquitto, f"{prefix}/replies/#") as watcher:
        with capture_logs() as logs:
            inproc.apply(inproc.config(settings))
            await wait_for(lambda: connected() == 1)
            reader = next(task for task in asyncio.all_tasks() if task.get_name() == "mqtt-commands")
            reader.cancel()  # the reader dies; the publisher would go on alone
            while connected() == 1:  # noqa: ASYNC110 - observing each loop turn: the restart is quick
                await asyncio.sleep(0)
            await wait_for(lambda: connected() == 1)
        lost = next(entry for entry in logs if entry["event"] == "mqtt_connection_lost")
        assert "mqtt-commands ended" in lost["error"]
        assert sum(entry["event"] == "mqtt_connected" for entry in logs) == 2
        await watcher.publish(f"{prefix}/commands", sign(command("after-restart", action="ack")))
        reply = await watcher.wait(f"{prefix}/replies/after-restart")
        assert payload(reply) == b"accepted: nothing to acknowledge"
