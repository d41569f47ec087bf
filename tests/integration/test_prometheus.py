"""The dashboards and alert rules against the real thing: a real Prometheus scraping a real bcd.

One estate for the module (tests/helpers/prometheus.py): payroll's dorset site is down (HTTP 503) and an
operator fails payroll over to hampshire (a runbook run that succeeds); library's runbook fails and leaves
it blocked; MQTT goes to the session's mosquitto; alerts go to a webhook receiver and to an Alertmanager URL
nobody listens on. Prometheus scrapes bcd every second with the job of prometheus/scrape.example.yml and
evaluates prometheus/alerts.yml. Then every PromQL expression of both dashboards (panel targets, annotations,
variable queries) must run without error and return data, as Grafana would run it (range queries for graphs,
instant queries for stats, tables and bar gauges), and every rule must evaluate.

The overview's "Cluster" row shows metrics only a bcd with a `cluster:` section exposes: the single-instance
estate leaves its queries out, and a second scenario (`cluster`: two members, vantages dorset and hampshire,
on a real three-member etcd, scraped by their own Prometheus) runs them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Broker, CertFiles
from tests.helpers.etcd import ETCD, EtcdCluster
from tests.helpers.prometheus import (
    DASHBOARDS,
    REPO,
    RULE_TESTS,
    RULES,
    ClusterPair,
    DashboardQuery,
    Estate,
    QueryError,
    dashboard_queries,
    grafana_variables,
    has_data,
    load_dashboard,
    panels,
    prometheus_binary,
    promtool_binary,
    rule_exprs,
    substitute,
)

needs_prometheus = pytest.mark.skipif(
    prometheus_binary() is None or promtool_binary() is None,
    reason="prometheus/promtool not installed (make deps installs the Debian package)",
)

needs_etcd = pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd is not installed (apt-get install etcd-server)")

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
CLUSTER_ROW = "Cluster"  # the overview's row of cluster metrics: shown by the `cluster` scenario only
CLUSTER_RULES = frozenset({"BcdClusterCoordinationDown", "BcdVantageViewStale"})
DASHBOARD_FILES = {"bcd-overview.json": "bcd-overview", "bcd-service.json": "bcd-service"}
# the overview with "All" services; the service dashboard for each service (a query needs data for one of them:
# only payroll has a certificate, only library a failed run)
SERVICE_VALUES = {"bcd-overview.json": (".*",), "bcd-service.json": ("payroll", "library")}


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory, mosquitto: Broker, short_lived_cert: CertFiles) -> Iterator[Estate]:
    estate = Estate(tmp_path_factory.mktemp("prometheus"), mosquitto.port, short_lived_cert.cert,
                    short_lived_cert.server_context())
    try:
        estate.start()
        estate.fail_over_payroll()
        estate.fail_library_run()
        estate.prometheus.wait_scrape_after(time.time() + estate.scrape_interval)  # the runs' outcome, scraped
        yield estate
    finally:
        estate.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPair]:
    etcd = EtcdCluster(tmp_path_factory.mktemp("prometheus-etcd"))
    etcd.start()
    try:
        pair = ClusterPair(tmp_path_factory.mktemp("prometheus-cluster"), etcd.endpoints)
        try:
            pair.start()
            yield pair
        finally:
            pair.stop()
    finally:
        etcd.stop_all()


def cluster_queries() -> list[DashboardQuery]:
    return [query for query in dashboard_queries(load_dashboard("bcd-overview.json")) if query.row == CLUSTER_ROW]


def cluster_metrics() -> set[str]:
    """The metric names the cluster row and the cluster rules use."""
    exprs = [query.expr for query in cluster_queries()] + [expr for name, expr in rule_exprs(RULES)
                                                           if name in CLUSTER_RULES]
    return {name for expr in exprs for name in re.findall(r"\bbcd_[a-z_]+\b", expr)}


# ---------------------------------------------------------------------------------------------------------
# The dashboards as files Grafana provisions


@pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
def test_dashboard_is_provisionable(name: str) -> None:
    dashboard = load_dashboard(name)
    assert dashboard["uid"] == DASHBOARD_FILES[name]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["id"] is None  # provisioning assigns ids
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["rto_seconds"]["current"]["value"] == "300"
    for name_ in ("service", "site"):
        assert variables[name_]["type"] == "query"
        assert variables[name_]["datasource"] == DATASOURCE
    assert variables["site"]["multi"] and variables["site"]["includeAll"]
    if name == "bcd-overview.json":
        assert variables["service"]["multi"] and variables["service"]["includeAll"]

    ids, cells = set(), set()
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids, f"panel id {panel['id']} used twice"
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel at {(x, y)}"
                cells.add((x, y))
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip() and target["refId"], panel["title"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == DATASOURCE, annotation["name"]
    # no data source is named by a fixed uid anywhere: only the variable and Grafana's built-in one
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', json.dumps(dashboard)))
    assert uids == {dashboard["uid"], "${datasource}", "-- Grafana --"}


def test_provisioning_files() -> None:
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/bcd.yaml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == "/var/lib/grafana/dashboards/bcd"
    sources = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert (source["name"], source["type"], source["url"], source["uid"]) == (
        "Prometheus", "prometheus", "http://127.0.0.1:9090", "prometheus")


# ---------------------------------------------------------------------------------------------------------
# Every dashboard query against the real Prometheus


def run_query(estate: Estate | ClusterPair, query: DashboardQuery, service: str, end: float) -> list[dict[str, Any]]:
    """The query as Grafana would send it over the time since Prometheus started, 1 s resolution."""
    prometheus = estate.prometheus
    start = prometheus.started_at
    step = 1.0
    values = grafana_variables(estate.scrape_interval, step, end - start,
                               service=service, site=".*", rto_seconds="300")
    expr = substitute(query.expr, values)
    if query.instant:
        return prometheus.query(expr, end)
    return prometheus.query_range(expr, start, end, step)


@needs_prometheus
@pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
def test_every_dashboard_query_returns_data(estate: Estate, name: str) -> None:
    queries = [query for query in dashboard_queries(load_dashboard(name)) if query.row != CLUSTER_ROW]
    assert len(queries) > 20
    end = time.time()
    problems = []
    for query in queries:
        try:
            results = [run_query(estate, query, service, end) for service in SERVICE_VALUES[name]]
        except QueryError as exc:
            problems.append(f"{query.where}: {exc}\n    {query.expr}")
            continue
        if not any(has_data(result) for result in results):
            problems.append(f"{query.where}: no data\n    {query.expr}")
    assert not problems, "\n".join(problems)


@needs_prometheus
def test_variables_list_services_and_sites(estate: Estate) -> None:
    queries = {q.where: q for q in dashboard_queries(load_dashboard("bcd-overview.json"))}
    end = time.time()
    services = run_query(estate, queries["variable service"], ".*", end)
    assert {series["metric"]["service"] for series in services} == {"payroll", "library"}
    sites = run_query(estate, queries["variable site"], ".*", end)
    assert {series["metric"]["site"] for series in sites} == {"dorset", "hampshire"}


@needs_prometheus
def test_state_timelines_show_the_estate(estate: Estate) -> None:
    """The state codes and value mappings name bcd's states: payroll's dorset down, library blocked."""
    dashboard = load_dashboard("bcd-overview.json")
    by_title = {panel["title"].split(":")[0]: panel for panel in panels(dashboard)}
    end = time.time()
    for title, labels, expected in (  # only what a slow machine cannot change (a probe may time out)
        ("Site health", {"service": "payroll", "site": "dorset"}, "down"),
        ("Service status", {"service": "library"}, "blocked"),
    ):
        panel = by_title[title]
        query = DashboardQuery(title, panel["targets"][0]["expr"], True)
        (series,) = [s for s in run_query(estate, query, ".*", end) if s["metric"] == labels]
        mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
        assert mapping[series["value"][1]]["text"] == expected, (title, labels)


PLAN_DRILL_PANELS = ("Plan drills: time since the last success", "Plan drills by result (in the time range)")
# per instance, not per service: the service dashboard shows them beside the service's own figures
UNSCOPED = re.compile(r"^(bcd_drills_max_age_seconds|vector\(\$\{rto_seconds\}\))$")


def test_the_service_dashboards_panels_show_the_selected_service() -> None:
    """Every panel query names $service (a plan's drills through the plans that cover it), or reads a figure of
    the whole instance."""
    queries = [q for q in dashboard_queries(load_dashboard("bcd-service.json")) if q.where.startswith("panel")]
    assert [q.where for q in queries if "$service" not in q.expr and not UNSCOPED.match(q.expr.strip())] == []
    for query in queries:
        if "bcd_plan_" in query.expr:
            assert 'and on (job, instance, plan) bcd_plan_service_info{service="$service"}' in query.expr, query.where


@needs_prometheus
def test_plan_drill_panels_show_the_plans_that_cover_the_service(estate: Estate) -> None:
    """payroll is in evacuate-dorset only; library in evacuate-dorset and evacuate-library."""
    by_title = {panel["title"]: panel for panel in panels(load_dashboard("bcd-service.json"))}
    end = time.time()
    for title in PLAN_DRILL_PANELS:
        query = DashboardQuery(title, by_title[title]["targets"][0]["expr"], True)
        shown = {service: {s["metric"]["plan"] for s in run_query(estate, query, service, end)}
                 for service in ("payroll", "library")}
        assert shown == {"payroll": {"evacuate-dorset"}, "library": {"evacuate-dorset", "evacuate-library"}}, title


# ---------------------------------------------------------------------------------------------------------
# The alert rules


@needs_prometheus
def test_every_alert_rule_evaluates(estate: Estate) -> None:
    rules = rule_exprs(RULES)
    assert len(rules) >= 13
    problems = []
    for name, expr in rules:
        try:
            estate.prometheus.query(expr)
        except QueryError as exc:
            problems.append(f"{name}: {exc}")
    assert not problems, "\n".join(problems)
    loaded = [rule for group in estate.prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert len(loaded) == len(rules)
    assert [(r["name"], r["lastError"]) for r in loaded if r["health"] != "ok"] == []


@needs_prometheus
def test_alert_rules_see_the_estate(estate: Estate) -> None:
    """The rules loaded in Prometheus react to the real metrics: the failed run, the down standby, the blocked
    service, the short-lived certificate and the closed Alertmanager are seen (pending or firing, depending on
    `for:`); nothing is wrong with bcd's config or broker; and on this new install no service or plan is overdue
    for a drill, though none was ever drilled and two plans have a scheduled drill (their age counts from when bcd
    first monitored them)."""
    closed = f"alertmanager:127.0.0.1:{estate.closed_port}"
    expected = {
        ("BcdRunbookRunUnsuccessful", "library", "firing"),
        ("BcdStandbySiteNotUp", "payroll", "pending"),
        ("BcdServiceBlocked", "library", "pending"),
        ("BcdCertificateExpiresSoon", "payroll", "pending"),
        ("BcdAlertDeliveryFailing", closed, "pending"),
    }

    def active() -> set[tuple[str, str, str]]:
        alerts = estate.prometheus.api("alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("service") or a["labels"].get("receiver")
                 or a["labels"].get("plan", ""), a["state"]) for a in alerts}

    deadline = time.monotonic() + 15
    while not expected <= (seen := active()) and time.monotonic() < deadline:
        time.sleep(0.2)  # rules are evaluated every second: poll with a deadline
    assert expected <= seen, seen
    names = {name for name, _, _ in seen}  # (a busy machine may well make scrapes or probes late: not those)
    assert not names & {"BcdAbsent", "BcdConfigReloadFailed", "BcdMqttDisconnected", "BcdMqttDroppingMessages",
                        "BcdDrillOverdue", "BcdPlanDrillOverdue"}, seen


@needs_prometheus
def test_promtool_rule_unit_tests() -> None:
    tool = promtool_binary()
    assert tool is not None
    check = subprocess.run([tool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@needs_prometheus
def test_promtool_check_rules() -> None:
    tool = promtool_binary()
    assert tool is not None
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {name for name, _ in rule_exprs(RULES)}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


# ---------------------------------------------------------------------------------------------------------
# The scrape itself


@needs_prometheus
def test_scrape_passes_promtool_and_has_every_metric_the_dashboards_use(estate: Estate) -> None:
    text = estate.bcd.metrics()
    tool = promtool_binary()
    assert tool is not None
    check = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    exprs = [q.expr for name in DASHBOARD_FILES for q in dashboard_queries(load_dashboard(name))]
    exprs += [expr for _, expr in rule_exprs(RULES)]
    used = {name for expr in exprs for name in re.findall(r"\bbcd_[a-z_]+\b", expr)}
    assert used - cluster_metrics() - exposed == set()  # the cluster scenario checks those


# families left off the dashboards on purpose: what a plugin's perfdata means differs per plugin (a panel is
# the operator's to make for their own checks; the RPO panels of later issues will use it)
NOT_ON_DASHBOARDS: frozenset[str] = frozenset({"bcd_probe_perfdata"})


@needs_prometheus
def test_dashboards_cover_every_metric_family(estate: Estate) -> None:
    """A metric family this bcd exposes that no dashboard shows is either deliberate (listed above) or
    forgotten."""
    text = estate.bcd.metrics()
    families = set(re.findall(r"^# TYPE (bcd_\w+) \w+", text, re.M))
    exprs = " ".join(q.expr for name in DASHBOARD_FILES for q in dashboard_queries(load_dashboard(name)))
    unshown = {name for name in families if not re.search(rf"\b{name}(_total|_bucket|_sum|_count)?\b", exprs)}
    assert unshown - NOT_ON_DASHBOARDS == set()


def test_dashboard_json_is_formatted() -> None:
    """Two-space JSON with a final newline, as written by the tools: keeps diffs of exported edits small."""
    for path in sorted(Path(DASHBOARDS).glob("*.json")):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", path.name


# ---------------------------------------------------------------------------------------------------------
# The cluster row and rules against two cluster members on a real etcd


def test_cluster_row_and_rules_are_marked() -> None:
    """The cluster row exists and holds every cluster metric; no other row or rule uses one."""
    queries = cluster_queries()
    assert len(queries) >= 5
    assert cluster_metrics() == {"bcd_cluster_members", "bcd_cluster_coordination_up",
                                 "bcd_vantage_view_age_seconds", "bcd_site_votes", "bcd_lock_held"}
    others = [q.expr for name in DASHBOARD_FILES for q in dashboard_queries(load_dashboard(name))
              if q.row != CLUSTER_ROW]
    others += [expr for name, expr in rule_exprs(RULES) if name not in CLUSTER_RULES]
    assert [expr for expr in others if set(re.findall(r"\bbcd_[a-z_]+\b", expr)) & cluster_metrics()] == []
    assert {name for name, _ in rule_exprs(RULES)} >= CLUSTER_RULES


@needs_prometheus
@needs_etcd
def test_cluster_row_queries_return_data(cluster: ClusterPair) -> None:
    """Every query of the cluster row runs without error and returns data, for both instances where it is
    per instance; the members see each other, coordination is up, and votes count both vantages."""
    end = time.time()
    problems = []
    results: dict[str, list[dict[str, Any]]] = {}
    for query in cluster_queries():
        try:
            results[query.where] = result = run_query(cluster, query, ".*", end)
        except QueryError as exc:
            problems.append(f"{query.where}: {exc}\n    {query.expr}")
            continue
        if not has_data(result):
            problems.append(f"{query.where}: no data\n    {query.expr}")
    assert not problems, "\n".join(problems)
    (members_query,) = [q for q in cluster_queries() if "bcd_cluster_members" in q.expr]
    members = {(s["metric"]["instance"], s["metric"]["vantage"]) for s in results[members_query.where]}
    instances = {instance for instance, _ in members}
    assert len(instances) == 2 and members == {(i, v) for i in instances for v in ClusterPair.VANTAGES}
    (coordination,) = [q for q in cluster_queries() if "coordination_up" in q.expr]
    up = run_query(cluster, coordination, ".*", time.time())
    assert {s["metric"]["instance"] for s in up} == instances and {s["value"][1] for s in up} == {"1"}
    votes = run_query(cluster, DashboardQuery("votes", 'sum by (instance, site) (bcd_site_votes{service="payroll"})',
                                              True), ".*", time.time())  # whatever each vantage sees
    assert {(s["metric"]["instance"], s["metric"]["site"], s["value"][1]) for s in votes} == {
        (instance, site, "2") for instance in instances for site in ("dorset", "hampshire")}


@needs_prometheus
@needs_etcd
def test_cluster_scrape_has_the_cluster_metrics_and_rules_stay_quiet(cluster: ClusterPair) -> None:
    for member in cluster.members.values():
        text = member.metrics()
        tool = promtool_binary()
        assert tool is not None
        check = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        families = set(re.findall(r"^# TYPE (bcd_\w+) \w+", text, re.M))
        assert cluster_metrics() <= families
    for name, expr in rule_exprs(RULES):
        if name in CLUSTER_RULES:
            cluster.prometheus.query(expr)  # evaluates (a QueryError otherwise)
    loaded = [rule for group in cluster.prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert [(r["name"], r["lastError"]) for r in loaded if r["name"] in CLUSTER_RULES and r["health"] != "ok"] == []
    alerts = {a["labels"]["alertname"] for a in cluster.prometheus.api("alerts")["alerts"]}
    assert not alerts & CLUSTER_RULES, alerts
