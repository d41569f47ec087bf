"""Runs of other instances, journaled here: a finished run is mirrored into the local journal (so cooldowns and
blocks agree), a run whose holder lost its lock before it finished is journaled `interrupted` (and blocks the
service), and an acknowledgement found in a record is carried over to the local run."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from bcd.cluster.records import RemoteRun, RunLedger, mirrored_finished
from bcd.engine import Engine

log = structlog.get_logger("bcd.cluster")


class Mirror:
    """Brings the ledger's records of every service into the engine's journal (`vantage` is ours)."""

    def __init__(self, engine: Engine, ledger: RunLedger, *, vantage: str,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.ledger = ledger
        self.vantage = vantage
        self.wall_clock = wall_clock

    def reconcile(self, service: str, held_token: int | None) -> bool:
        """Mirror finished runs of others, journal orphaned runs as interrupted, carry acknowledgements over
        (`held_token`: the token of our own run's lock, whose record is no orphan). True when an orphaned
        record is left to mark interrupted in the store."""
        orphaned = False
        for run in self.ledger.records.get(service, []):
            ours = run.vantage == self.vantage
            local_id = self.ledger.local_id(run)
            if run.unfinished:
                if self.ledger.alive(service, run) or held_token == run.token:
                    continue
                # the holder lost its lock before the run finished: nobody re-runs its steps
                if not ours and local_id is None:
                    self.journal(service, run, orphaned=True)
                orphaned = True
                continue
            if not ours and local_id is None:
                local_id = self.journal(service, run, orphaned=False)
            by = run.acknowledged_by
            if by and local_id is not None and self.engine.runs.acknowledge_run(local_id, by):
                log.info("acknowledgement_adopted", service=service, run_id=local_id, by=by)
                self.engine.run_changed(service)
        return orphaned

    def journal(self, service: str, run: RemoteRun, *, orphaned: bool) -> int:
        """Journal another instance's run here and announce it; its local run id."""
        now = self.wall_clock()
        record = self.ledger.mirror(run, service, orphaned=orphaned, now=now, create=self.engine.runs.create)
        if orphaned:
            log.warning("run_interrupted", service=service, run_id=record.id, remote_run=run.name, token=run.token,
                        reason="lost_lock", hint="the service stays blocked until an operator acknowledges (bcd ack)")
        self.engine.emit(mirrored_finished(record, run, now), run_id=record.id, result=record.result,
                         remote_run=run.name)
        self.engine.run_changed(service)
        return record.id
