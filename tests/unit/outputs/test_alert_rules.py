"""Table tests for the pure alert derivation: every alert kind, maintenance suppression, labels."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bcd.config import ConfigError, parse
from bcd.health import SiteHealth
from bcd.model import Guard, ServiceStatus, SiteState
from bcd.outputs.alert_rules import (
    Alert,
    AlertSnapshot,
    Certificate,
    FailedRun,
    ServiceFacts,
    WaitingRun,
    active_alerts,
    alert_object,
    iso8601,
    render_template,
    site_alerts,
)
from bcd.site_loss import LostSite

NOW = 1_700_000_000.0
DAY = 86400.0


def site(name: str, state: SiteState = SiteState.UP, *, flapping: bool = False, maintenance: bool = False,
         reason: str = "", since: float = NOW - 60) -> SiteHealth:
    return SiteHealth("payroll", name, base=state, flapping=flapping,
                      maintenance_until=NOW + 3600 if maintenance else None,
                      maintenance_reason="alice: patching" if maintenance else "", since=since,
                      reason=reason or f"{name} is {state}")


def service(**changes: Any) -> ServiceFacts:
    base = ServiceFacts(
        name="payroll", status=ServiceStatus.OK, active="dorset", since=NOW - 30, reason="payroll: all well",
        labels={"owner": "dorset-cc", "tier": "1"},
        sites={"dorset": site("dorset"), "hampshire": site("hampshire")},
    )
    return replace(base, **changes)


def derive(facts: ServiceFacts, **settings: Any) -> list[Alert]:
    return active_alerts(AlertSnapshot("bcd-test", [facts], **settings), NOW)


def summary(alerts: list[Alert]) -> set[tuple[str, str, str]]:
    return {(alert.name, alert.labels.get("site", "-"), alert.labels["severity"]) for alert in alerts}


FAILED = FailedRun(7, "payroll-failover", "failover", "hampshire", "rolled_back", "step dns failed", NOW - 100)
WAITING = WaitingRun(8, "failover", "hampshire", "switch dns")
DOWN_DORSET = {"dorset": site("dorset", SiteState.DOWN, reason="3 consecutive failures of health: HTTP 503"),
               "hampshire": site("hampshire")}

CASES: list[tuple[str, ServiceFacts, set[tuple[str, str, str]]]] = [
    ("all well: nothing", service(), set()),
    ("unknown and degraded sites do not alert",
     service(sites={"dorset": site("dorset", SiteState.DEGRADED), "hampshire": site("hampshire", SiteState.UNKNOWN)},
             status=ServiceStatus.AT_RISK), set()),
    ("active site down: critical", service(sites=DOWN_DORSET, status=ServiceStatus.FAILOVER_NEEDED),
     {("BcdSiteDown", "dorset", "critical")}),
    ("standby site down: warning",
     service(sites={"dorset": site("dorset"), "hampshire": site("hampshire", SiteState.DOWN)}),
     {("BcdSiteDown", "hampshire", "warning")}),
    ("after a failover the new active site is the critical one",
     service(active="hampshire", sites={"dorset": site("dorset"), "hampshire": site("hampshire", SiteState.DOWN)}),
     {("BcdSiteDown", "hampshire", "critical")}),
    ("flapping site", service(sites={"dorset": site("dorset", SiteState.UP, flapping=True),
                                     "hampshire": site("hampshire")}, status=ServiceStatus.AT_RISK),
     {("BcdSiteFlapping", "dorset", "warning")}),
    ("down but flapping shows as flapping only",
     service(sites={"dorset": site("dorset", SiteState.DOWN, flapping=True), "hampshire": site("hampshire")}),
     {("BcdSiteFlapping", "dorset", "warning")}),
    ("failover pending", service(sites=DOWN_DORSET, status=ServiceStatus.FAILOVER_PENDING),
     {("BcdSiteDown", "dorset", "critical"), ("BcdFailoverPending", "-", "critical")}),
    ("blocked: standby not up",
     service(sites={"dorset": site("dorset", SiteState.DOWN), "hampshire": site("hampshire", SiteState.DEGRADED)},
             status=ServiceStatus.BLOCKED, guard=Guard.STANDBY_NOT_UP),
     {("BcdSiteDown", "dorset", "critical"), ("BcdFailoverBlocked", "-", "critical")}),
    ("blocked: cooldown", service(sites=DOWN_DORSET, status=ServiceStatus.BLOCKED, guard=Guard.COOLDOWN),
     {("BcdSiteDown", "dorset", "critical"), ("BcdFailoverBlocked", "-", "critical")}),
    ("blocked by maintenance of the standby: the down active site pages, the block does not",
     service(sites={"dorset": site("dorset", SiteState.DOWN), "hampshire": site("hampshire", maintenance=True)},
             status=ServiceStatus.BLOCKED, guard=Guard.MAINTENANCE),
     {("BcdSiteDown", "dorset", "critical")}),
    ("unacknowledged failed run: one page, not a second one for the block it causes",
     service(status=ServiceStatus.BLOCKED, guard=Guard.RUN_FAILED, failed_run=FAILED),
     {("BcdRunbookFailed", "-", "critical")}),
    ("blocked by a failed run the alerts do not know of (stale): still pages",
     service(status=ServiceStatus.BLOCKED, guard=Guard.RUN_INTERRUPTED),
     {("BcdFailoverBlocked", "-", "critical")}),
    ("a run waits for approval: one page, not a second one for failover_pending",
     service(sites=DOWN_DORSET, status=ServiceStatus.FAILOVER_PENDING, guard=Guard.RUN_IN_PROGRESS,
             waiting_run=WAITING),
     {("BcdSiteDown", "dorset", "critical"), ("BcdApprovalWaiting", "-", "critical")}),
    ("certificate within cert_expiry_warn",
     service(certificates=(Certificate("dorset", "health", NOW + 3 * DAY),)),
     {("BcdCertificateExpiring", "dorset", "warning")}),
    ("certificate beyond cert_expiry_warn", service(certificates=(Certificate("dorset", "health", NOW + 30 * DAY),)),
     set()),
    ("expired certificate", service(certificates=(Certificate("hampshire", "health", NOW - DAY),)),
     {("BcdCertificateExpiring", "hampshire", "warning")}),
    ("site in maintenance: no site alerts, no certificate alerts for it",
     service(sites={"dorset": site("dorset"), "hampshire": site("hampshire", SiteState.DOWN, maintenance=True)},
             certificates=(Certificate("hampshire", "health", NOW + DAY),)),
     set()),
    ("flapping site in maintenance",
     service(sites={"dorset": site("dorset", flapping=True, maintenance=True), "hampshire": site("hampshire")}),
     set()),
    ("whole service in maintenance: nothing at all",
     service(sites={"dorset": site("dorset", SiteState.DOWN, maintenance=True),
                    "hampshire": site("hampshire", SiteState.DOWN, maintenance=True)},
             status=ServiceStatus.BLOCKED, guard=Guard.RUN_FAILED, failed_run=FAILED, waiting_run=WAITING,
             certificates=(Certificate("dorset", "health", NOW + DAY),)),
     set()),
    ("maintenance of one site does not hide service alerts",
     service(sites={"dorset": site("dorset"), "hampshire": site("hampshire", maintenance=True)},
             status=ServiceStatus.BLOCKED, guard=Guard.RUN_FAILED, failed_run=FAILED),
     {("BcdRunbookFailed", "-", "critical")}),
]


@pytest.mark.parametrize(("facts", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_alert_kinds(facts: ServiceFacts, expected: set[tuple[str, str, str]]) -> None:
    assert summary(derive(facts)) == expected


def test_labels_carry_identity_and_the_service_labels() -> None:
    (alert,) = derive(service(sites=DOWN_DORSET, status=ServiceStatus.FAILOVER_NEEDED))
    assert dict(alert.labels) == {
        "alertname": "BcdSiteDown", "service": "payroll", "site": "dorset", "severity": "critical",
        "instance": "bcd-test", "owner": "dorset-cc", "tier": "1",
    }
    assert alert.annotations["description"] == "3 consecutive failures of health: HTTP 503"
    assert alert.annotations["summary"] == "payroll is down in dorset (active site)"
    assert "runbook_url" not in alert.annotations
    assert alert.starts_at == NOW - 60  # when the site went down, not when the alert was derived


def test_service_labels_cannot_override_bcd_labels_and_are_made_valid() -> None:
    facts = service(sites=DOWN_DORSET, labels={"severity": "low", "alertname": "x", "cost-centre": "42",
                                               "1st": "a", "empty": ""})
    (alert,) = derive(facts)
    assert alert.labels["severity"] == "critical" and alert.labels["alertname"] == "BcdSiteDown"
    assert alert.labels["cost_centre"] == "42" and alert.labels["_1st"] == "a"
    assert "empty" not in alert.labels


@pytest.mark.parametrize(
    ("facts", "labels", "description"),
    [
        (service(status=ServiceStatus.BLOCKED, guard=Guard.COOLDOWN, reason="payroll: failover blocked (cooldown)"),
         {"guard": "cooldown"}, "payroll: failover blocked (cooldown)"),
        (service(status=ServiceStatus.BLOCKED, guard=Guard.RUN_FAILED, failed_run=FAILED),
         {"runbook": "payroll-failover"}, "run 7 of runbook payroll-failover (failover to hampshire) rolled_back: "
                                          "step dns failed"),
        (service(certificates=(Certificate("dorset", "health", NOW + DAY),)), {"site": "dorset", "probe": "health"},
         "probe health of payroll in dorset saw a certificate that expires at 2023-11-15T22:13:20.000Z"),
        (service(status=ServiceStatus.FAILOVER_PENDING, waiting_run=WAITING), {},
         "failover of payroll to hampshire: run 8 waits for approval of step 'switch dns' (bcd approve 8)"),
    ],
    ids=["blocked", "runbook-failed", "certificate", "approval"],
)
def test_extra_labels_and_descriptions(facts: ServiceFacts, labels: dict[str, str], description: str) -> None:
    (alert,) = derive(facts)
    assert labels.items() <= dict(alert.labels).items()
    assert alert.annotations["description"] == description


def test_runbook_url_is_filled_from_the_labels() -> None:
    (alert,) = derive(service(sites=DOWN_DORSET), runbook_url="https://wiki.example/bcd/{alertname}?s={service}&x={nope}")
    assert alert.annotations["runbook_url"] == "https://wiki.example/bcd/BcdSiteDown?s=payroll&x="


def test_cert_threshold_is_configurable() -> None:
    facts = service(certificates=(Certificate("dorset", "health", NOW + 3 * DAY),))
    assert derive(facts, cert_expiry_warn=2 * DAY) == []
    assert summary(derive(facts, cert_expiry_warn=4 * DAY)) == {("BcdCertificateExpiring", "dorset", "warning")}


def test_identity_is_the_label_set_and_output_is_sorted() -> None:
    facts = service(sites={"dorset": site("dorset", SiteState.DOWN), "hampshire": site("hampshire", SiteState.DOWN)},
                    status=ServiceStatus.UNAVAILABLE)
    first, second = derive(facts), derive(replace(facts, reason="changed"))
    assert [a.labels for a in first] == [a.labels for a in second]
    assert [a.labels["site"] for a in first] == ["dorset", "hampshire"]
    assert len({alert.labels for alert in first}) == 2  # hashable: usable as keys


def test_several_services_each_with_their_own_labels() -> None:
    library = service(name="library", labels={"team": "libraries"}, sites=DOWN_DORSET)
    alerts = active_alerts(AlertSnapshot("bcd-test", [service(sites=DOWN_DORSET), library]), NOW)
    by_service = {alert.service: alert for alert in alerts}
    assert by_service["library"].labels["team"] == "libraries" and "owner" not in by_service["library"].labels
    assert by_service["payroll"].labels["owner"] == "dorset-cc"


def test_alert_object_is_the_alertmanager_v2_shape() -> None:
    (alert,) = derive(service(sites=DOWN_DORSET))
    body = alert_object(alert, ends_at=NOW + 240, generator_url="http://127.0.0.1:9847/api/v1/services/payroll")
    assert body == {
        "labels": dict(alert.labels), "annotations": dict(alert.annotations),
        "startsAt": iso8601(NOW - 60), "endsAt": "2023-11-14T22:17:20.000Z",
        "generatorURL": "http://127.0.0.1:9847/api/v1/services/payroll",
    }
    assert "endsAt" not in alert_object(alert, ends_at=None)
    assert alert_object(alert, ends_at=None, status="firing")["status"] == "firing"


def test_render_template_leaves_unknown_placeholders_empty() -> None:
    assert render_template("{a}-{b}", {"a": "x"}) == "x-"


ALERTS_CONFIG = """
sites: {dorset: {}}
alerts:
  alertmanager: {urls: ["http://127.0.0.1:9093"], resend: 60s}
  webhooks: [{url: "https://hooks.example/bcd", secret_file: webhook_secret}]
  runbook_url: "https://wiki.example/bcd/{alertname}"
  cert_expiry_warn: 14d
"""


def test_alerts_section_parses_with_defaults() -> None:
    alerts = parse(ALERTS_CONFIG).alerts
    assert alerts.alertmanager.urls == ["http://127.0.0.1:9093"] and alerts.alertmanager.resend == 60.0
    assert alerts.alertmanager.attempts == 3 and alerts.alertmanager.timeout == 10.0
    assert alerts.webhooks[0].secret_file == "webhook_secret" and alerts.webhooks[0].attempts == 5
    assert alerts.cert_expiry_warn == 14 * DAY
    assert parse("sites: {dorset: {}}\n").alerts.webhooks == []  # the section is optional


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ('runbook_url: "https://wiki.example/{0}"', "6: alerts.runbook_url: placeholders must be label names"),
        ('runbook_url: "https://wiki.example/{alertname"', "6: alerts.runbook_url: bad template"),
        ("cert_expiry_warn: soon", "7: alerts.cert_expiry_warn: expected a duration"),
    ],
)
def test_alerts_section_errors_point_at_the_line(change: str, expected: str) -> None:
    key = change.partition(":")[0]
    text = "\n".join(f"  {change}" if line.startswith(f"  {key}:") else line for line in ALERTS_CONFIG.splitlines())
    with pytest.raises(ConfigError) as caught:
        parse(text, "bcd.yaml")
    assert any(str(issue).startswith(f"bcd.yaml:{expected}") for issue in caught.value.issues), caught.value.issues


def test_a_dependents_site_down_carries_impacted_by() -> None:
    facts = service(sites=DOWN_DORSET, status=ServiceStatus.FAILOVER_PENDING, guard=Guard.WAITING_FOR_DEPENDENCY,
                    impacted={"dorset": "directory"})
    alerts = derive(facts)
    assert [(alert.name, alert.labels.get("impacted_by"), alert.impacted) for alert in alerts] == [
        ("BcdSiteDown", "directory", True)]  # and no BcdFailoverPending: waiting for a dependency is automation


def test_a_dependents_manual_failover_pending_carries_impacted_by() -> None:
    """A manual-mode dependent whose active site lost a dependency waits for an operator because of the root
    cause: its BcdFailoverPending is held like its BcdSiteDown (a lost site pages once, not once a service)."""
    facts = service(sites=DOWN_DORSET, status=ServiceStatus.FAILOVER_PENDING, impacted={"dorset": "directory"})
    assert {(alert.name, alert.labels.get("impacted_by"), alert.impacted) for alert in derive(facts)} == {
        ("BcdSiteDown", "directory", True), ("BcdFailoverPending", "directory", True)}
    root = derive(service(sites=DOWN_DORSET, status=ServiceStatus.FAILOVER_PENDING))
    assert {(alert.name, alert.impacted) for alert in root} == {("BcdSiteDown", False), ("BcdFailoverPending", False)}


def test_the_root_cause_is_not_impacted() -> None:
    alerts = derive(service(sites=DOWN_DORSET, status=ServiceStatus.FAILING_OVER))
    assert [(alert.name, alert.impacted) for alert in alerts] == [("BcdSiteDown", False)]
    assert "impacted_by" not in alerts[0].labels


def test_blocked_by_a_failed_dependency_carries_impacted_by() -> None:
    facts = service(sites=DOWN_DORSET, status=ServiceStatus.BLOCKED, guard=Guard.DEPENDENCY_FAILED,
                    blocked_by="directory", impacted={"dorset": "directory"})
    assert {(alert.name, alert.labels.get("guard"), alert.labels["impacted_by"]) for alert in derive(facts)} == {
        ("BcdSiteDown", None, "directory"), ("BcdFailoverBlocked", "dependency_failed", "directory")}


def test_a_user_label_named_impacted_by_is_ignored() -> None:
    alerts = derive(service(sites=DOWN_DORSET, labels={"impacted_by": "me"}))
    assert not alerts[0].impacted


def test_a_lost_site_pages_once_with_its_services_and_plan() -> None:
    lost = [LostSite("dorset", NOW - 5, ("directory", "sql"), ("evacuate-dorset",)), LostSite("kent", NOW, ("web",)),
            LostSite("wessex", NOW, ("web",), ("leave-wessex",), ("leave-wessex",))]
    alerts = site_alerts(AlertSnapshot("bcd-test", [], lost_sites=lost, runbook_url="https://wiki/{alertname}"))
    assert [dict(alert.labels) for alert in alerts] == [
        {"alertname": "BcdSiteLost", "site": site, "severity": "critical", "instance": "bcd-test"}
        for site in ("dorset", "kent", "wessex")]
    dorset, kent, wessex = alerts
    assert dorset.starts_at == NOW - 5 and dorset.service == ""
    assert dorset.annotations["summary"] == "site dorset is lost: all 2 services probed there are down"
    assert dorset.annotations["description"] == (
        "down in dorset: directory, sql; run the recovery plan for dorset: `bcd plan run evacuate-dorset --reason …`")
    assert dorset.annotations["runbook_url"] == "https://wiki/BcdSiteLost"
    assert "no recovery plan is configured for kent" in kent.annotations["description"]
    assert "recovery plan leave-wessex starts by itself (trigger: auto)" in wessex.annotations["description"]
