"""A DR drill through a signed MQTT command against a real mosquitto and the daemon: `drill` runs a round trip
(its legs and its end go out on the events topic), a drill with a bad hold or one refused by a precondition is
answered `refused:` with the reason."""

from __future__ import annotations

from tests.helpers import Broker
from tests.integration.test_mqtt import Estate, Watcher, command, estate, payload, sign

SHARED_FIXTURES = (estate,)  # pytest finds fixtures by their name in this module


async def test_a_drill_command_runs_a_round_trip_and_bad_ones_are_refused(estate: Estate, mosquitto: Broker) -> None:
    prefix = estate.prefix
    commands, replies, events = f"{prefix}/commands", f"{prefix}/replies", f"{prefix}/events"
    config = estate.config(mosquitto, commands={"enabled": True, "hmac_key_file": "mqtt_command_key"})
    config["defaults"] = {"interval": "1s", "timeout": "800ms", "rise": 1, "fall": 2}
    config["services"]["payroll"]["failback"] = {"runbook": "move", "mode": "manual"}
    async with Watcher(mosquitto, f"{replies}/#", events) as watcher:
        daemon = await estate.start(config)
        await daemon.wait_site("hampshire", "up")
        await daemon.wait_site("dorset", "up")
        for reply_id, fields, expected in [
            ("hold-1", command("hold-1", action="drill", hold="soon"), "refused: hold: "),
            ("kind-1", command("kind-1", action="drill", kind="fire"), "refused: kind must be round_trip or runbook"),
            ("to-1", command("to-1", action="drill", to="hampshire"), "refused: drill does not take to"),
            ("drill-1", command("drill-1", action="drill", hold="1s"), "accepted: drill payroll@"),
            ("drill-2", command("drill-2", action="drill"), "refused: drill refused: drill payroll@"),
        ]:
            count = len(watcher.messages)
            await watcher.publish(commands, sign(fields))
            reply = payload(await watcher.wait(f"{replies}/{reply_id}", since=count)).decode()
            assert reply.startswith(expected), (reply_id, reply)
        finished = await watcher.json(events, lambda d: d["kind"] == "drill_finished")
        assert (finished["result"], len(finished["runs"])) == ("succeeded", 2), finished
        started = await watcher.json(events, lambda d: d["kind"] == "drill_started")
        assert (started["by"], started["from"], started["to"], started["hold"]) == (
            "mqtt:olive", "dorset", "hampshire", 1.0)
        legs = [await watcher.json(events, lambda d, n=n: d["kind"] == "run_started" and d["run_id"] == n)
                for n in finished["runs"]]
        assert [(leg["trigger"], leg["to"]) for leg in legs] == [("drill", "hampshire"), ("drill", "dorset")]


HR_KEY = "hr-council-key-0123456789abcdef"


async def test_a_plan_drill_command_drills_the_plan_and_bad_or_scoped_ones_are_refused(estate: Estate,
                                                                                       mosquitto: Broker) -> None:
    prefix = estate.prefix
    commands, replies, events = f"{prefix}/commands", f"{prefix}/replies", f"{prefix}/events"
    (estate.tmp_path / "hr_key").write_text(HR_KEY + "\n")
    config = estate.config(mosquitto, commands={"enabled": True, "hmac_key_file": "mqtt_command_key", "keys": [
        {"name": "hr", "hmac_key_file": "hr_key", "role": "operator", "scope": {"labels": {"team": "hr"}}}]})
    config["defaults"] = {"interval": "1s", "timeout": "800ms", "rise": 1, "fall": 2}
    config["services"]["payroll"]["failback"] = {"runbook": "move", "mode": "manual"}
    config["plans"] = {"evacuate": {"from": "dorset", "to": "hampshire"}}
    plan_drill = {"action": "plan_drill", "service": None}
    async with Watcher(mosquitto, f"{replies}/#", events) as watcher:
        daemon = await estate.start(config)
        await daemon.wait_site("hampshire", "up")
        await daemon.wait_site("dorset", "up")
        for reply_id, fields, key, expected in [
            ("p-none", command("p-none", **plan_drill), None, "refused: plan is required"),
            ("p-kind", command("p-kind", **plan_drill, plan="evacuate", kind="runbook"), None,
             "refused: plan_drill does not take kind"),
            ("p-svc", command("p-svc", action="plan_drill", plan="evacuate"), None,
             "refused: plan_drill does not take service"),
            ("p-hold", command("p-hold", **plan_drill, plan="evacuate", hold=[1]), None,
             "refused: hold must be a string such as 10m, or seconds"),
            ("p-where", command("p-where", **plan_drill, plan="nowhere"), None, "refused: no plan named 'nowhere'"),
            ("p-hr", command("p-hr", **plan_drill, plan="evacuate"), HR_KEY,
             "refused: mqtt:olive may act only on services labelled team=hr; a recovery plan acts on services"),
            ("p-1", command("p-1", **plan_drill, plan="evacuate", hold="1s"), None, "accepted: drill plan:evacuate@"),
            ("p-2", command("p-2", **plan_drill, plan="evacuate"), None,
             "refused: drill refused: drill plan:evacuate@"),
        ]:
            count = len(watcher.messages)
            body = {name: value for name, value in fields.items() if value is not None}
            await watcher.publish(commands, sign(body) if key is None else sign(body, key=key))
            reply = payload(await watcher.wait(f"{replies}/{reply_id}", since=count)).decode()
            assert reply.startswith(expected), (reply_id, reply)
        started = await watcher.json(events, lambda d: d["kind"] == "drill_started")
        assert (started["drill_kind"], started["by"], started["plan"], started["hold"]) == (
            "plan", "mqtt:olive", "evacuate", 1.0), started
        finished = await watcher.json(events, lambda d: d["kind"] == "drill_finished")
        assert (finished["drill_kind"], finished["result"], finished["plan"], len(finished["runs"])) == (
            "plan", "succeeded", "evacuate", 2), finished
        legs = [await watcher.json(events, lambda d, n=n: d["kind"] == "run_started" and d["run_id"] == n)
                for n in finished["runs"]]
        assert [leg["to"] for leg in legs] == ["hampshire", "dorset"]
