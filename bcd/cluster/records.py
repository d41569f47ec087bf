"""Run records in etcd, parsed once: a `RemoteRun` per record (`from_json`/`to_json`, as Patroni's
`Member.from_node`), the lock holders and records as last read (`RunLedger`), which records the lock holder
deletes (`prunable`), and how another instance's run is mirrored into the local journal.

A record that cannot be parsed is logged once (`run_record_unreadable`, with the reason) and skipped: it is
never mirrored, never counted as a run in progress, and the lock holder's pruning treats it as the oldest."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import structlog

from bcd.events import Event, EventKind, RunFinished
from bcd.journal import RunRecord
from bcd.model import RunKind, RunResult
from bcd.policy import RunInfo

log = structlog.get_logger("bcd.cluster")

KEEP_RUNS = 20  # run records of a service kept in etcd (the newest); older ones are deleted at the end of a run
UNFINISHED = frozenset({RunResult.RUNNING, RunResult.WAITING_APPROVAL})
NEEDS_ACK = frozenset({RunResult.FAILED, RunResult.ABORTED, RunResult.ROLLED_BACK, RunResult.INTERRUPTED})
T = TypeVar("T")


class RecordUnreadable(ValueError):
    """A run record that cannot be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a service's lock: the value at the lock key, copied into the holder's run records."""

    vantage: str
    lease: str

    @classmethod
    def from_json(cls, data: object) -> Holder | None:
        """The holder in decoded JSON; None when it does not name a vantage."""
        if not isinstance(data, dict) or not isinstance(data.get("vantage"), str):
            return None
        return cls(data["vantage"], str(data.get("lease", "")))

    def to_json(self) -> dict[str, str]:
        return {"vantage": self.vantage, "lease": self.lease}


@dataclass(frozen=True, slots=True)
class RemoteStep:
    """One step of a run as its record shows it."""

    seq: int
    phase: str
    name: str
    outcome: str = "running"

    @classmethod
    def from_json(cls, data: object) -> RemoteStep:
        if not isinstance(data, dict):
            raise RecordUnreadable(f"a step is {data!r}, not an object")
        return cls(_field(data, "seq", int), str(data.get("phase", "")), str(data.get("name", "")),
                   str(data.get("outcome", "running")))

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "phase": self.phase, "name": self.name, "outcome": self.outcome}


@dataclass(frozen=True, slots=True)
class RemoteRun:
    """A run record in etcd, written (fenced) by the instance that holds the service's lock for the run."""

    vantage: str
    token: int
    service: str
    result: RunResult
    run_id: int = 0
    kind: RunKind = RunKind.FAILOVER
    holder: Holder | None = None
    runbook: str = ""
    trigger: str = "auto"
    reason: str = ""
    from_site: str = ""
    to_site: str = ""
    dry_run: bool = False
    forced: bool = False
    started: float | None = None
    ended: float | None = None
    detail: str = ""
    evidence: Mapping[str, Any] | None = None  # the decision's quorum evidence, carried as it is
    acknowledged_by: str | None = None
    steps: tuple[RemoteStep, ...] = ()
    step: RemoteStep | None = None  # the step running now (its outcome is not part of the record)
    drill: str | None = None  # the drill it is a leg of (bcd.drills): mirrored as such, so it starts no cooldown

    @property
    def name(self) -> str:
        """How other instances name the run: `<vantage>:<run id>`."""
        return f"{self.vantage}:{self.run_id}"

    @property
    def unfinished(self) -> bool:
        return self.result in UNFINISHED

    @property
    def needs_ack(self) -> bool:
        """A failure nobody acknowledged yet."""
        return self.result in NEEDS_ACK and not self.acknowledged_by

    @classmethod
    def from_json(cls, raw: bytes | str) -> RemoteRun:
        """The record in the store's bytes; RecordUnreadable (saying why) when it is not one."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RecordUnreadable(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RecordUnreadable(f"not a JSON object but {type(data).__name__}")
        steps = data.get("steps") or []
        if not isinstance(steps, list):
            raise RecordUnreadable(f"'steps' is {steps!r}, not a list")
        step = data.get("step")
        evidence = data.get("evidence")
        return cls(
            vantage=_field(data, "vantage", _text), token=_field(data, "token", _integer),
            service=str(data.get("service", "")), result=_field(data, "result", RunResult),
            run_id=_field(data, "run_id", _integer), kind=_field(data, "kind", RunKind),
            holder=Holder.from_json(data.get("holder")), runbook=str(data.get("runbook", "")),
            trigger=str(data.get("trigger", "auto")), reason=str(data.get("reason", "")),
            from_site=str(data.get("from", "")), to_site=str(data.get("to", "")),
            dry_run=bool(data.get("dry_run")), forced=bool(data.get("forced")),
            started=_optional(data, "started", float), ended=_optional(data, "ended", float),
            detail=str(data.get("detail", "")), evidence=evidence if isinstance(evidence, dict) else None,
            acknowledged_by=str(data["acknowledged_by"]) if data.get("acknowledged_by") else None,
            steps=tuple(RemoteStep.from_json(item) for item in steps),
            step=RemoteStep.from_json(step) if step else None,
            drill=str(data["drill"]) if data.get("drill") else None,
        )

    def to_json(self) -> bytes:
        """The bytes the store holds (the same keys bcd has always written, so older members read them)."""
        current = None if self.step is None else {"seq": self.step.seq, "phase": self.step.phase,
                                                  "name": self.step.name}
        data = {
            "vantage": self.vantage, "holder": None if self.holder is None else self.holder.to_json(),
            "token": self.token, "service": self.service, "result": str(self.result),
            "steps": [step.to_json() for step in self.steps], "step": current, "run_id": self.run_id,
            "runbook": self.runbook, "kind": str(self.kind), "trigger": self.trigger, "reason": self.reason,
            "to": self.to_site, "dry_run": self.dry_run, "forced": self.forced, "started": self.started,
            "ended": self.ended, "detail": self.detail, "evidence": self.evidence,
            "acknowledged_by": self.acknowledged_by, "from": self.from_site,
        }
        if self.drill:  # only then: a record of no drill keeps the keys older members know
            data["drill"] = self.drill
        return json.dumps(data, default=str).encode()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("not an integer")
    return int(value)


def _field(data: Mapping[str, Any], name: str, convert: Callable[[Any], T]) -> T:
    if name not in data:
        raise RecordUnreadable(f"no {name!r}")
    try:
        return convert(data[name])
    except (TypeError, ValueError):
        raise RecordUnreadable(f"{name!r} is {data[name]!r}") from None


def _optional(data: Mapping[str, Any], name: str, convert: Callable[[Any], T]) -> T | None:
    return None if data.get(name) is None else _field(data, name, convert)


@dataclass(frozen=True, slots=True)
class ActiveSite:
    """A service's active site as the store holds it, written (fenced) by the lock holder after a run moved it."""

    site: str
    run: str | None = None  # `<vantage>:<run id>` of the run that moved it
    token: int | None = None
    at: float | None = None  # the holder's wall clock

    @classmethod
    def from_json(cls, raw: bytes) -> ActiveSite | None:
        """The active site in the store's bytes; None when they do not name a site."""
        data = decoded(raw)
        site, run, token, at = data.get("site"), data.get("run"), data.get("token"), data.get("at")
        if not isinstance(site, str):
            return None
        return cls(site, str(run) if run is not None else None, token if isinstance(token, int) else None,
                   float(at) if isinstance(at, int | float) else None)

    def to_json(self) -> bytes:
        return json.dumps({"site": self.site, "run": self.run, "token": self.token, "at": self.at}).encode()


def prunable(records: Mapping[str, RemoteRun | None], keep: int) -> list[str]:
    """The keys of run records to delete: beyond the `keep` newest (by token), those that are finished and need
    no acknowledgement (or have one); an unfinished record or an unacknowledged failure stays whatever its age.
    An unreadable record (None) counts as the oldest."""
    def token(key: str) -> int:
        run = records[key]
        return run.token if run is not None else 0

    newest_first = sorted(records, key=token, reverse=True)
    return [key for key in newest_first[keep:]
            if (run := records[key]) is None or not (run.unfinished or run.needs_ack)]


def mirrored(run: RemoteRun, service: str, *, orphaned: bool, now: float) -> RunRecord:
    """Another instance's run as this instance journals it; `orphaned`: its holder lost the lock before it
    finished, so it is journaled interrupted."""
    result = RunResult.INTERRUPTED if orphaned else run.result
    detail = (f"lost_lock: {run.vantage} lost the lock of {service} (token {run.token}) before run {run.name} "
              "finished; no step was re-run") if orphaned else run.detail
    return RunRecord(
        id=0, service=service, runbook=run.runbook, kind=run.kind, trigger=run.trigger,
        reason=f"run {run.name} on {run.vantage}: {run.reason}", from_site=run.from_site, to_site=run.to_site,
        dry_run=run.dry_run, forced=run.forced,
        evidence={"remote_run": run.name, "vantage": run.vantage, "token": run.token,
                  "steps": [step.to_json() for step in run.steps], "quorum": run.evidence,
                  **({"drill": run.drill} if run.drill else {})},  # a drill's leg: no cooldown here either
        started=run.started or now, ended=now if orphaned else (run.ended or now), result=result,
        detail=detail, acknowledged_by=run.acknowledged_by, detected_at=None, verified_at=None,
    )


def mirrored_finished(record: RunRecord, run: RemoteRun, at: float) -> Event:
    """The `run_finished` event of a mirrored run (the runner's own, plus the remote run's name)."""
    return Event(EventKind.RUN_FINISHED, at, record.service, None,
                 f"run {run.name} on {run.vantage} {record.result}: {record.detail}",
                 RunFinished(record.id, record.result.value, record.kind.value, record.to_site, run.name))


class RunLedger:
    """The lock holders and run records as last read from the store (one read, one revision), and which
    records of other instances are journaled here (by token)."""

    def __init__(self, vantage: str) -> None:
        self.vantage = vantage
        self.locks: dict[str, Holder] = {}  # service -> holder
        self.records: dict[str, list[RemoteRun]] = {}  # service -> its run records, oldest token first
        self.actives: dict[str, ActiveSite] = {}  # service -> its active site as the store has it
        self.version = -1  # the store's records_version last taken
        self.mirrored: dict[int, int] = {}  # token -> local run id of records mirrored here
        self._unreadable: dict[str, bytes] = {}  # key -> the bytes last reported unreadable
        self._parsed: dict[str, tuple[bytes, RemoteRun | None]] = {}  # key -> (bytes, record) of the last update

    def load_mirrored(self, runs: Iterable[RunRecord]) -> None:
        """Learn from the journal which records were mirrored before a restart."""
        for record in runs:
            token = record.evidence.get("token") if "remote_run" in record.evidence else None
            if token is not None:
                self.mirrored[int(token)] = record.id

    def parse(self, key: str, raw: bytes) -> RemoteRun | None:
        """The record at `key`; None (logged once per content, with the reason) when it cannot be parsed."""
        try:
            run = RemoteRun.from_json(raw)
        except RecordUnreadable as exc:
            if self._unreadable.get(key) != raw:
                self._unreadable[key] = raw
                log.warning("run_record_unreadable", key=key, reason=str(exc), hint="skipped: not mirrored")
            return None
        self._unreadable.pop(key, None)
        return run

    def follow(self, version: int, read: Callable[[], Mapping[str, bytes]]) -> set[str]:
        """Take the store's records at `version` (its records_version), calling read() only when that is not
        the version taken last: the services whose records or lock changed."""
        if version == self.version:
            return set()
        changed, _ = self.update(read())
        self.version = version
        return changed

    def update(self, everything: Mapping[str, bytes]) -> tuple[set[str], dict[str, ActiveSite]]:
        """Take the whole cluster prefix (views aside): (services whose records or lock changed, active sites).
        A record whose bytes did not change since the last update is not parsed again."""
        parsed: dict[str, tuple[bytes, RemoteRun | None]] = {}
        locks: dict[str, Holder] = {}
        records: dict[str, list[RemoteRun]] = {}
        actives: dict[str, ActiveSite] = {}
        for key, raw in everything.items():
            kind, _, rest = key.partition("/")
            if kind == "locks" and (holder := Holder.from_json(decoded(raw))) is not None:
                locks[rest] = holder
            elif kind == "active" and (active := ActiveSite.from_json(raw)) is not None:
                actives[rest] = active
            elif kind == "runs":
                known = self._parsed.get(key)
                run = known[1] if known is not None and known[0] == raw else self.parse(key, raw)
                parsed[key] = (raw, run)
                if run is not None:
                    records.setdefault(rest.split("/")[0], []).append(run)
        for items in records.values():
            items.sort(key=lambda run: run.token)
        changed = {name for name in set(records) | set(self.records) if records.get(name) != self.records.get(name)}
        changed |= {name for name in set(locks) | set(self.locks) if locks.get(name) != self.locks.get(name)}
        self.locks, self.records, self.actives, self._parsed = locks, records, actives, parsed
        return changed, actives

    def alive(self, service: str, run: RemoteRun) -> bool:
        """Whether the record's holder still holds the service's lock (as of the last read)."""
        holder = self.locks.get(service)
        return holder is not None and holder == run.holder

    def remote_run(self, service: str, *, held_here: bool) -> RunInfo | None:
        """A run of `service` by another instance, in progress as far as the store says."""
        for run in self.records.get(service, []):
            if run.vantage == self.vantage or not run.unfinished:
                continue
            if self.alive(service, run):
                step = run.step.name if run.step is not None else ""
                return RunInfo(run.name, run.kind, run.to_site, run.result is RunResult.WAITING_APPROVAL, step)
        holder = self.locks.get(service)
        if holder is not None and holder.vantage != self.vantage and not held_here:
            return RunInfo(f"of lock holder {holder.vantage}", RunKind.FAILOVER, "?")
        return None

    def local_id(self, run: RemoteRun) -> int | None:
        """The run's id in the local journal: its own for ours, the mirror's for another instance's."""
        return run.run_id if run.vantage == self.vantage else self.mirrored.get(run.token)

    def mirror(self, run: RemoteRun, service: str, *, orphaned: bool, now: float,
               create: Callable[[RunRecord], int]) -> RunRecord:
        """Journal another instance's run here (through `create`), remember it by token; the journaled record."""
        record = mirrored(run, service, orphaned=orphaned, now=now)
        record = replace(record, id=create(record))
        self.mirrored[run.token] = record.id
        return record


def decoded(raw: bytes) -> dict[str, Any]:
    """A JSON object from the store ({} when the bytes are not one)."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
