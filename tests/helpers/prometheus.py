"""A real Prometheus and a real bcd on loopback, and the PromQL of bcd's dashboards and alert rules.

Shared by tests/integration/test_prometheus.py (every dashboard query must return data from a real scrape)
and bench/render_dashboards.py (plots the same queries). Everything here is synchronous: the HTTP targets
run in threads, bcd and Prometheus are subprocesses, so nothing depends on an event loop being driven.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import estates, free_port
from tests.helpers.daemon import write_config

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "grafana" / "dashboards"
RULES = REPO / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "prometheus" / "alerts.test.yml"
SCRAPE_EXAMPLE = REPO / "prometheus" / "scrape.example.yml"
OPERATOR_TOKEN = "operator-token-for-prometheus-tests"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or next(
        (path for path in ("/usr/bin/prometheus",) if Path(path).exists()), None
    )


def promtool_binary() -> str | None:
    return shutil.which("promtool") or next((path for path in ("/usr/bin/promtool",) if Path(path).exists()), None)


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reap. Only for processes this module started."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def poll(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Call `check` until it returns something truthy; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)  # polling a condition with a deadline, not synchronising on time


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              form: Mapping[str, str] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request; (status, parsed JSON body or text). HTTP errors are answers, not exceptions."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get_content_type()
    text = raw.decode(errors="replace")
    return status, json.loads(text) if kind.endswith("json") else text


# ---------------------------------------------------------------------------------------------------------
# HTTP targets in threads


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a probe that timed out hangs up early: expected
            super().handle_error(request, client_address)


class StatusServer:
    """HTTP (or HTTPS with `ssl_context`) on 127.0.0.1 in a thread: answers every request with `status`, or
    with the statuses of `pattern` in turn when one is set (a flapping target)."""

    def __init__(self, status: int = 200, ssl_context: ssl.SSLContext | None = None) -> None:
        self.status = status
        self.pattern: Sequence[int] = ()
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                owner.requests += 1
                status = owner.pattern[owner.requests % len(owner.pattern)] if owner.pattern else owner.status
                body = b"UP" if status < 400 else b"DOWN"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self.scheme = "https" if ssl_context is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/health") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------
# bcd as a subprocess


class Bcd:
    """`bcd run` on a config given as data (written as JSON, which is YAML), with a small API client."""

    def __init__(self, directory: Path, config: dict[str, Any], port: int) -> None:
        self.directory = directory
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "bcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        path = write_config(self.directory / "bcd.yaml", self.config)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bcd", "run", "-c", str(path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=self.directory,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        poll(lambda: self._alive() and self.request("GET", "/readyz")[0] == 200, timeout, "bcd /readyz")

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"bcd exited with {self.process.returncode}:\n{self.log_tail()}")
        return True

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return http_json(method, self.url + path, body, token=OPERATOR_TOKEN)
        except OSError:
            return 0, None

    def service(self, name: str) -> dict[str, Any]:
        status, data = self.request("GET", f"/api/v1/services/{name}")
        assert status == 200, (status, data)
        result: dict[str, Any] = data
        return result

    def wait_service(self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                     what: str = "") -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            self._alive()
            data = self.service(name)
            return data if check(data) else None

        result: dict[str, Any] = poll(probe, timeout, what or f"{name} to reach the expected state")
        return result

    def failover(self, name: str, reason: str = "prometheus test", force: bool = False) -> int:
        body = {"reason": reason, "force": force}
        status, data = self.request("POST", f"/api/v1/services/{name}/failover", body)
        assert status == 202, (status, data)
        run_id: int = data["id"]
        return run_id

    def wait_run(self, run_id: int, timeout: float = 20.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            self._alive()
            status, data = self.request("GET", f"/api/v1/runs/{run_id}")
            assert status == 200, (status, data)
            return data if data["ended"] is not None else None

        result: dict[str, Any] = poll(finished, timeout, f"run {run_id} to finish")
        return result

    def metrics(self) -> str:
        status, text = self.request("GET", "/metrics")
        assert status == 200, status
        assert isinstance(text, str)
        return text

    def stop(self) -> None:
        stop(self.process)


def operator_auth() -> dict[str, Any]:
    digest = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    return {"tokens": [{"name": "olive", "role": "operator", "sha256": digest}], "anonymous_read": False}


# ---------------------------------------------------------------------------------------------------------
# Prometheus


class QueryError(Exception):
    """Prometheus refused a query (bad PromQL, or an evaluation error)."""


class Prometheus:
    """`prometheus` on a free loopback port, scraping `target` (one host:port or several) with the job of
    prometheus/scrape.example.yml every `interval` seconds and evaluating prometheus/alerts.yml as often."""

    def __init__(self, directory: Path, target: str | Sequence[str], interval: float = 1.0) -> None:
        self.directory = directory
        self.targets = [target] if isinstance(target, str) else list(target)
        self.interval = interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def config(self) -> dict[str, Any]:
        example = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
        (job,) = example["scrape_configs"]
        every = f"{round(self.interval * 1000)}ms"
        token = self.directory / "bcd-token"  # the example's credentials_file, here
        token.write_text(OPERATOR_TOKEN)
        job = {**job, "scrape_interval": every, "scrape_timeout": every, "static_configs": [{"targets": self.targets}],
               "authorization": {**job["authorization"], "credentials_file": str(token)}}
        return {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": [str(RULES)],
            "scrape_configs": [job],
        }

    def start(self, timeout: float = 30.0) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (make deps installs the Debian package)")
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.started_at = time.time()

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                return http_json("GET", self.url + "/-/ready", timeout=2)[0] == 200
            except OSError:
                return False

        poll(ready, timeout, "prometheus /-/ready")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop(self.process)

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        status, body = http_json("POST" if params else "GET", f"{self.url}/api/v1/{path}", form=params)
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error", body) if isinstance(body, dict) else body
            raise QueryError(f"HTTP {status}: {detail}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the result as a list of {metric, value} (a scalar becomes one such item)."""
        data = self.api("query", {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                        "step": f"{step:g}"})
        result: list[dict[str, Any]] = data["result"]
        return result

    def scrapes(self) -> int:
        """How many times the bcd job was scraped successfully so far."""
        result = self.query('sum(sum_over_time(up{job="bcd"}[1h]))')
        return int(float(result[0]["value"][1])) if result else 0

    def wait_scrapes(self, count: int, timeout: float = 20.0) -> None:
        poll(lambda: self.scrapes() >= count, timeout, f"{count} scrapes of bcd", every=0.2)

    def wait_scrape_after(self, moment: float, timeout: float = 20.0) -> None:
        """Return once a sample scraped after `moment` (Unix time) is stored."""
        def scraped() -> bool:
            result = self.query('max(timestamp(bcd_build_info))')
            return bool(result) and float(result[0]["value"][1]) > moment

        poll(scraped, timeout, "a scrape of bcd after the last change", every=0.2)


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with at least one number that is not NaN."""
    for series in result:
        points = series.get("values") or ([series["value"]] if "value" in series else [])
        if any(not math.isnan(float(value)) for _, value in points):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------
# The PromQL of the dashboards and rules


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of a dashboard, as Grafana would run it."""

    where: str  # 'panel "Title" A', 'annotation "Failovers"', 'variable service'
    expr: str  # with Grafana's variables still in it
    instant: bool
    legend: str = ""
    panel: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    row: str = ""  # the title of the row the panel sits in ("" before the first row, and for the rest)


def load_dashboard(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return result


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, the panels of collapsed rows included, rows excluded."""
    for _, panel in panels_by_row(dashboard):
        yield panel


def panels_by_row(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(row title, panel) for every panel: a collapsed row holds its panels, an open row is followed by them."""
    row = ""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            row = panel.get("title", "")
            yield from ((row, inner) for inner in panel.get("panels", []))
        else:
            yield row, panel


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    text: str = query.get("query", "") if isinstance(query, dict) else (query or "")
    return text


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+)\s*,\s*(?P<label>\w+)\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\(\s*(?P<expr>.+)\s*\)\s*$", re.S)


def variable_promql(query: str) -> str:
    """Grafana's `label_values(selector, label)` / `query_result(expr)` as plain PromQL."""
    if match := _LABEL_VALUES.match(query):
        return f"group by ({match['label']}) ({match['selector']})"
    if match := _QUERY_RESULT.match(query):
        return match["expr"]
    raise ValueError(f"unsupported variable query {query!r}")


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[DashboardQuery]:
    queries: list[DashboardQuery] = []
    for row, panel in panels_by_row(dashboard):
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue
            instant = bool(target.get("instant")) and not target.get("range")
            queries.append(DashboardQuery(f'panel "{panel["title"]}" {target["refId"]}', target["expr"], instant,
                                          target.get("legendFormat", ""), panel, row))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        expr = annotation.get("expr") or annotation.get("target", {}).get("expr")
        if expr:
            queries.append(DashboardQuery(f'annotation "{annotation["name"]}"', expr, False,
                                          annotation.get("textFormat", "")))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            queries.append(DashboardQuery(f"variable {variable['name']}", variable_promql(variable_query(variable)),
                                          True))
    return queries


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's `$name`, `${name}`, `${name:format}` and `[[name]]`; an unknown name is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[3]
        if name not in values:
            raise KeyError(f"no value for the variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def grafana_variables(scrape_interval: float, step: float, time_range: float, **variables: str) -> dict[str, str]:
    """Grafana's built-in interval variables for a panel with `step`, a scrape interval, and a time range;
    $__rate_interval is max($__interval + scrape interval, 4 * scrape interval), as Grafana computes it."""
    rate = max(step + scrape_interval, 4 * scrape_interval)
    return {"__interval": _duration(step), "__rate_interval": _duration(rate),
            "__range": _duration(time_range), **variables}


def _duration(seconds: float) -> str:
    return f"{math.ceil(seconds * 1000)}ms"


def rule_exprs(path: Path = RULES) -> list[tuple[str, str]]:
    """(alert or record name, expr) of every rule in a rule file."""
    document = yaml.safe_load(path.read_text())
    return [(rule.get("alert") or rule.get("record"), rule["expr"])
            for group in document["groups"] for rule in group["rules"]]


# ---------------------------------------------------------------------------------------------------------
# A small estate for the dashboards to show


class Estate:
    """bcd watching two services in dorset and hampshire, with MQTT, alert receivers, runbooks, and a
    Prometheus scraping it.

    - payroll: dorset over plain HTTP (`dorset`, which a test may turn to 503), hampshire over HTTPS with a
      short-lived certificate (so certificate metrics exist); failover runbook `move` in manual mode: `settle`
      (a sleep, so the run spans scrapes) then `verify` (wait_healthy on the target).
    - library: up in both sites; its failover runbook `drain` calls a port nobody listens on, so a run fails and
      leaves library blocked (run_failed).
    - planning (with `flapping=True`): a hampshire site that answers 200/503 in turn.
    - plans: evacuate-dorset (every service) and evacuate-library (library only), each with a scheduled drill
      that never comes (their drill series at zero; the service dashboard shows a service's plans only).
    - MQTT to `broker`; alerts to a webhook receiver (delivered) and to an Alertmanager URL nobody listens on
      (failures counted).
    """

    def __init__(self, directory: Path, broker_port: int, cert_file: Path, cert_context: ssl.SSLContext, *,
                 interval: str = "500ms", timeout: str = "400ms", settle: str = "3s", scrape_interval: float = 1.0,
                 flapping: bool = False) -> None:
        self.directory = directory
        self.scrape_interval = scrape_interval
        self.dorset = StatusServer(503)
        self.tls = StatusServer(200, cert_context)
        self.up = StatusServer(200)
        self.hook = StatusServer(204)
        self.flaky = StatusServer(200)
        self.flaky.pattern = (200, 200, 503, 503, 200, 503) if flapping else ()
        self.closed_port = free_port()  # nothing listens here: the drain step and the Alertmanager fail
        port = free_port()
        services: dict[str, Any] = {
            "payroll": {
                "description": "Payroll and HR",
                "active": "dorset",
                "failover": {"runbook": "move", "mode": "manual", "cooldown": "1s"},
                "sites": {
                    "dorset": {"probes": [{"name": "health", "http": {"url": self.dorset.url()}}]},
                    "hampshire": {"probes": [
                        {"name": "health", "http": {"url": self.tls.url(), "ca_file": str(cert_file)}},
                    ]},
                },
            },
            "library": {
                "description": "Library catalogue",
                "active": "dorset",
                "failover": {"runbook": "drain", "mode": "manual"},
                "failback": {"runbook": "drain", "mode": "manual"},  # drillable (its drill series at 0)
                "sites": {
                    "dorset": {"probes": [{"name": "opac", "http": {"url": self.up.url("/opac")}}]},
                    "hampshire": {"probes": [
                        {"name": "opac", "http": {"url": self.up.url("/opac")}},
                        {"name": "db", "tcp": {"host": "127.0.0.1", "port": self.up.port}},
                        {"name": "replica", "command": {"argv": ["/bin/echo", "OK - replica | lag=2s"]}},
                    ], "data_lag": {"probe": "replica", "value": "lag"}},
                },
            },
        }
        if flapping:
            services["planning"] = {
                "description": "Planning portal",
                "active": "dorset",
                "sites": {
                    "dorset": {"probes": [{"name": "portal", "http": {"url": self.up.url("/portal")}}]},
                    "hampshire": {"probes": [{"name": "portal", "http": {"url": self.flaky.url("/portal")}}]},
                },
            }
        config: dict[str, Any] = {
            "instance": "bcd-dorset",
            "vantage": "dorset",
            "state_dir": str(directory / "state"),
            "server": {"listen": f"127.0.0.1:{port}"},
            "sites": {"dorset": {"description": "County Hall"}, "hampshire": {"description": "Winchester"}},
            "defaults": {"interval": interval, "timeout": timeout, "rise": 1, "fall": 3,
                         "objectives": {"rto": "30m", "rpo": "5m"}},
            "services": services,
            "runbooks": {
                "move": {"description": "Move {service} from {from_site} to {to_site}", "steps": [
                    {"name": "settle", "sleep": {"duration": settle}},
                    {"name": "verify", "wait_healthy": {"site": "{to_site}", "within": "10s"}},
                ]},
                "drain": {"steps": [
                    {"name": "drain", "http": {"url": f"http://127.0.0.1:{self.closed_port}/drain"}, "timeout": "1s"},
                ]},
            },
            "auth": operator_auth(),
            "plans": {"evacuate-dorset": {"from": "dorset", "to": "hampshire"},  # never run: its series at zero
                      "evacuate-library": {"from": "dorset", "to": "hampshire", "services": ["library"]}},
            "drills": {"library-yearly": {"service": "library", "at": "first Monday of Jan 03:00"},  # likewise
                       "evacuate-yearly": {"plan": "evacuate-dorset", "at": "first Monday of Jan 04:00"},
                       "library-plan-yearly": {"plan": "evacuate-library", "at": "first Monday of Jan 05:00"}},
            "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}"},
            "alerts": {
                "alertmanager": {"urls": [f"http://127.0.0.1:{self.closed_port}"], "resend": "1s", "attempts": 1,
                                 "timeout": "500ms"},
                "webhooks": [{"url": self.hook.url("/bcd"), "attempts": 1, "timeout": "1s"}],
            },
        }
        self.bcd = Bcd(directory, config, port)
        self.prometheus = Prometheus(directory, f"127.0.0.1:{port}", scrape_interval)

    def start(self) -> None:
        """bcd and Prometheus ready, and two scrapes stored. Both start at once: Prometheus holds its first
        scrape back for about 5 s (its service discovery throttles updates), which covers bcd's start."""
        self.bcd.spawn()
        try:
            self.prometheus.start()
        finally:
            self.bcd.wait_ready()
        self.prometheus.wait_scrapes(2)

    def fail_over_payroll(self) -> dict[str, Any]:
        """Once payroll waits for an operator (dorset down), fail it over to hampshire; the finished run."""
        def requested() -> int | None:
            self.bcd.wait_service("payroll", lambda s: s["status"] == "failover_pending", what="failover_pending")
            status, data = self.bcd.request("POST", "/api/v1/services/payroll/failover", {"reason": "test"})
            if status == 409 and data.get("guard") == "standby_not_up":
                return None  # hampshire's probe was slow just then (a busy machine): ask again once it is up
            assert status == 202, (status, data)
            run_id: int = data["id"]
            return run_id

        run = self.bcd.wait_run(poll(requested, 30.0, "payroll's failover to be accepted"))
        assert run["result"] == "succeeded", run
        return run

    def fail_library_run(self) -> dict[str, Any]:
        """A switchover of library whose runbook fails: library ends blocked (run_failed). Forced, so that a
        probe of hampshire slowed down by a busy machine cannot refuse it."""
        self.bcd.wait_service("library", lambda s: s["status"] == "ok", what="library ok")
        run = self.bcd.wait_run(self.bcd.failover("library", force=True))
        assert run["result"] == "failed", run
        self.bcd.wait_service("library", lambda s: s["status"] == "blocked", what="library blocked")
        return run

    def stop(self) -> None:
        try:
            self.prometheus.stop()
        finally:
            self.bcd.stop()
            for server in (self.dorset, self.tls, self.up, self.hook, self.flaky):
                server.stop()


class ClusterPair:
    """Two bcd cluster members (vantages dorset and hampshire) watching payroll in both sites through an etcd
    at `endpoints`, both scraped by one Prometheus: the estate of the overview's "Cluster" row."""

    VANTAGES = ("dorset", "hampshire")

    def __init__(self, directory: Path, endpoints: Sequence[str], *, name: str = "prometheus",
                 scrape_interval: float = 1.0, lease_ttl: str = "3s") -> None:
        self.directory = directory
        self.scrape_interval = scrape_interval
        self.target = StatusServer(200)
        self.members: dict[str, Bcd] = {}
        for vantage in self.VANTAGES:
            port = free_port()
            home = directory / vantage
            home.mkdir(parents=True, exist_ok=True)
            config: dict[str, Any] = {
                "instance": f"bcd-{vantage}",
                "vantage": vantage,
                "state_dir": str(home / "state"),
                "server": {"listen": f"127.0.0.1:{port}"},
                "sites": {"dorset": {}, "hampshire": {}},
                "defaults": {"interval": "500ms", "timeout": "400ms", "rise": 1, "fall": 3},
                "services": {"payroll": estates.payroll_service(
                    self.target.url("/dorset"), self.target.url("/hampshire"),
                    failover={"runbook": "move", "mode": "manual"})},
                "runbooks": {"move": {"steps": [{"name": "settle", "sleep": {"duration": "1s"}}]}},
                "auth": operator_auth(),
                "cluster": {"name": name, "etcd": {"endpoints": list(endpoints)},
                            "lease_ttl": lease_ttl, "call_timeout": "500ms"},
            }
            self.members[vantage] = Bcd(home, config, port)
        self.prometheus = Prometheus(directory, [f"127.0.0.1:{m.port}" for m in self.members.values()],
                                     scrape_interval)

    def start(self) -> None:
        """Both members ready and seeing each other's view, and a scrape of that stored."""
        for member in self.members.values():
            member.spawn()
        try:
            self.prometheus.start()
        finally:
            for member in self.members.values():
                member.wait_ready()
        everyone = set(self.VANTAGES)
        for member in self.members.values():
            member.wait_service("payroll", lambda s: set(s.get("views") or {}) == everyone,
                                what="payroll with both vantages' views")
        # Each target has its own first-scrape delay: wait for a scrape of both after they saw each other, and
        # for another one a little later, so that a 1 s-step range query ending now has points on them.
        for delay in (0.0, 2 * self.scrape_interval):
            expr = f"count(timestamp(bcd_cluster_members) > {time.time() + delay:.3f})"

            def both_scraped(expr: str = expr) -> bool:
                result = self.prometheus.query(expr)
                return bool(result) and float(result[0]["value"][1]) >= len(self.VANTAGES) ** 2

            poll(both_scraped, 20.0, "a scrape of both members after they saw each other", every=0.2)

    def stop(self) -> None:
        try:
            self.prometheus.stop()
        finally:
            for member in self.members.values():
                member.stop()
            self.target.stop()
