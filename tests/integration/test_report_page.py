"""The HTML continuity report in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium): it loads nothing from outside, shows the summary first with the figures worked out by hand
(tests/unit/report/test_compute.py), and has a print stylesheet.

`BCD_SCREENSHOT=docs/report.png pytest tests/integration/test_report_page.py` rewrites the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd.report.render_html import render_html
from tests.helpers.daemon import write_config
from tests.unit.report.test_compute import END, T0, config_text, report_of, write_journal

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from tests.integration.test_status_page import CHROMEDRIVER, CHROMIUM, FLAGS  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and shutil.which(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed (make deps)",
)


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(shutil.which(CHROMEDRIVER)), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def page(tmp_path: Path) -> Path:
    write_journal(tmp_path / "state" / "bcd.sqlite")
    config = write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "state"))
    report = report_of(config)
    assert (report.period.start, report.period.end) == (T0, END)
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


def test_the_report_shows_its_summary_first_and_loads_nothing_from_outside(driver: WebDriver, page: Path) -> None:
    driver.get(page.as_uri())
    sections = driver.find_elements(By.CSS_SELECTOR, "body > section")
    assert sections[0].get_attribute("id") == "summary"
    cards = [card.text.replace("\n", " ") for card in driver.find_elements(By.CSS_SELECTOR, "#summary .card")]
    assert cards[0] == "99.964 % availability across the estate"  # (834,600 + 842,400) / (835,200 + 842,400)
    rows = {row.find_element(By.CSS_SELECTOR, "td").text: row.text
            for row in driver.find_elements(By.CSS_SELECTOR, "#summary table.overview tbody tr")}
    assert rows["payroll"].startswith("payroll 99.928 %") and "never drilled" in rows["payroll"]
    assert driver.find_element(By.CSS_SELECTOR, "#summary .risk-counts").text == (
        "never drilled successfully: 1 · an objective missing: 1 · standby not up > 1 %: 1 · objective missed: 1")
    risks = [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#summary ul.risks li")]
    assert "payroll: standby dorset was not up for 17.20 % of its standby time (1d 3h): a failover could not have " \
           "gone there" in risks
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert [s.get_attribute("id") for s in sections[1:3]] == ["service-library", "service-payroll"]
    shot = os.environ.get("BCD_SCREENSHOT")
    if shot:
        driver.set_window_size(1280, 1700)
        driver.save_screenshot(shot)


def test_the_print_stylesheet_applies_in_print(driver: WebDriver, page: Path) -> None:
    driver.get(page.as_uri())
    width = "return getComputedStyle(document.body).maxWidth"
    assert driver.execute_script(width) == "1100px"
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert driver.execute_script(width) == "none"
