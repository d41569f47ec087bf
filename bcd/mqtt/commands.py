"""MQTT commands, the pure part: what a command is, how it is signed, and `verify()`, which turns any payload
into a `Command` or a `Refusal` (never an exception). No clock, no I/O: the caller passes `now` and `seen`.

Cheap checks come first, so a flood of junk costs little: the size, then a count of brackets (so `json.loads`
never meets nesting deep enough to recurse out of the stack), then JSON, then the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections import OrderedDict
from collections.abc import Container, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from bcd.authority import Role, Selector
from bcd.calendar import when
from bcd.config.drills import MAX_HOLD
from bcd.durations import MAINTENANCE, parse_between
from bcd.json_nesting import too_nested

MAX_COMMAND_BYTES = 8 * 1024
MAX_BRACKETS = 64  # outside strings; a command has one
MAX_RUN_ID = 2**63 - 1  # SQLite's largest integer: a larger id would overflow inside the driver
MAX_REASON = 500
MAX_BY = 64
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_SEEN_IDS = 10_000



class CommandAction(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"
    ACK = "ack"
    MAINTENANCE = "maintenance"
    APPROVE = "approve"
    ABORT = "abort"
    PLAN_RUN = "plan_run"
    PLAN_RESUME = "plan_resume"
    PLAN_ABORT = "plan_abort"
    PLAN_APPROVE = "plan_approve"
    PLAN_DONE = "plan_done"
    DRILL = "drill"
    PLAN_DRILL = "plan_drill"
    BOOKING_CANCEL = "booking_cancel"


COMMON_FIELDS = frozenset({"id", "action", "reason", "by", "ts", "sig"})
ACTION_FIELDS: dict[CommandAction, frozenset[str]] = {
    CommandAction.FAILOVER: frozenset({"service", "to", "at"}),
    CommandAction.FAILBACK: frozenset({"service", "to", "at"}),
    CommandAction.ACK: frozenset({"service"}),
    CommandAction.MAINTENANCE: frozenset({"service", "site", "duration", "end", "from", "force"}),
    CommandAction.APPROVE: frozenset({"run", "service"}),
    CommandAction.ABORT: frozenset({"run", "service"}),
    CommandAction.PLAN_RUN: frozenset({"plan", "at"}),
    CommandAction.PLAN_RESUME: frozenset({"run"}),
    CommandAction.PLAN_ABORT: frozenset({"run", "now"}),
    CommandAction.PLAN_APPROVE: frozenset({"run"}),
    CommandAction.PLAN_DONE: frozenset({"run", "service"}),
    CommandAction.DRILL: frozenset({"service", "kind", "hold"}),
    CommandAction.PLAN_DRILL: frozenset({"plan", "hold"}),
    CommandAction.BOOKING_CANCEL: frozenset({"booking"}),
}
SERVICE_ACTIONS = frozenset({CommandAction.FAILOVER, CommandAction.FAILBACK, CommandAction.ACK,
                             CommandAction.MAINTENANCE, CommandAction.PLAN_DONE, CommandAction.DRILL})
RUN_ACTIONS = frozenset({CommandAction.APPROVE, CommandAction.ABORT, CommandAction.PLAN_RESUME,
                         CommandAction.PLAN_ABORT, CommandAction.PLAN_APPROVE, CommandAction.PLAN_DONE})


@dataclass(frozen=True, slots=True)
class Signer:
    """A signing key, and what the commands it signs may do: `commands.hmac_key_file` (name "") is an operator
    of every service; each of `commands.keys` has its own role and scope."""

    secret: bytes
    name: str = ""
    role: Role = Role.OPERATOR
    scope: Selector | None = None


Keys = bytes | Sequence[Signer]  # one key (an operator of every service), or several


@dataclass(frozen=True, slots=True)
class Command:
    """A command whose signature, freshness and shape were verified."""

    id: str
    action: CommandAction
    reason: str
    by: str
    ts: float
    service: str | None = None
    to: str | None = None
    site: str | None = None
    duration: float | None = None
    end: bool = False
    run: int | None = None  # a run id; for the plan_* actions, a plan run id
    plan: str | None = None
    now: bool = False
    signer: Signer | None = None  # the key that signed it
    start: float | None = None  # maintenance: a window booked from then (epoch seconds)
    force: bool = False  # maintenance: book a window leaving the service no site outside maintenance
    kind: str = "round_trip"  # drill: round_trip or runbook
    hold: float = 0.0  # drill, plan_drill: seconds on the standby
    at: float | None = None  # failover, failback, plan_run: book the run for then (epoch seconds)
    booking: str | None = None  # booking_cancel: the booking's id


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command was refused; `id` is None when the payload had no usable id (reply on `replies/invalid`).
    `signed`: the signature was good (its sender holds the key), so the reply goes before those to junk."""

    id: str | None
    reason: str
    signed: bool = False


class _Malformed(Exception):
    pass


def canonical(obj: dict[str, Any]) -> bytes:
    """The bytes a command's `sig` is computed over: the object without `sig`, keys sorted, no spaces."""
    unsigned = {key: value for key, value in obj.items() if key != "sig"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(obj: dict[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of `canonical(obj)`: what a sender puts in `sig`."""
    return hmac.new(key, canonical(obj), hashlib.sha256).hexdigest()


def verify(
    raw: bytes, key: Keys, now: float, seen: Container[str], *, max_age: float = 60.0, retained: bool = False
) -> Command | Refusal:
    """Check one command payload; pure: no clock, no I/O, `seen` is only read. Never raises. `key` is one key,
    or several `Signer`s: every one is tried, and the Command names the one that signed it (`signer`).

    Refused: larger than 8 KiB, more than `MAX_BRACKETS` brackets outside strings, not a JSON object
    (or duplicate keys), a retained message, unsigned or with a bad signature (constant-time compare), wrong
    field types or fields the action does not take, an unknown action, `ts` more than `max_age` seconds from
    `now` either way, or an `id` in `seen`. Anything unforeseen is a refusal too ("unreadable").
    The caller records the id of every Command it gets back.
    """
    try:
        return _verify(raw, key, now, seen, max_age=max_age, retained=retained)
    except Exception as exc:  # the checks above should leave nothing; a payload must never break the reader
        return Refusal(None, f"unreadable: {type(exc).__name__}")


def _read(raw: bytes) -> tuple[dict[str, Any], str] | Refusal:
    """The payload as a JSON object with a usable id, cheapest checks first."""
    if len(raw) > MAX_COMMAND_BYTES:
        return Refusal(None, f"payload too large: {len(raw)} bytes (limit {MAX_COMMAND_BYTES})")
    if too_nested(raw, MAX_BRACKETS):  # a command is one flat object: json.loads cannot recurse deep
        return Refusal(None, f"not a command: more than {MAX_BRACKETS} brackets (a command is one flat object)")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, _Malformed) as exc:
        return Refusal(None, f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return Refusal(None, "not a JSON object")
    raw_id = obj.get("id")
    if not (isinstance(raw_id, str) and ID_PATTERN.match(raw_id)):
        return Refusal(None, "id must be a string of 1-64 letters, digits, '_', '.', ':' or '-'")
    return obj, raw_id


def _verify(raw: bytes, key: Keys, now: float, seen: Container[str], *, max_age: float, retained: bool
            ) -> Command | Refusal:
    read = _read(raw)
    if isinstance(read, Refusal):
        return read
    obj, command_id = read
    if retained:
        return Refusal(command_id, "retained message: commands are never taken from retained messages")
    sig = obj.get("sig")
    if sig is None:
        return Refusal(command_id, "unsigned: no sig")
    try:
        body = canonical(obj)
    except UnicodeEncodeError:
        return Refusal(command_id, "not JSON: a string holds a lone surrogate (\\ud800-\\udfff) escape")
    signer = _signer(sig, body, (Signer(key),) if isinstance(key, bytes) else key)
    if signer is None:
        return Refusal(command_id, "bad signature")
    try:
        command = replace(_parse(obj, command_id), signer=signer)
    except _Malformed as exc:
        return Refusal(command_id, str(exc), signed=True)
    age = now - command.ts
    if age > max_age:
        return Refusal(command_id, f"stale: ts is {age:.0f}s old (max_age {max_age:g}s)", signed=True)
    if -age > max_age:
        return Refusal(command_id, f"ts is {-age:.0f}s in the future (max_age {max_age:g}s)", signed=True)
    if command_id in seen:
        return Refusal(command_id, "replayed: this id was seen before", signed=True)
    return command


def _signer(sig: object, body: bytes, signers: Sequence[Signer]) -> Signer | None:
    """The key whose HMAC of `body` is `sig`; every key is tried (constant-time compares), so the time taken
    does not say which one matched."""
    if not isinstance(sig, str):
        return None
    given, found = sig.lower().encode("utf-8", "replace"), None
    for signer in signers:
        if hmac.compare_digest(given, hmac.new(signer.secret, body, hashlib.sha256).hexdigest().encode()):
            found = signer
    return found


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Malformed(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _Malformed(f"{name} is not a number")


def _parse(obj: dict[str, Any], command_id: str) -> Command:
    action_name = obj.get("action")
    if not isinstance(action_name, str):
        raise _Malformed("action must be a string")
    try:
        action = CommandAction(action_name)
    except ValueError:
        raise _Malformed(f"unknown action {action_name!r}; one of {', '.join(CommandAction)}") from None
    extra = sorted(set(obj) - COMMON_FIELDS - ACTION_FIELDS[action])
    if extra:
        raise _Malformed(f"{action} does not take {', '.join(extra)}")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise _Malformed("ts must be a number (Unix seconds)")
    reason = _text(obj, "reason", MAX_REASON, required=True, empty=True)
    by = _text(obj, "by", MAX_BY, required=True)
    service = _text(obj, "service", 64, required=action in SERVICE_ACTIONS)
    run = obj.get("run")
    is_id = isinstance(run, int) and not isinstance(run, bool) and 1 <= run <= MAX_RUN_ID
    if action in RUN_ACTIONS and not is_id:
        raise _Malformed("run must be a positive integer (a run id)")
    end, now = obj.get("end", False), obj.get("now", False)
    if not isinstance(end, bool) or not isinstance(now, bool):
        raise _Malformed(f"{'end' if not isinstance(end, bool) else 'now'} must be true or false")
    duration: float | None = None
    if action is CommandAction.MAINTENANCE and not end:
        if "duration" not in obj:
            raise _Malformed("maintenance needs a duration (e.g. 2h), or end: true")
        value = obj["duration"]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Malformed("duration must be a string such as 2h, or seconds")
        try:
            duration = parse_between(value, *MAINTENANCE)  # as the API: a far end would overflow the reason's date
        except ValueError as exc:
            raise _Malformed(f"duration: {exc}") from None
    return Command(
        id=command_id, action=action, reason=reason or "", by=by or "", ts=float(ts), service=service,
        to=_text(obj, "to", 64), site=_text(obj, "site", 64), duration=duration, end=end,
        run=run if isinstance(run, int) else None, now=now,
        plan=_text(obj, "plan", 64, required=action in (CommandAction.PLAN_RUN, CommandAction.PLAN_DRILL)),
        booking=_text(obj, "booking", 64, required=action is CommandAction.BOOKING_CANCEL), **_booking(obj),
        **(_drill(obj) if action in (CommandAction.DRILL, CommandAction.PLAN_DRILL) else {}),
    )


def _booking(obj: dict[str, Any]) -> dict[str, Any]:
    """A maintenance command's `from` and `force`, a run's `at` (ISO 8601, no offset: UTC), as the API takes them."""
    force = obj.get("force", False)
    if not isinstance(force, bool):
        raise _Malformed("force must be true or false")
    times: dict[str, Any] = {"force": force}
    for name, field in (("from", "start"), ("at", "at")):
        text = _text(obj, name, 64)
        try:
            times[field] = None if text is None else when(text)
        except ValueError as exc:
            raise _Malformed(f"{name}: {exc}") from None
    return times


def _drill(obj: dict[str, Any]) -> dict[str, Any]:
    """A drill command's `kind` and `hold` (a duration such as 10m, or seconds), as the API takes them (a
    plan_drill takes no kind: `extra` refuses it before this)."""
    kind, hold = obj.get("kind", "round_trip"), obj.get("hold", 0)
    if kind not in ("round_trip", "runbook"):
        raise _Malformed("kind must be round_trip or runbook")
    if isinstance(hold, bool) or not isinstance(hold, str | int | float):
        raise _Malformed("hold must be a string such as 10m, or seconds")
    try:
        return {"kind": kind, "hold": parse_between(hold, 0.0, MAX_HOLD)}
    except ValueError as exc:
        raise _Malformed(f"hold: {exc}") from None


def _text(obj: dict[str, Any], name: str, limit: int, *, required: bool = False, empty: bool = False) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Malformed(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{name} must be a string")
    if len(value) > limit:
        raise _Malformed(f"{name} is longer than {limit} characters")
    if not value and not empty:
        raise _Malformed(f"{name} must not be empty")
    return value


class RecentIds:
    """Ids of accepted commands, kept long enough that a replay is always caught: a command is valid for
    `max_age` either side of its `ts`, so an id is kept for twice that after it was seen. Bounded: when full
    of ids still in their window, `add` refuses (the command is refused) rather than forget one early."""

    def __init__(self, max_age: float, limit: int = MAX_SEEN_IDS) -> None:
        self.keep = 2 * max_age + 1
        self.limit = limit
        self._ids: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, command_id: str, now: float) -> bool:
        while self._ids:
            oldest, at = next(iter(self._ids.items()))
            if now - at <= self.keep:
                break
            del self._ids[oldest]
        if len(self._ids) >= self.limit:
            return False
        self._ids[command_id] = now
        return True

    def forget(self, command_id: str) -> None:
        """Drop an id that was added but never acted on (the command was dropped): a resend may use it."""
        self._ids.pop(command_id, None)

