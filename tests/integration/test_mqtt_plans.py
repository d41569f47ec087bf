"""Recovery plans through signed MQTT commands against a real mosquitto and the daemon: `plan_run` starts a
plan run (its events go out on the events topic), unknown plans and plan runs are refused in the reply."""

from __future__ import annotations

from tests.helpers import Broker
from tests.integration.test_mqtt import Estate, Watcher, command, estate, payload, sign

SHARED_FIXTURES = (estate,)  # pytest finds fixtures by their name in this module


async def test_plan_commands_act_and_unknown_ones_are_refused(estate: Estate, mosquitto: Broker) -> None:
    prefix = estate.prefix
    commands, replies = f"{prefix}/commands", f"{prefix}/replies"
    config = estate.config(mosquitto, commands={"enabled": True, "hmac_key_file": "mqtt_command_key"})
    config["plans"] = {"evacuate": {"from": "dorset", "to": "hampshire"}}
    async with Watcher(mosquitto, f"{replies}/#", f"{prefix}/events") as watcher:
        daemon = await estate.start(config)
        await daemon.wait_site("hampshire", "up")
        cases = [
            ("nosuch-1", command("nosuch-1", action="plan_run", plan="nosuch", service=None),
             "refused: no plan named 'nosuch'"),
            ("norun-1", command("norun-1", action="plan_abort", run=99, service=None), "refused: no plan run 99"),
            ("bad-1", command("bad-1", action="plan_resume", service=None), "refused: run must be a positive"),
            ("bad-2", command("bad-2", action="plan_run", service=None), "refused: plan is required"),
            ("run-1", command("run-1", action="plan_run", plan="evacuate", service=None),
             "accepted: plan run 1 of evacuate started: 1 group(s)"),
        ]
        for reply_id, fields, expected in cases:
            body = sign({key: value for key, value in fields.items() if value is not None})
            count = len(watcher.messages)
            await watcher.publish(commands, body)
            reply = await watcher.wait(f"{replies}/{reply_id}", since=count)
            assert payload(reply).decode().startswith(expected), (reply_id, payload(reply))
        finished = await watcher.json(f"{prefix}/events", lambda d: d["kind"] == "plan_finished")
        assert (finished["plan"], finished["plan_run"], finished["result"]) == ("evacuate", 1, "succeeded")
        started = await watcher.json(f"{prefix}/events", lambda d: d["kind"] == "run_started")
        assert started["trigger"] == "plan"
