"""PURE alert derivation: which alerts hold right now, as a function of (snapshot of the estate, now).

No I/O, no clock reads. `active_alerts()` looks at a frozen `AlertSnapshot` that the edge (`bcd.outputs.alerts`)
builds from the engine, and returns the alerts that hold. The sender re-derives the set on every bus event
and on a timer and diffs it: an alert that appears is firing, one that disappears is resolved. An alert's
identity is its label set (as in Alertmanager); annotations may change while it fires.

The alerts (labels beyond `alertname`, `service`, `severity`, `instance` and the service's own `labels`):

| alertname | when | extra labels | severity |
|---|---|---|---|
| BcdSiteDown | a site of a service is down | site | critical for the active site, else warning |
| BcdSiteFlapping | a site of a service is flapping | site | warning |
| BcdFailoverPending | the service is `failover_pending` (and no run waits for approval) | | critical |
| BcdFailoverBlocked | the service is `blocked` (not by maintenance, not by a failed run) | guard | critical |
| BcdRunbookFailed | an unacknowledged failed/aborted/rolled back/interrupted run | runbook | critical |
| BcdApprovalWaiting | a run waits for an operator's approval | | critical |
| BcdCertificateExpiring | a probe saw a certificate expiring within `cert_expiry_warn` | site, probe | warning |
| BcdSiteLost | every service probed in a site is down there (`bcd.site_loss`) | site (no service) | critical |

The root cause pages once (`depends_on`, `bcd.impact`): a dependent's BcdSiteDown for a site where a service it
needs is down carries `impacted_by` (the root causes), and so does its BcdFailoverBlocked while a failed
dependency blocks it (`dependency_failed`), and its BcdFailoverPending while a service it needs is down at its
active site (a lost site pages once, not once a service); the sender does not send alerts with `impacted_by`
(it counts them in `bcd_alerts_suppressed`). A dependent waiting for a dependency (`waiting_for_dependency`) is
automation at work, not an operator's job: no BcdFailoverPending.

One condition pages once: while a run waits for approval the service is also `failover_pending`, and while
a failed run is unacknowledged the service is also `blocked` (`run_failed`/`run_interrupted`); the specific
alert (BcdApprovalWaiting, BcdRunbookFailed) stands for both. A service blocked by maintenance does not page
either: an operator chose it.

Maintenance: a site in maintenance raises no site alerts (down, flapping, certificates); a service whose
every site is in maintenance raises no alerts at all.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bcd.health import FrozenMap, SiteHealth
from bcd.model import Guard, ServiceStatus, SiteState
from bcd.site_loss import LostSite

SITE_DOWN = "BcdSiteDown"
SITE_FLAPPING = "BcdSiteFlapping"
FAILOVER_PENDING = "BcdFailoverPending"
FAILOVER_BLOCKED = "BcdFailoverBlocked"
RUNBOOK_FAILED = "BcdRunbookFailed"
APPROVAL_WAITING = "BcdApprovalWaiting"
CERTIFICATE_EXPIRING = "BcdCertificateExpiring"
SITE_LOST = "BcdSiteLost"
ALERTNAMES = (
    SITE_DOWN, SITE_FLAPPING, FAILOVER_PENDING, FAILOVER_BLOCKED, RUNBOOK_FAILED, APPROVAL_WAITING,
    CERTIFICATE_EXPIRING, SITE_LOST,
)

CRITICAL = "critical"
WARNING = "warning"
IMPACTED_BY = "impacted_by"
RESERVED = frozenset({"alertname", "service", "site", "probe", "severity", "instance", "guard", "runbook", IMPACTED_BY})
RUN_GUARDS = frozenset({Guard.RUN_FAILED, Guard.RUN_INTERRUPTED})
_LABEL_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True, slots=True)
class FailedRun:
    """An unacknowledged run that failed, was aborted, rolled back or interrupted."""

    id: int
    runbook: str
    kind: str
    to_site: str
    result: str
    detail: str
    ended: float


@dataclass(frozen=True, slots=True)
class WaitingRun:
    """A run in progress whose current step waits for an operator's approval."""

    id: int
    kind: str
    to_site: str
    step: str


@dataclass(frozen=True, slots=True)
class Certificate:
    """The earliest certificate expiry a probe saw on its last run."""

    site: str
    probe: str
    expiry: float


@dataclass(frozen=True, slots=True)
class ServiceFacts:
    """What the alerts look at for one service."""

    name: str
    status: ServiceStatus
    active: str
    since: float
    reason: str
    guard: Guard | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    sites: Mapping[str, SiteHealth] = field(default_factory=dict)
    failed_run: FailedRun | None = None
    waiting_run: WaitingRun | None = None
    certificates: Sequence[Certificate] = ()
    impacted: Mapping[str, str] = field(default_factory=dict)  # site -> the dependencies down there (root causes)
    blocked_by: str = ""  # the failed dependency that blocks it (guard dependency_failed)


@dataclass(frozen=True, slots=True)
class AlertSnapshot:
    """The estate as the alerts see it, plus the settings that shape them."""

    instance: str
    services: Sequence[ServiceFacts]
    cert_expiry_warn: float = 14 * 86400.0
    runbook_url: str | None = None
    lost_sites: Sequence[LostSite] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert that holds: its label set is its identity."""

    labels: FrozenMap[str]
    annotations: FrozenMap[str]
    starts_at: float

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    @property
    def service(self) -> str:
        return self.labels.get("service", "")

    @property
    def impacted(self) -> bool:
        """Explained by a dependency's own alert: shown and counted, not sent."""
        return IMPACTED_BY in self.labels


def active_alerts(snapshot: AlertSnapshot, now: float) -> list[Alert]:
    """Every alert that holds at `now`, sorted by label set (deterministic)."""
    alerts = [alert for service in snapshot.services for alert in _service_alerts(snapshot, service, now)]
    return sorted(alerts, key=lambda alert: sorted(alert.labels.items()))


def site_alerts(snapshot: AlertSnapshot) -> list[Alert]:
    """The estate's own alerts (no `service` label): one BcdSiteLost per lost site, naming its services and the
    recovery plan to run (or that starts by itself)."""
    alerts = []
    for lost in sorted(snapshot.lost_sites, key=lambda lost: lost.site):
        if lost.auto_plans:
            todo = f"recovery plan {', '.join(lost.auto_plans)} starts by itself (trigger: auto): follow it in " \
                   "`bcd plan list` and on the status page"
        elif lost.plans:
            todo = f"run the recovery plan for {lost.site}: `bcd plan run {lost.plans[0]} --reason …`" + (
                f" (plans from {lost.site}: {', '.join(lost.plans)})" if len(lost.plans) > 1 else "")
        else:
            todo = f"no recovery plan is configured for {lost.site}: move its services (`bcd failover SERVICE`)"
        labels = {"alertname": SITE_LOST, "site": lost.site, "severity": CRITICAL, "instance": snapshot.instance}
        annotations = {
            "summary": f"site {lost.site} is lost: all {len(lost.services)} services probed there are down",
            "description": f"down in {lost.site}: {', '.join(lost.services)}; {todo}",
        }
        if snapshot.runbook_url:
            annotations["runbook_url"] = render_template(snapshot.runbook_url, labels)
        alerts.append(Alert(FrozenMap(sorted(labels.items())), FrozenMap(annotations), lost.since))
    return alerts


def _service_alerts(snapshot: AlertSnapshot, service: ServiceFacts, now: float) -> Iterator[Alert]:
    if service.sites and all(_in_maintenance(site) for site in service.sites.values()):
        return

    def make(name: str, severity: str, summary: str, description: str, starts_at: float,
             **extra: str) -> Alert:
        return _alert(snapshot, service, name=name, severity=severity, summary=summary, description=description,
                      starts_at=starts_at, extra=extra)

    for site_name, site in service.sites.items():
        if _in_maintenance(site):
            continue
        role = "active" if site_name == service.active else "standby"
        if site.state is SiteState.DOWN:
            yield make(SITE_DOWN, CRITICAL if role == "active" else WARNING,
                       f"{service.name} is down in {site_name} ({role} site)", site.reason, site.since, site=site_name,
                       impacted_by=service.impacted.get(site_name, ""))
        elif site.state is SiteState.FLAPPING:
            yield make(SITE_FLAPPING, WARNING, f"{service.name} is flapping in {site_name} ({role} site)",
                       site.reason, site.since, site=site_name)
    for cert in service.certificates:
        probed = service.sites.get(cert.site)
        if (probed is not None and _in_maintenance(probed)) or cert.expiry - now >= snapshot.cert_expiry_warn:
            continue
        yield make(CERTIFICATE_EXPIRING, WARNING,
                   f"{service.name}: certificate seen by {cert.site}/{cert.probe} {_expires(cert.expiry, now)}",
                   f"probe {cert.probe} of {service.name} in {cert.site} saw a certificate that expires at "
                   f"{iso8601(cert.expiry)}", now, site=cert.site, probe=cert.probe)
    run = service.failed_run
    if run is not None:
        yield make(RUNBOOK_FAILED, CRITICAL,
                   f"{service.name}: {run.kind} run {run.id} to {run.to_site} {run.result.replace('_', ' ')}; "
                   "acknowledge to re-arm",
                   f"run {run.id} of runbook {run.runbook} ({run.kind} to {run.to_site}) {run.result}: {run.detail}",
                   run.ended, runbook=run.runbook)
    waiting = service.waiting_run
    if waiting is not None:
        yield make(APPROVAL_WAITING, CRITICAL,
                   f"{service.name}: run {waiting.id} waits for approval of step {waiting.step!r}",
                   f"{waiting.kind} of {service.name} to {waiting.to_site}: run {waiting.id} waits for approval of "
                   f"step {waiting.step!r} (bcd approve {waiting.id})", service.since)
    if (service.status is ServiceStatus.FAILOVER_PENDING and waiting is None
            and service.guard is not Guard.WAITING_FOR_DEPENDENCY):
        yield make(FAILOVER_PENDING, CRITICAL, f"{service.name}: failover waits for an operator", service.reason,
                   service.since, impacted_by=service.impacted.get(service.active, ""))
    if (service.status is ServiceStatus.BLOCKED and service.guard is not Guard.MAINTENANCE
            and not (service.guard in RUN_GUARDS and run is not None)):
        guard = str(service.guard) if service.guard is not None else "unknown"
        yield make(FAILOVER_BLOCKED, CRITICAL, f"{service.name}: failover blocked ({guard})", service.reason,
                   service.since, guard=guard, impacted_by=service.blocked_by)


def _alert(snapshot: AlertSnapshot, service: ServiceFacts, *, name: str, severity: str, summary: str,
           description: str, starts_at: float, extra: Mapping[str, str]) -> Alert:
    labels = {_label_name(key): value for key, value in service.labels.items() if _label_name(key) not in RESERVED}
    labels.update(extra)
    labels.update(alertname=name, service=service.name, severity=severity, instance=snapshot.instance)
    labels = {key: value for key, value in labels.items() if value}
    annotations = {"summary": summary, "description": description}
    if snapshot.runbook_url:
        annotations["runbook_url"] = render_template(snapshot.runbook_url, labels)
    return Alert(FrozenMap(sorted(labels.items())), FrozenMap(annotations), starts_at)


def _in_maintenance(site: SiteHealth) -> bool:
    return site.maintenance_until is not None


def _label_name(name: str) -> str:
    """A Prometheus label name (Alertmanager refuses a whole batch over one bad name)."""
    cleaned = _LABEL_NAME.sub("_", name)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def _expires(expiry: float, now: float) -> str:
    left = expiry - now
    if left <= 0:
        return f"expired {_days(-left)} ago"
    return f"expires in {_days(left)}"


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} hours"


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def render_template(template: str, labels: Mapping[str, str]) -> str:
    """`{label}` placeholders filled from the alert's labels; unknown ones become empty."""
    return string.Formatter().vformat(template, (), _Blank(labels))


def iso8601(timestamp: float) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager writes it."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_object(alert: Alert, *, ends_at: float | None, generator_url: str | None = None,
                 status: str | None = None) -> dict[str, object]:
    """The Alertmanager API v2 object of an alert (`status` added for webhooks)."""
    body: dict[str, object] = {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": iso8601(alert.starts_at),
    }
    if ends_at is not None:
        body["endsAt"] = iso8601(ends_at)
    if generator_url is not None:
        body["generatorURL"] = generator_url
    if status is not None:
        body["status"] = status
    return body
