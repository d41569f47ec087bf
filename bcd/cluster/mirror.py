"""Runs of other instances, journaled here: a finished run is mirrored into the local journal (so cooldowns and
blocks agree), a run whose holder lost its lock before it finished is journaled `interrupted` (and blocks the
service), and an acknowledgement found in a record is carried over to the local run."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping

import structlog

from bcd.cluster.records import RemoteRun, RunLedger, mirrored_finished
from bcd.engine import Engine
from bcd.journal.run_records import RunRecord

log = structlog.get_logger("bcd.cluster")


class Mirror:
    """Brings the ledger's records of every service into the engine's journal (`vantage` is ours)."""

    def __init__(self, engine: Engine, ledger: RunLedger, *, vantage: str,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.ledger = ledger
        self.vantage = vantage
        self.wall_clock = wall_clock

    def reconcile_all(self, held: Mapping[str, int | None]) -> list[str]:
        """`reconcile` every service of `held` (service -> the token of our own lock on it, if any) in one commit
        that does not wait for the disk: the store keeps the records, and a copy a power cut loses is mirrored
        again at the next start. (One commit each, with an fsync each, stalled the event loop for seconds when a
        member started with thousands of runs to mirror.) What was journaled is announced once committed, and
        nothing is if the commit fails (JournalWriteError). Returns the services with orphaned records to mark."""
        announce: list[Callable[[], None]] = []
        mirrored = self.ledger.mirrored  # tokens are only added, in order: those past `before` are this pass's
        before, begun = len(mirrored), time.perf_counter()
        try:
            with self.engine.runs.batch():
                orphaned, changed = self._reconcile_each(held, announce)
        except BaseException:
            for token in list(mirrored)[before:]:  # the rolled-back copies have no local id
                del mirrored[token]
            raise
        for announced in announce:
            announced()
        for service in changed:  # once a service, not once a run: it decides again with the runs it now has
            self.engine.run_changed(service)
        if (count := len(mirrored) - before) > 0:
            log.info("runs_mirrored", runs=count, seconds=round(time.perf_counter() - begun, 3))
        return orphaned

    def _reconcile_each(self, held: Mapping[str, int | None],
                        announce: list[Callable[[], None]]) -> tuple[list[str], list[str]]:
        """`reconcile` each service: (those with orphaned records to mark, those where something was journaled)."""
        orphaned, changed = [], []
        for service, token in held.items():
            told = len(announce)
            if self.reconcile(service, token, announce):
                orphaned.append(service)
            if len(announce) > told:
                changed.append(service)
        return orphaned, changed

    def reconcile(self, service: str, held_token: int | None, announce: list[Callable[[], None]]) -> bool:
        """Mirror finished runs of others, journal orphaned runs as interrupted, carry acknowledgements over
        (`held_token`: the token of our own run's lock, whose record is no orphan); what to log and tell the
        engine is added to `announce`. True when an orphaned record is left to mark interrupted in the store."""
        orphaned = False
        for run in self.ledger.records.get(service, []):
            ours = run.vantage == self.vantage
            local_id = self.ledger.local_id(run)
            if run.unfinished:
                if self.ledger.alive(service, run) or held_token == run.token:
                    continue
                # the holder lost its lock before the run finished: nobody re-runs its steps
                if not ours and local_id is None:
                    self.journal(service, run, orphaned=True, announce=announce)
                orphaned = True
                continue
            if not ours and local_id is None:
                local_id = self.journal(service, run, orphaned=False, announce=announce)
            by = run.acknowledged_by
            if by and local_id is not None and self.engine.runs.acknowledge_run(local_id, by):
                announce.append(functools.partial(self._acknowledged, service, local_id, by))
        return orphaned

    def _acknowledged(self, service: str, run_id: int, by: str) -> None:
        log.info("acknowledgement_adopted", service=service, run_id=run_id, by=by)

    def journal(self, service: str, run: RemoteRun, *, orphaned: bool,
                announce: list[Callable[[], None]] | None = None) -> int:
        """Journal another instance's run here and announce it: now (and the engine decides the service again),
        or by adding to `announce` (the caller has it decide again); its local run id."""
        now = self.wall_clock()
        record = self.ledger.mirror(run, service, orphaned=orphaned, now=now, create=self.engine.runs.create)
        told = functools.partial(self._journaled, service, run, record, orphaned, now)
        if announce is None:
            told()
            self.engine.run_changed(service)
        else:
            announce.append(told)
        return record.id

    def _journaled(self, service: str, run: RemoteRun, record: RunRecord, orphaned: bool, now: float) -> None:
        if orphaned:
            log.warning("run_interrupted", service=service, run_id=record.id, remote_run=run.name, token=run.token,
                        reason="lost_lock", hint="the service stays blocked until an operator acknowledges (bcd ack)")
        self.engine.emit(mirrored_finished(record, run, now), run_id=record.id, result=record.result,
                         remote_run=run.name)
