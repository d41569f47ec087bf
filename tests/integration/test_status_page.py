"""The status page (`GET /`) in a real headless Chromium — Debian's `chromium` and `chromium-driver`, driven
by Selenium — against the real daemon as a subprocess, real HTTP targets as the sites, and a recorder that
the runbook steps call. Selenium blocks, so every browser call runs in a thread (`Browser`): the targets and
the recorder live on the test's event loop and must keep answering meanwhile.

`BCD_SCREENSHOT=docs/status-page.png pytest tests/integration/test_status_page.py -k estate` rewrites the
README's screenshot.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.helpers.targets import HttpTarget
from tests.integration.runbooks.daemon_kit import OPERATOR_TOKEN, VIEWER_TOKEN, Bcd, Estate, open_estate
from tests.integration.runbooks.test_scoped_tokens import DORSET_TOKEN, two_councils

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1500",
)
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
DEMO_TOKEN = "demo-operator-token"
WAIT = 10.0
# gentler than daemon_kit's 100 ms: Chromium shares the CPUs with the daemon, and a late answer is a failure
TIMING = {"interval": "400ms", "timeout": "300ms", "rise": 1, "fall": 2}

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and shutil.which(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed (make deps)",
)


class Browser:
    """A Chromium page; each call runs in a thread so the event loop keeps serving the estate."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def until(self, check: Callable[[WebDriver], Any], message: str, timeout: float = WAIT) -> Any:
        """The first truthy `check(driver)`, polled by WebDriverWait (rows are re-rendered: stale is a retry)."""
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        return await asyncio.to_thread(wait.until, check, message)

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(func, *args)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str]:
        """The rendered text of every match, read in one go (the page re-renders while we look)."""
        texts: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((node) => node.innerText)", css)
        return texts

    def rows(self) -> dict[str, dict[str, Any]]:
        """The estate table as the browser shows it, read in one go."""
        rows: list[dict[str, Any]] = self.driver.execute_script(ROWS_SCRIPT)  # a list: objects lose their order
        return {row["name"]: row for row in rows}

    async def use_token(self, token: str) -> None:
        def enter() -> None:
            field = self.find("#token")
            field.clear()
            field.send_keys(token)
            self.find("#token-form button[type=submit]").click()

        await self.call(enter)

    async def click_and_confirm(self, css: str) -> str:
        """Click the button, accept the confirm() it opens; return the question it asked."""
        def click(driver: WebDriver) -> bool:
            button = driver.find_element(By.CSS_SELECTOR, css)
            if not button.is_displayed():
                return False
            button.click()  # a row re-rendered between find and click is stale: until() tries again
            return True

        await self.until(click, f"no button {css} to click")
        alert = await self.until(expected_conditions.alert_is_present(), "no confirmation asked")
        question: str = alert.text
        await self.call(alert.accept)
        return question

    async def state_of(self, service: str, site: str) -> str:
        texts = await self.call(self.texts, f"{_cell(service, site)} .state")
        return texts[0] if texts else ""


ROWS_SCRIPT = """
const rows = [];
for (const row of document.querySelectorAll('#estate tbody tr[data-service]')) {
  const sites = {};
  for (const cell of row.querySelectorAll('td[data-site]')) {
    sites[cell.dataset.site] = {
      state: cell.querySelector('.state')?.innerText ?? '', title: cell.title, text: cell.textContent,
      active: cell.classList.contains('is-active'), marker: cell.querySelector('.marker') !== null,
    };
  }
  rows.push({
    name: row.dataset.service, shown: !row.hidden, status: row.querySelector('.status-text').innerText,
    labels: row.querySelector('td.labels').innerText, sites,
  });
}
return rows;
"""


EVENTS_SCRIPT = """
return [...document.querySelectorAll('#events li')].map((li) => ({id: Number(li.dataset.id), text: li.innerText}));
"""


def _cell(service: str, site: str) -> str:
    return f'#estate tr[data-service="{service}"] td[data-site="{site}"]'


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium (and its chromedriver) for the module; quit at the end."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[Browser]:
    yield Browser(chromium)
    chromium.get("about:blank")  # leave the page: its event stream closes before the daemon stops
    chromium.get_log("browser")  # drop this test's console lines


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    """daemon_kit's estate: `payroll` in dorset (active) and hampshire, a recorder for runbook steps."""
    async with open_estate(tmp_path) as estate:
        yield estate


def _config(estate: Estate, **kwargs: Any) -> dict[str, Any]:
    return {**estate.config(**kwargs), "defaults": TIMING}


async def _fetch(url: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.text()


# -- the demo-like estate: every service of config/demo.yaml, its sites served by HttpTargets -------------

async def _demo_estate(estate: Estate, targets: dict[tuple[str, str], HttpTarget]) -> dict[str, Any]:
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    runbooks = json.loads(json.dumps(demo["runbooks"]).replace("http://127.0.0.1:19100", estate.steps.url("")))
    approved = json.loads(json.dumps(runbooks["move"]))
    approved["steps"].insert(1, {"name": "approve the move", "approval": {"timeout": "15m"}})
    runbooks["move-approved"] = approved
    services: dict[str, Any] = {}
    for name, spec in demo["services"].items():
        services[name] = {key: value for key, value in spec.items() if key not in ("interval", "timeout")}
        for site, site_spec in spec["sites"].items():
            target = targets[(name, site)] = await HttpTarget().start()
            site_spec["probes"] = [{"name": probe["name"], "http": {"url": target.url}} for probe in site_spec["probes"]]
    services["social-care"]["failover"]["runbook"] = "move-approved"
    base = _config(estate)
    base["auth"]["tokens"] += demo["auth"]["tokens"]  # daemon_kit's client reads with its own token
    return {
        **demo, "state_dir": base["state_dir"], "server": base["server"], "defaults": base["defaults"],
        "auth": base["auth"], "services": services, "runbooks": runbooks,
    }


async def test_the_page_shows_the_estate_with_active_sites_runs_and_labels(
    estate: Estate, browser: Browser, tmp_path: Path
) -> None:
    targets: dict[tuple[str, str], HttpTarget] = {}
    try:
        config = await _demo_estate(estate, targets)
        bcd = await estate.start(config, ok=tuple(config["services"]))
        await _tell_the_demo_story(bcd, targets)
        services = {s["name"]: s for s in (await bcd.call("GET", "/api/v1/services")).body["services"]}

        await _assert_served_under_a_strict_csp(bcd.url)
        await browser.open(bcd.url + "/")
        await browser.until(lambda d: d.find_element(By.ID, "connection").text == "● live", "never live")
        await browser.use_token(DEMO_TOKEN)  # the screenshot shows what an operator sees
        await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, "#active-runs button[data-action=approve]")
                            .is_displayed(), "the waiting run has no Approve button")

        await browser.until(lambda d: "A token is set" in d.find_element(By.ID, "token-state").text
                            and d.find_element(By.ID, "connection").text == "● live", "the token was not taken")
        heads = await browser.call(browser.texts, "#estate thead th[data-site]")
        assert [head.split("\n")[0] for head in heads] == ["dorset", "hampshire"]
        rows = await browser.call(browser.rows)
        assert list(rows) == list(config["services"])
        for name, service in services.items():
            marked = [site for site, cell in rows[name]["sites"].items() if cell["marker"] and cell["active"]]
            assert marked == [service["active"]], name
        assert services["payroll"]["active"] == "hampshire"  # moved by the runbook
        cell = rows["intranet"]["sites"]["hampshire"]
        assert cell["state"] == "down"
        assert cell["title"] == services["intranet"]["sites"]["hampshire"]["reason"] and "503" in cell["title"]
        assert "active" in cell["text"] and cell["title"] in cell["text"]  # what a screen reader reads
        assert rows["library"]["sites"]["dorset"]["state"] == "maintenance"
        assert rows["payroll"]["labels"].split("\n") == ["owner: dorset-cc", "tier: 1"]
        run_text = (await browser.call(browser.texts, "#active-runs .run"))[0]
        assert "social-care failover hampshire → dorset" in run_text and "waiting for approval" in run_text

        def filter_by(value: str) -> list[str]:
            Select(browser.find("#label-filter")).select_by_value(value)
            return [name for name, row in browser.rows().items() if row["shown"]]

        assert await browser.call(filter_by, "owner=dorset-cc") == ["payroll", "library"]
        assert await browser.call(browser.texts, "#filter-count") == ["2 of 5 services shown"]
        assert await browser.call(filter_by, "tier=1") == ["payroll", "social-care", "fire-dispatch"]
        assert len(await browser.call(filter_by, "")) == 5

        newest = (await bcd.call("GET", "/api/v1/events?tail=10")).body["events"]
        shown = await browser.call(browser.driver.execute_script, EVENTS_SCRIPT)
        assert 10 <= len(shown) <= 50 and [e["id"] for e in shown] == sorted((e["id"] for e in shown), reverse=True)
        by_id = {e["id"]: e["text"] for e in shown}
        for event in newest:  # the journal's newest events, each with its reason
            assert event["reason"] in by_id[event["id"]], (event, by_id.get(event["id"]))
        console = [e for e in await browser.call(browser.driver.get_log, "browser") if e["level"] == "SEVERE"]
        assert console == []  # no CSP violation, no failed request

        await browser.call(browser.driver.execute_script, "document.activeElement.blur(); window.scrollTo(0, 0)")
        shot = tmp_path / "status-page.png"
        assert await browser.call(browser.driver.save_screenshot, str(shot))
        assert shot.stat().st_size > 20_000
        if os.environ.get("BCD_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["BCD_SCREENSHOT"])
    finally:
        for target in targets.values():
            await target.stop()


async def _assert_served_under_a_strict_csp(url: str) -> None:
    status, headers, html = await _fetch(url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert " style=" not in html, "inline style"
    status, headers, _ = await _fetch(url + "/static/status.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    status, headers, _ = await _fetch(url + "/static/nothing.js")
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json")


async def _tell_the_demo_story(bcd: Bcd, targets: dict[tuple[str, str], HttpTarget]) -> None:
    """payroll fails over by itself; intranet's active site goes down (no runbook: a human's move); library's
    dorset site is in maintenance; a failover of social-care waits for an operator's approval."""
    targets[("payroll", "dorset")].status = 503
    run = await bcd.wait_first_run("payroll")
    assert run["result"] == "succeeded", run
    targets[("intranet", "hampshire")].status = 503
    await bcd.wait_service(lambda s: s["sites"]["hampshire"]["state"] == "down", "intranet")
    reply = await bcd.call("POST", "/api/v1/services/library/maintenance", token=DEMO_TOKEN,
                           json_body={"site": "dorset", "duration": "2h", "reason": "OPAC upgrade"})
    assert reply.status == 201, reply
    reply = await bcd.call("POST", "/api/v1/services/social-care/failover", token=DEMO_TOKEN,
                           json_body={"reason": "rehearsal of the move to Dorset"})
    assert reply.status == 202, reply
    await bcd.wait_run(reply.body["id"], lambda r: r["result"] == "waiting_approval")


XSS_LABEL = "<img src=x onerror=alert(1)> & co"


async def test_the_page_follows_a_site_going_down_live(estate: Estate, browser: Browser) -> None:
    service = estate.service(mode="manual")
    service["labels"] = {"team": XSS_LABEL, "tier": "1"}
    service["objectives"] = {"rto": "30m", "rpo": "5m"}
    bcd = await estate.start(_config(estate, services={"payroll": service}))
    _, _, html = await _fetch(bcd.url + "/")
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; co" in html and XSS_LABEL not in html
    assert '<span class="objectives">RTO 30m, RPO 5m</span>' in html

    await browser.open(bcd.url + "/")
    await browser.until(lambda d: d.find_element(By.ID, "connection").text == "● live", "the stream never connected")
    assert await browser.state_of("payroll", "dorset") == "up"

    estate.dorset.status = 503  # from here on only the event stream can tell the page
    await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{_cell('payroll', 'dorset')} .state").text
                        == "down", "the dorset cell never showed down")
    await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, '#estate tr[data-service="payroll"] .status-text')
                        .text == "failover pending", "the status never showed failover pending")
    updates = await browser.until(lambda d: "payroll" in d.find_element(By.ID, "updates").text
                                  and d.find_element(By.ID, "updates").text, "nothing announced")
    assert "payroll" in updates
    events = await browser.call(browser.texts, "#events li")
    assert any("site transition" in e and "payroll in dorset" in e and "503" in e for e in events)
    labels = (await browser.call(browser.rows))["payroll"]["labels"]
    assert f"team: {XSS_LABEL}" in labels.split("\n")  # re-rendered by the script: as text, not markup
    objectives = await browser.call(browser.texts, '#estate tr[data-service="payroll"] .objectives')
    assert objectives == ["RTO 30m, RPO 5m"]  # as the script renders it too
    assert await browser.call(lambda: browser.driver.find_elements(By.CSS_SELECTOR, "#estate img")) == []


async def test_a_failover_clicked_on_the_page_runs_the_runbook(estate: Estate, browser: Browser) -> None:
    steps = [estate.step("switch", "/switch"), {"name": "confirm", "approval": {"timeout": "1m"}},
             estate.step("announce", "/announce")]
    bcd = await estate.start(_config(estate, steps=steps, services={"payroll": estate.service(mode="manual")}))
    await browser.open(bcd.url + "/")
    await browser.until(lambda d: d.find_element(By.ID, "connection").text == "● live", "the stream never connected")
    await browser.use_token(OPERATOR_TOKEN)

    question = await browser.click_and_confirm('#estate tr[data-service="payroll"] button[data-action=failover]')
    assert "Fail over payroll from dorset to hampshire?" in question
    question = await browser.click_and_confirm("#active-runs button[data-action=approve]")
    assert question.startswith("Approve run 1 of payroll (failover from dorset to hampshire)?")

    run = await bcd.wait_first_run()
    assert run["result"] == "succeeded", run
    assert run["trigger"] == "olive"  # the operator the token belongs to
    assert [s["name"] for s in run["steps"]] == ["switch", "confirm", "announce"]
    assert estate.steps.paths() == ["/switch", "/announce"]
    await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, _cell("payroll", "hampshire"))
                        .get_attribute("class").split().count("is-active") == 1, "hampshire never became active")
    await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, "#recent-runs tbody tr .result").text
                        == "succeeded", "the run is not shown as succeeded")

    def storage() -> tuple[str, Any, Any]:
        driver = browser.driver
        return (driver.current_url, driver.execute_script("return window.localStorage.length"),
                driver.execute_script("return window.sessionStorage.getItem('bcd.token')"))

    url, local, session = await browser.call(storage)
    assert OPERATOR_TOKEN not in url and local == 0 and session == OPERATOR_TOKEN


async def test_a_refusal_shows_the_apis_problem_detail(estate: Estate, browser: Browser) -> None:
    bcd = await estate.start(_config(estate, services={"payroll": estate.service(mode="manual")}))
    await browser.open(bcd.url + "/")
    button = '#estate tr[data-service="payroll"] button[data-action=failover]'

    estate.hampshire.status = 503
    await bcd.wait_service(lambda s: s["sites"]["hampshire"]["state"] == "down")
    await browser.use_token(OPERATOR_TOKEN)
    await browser.click_and_confirm(button)
    problem = await browser.until(lambda d: "409" in d.find_element(By.ID, "problems").text
                                  and d.find_element(By.ID, "problems").text, "no conflict shown")
    assert "409 Conflict: target hampshire is down, not up (use force)" in problem
    assert await bcd.runs() == []

    await browser.use_token(VIEWER_TOKEN)  # a viewer is not shown the buttons it may not use (scoped roles)
    await browser.until(lambda d: not d.find_elements(By.CSS_SELECTOR, button), "a viewer was shown a failover")


async def test_without_anonymous_reads_the_page_asks_for_a_token(estate: Estate, browser: Browser) -> None:
    config = _config(estate)
    config["auth"]["anonymous_read"] = False
    bcd = await estate.start(config)  # daemon_kit's client sends the operator's token
    await browser.open(bcd.url + "/")
    await browser.until(lambda d: "needs a token to read" in d.find_element(By.ID, "token-state").text,
                        "the page did not ask for a token")
    assert await browser.call(lambda: browser.driver.switch_to.active_element.get_attribute("id")) == "token"
    await browser.use_token(VIEWER_TOKEN)
    await browser.until(lambda d: d.find_element(By.ID, "connection").text == "● live", "the stream never connected")
    assert await browser.state_of("payroll", "dorset") == "up"
    assert await browser.call(browser.texts, "#estate tbody th[scope=row] .service-name") == ["payroll"]



async def test_abort_acknowledge_and_maintenance_from_the_page(estate: Estate, browser: Browser) -> None:
    steps = [{"name": "confirm", "approval": {"timeout": "1m"}}, estate.step()]
    bcd = await estate.start(_config(estate, steps=steps, services={"payroll": estate.service(mode="manual")}))
    reply = await bcd.transfer("failover")
    assert reply.status == 202, reply
    await browser.open(bcd.url + "/")
    await browser.use_token(OPERATOR_TOKEN)

    question = await browser.click_and_confirm("#active-runs button[data-action=abort]")
    assert question.startswith(f"Abort run {reply.body['id']} of payroll (failover from dorset to hampshire)")
    run = await bcd.wait_run(reply.body["id"])
    assert run["result"] in ("aborted", "rolled_back"), run
    await bcd.wait_service(lambda s: s["guard"] == "run_failed")
    question = await browser.click_and_confirm('#estate tr[data-service="payroll"] button[data-action=ack]')
    assert "Acknowledge the failed run of payroll (active site dorset)?" in question
    await bcd.wait_service(lambda s: s["guard"] is None)
    assert estate.steps.paths() == []  # the aborted run never reached its http step

    await browser.call(lambda: Select(browser.find("#maintenance-duration")).select_by_value("30m"))
    question = await browser.click_and_confirm(f"{_cell('payroll', 'dorset')} button[data-action=maintenance-start]")
    assert "Put payroll in dorset into maintenance for 30m?" in question
    await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{_cell('payroll', 'dorset')} .state").text
                        == "maintenance", "dorset never showed maintenance")
    service = await bcd.service()
    assert service["sites"]["dorset"]["state"] == "maintenance"
    assert service["sites"]["hampshire"]["maintenance_until"] is None
    question = await browser.click_and_confirm(f"{_cell('payroll', 'dorset')} button[data-action=maintenance-end]")
    assert "End the maintenance of payroll in dorset?" in question
    await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{_cell('payroll', 'dorset')} .state").text
                        == "up", "dorset never came out of maintenance")


async def test_a_running_plan_is_shown_live_with_its_gate(estate: Estate, browser: Browser) -> None:
    directory = estate.service(mode="manual")
    payroll = {**estate.service(mode="manual"), "depends_on": ["directory"]}
    plans = {"evacuate": {"from": "dorset", "to": "hampshire", "objective": "1h",
                          "gates": [{"after_group": 1, "approval": {"timeout": "10m"}}]}}
    bcd = await estate.start(_config(estate, steps=[estate.step("switch", "/switch")], plans=plans,
                                     services={"directory": directory, "payroll": payroll}))
    await browser.open(bcd.url + "/")
    await browser.until(lambda d: d.find_element(By.ID, "connection").text == "● live", "the stream never connected")
    assert await browser.call(browser.texts, "#plans p") == ["No recovery plan is running."]

    started = await bcd.call("POST", "/api/v1/plans/evacuate/run", json_body={"reason": "drill"})
    assert started.status == 202, started
    gate = await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, "#plans .gate").text,
                               "the gate never showed")
    assert gate == "Waiting for approval before group 2 (bcd plan approve 1)"
    groups = await browser.call(browser.texts, "#plans .plan-groups tr")
    assert groups[0].startswith("Group 1") and "directory moved run 1" in groups[0]
    assert groups[1].startswith("Group 2") and "payroll pending" in groups[1]
    assert "of 60 min objective" in (await browser.call(browser.texts, "#plans .plan-state"))[0]

    approved = await bcd.call("POST", "/api/v1/plan-runs/1/approve")
    assert approved.status == 202, approved
    await browser.until(lambda d: d.find_element(By.CSS_SELECTOR, "#plans p").text
                        == "No recovery plan is running.", "the finished plan run never left the page")
    assert estate.steps.paths() == ["/switch", "/switch"]


async def test_a_scoped_token_is_shown_only_the_buttons_of_its_own_services(estate: Estate, browser: Browser) -> None:
    config = two_councils(estate)
    config["defaults"] = TIMING
    bcd = await estate.start(config, ok=("payroll", "library"))
    await browser.open(bcd.url + "/")
    await browser.use_token(DORSET_TOKEN)
    await browser.until(lambda d: d.find_element(
        By.CSS_SELECTOR, '#estate tr[data-service="library"] button[data-action=failover]').is_displayed(),
        "dorset-cc's token was not shown the failover of its own library")
    actions = await browser.call(browser.texts, '#estate tr[data-service="payroll"] button[data-action]')
    assert actions == []  # hampshire-cc's payroll: no failover, no maintenance for dorset-cc's token
    await browser.use_token(OPERATOR_TOKEN)  # no scope: every service's buttons
    await browser.until(lambda d: d.find_element(
        By.CSS_SELECTOR, '#estate tr[data-service="payroll"] button[data-action=failover]').is_displayed(),
        "an unscoped operator was not shown payroll's failover")
