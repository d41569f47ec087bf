"""A signed MQTT `failover` command sent to one member of a two-member cluster takes the service's lock in etcd
(as the API does) and starts exactly one run across the cluster; every member then agrees on the active site.
A command for another service does not wait behind a failover waiting for etcd."""

from __future__ import annotations

import uuid

from tests.helpers import Broker
from tests.helpers.etcd import cuttable_proxies
from tests.integration.cluster.kit import ClusterEstate, Member, gauge
from tests.integration.test_mqtt import KEY, Watcher, command, payload, sign


async def test_a_signed_failover_sent_to_one_member_runs_exactly_once(estate: ClusterEstate, mosquitto: Broker,
                                                                       ) -> None:
    (estate.tmp_path / "mqtt_command_key").write_text(KEY + "\n")
    prefix = f"bcd-test/{uuid.uuid4().hex[:12]}"
    config = estate.config(mode="manual")
    config["mqtt"] = {"url": f"mqtt://{mosquitto.host}:{mosquitto.port}", "topic_prefix": prefix + "/${BCD_VANTAGE}",
                      "commands": {"enabled": True, "hmac_key_file": "mqtt_command_key"}}
    members = await estate.start(config, "dorset", "hampshire", env={"CREDENTIALS_DIRECTORY": str(estate.tmp_path)})
    for member in members:
        async def connected(member: Member = member) -> bool:
            return gauge(await member.metrics(), "bcd_mqtt_connected") == 1

        await member.wait_until(connected, 15.0)
    receiver, other = members
    async with Watcher(mosquitto, f"{prefix}/+/replies/#") as watcher:
        await watcher.publish(f"{prefix}/{receiver.vantage}/commands", sign(command("over-1", to="hampshire")))
        reply = await watcher.wait(f"{prefix}/{receiver.vantage}/replies/over-1")
        text = bytes(reply.payload).decode()  # type: ignore[arg-type]
        assert text.startswith("accepted: run "), text
        assert text.endswith("failover of payroll to hampshire")
        for member in members:
            await member.wait_service(lambda s: s["active"] == "hampshire" and s["status"] == "ok")

        # the same service again, through the other member: the run is over and no new one is wanted
        await watcher.publish(f"{prefix}/{other.vantage}/commands", sign(command("over-2", to="hampshire")))
        again = await watcher.wait(f"{prefix}/{other.vantage}/replies/over-2")
        assert bytes(again.payload).decode().startswith("refused: ")  # type: ignore[arg-type]

    assert estate.steps.paths() == ["/switch"]  # exactly one run's step, across both instances
    (switch,) = estate.steps.requests
    assert switch.json()["to"] == "hampshire"
    own = [run for member in members for run in await member.runs() if not run["evidence"].get("remote_run")]
    assert len(own) == 1
    assert own[0]["trigger"] == "mqtt:olive"
    assert own[0]["result"] == "succeeded"
    assert receiver.logged("mqtt_command_accepted")
    assert not other.logged("step_started")



async def test_a_command_for_another_service_is_answered_while_a_failover_waits_for_etcd(
        estate: ClusterEstate, mosquitto: Broker) -> None:
    """The receiver reaches etcd through a proxy the test cuts: its failover of payroll waits for etcd to answer
    the lock's transaction (as behind a slow or partitioned etcd); an ack for billing sent after it is answered
    at once, before it. Healed, the failover takes the lock and starts its run."""
    (estate.tmp_path / "mqtt_command_key").write_text(KEY + "\n")
    prefix = f"bcd-test/{uuid.uuid4().hex[:12]}"
    config = estate.config(mode="manual")
    config["services"]["billing"] = config["services"]["payroll"]
    config["cluster"].update({"etcd": {"endpoints": ["${BCD_ETCD}"]}, "lease_ttl": "15s", "call_timeout": "4s"})
    config["mqtt"] = {"url": f"mqtt://{mosquitto.host}:{mosquitto.port}", "topic_prefix": prefix + "/${BCD_VANTAGE}",
                      "commands": {"enabled": True, "hmac_key_file": "mqtt_command_key"}}
    env = {"CREDENTIALS_DIRECTORY": str(estate.tmp_path)}
    async with cuttable_proxies(estate.etcd) as proxies:
        (receiver,) = await estate.start(config, "dorset", env={**env, "BCD_ETCD": proxies[0].endpoint})
        await receiver.wait_until(lambda: connected(receiver), 15.0)
        commands, replies = f"{prefix}/dorset/commands", f"{prefix}/dorset/replies"
        async with Watcher(mosquitto, f"{replies}/#") as watcher:
            proxies[0].cut()
            await watcher.publish(commands, sign(command("move-payroll", to="hampshire")))
            await watcher.publish(commands, sign(command("ack-billing", action="ack", service="billing")))
            # an etcd request waits up to half call_timeout (2 s): the ack is answered well within it
            ack = await watcher.wait(f"{replies}/ack-billing", timeout=1.5)
            assert payload(ack) == b"accepted: nothing to acknowledge"
            assert [m.topic.value for m in watcher.messages] == [f"{replies}/ack-billing"]  # payroll still waits
            proxies[0].heal()
            moved = payload(await watcher.wait(f"{replies}/move-payroll"))
            assert moved.startswith(b"accepted: run ") and moved.endswith(b"failover of payroll to hampshire"), moved
    assert 'bcd_mqtt_commands_total{result="accepted"} 2.0' in (await receiver.metrics()).splitlines()


async def connected(member: Member) -> bool:
    return gauge(await member.metrics(), "bcd_mqtt_connected") == 1
