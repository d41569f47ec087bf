"""Who takes a service's lock for an automatic run: this instance now, or another one it waits for.

- A witness (`cluster.executor: false`) never takes a lock: it waits for the executing instance of the run's
  target site when that one is live (and `prefer_target_site`), else for the live executing instances.
- With `prefer_target_site` (the default), while the executing instance of the run's target site is live, the
  other executing instances wait `target_site_grace` seconds from when they first decided the run, then take
  the lock as before (the target site's instance may be live and still not act: its own probes may lag, its
  journal may be unwritable). The steps then run next to what they change.
- An instance that found the lock taken waits for its holder.

The answer is a `Wait` (whom, why, and until when) or None: take the lock now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from bcd import policy
from bcd.config import Cluster
from bcd.model import Guard

log = structlog.get_logger("bcd.cluster")

FORGET_AFTER = 5.0  # seconds without the same decision: the next one starts a new grace (re-decided every 1 s)


@dataclass(frozen=True, slots=True)
class Wait:
    """This instance does not take the lock now: it waits for `who` (`why`), until `until` at the latest (our
    monotonic clock; None: as long as the other one is live)."""

    who: str
    why: str
    until: float | None = None
    holds_lock: bool = False

    @property
    def guard(self) -> Guard | None:
        """RUN_IN_PROGRESS once another instance holds the lock; None while nobody does yet."""
        return Guard.RUN_IN_PROGRESS if self.holds_lock else None

    def reason(self, service: str, action: policy.Action) -> str:
        run = f"dry run of {action.kind}" if action.dry_run else str(action.kind)
        return f"{service}: {run} to {action.to_site}: waiting for {self.who} ({self.why})"


@dataclass(frozen=True, slots=True)
class _Wanted:
    action: policy.Action
    since: float  # when this instance first decided the run
    seen: float  # when it last did


class Preference:
    """Whether this instance (`vantage`) takes a service's lock for an automatic run now. See the module
    docstring."""

    def __init__(self, *, vantage: str, executor: bool = True, prefer_target_site: bool = True,
                 grace: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.vantage = vantage
        self.executor = executor
        self.prefer_target_site = prefer_target_site
        self.grace = grace
        self.clock = clock
        self._wanted: dict[str, _Wanted] = {}

    @classmethod
    def configured(cls, vantage: str, settings: Cluster) -> Preference:
        """This instance's preference as the config's `cluster:` section sets it."""
        return cls(vantage=vantage, executor=settings.executor, prefer_target_site=settings.prefer_target_site,
                   grace=settings.target_site_grace)

    def wait(self, service: str, action: policy.Action, executors: Sequence[str], holder: str | None) -> Wait | None:
        """Whom to wait for rather than take the lock of `service` now for `action` (None: take it), given the
        live executing vantages and the lock's holder as last seen (None when free or unknown)."""
        if holder is not None and holder != self.vantage:
            return Wait(holder, f"it holds the lock of {service}", holds_lock=True)
        preferred = action.to_site if self.prefer_target_site and action.to_site in executors else None
        if not self.executor:
            who = preferred or ", ".join(executors) or "an executing instance"
            return Wait(who, f"this instance, {self.vantage}, runs no runbook: cluster.executor is false")
        if preferred is None or preferred == self.vantage:
            return None
        now = self.clock()
        wanted = self._remember(service, action, now)
        until = wanted.since + self.grace
        if now < until:
            return Wait(preferred, f"the executing instance in the target site; {self.vantage} takes the lock "
                                   f"itself if {preferred} has not within {self.grace:g}s", until)
        return None

    def _remember(self, service: str, action: policy.Action, now: float) -> _Wanted:
        wanted = self._wanted.get(service)
        if wanted is None or wanted.action != action or now - wanted.seen > FORGET_AFTER:
            wanted = _Wanted(action, now, now)
        else:
            if now >= wanted.since + self.grace > wanted.seen:
                log.info("target_site_grace_over", service=service, waited_for=action.to_site, grace=self.grace,
                         hint="taking the lock: the target site's instance has not")
            wanted = _Wanted(action, wanted.since, now)
        self._wanted[service] = wanted
        return wanted

    def refusal(self, what: str, executors: Sequence[str]) -> policy.Verdict | None:
        """Why this instance refuses an operator's action that needs the lock (None: an executing one may)."""
        if self.executor:
            return None
        return policy.Verdict(None, f"this instance ({self.vantage}) {what} (cluster.executor: false): ask an "
                                    f"executing instance ({', '.join(executors) or 'none is live now'})",
                              Guard.NO_EXECUTOR)

    def forget(self, service: str) -> None:
        """A run of `service` started (here or elsewhere): the next decision starts a new grace."""
        self._wanted.pop(service, None)
