"""MQTT commands: the pure `verify()` (table-driven), the replay memory, the signing recipe the README shows,
and `CommandReader.handle()` acting on a real Engine (real journal, real runner) with its metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from pydantic import ValidationError

from bcd.booked_runs import BookedRuns
from bcd.bookings import BookingState, LocalBookings
from bcd.bus import Bus
from bcd.config import MqttSettings, parse
from bcd.engine import Engine
from bcd.events import Event
from bcd.journal import Journal
from bcd.json_nesting import too_nested
from bcd.maintenance_calendar import MaintenanceCalendar
from bcd.model import Observation, ProbeKey, Result
from bcd.mqtt.commands import (
    MAX_BRACKETS,
    MAX_COMMAND_BYTES,
    Command,
    CommandAction,
    RecentIds,
    Refusal,
    canonical,
    sign,
    verify,
)
from bcd.mqtt.inbox import Reply
from bcd.mqtt.output import MqttOutput
from bcd.operations import Operations
from bcd.outputs.metrics import Metrics, MqttCollector
from bcd.runbooks.runner import Runner
from bcd.view import EngineView
from tests.helpers import estates
from tests.helpers.runner_kit import acting

KEY = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


def signed(key: bytes = KEY, **fields: Any) -> dict[str, Any]:
    """A failover command for payroll, with `fields` changed (None removes a field), signed with `key`."""
    obj: dict[str, Any] = {"id": "c-1", "action": "failover", "service": "payroll", "reason": "drill",
                           "by": "olive", "ts": NOW}
    for name, value in fields.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    obj["sig"] = sign(obj, key)
    return obj


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def check(payload: bytes, *, seen: frozenset[str] = frozenset(), retained: bool = False,
          now: float = NOW) -> Command | Refusal:
    return verify(payload, KEY, now, seen, max_age=60.0, retained=retained)


# -- accepted shapes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "expected"), [
    ({}, {"action": CommandAction.FAILOVER, "service": "payroll", "to": None}),
    ({"to": "hampshire"}, {"action": CommandAction.FAILOVER, "to": "hampshire"}),
    ({"action": "failback"}, {"action": CommandAction.FAILBACK}),
    ({"action": "ack", "reason": ""}, {"action": CommandAction.ACK, "reason": ""}),
    ({"action": "maintenance", "duration": "2h"}, {"action": CommandAction.MAINTENANCE, "duration": 7200.0, "end": False}),
    ({"action": "maintenance", "duration": 90, "site": "dorset"}, {"duration": 90.0, "site": "dorset"}),
    ({"action": "maintenance", "end": True}, {"end": True, "duration": None}),
    ({"action": "maintenance", "duration": "2h", "from": "2099-01-01T00:00:00Z", "force": True},
     {"start": 4070908800.0, "force": True, "duration": 7200.0}),
    ({"action": "approve", "run": 7, "service": None}, {"action": CommandAction.APPROVE, "run": 7, "service": None}),
    ({"action": "abort", "run": 3}, {"action": CommandAction.ABORT, "run": 3, "service": "payroll"}),
    ({"ts": NOW - 59}, {"ts": NOW - 59}),  # just inside max_age, both ways
    ({"ts": int(NOW + 59)}, {"ts": NOW + 59}),
    ({"by": "ølive", "reason": "grève — test"}, {"by": "ølive", "reason": "grève — test"}),  # non-ASCII canonical form
])
def test_valid_commands_are_accepted(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    result = check(raw(signed(**fields)))
    assert isinstance(result, Command), result
    assert result.id == "c-1"
    for name, value in expected.items():
        assert getattr(result, name) == value, name


def test_non_ascii_payload_bytes_verify_as_sent() -> None:
    obj = signed(by="ølive")
    payload = json.dumps(obj, ensure_ascii=False).encode("utf-8")  # a sender need not escape
    assert isinstance(check(payload), Command)


# -- refusals -----------------------------------------------------------------------------------------------

def _resign(obj: dict[str, Any], **fields: Any) -> bytes:
    return raw(signed(**{**{k: v for k, v in obj.items() if k != "sig"}, **fields}))


REFUSALS: list[tuple[str, bytes, str | None, str]] = [
    ("too large", raw(signed(reason="x" * MAX_COMMAND_BYTES)), None, "payload too large"),
    ("not JSON", b"failover payroll now", None, "not JSON"),
    ("not UTF-8", b'{"id": "\xff"}', None, "not JSON"),
    ("an array", raw([signed()]), None, "not a JSON object"),
    ("a string", raw("failover"), None, "not a JSON object"),
    ("NaN", raw(signed()).replace(b'"ts": 1700000000.0', b'"ts": NaN'), None, "not JSON: NaN"),
    ("duplicate keys", raw(signed())[:-1] + b', "action": "abort"}', None, "duplicate key 'action'"),
    ("no id", raw(signed(id=None)), None, "id must be"),
    ("id not a string", raw(signed(id=7)), None, "id must be"),
    ("id with a slash", raw(signed(id="a/b")), None, "id must be"),
    ("id with a wildcard", raw(signed(id="a#")), None, "id must be"),
    ("id too long", raw(signed(id="a" * 65)), None, "id must be"),
    ("unsigned", raw({k: v for k, v in signed().items() if k != "sig"}), "c-1", "unsigned"),
    ("forged sig", raw({**signed(), "sig": "0" * 64}), "c-1", "bad signature"),
    ("sig not a string", raw({**signed(), "sig": 1}), "c-1", "bad signature"),
    ("other key", raw(signed(key=b"not-the-key")), "c-1", "bad signature"),
    ("tampered after signing", raw({**signed(), "service": "library"}), "c-1", "bad signature"),
    ("field added after signing", raw({**signed(), "to": "hampshire"}), "c-1", "bad signature"),
    ("unknown action", raw(signed(action="reboot")), "c-1", "unknown action 'reboot'"),
    ("action not a string", raw(signed(action=1)), "c-1", "action must be a string"),
    ("ts a string", raw(signed(ts="1700000000")), "c-1", "ts must be a number"),
    ("ts a bool", raw(signed(ts=True)), "c-1", "ts must be a number"),
    ("no ts", raw(signed(ts=None)), "c-1", "ts must be a number"),
    ("reason not a string", raw(signed(reason=["drill"])), "c-1", "reason must be a string"),
    ("no reason", raw(signed(reason=None)), "c-1", "reason is required"),
    ("no by", raw(signed(by=None)), "c-1", "by is required"),
    ("empty by", raw(signed(by="")), "c-1", "by must not be empty"),
    ("service not a string", raw(signed(service=["payroll"])), "c-1", "service must be a string"),
    ("no service", raw(signed(service=None)), "c-1", "service is required"),
    ("to not a string", raw(signed(to=2)), "c-1", "to must be a string"),
    ("unknown field", raw(signed(force=True)), "c-1", "failover does not take force"),
    ("field of another action", raw(signed(action="ack", to="hampshire")), "c-1", "ack does not take to"),
    ("run a bool", raw(signed(action="approve", run=True)), "c-1", "run must be a positive integer"),
    ("run a string", raw(signed(action="abort", run="7")), "c-1", "run must be a positive integer"),
    ("no run", raw(signed(action="approve")), "c-1", "run must be a positive integer"),
    ("end not a bool", raw(signed(action="maintenance", end="yes")), "c-1", "end must be true or false"),
    ("no duration", raw(signed(action="maintenance")), "c-1", "maintenance needs a duration"),
    ("bad duration", raw(signed(action="maintenance", duration="soon")), "c-1", "duration: expected a duration"),
    ("zero duration", raw(signed(action="maintenance", duration="0s")), "c-1", "duration: must be at least 1s"),
    ("far-off end", raw(signed(action="maintenance", duration="99999999999999999d")), "c-1", "duration: must be at most 366d"),
    ("run beyond 64 bits", raw(signed(action="approve", run=2**63)), "c-1", "run must be a positive integer"),
    ("duration a bool", raw(signed(action="maintenance", duration=True)), "c-1", "duration must be a string"),
    ("bad from", raw(signed(action="maintenance", duration="1h", **{"from": "soon"})), "c-1",
     "from: expected an ISO 8601 time"),
    ("force not a bool", raw(signed(action="maintenance", duration="1h", force="yes")), "c-1",
     "force must be true or false"),
    ("stale", raw(signed(ts=NOW - 61)), "c-1", "stale: ts is 61s old (max_age 60s)"),
    # payloads that raised out of verify() before (RecursionError, UnicodeEncodeError): refusals now
    ("8 kB of brackets", b"[" * 8000, None, "more than 64 brackets"),
    ("deep nesting, closed", b"[" * 4000 + b"]" * 4000, None, "more than 64 brackets"),
    ("deep objects", b'{"a":' * 1000 + b"1" + b"}" * 1000, None, "more than 64 brackets"),
    ("deep value in a command", raw(signed(reason=[[[[[[]]]]]] * 20)), None, "more than 64 brackets"),
    ("lone surrogate in a field", raw(signed()).replace(b'"drill"', b'"\\ud800"'), "c-1", "lone surrogate"),
    ("lone surrogate as sig", raw({**signed(), "sig": "\ud800"}), "c-1", "bad signature"),
    ("from the future", raw(signed(ts=NOW + 61)), "c-1", "ts is 61s in the future"),
]


@pytest.mark.parametrize(("payload", "reply_id", "reason"), [case[1:] for case in REFUSALS],
                         ids=[case[0] for case in REFUSALS])
def test_refused_with_a_reason_and_the_id_to_reply_to(payload: bytes, reply_id: str | None, reason: str) -> None:
    result = check(payload)
    assert isinstance(result, Refusal), result
    assert result.id == reply_id
    assert reason in result.reason, result.reason


@pytest.mark.parametrize(("payload", "nested"), [
    (b'{"id":"a"}', False),
    (b"[" * 64, False),  # 64 levels are read (and refused later: not an object)
    (b"[" * 65, True),
    (b"{}" * 65, True),  # many brackets, however shallow: a command has one
    (b'{"reason":"' + b"[{" * 2000 + b'"}', False),  # brackets inside strings do not count
    (b'{"reason":"\\"' + b"[" * 100 + b'"}', False),  # an escaped quote does not end the string
    (b'{"reason":"' + b"[" * 100, False),  # an unterminated string: not JSON, and json.loads never nests in it
    (b'{"a":"\\\\",' + b'"b":[' * 65, True),  # an escaped backslash does not escape the closing quote
])
def test_brackets_are_counted_outside_strings(payload: bytes, nested: bool) -> None:
    assert too_nested(payload, MAX_BRACKETS) is nested


def test_a_command_with_brackets_in_its_reason_is_accepted() -> None:
    assert isinstance(check(raw(signed(reason="[ticket] {INC-1} " + "[" * 300))), Command)


def test_a_replayed_id_is_refused() -> None:
    result = check(raw(signed()), seen=frozenset({"c-1"}))
    assert result == Refusal("c-1", "replayed: this id was seen before", signed=True)


def test_a_retained_command_is_refused_even_when_valid() -> None:
    result = check(raw(signed()), retained=True)
    assert isinstance(result, Refusal)
    assert (result.id, result.reason.split(":")[0]) == ("c-1", "retained message")


def test_verify_is_pure() -> None:
    seen = RecentIds(60.0)
    payload = raw(signed())
    first = verify(payload, KEY, NOW, seen)
    again = verify(payload, KEY, NOW, seen)
    assert first == again and isinstance(first, Command)
    assert len(seen) == 0  # recording the id is the caller's job


def test_canonical_form_leaves_out_sig_sorts_keys_and_keeps_unicode() -> None:
    obj = {"ts": 1, "sig": "zz", "by": "ø", "action": "ack"}
    assert canonical(obj) == '{"action":"ack","by":"ø","ts":1}'.encode()
    assert sign(obj, b"k") == hmac.new(b"k", canonical(obj), hashlib.sha256).hexdigest()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_the_openssl_recipe_of_the_readme_gives_the_same_signature(tmp_path: Path) -> None:
    obj = signed(by="ølive")
    body = canonical(obj)
    out = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", KEY.decode(), "-hex"], input=body,
                         capture_output=True, check=True).stdout.decode()
    assert out.strip().rsplit(" ", 1)[-1] == obj["sig"]


# -- replay memory ------------------------------------------------------------------------------------------

def test_recent_ids_keep_an_id_for_twice_max_age_then_forget_it() -> None:
    seen = RecentIds(60.0)
    assert seen.add("a", 0.0)
    seen.add("b", 100.0)
    assert "a" in seen  # 100 s later: a command with ts up to 60 s ahead may still be valid
    seen.add("c", 121.5)
    assert "a" not in seen and "b" in seen


def test_recent_ids_refuse_rather_than_forget_early_when_full() -> None:
    seen = RecentIds(60.0, limit=2)
    assert seen.add("a", 0.0) and seen.add("b", 1.0)
    assert not seen.add("c", 2.0)
    assert "a" in seen and "c" not in seen
    assert seen.add("c", 200.0)  # a and b expired


# -- config ------------------------------------------------------------------------------------------------

def test_commands_need_a_key_and_prefixes_have_no_wildcards() -> None:
    with pytest.raises(ValidationError, match=r"commands\.enabled needs commands\.hmac_key_file"):
        MqttSettings.model_validate({"url": "mqtt://127.0.0.1", "commands": {"enabled": True}})
    for bad in ("bcd/+", "bcd/#", "bcd//x", "/"):
        with pytest.raises(ValidationError, match="topic_prefix"):
            MqttSettings.model_validate({"url": "mqtt://127.0.0.1", "topic_prefix": bad})
    settings = MqttSettings.model_validate({"url": "mqtts://b:8883", "topic_prefix": "bcd/dorset/",
                                            "commands": {"enabled": True, "hmac_key_file": "k", "max_age": "2m"}})
    assert (settings.topic_prefix, settings.commands.max_age, settings.buffer) == ("bcd/dorset", 120.0, 1000)


# -- acting on a real engine --------------------------------------------------------------------------------

MQTT = 'mqtt: {url: "mqtt://127.0.0.1:1", commands: {enabled: true, hmac_key_file: key}}'


class Live:
    def __init__(self, engine: Engine, output: MqttOutput, runner: Runner, metrics: Metrics) -> None:
        self.engine, self.output, self.runner, self.metrics = engine, output, runner, metrics
        self.clock = NOW
        self.count = 0
        self.events = engine.bus.subscribe("test")

    async def event(self, kind: str) -> Event:
        """The next bus event of `kind`."""
        async with asyncio.timeout(5):
            while True:
                event = await self.events.get()
                if event.kind == kind:
                    return event

    async def send(self, **fields: Any) -> tuple[str, str]:
        self.count += 1
        obj = signed(**{"id": f"cmd-{self.count}", "ts": self.clock, **fields})
        return await self.output.reader.handle(raw(obj), KEY, retained=False, max_age=60.0)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    config = parse(estates.payroll(tmp_path, step="{name: hold, approval: {timeout: 1h}}", mode="manual", extra=MQTT))
    bus = Bus()
    engine, runner = acting(config, Journal(tmp_path / "bcd.sqlite"), bus)
    holder: dict[str, Live] = {}
    output = MqttOutput(EngineView(engine), Operations(engine), bus, clock=lambda: holder["live"].clock)
    metrics = Metrics(EngineView(engine))
    metrics.register(MqttCollector(output.stats))
    output.settings = config.mqtt  # no connection: handle() is what is under test
    output.stats.enabled = True  # as apply() would say
    holder["live"] = live = Live(engine, output, runner, metrics)
    for site, result in (("dorset", Result.FAIL), ("hampshire", Result.OK)):
        engine.observe(Observation(ProbeKey("payroll", site, "health"), result, 0.01, f"{result}", NOW))
    yield live
    await runner.stop()
    engine.journal.close()


def metric(live: Live, sample: str) -> float | None:
    for line in live.metrics.render().decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_failover_approve_and_the_refusals_of_the_engine(live: Live) -> None:
    topic, text = await live.send(to="hampshire", by="olive")
    assert topic == "cmd-1"
    assert text.startswith("accepted: run "), text
    run_id = int(text.split()[2].rstrip(":"))
    assert live.engine.runs.get(run_id) is not None
    assert live.engine.runs.get(run_id).trigger == "mqtt:olive"  # type: ignore[union-attr]
    assert await live.send() == ("cmd-2", f"refused: run {run_id} of payroll is in progress")
    assert await live.send(action="approve", run=run_id + 1) == ("cmd-3", f"refused: no run {run_id + 1}")
    await live.event("approval_waiting")
    assert await live.send(action="approve", run=run_id, service="library") == (
        "cmd-4", "refused: no service named 'library'")
    assert (await live.send(action="approve", run=run_id))[1] == f"accepted: run {run_id} approved"
    finished = await live.event("run_finished")
    assert finished.to_json()["result"] == "succeeded"
    assert live.engine.services["payroll"].active == "hampshire"
    assert (await live.send(action="abort", run=run_id))[1] == f"refused: run {run_id} is not in progress"
    assert metric(live, 'bcd_mqtt_commands_total{result="accepted"}') == 2
    assert metric(live, 'bcd_mqtt_commands_total{result="refused"}') == 4


async def test_maintenance_start_and_end_and_ack(live: Live) -> None:
    assert (await live.send(action="maintenance", site="dorset", duration="2h", reason="patching"))[1] == (
        "accepted: maintenance of dorset for 7200s")
    site = live.engine.sites[("payroll", "dorset")]
    assert site.maintenance_until == pytest.approx(live.engine.clock() + 7200, abs=5)
    assert "mqtt:olive" in (site.maintenance_reason or "")
    assert (await live.send(action="maintenance", site="kent", duration="1h"))[1].startswith("refused: payroll has no site")
    assert (await live.send(action="maintenance", end=True))[1] == "accepted: maintenance ended for dorset"
    assert (await live.send(action="ack"))[1] == "accepted: nothing to acknowledge"


async def test_maintenance_booked_for_later_or_refused(live: Live) -> None:
    assert (await live.send(action="maintenance", site="dorset", duration="2h", **{"from": "2099-01-01T00:00Z"}))[
        1] == "refused: the maintenance calendar is not started"
    calendar = MaintenanceCalendar(Operations(live.engine), EngineView(live.engine), live.engine.emit,
                                   LocalBookings(live.engine.journal))
    live.output.reader.operations = Operations(live.engine, calendar=calendar)  # the daemon's: with its calendar
    assert (await live.send(action="maintenance", site="dorset", duration="2h", reason="switch",
                            **{"from": "2099-01-01T00:00Z"}))[1] == (
        "accepted: maintenance of payroll at dorset booked as payroll.dorset@20990101T000000Z")
    assert live.engine.sites[("payroll", "dorset")].maintenance_until is None  # not yet
    assert (await live.send(action="maintenance", site="dorset", duration="1h", **{"from": "2099-01-01T00:00Z"}))[
        1] == "refused: payroll.dorset@20990101T000000Z is already booked"
    assert (await live.send(action="maintenance", duration="1h", **{"from": "2020-01-01T00:00Z"}))[1] == (
        "refused: the window must start in the future (for maintenance now, leave out `from`)")
    assert (await live.send(action="maintenance", duration="1h", **{"from": "2099-06-01T00:00Z"}))[1].startswith(
        "refused: payroll would have no site outside maintenance: dorset (window payroll@20990601T000000Z), "
        "hampshire (window payroll@20990601T000000Z)")



async def test_a_run_is_booked_for_later_and_cancelled_by_command(live: Live) -> None:
    operations = live.output.reader.operations
    store = LocalBookings(live.engine.journal)
    booked = BookedRuns(operations, EngineView(live.engine), live.engine.emit, store, me="unit", clock=lambda: live.clock)
    live.output.reader.operations = operations.joined(bookings=booked)  # the daemon's: with its bookings
    said = (await live.send(action="failover", reason="planned", at="2023-11-15T22:15Z"))[1]
    (booking,) = store.all()
    assert said == f"accepted: booking {booking.id}: failover of payroll at 2023-11-15T22:15:00Z"
    assert (booking.by, booking.at, booking.state) == ("mqtt:olive", 1700086500.0, BookingState.BOOKED)
    assert live.engine.runs.recent("payroll") == []  # not now
    assert (await live.send(action="plan_run", service=None, plan="nothing", at="2023-11-15T22:15Z"))[1] == (
        "refused: no plan named 'nothing'")
    assert (await live.send(action="failback", at="2020-01-01T00:00Z"))[1].startswith(
        "refused: the time 2020-01-01T00:00:00Z has passed")
    assert (await live.send(action="failover", at="tonight"))[1].startswith("refused: at: expected an ISO 8601 time")
    assert (await live.send(action="booking_cancel", service=None, booking=booking.id, reason="not"))[1] == (
        f"accepted: booking {booking.id} (failover of payroll at 2023-11-15T22:15:00Z) cancelled")
    assert (await live.send(action="booking_cancel", service=None))[1] == "refused: booking is required"
    assert [b.state for b in store.all()] == [BookingState.CANCELLED]


async def test_refusals_are_counted_replayed_ids_too_and_no_key_refuses_all(live: Live) -> None:
    obj = signed(id="once")
    assert (await live.output.reader.handle(raw(obj), KEY, retained=False, max_age=60.0))[1].startswith("accepted")
    assert await live.output.reader.handle(raw(obj), KEY, retained=False, max_age=60.0) == (
        "once", "refused: replayed: this id was seen before")
    assert (await live.output.reader.handle(b"\x00garbage", KEY, retained=False, max_age=60.0))[0] == "invalid"
    assert await live.output.reader.handle(raw(signed(id="k")), None, retained=False, max_age=60.0) == (
        "k", "refused: commands unavailable: the hmac key cannot be read")
    assert metric(live, 'bcd_mqtt_commands_total{result="refused"}') == 3
    assert metric(live, "bcd_mqtt_connected") == 0
    assert metric(live, "bcd_mqtt_dropped_messages_total") == 0


def message(payload: bytes, topic: str = "bcd/unit/commands", retain: bool = False) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, 1, retain, 1, None)


async def test_a_command_that_does_not_fit_is_dropped_counted_answered_and_may_be_sent_again(live: Live) -> None:
    reader = live.output.reader
    reader.inbox.command_limit = 1
    first, second = raw(signed(id="first", action="ack")), raw(signed(id="second", action="ack"))
    for payload in (first, second, b"[" * 8000, b"junk"):
        reader.arrive(message(payload), "bcd/unit/commands", KEY, 60.0)
    reader.arrive(message(second, topic="bcd/unit/other"), "bcd/unit/commands", KEY, 60.0)  # not a command
    replies = [await reader.inbox.next_reply() for _ in range(3)]
    assert replies[0] == Reply("second", "dropped: too many commands in flight (1 waiting); send it again later",
                               signed=True)
    assert [reply.to for reply in replies[1:]] == ["invalid", "invalid"]
    assert metric(live, 'bcd_mqtt_commands_total{result="dropped"}') == 1
    assert metric(live, 'bcd_mqtt_commands_total{result="refused"}') == 2
    assert (await reader.inbox.next_command()).id == "first"
    reader.arrive(message(second), "bcd/unit/commands", KEY, 60.0)  # the dropped id was not remembered
    assert (await reader.inbox.next_command()).id == "second"


async def test_a_retained_command_is_refused_as_it_arrives(live: Live) -> None:
    live.output.reader.arrive(message(raw(signed(id="kept")), retain=True), "bcd/unit/commands", KEY, 60.0)
    reply = await live.output.reader.inbox.next_reply()
    assert (reply.to, reply.text.split(":")[:2]) == ("kept", ["refused", " retained message"])
    assert len(live.output.reader.inbox) == 0


async def test_a_command_that_waited_past_max_age_in_the_inbox_is_refused_as_stale(live: Live) -> None:
    reader = live.output.reader
    reader.arrive(message(raw(signed(id="slow", action="ack"))), "bcd/unit/commands", KEY, 60.0)
    live.clock = NOW + 61
    worker = asyncio.create_task(reader.work())
    try:
        reply = await asyncio.wait_for(reader.inbox.next_reply(), 5)
    finally:
        worker.cancel()
    assert reply == Reply("slow", "refused: stale: ts is 61s old after waiting in the inbox (max_age 60s)", True)
    assert metric(live, 'bcd_mqtt_commands_total{result="refused"}') == 1
    assert metric(live, 'bcd_mqtt_commands_total{result="accepted"}') == 0


async def test_what_waits_when_mqtt_stops_is_counted_as_dropped(live: Live) -> None:
    reader = live.output.reader
    for command_id in ("w1", "w2"):
        reader.arrive(message(raw(signed(id=command_id, action="ack"))), "bcd/unit/commands", KEY, 60.0)
    reader.arrive(message(b"junk"), "bcd/unit/commands", KEY, 60.0)  # one reply waiting
    await live.output.stop()
    assert metric(live, 'bcd_mqtt_commands_total{result="dropped"}') == 2
    assert metric(live, "bcd_mqtt_dropped_replies_total") == 1
