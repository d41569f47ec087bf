"""The status page of a cluster member in headless Chromium (the fixtures of tests/integration/test_status_page.py):
each site cell lists every vantage's view of it, in words, and the status cell names the lock holder; the
script keeps both live as the views change, and marks a view stale once it is older than the lease."""

from __future__ import annotations

import re
from typing import Any

from tests.integration.cluster.kit import WAIT, ClusterEstate
from tests.integration.cluster.test_executor import running_member
from tests.integration.cluster.test_surfaces import LEASE_TTL, cut_off_dorset
from tests.integration.test_status_page import Browser, browser, chromium, pytestmark

__all__ = ["browser", "chromium", "pytestmark"]

VIEWS_SCRIPT = """
const cell = document.querySelector(`#estate tr[data-service="payroll"] td[data-site="${arguments[0]}"]`);
return cell ? [...cell.querySelectorAll('.views li')].map((li) => li.innerText) : [];
"""


def views(browser: Browser, site: str) -> list[str]:
    texts: list[str] = browser.driver.execute_script(VIEWS_SCRIPT, site)
    return texts


async def test_the_page_shows_every_vantage_view_and_the_lock_holder(estate: ClusterEstate, browser: Browser,
                                                                     ) -> None:
    steps = [{"name": "drain", "sleep": {"duration": "30s"}}, estate.step()]
    members = await estate.start(estate.config(steps=steps), "dorset", "hampshire")
    dorset, _ = members
    await browser.open(dorset.url + "/")
    assert await browser.call(views, browser, "dorset") == ["dorset: up", "hampshire: up"]  # as the server rendered it
    assert await browser.call(browser.texts, '#estate tr[data-service="payroll"] .lock') == ["lock: nobody"]

    estate.dorset.down_for = {"hampshire"}  # only the other vantage sees dorset down: no event on this instance

    def split(driver: Any) -> bool:
        return views(browser, "dorset") == ["dorset: up", "hampshire: down"]

    await browser.until(split, "the page never showed the views of dorset side by side")
    assert await browser.call(views, browser, "hampshire") == ["dorset: up", "hampshire: up"]

    estate.dorset.down_for = set()
    estate.dorset.status = 503
    holder, _run = await running_member(members)
    expected = f"lock: {holder.vantage}" + (" (this instance)" if holder is dorset else "")

    def locked(driver: Any) -> bool:
        return browser.texts('#estate tr[data-service="payroll"] .lock') == [expected]

    await browser.until(locked, f"the page never showed {expected!r}")


TITLE_SCRIPT = """
const list = document.querySelector(`#estate tr[data-service="payroll"] td[data-site="${arguments[0]}"] .views`);
return list ? list.title : '';
"""


async def test_the_script_marks_a_view_stale_once_it_is_older_than_the_lease(estate: ClusterEstate,
                                                                               browser: Browser) -> None:
    async with cut_off_dorset(estate) as (dorset, _hampshire, link):
        await browser.open(dorset.url + "/")
        assert await browser.call(views, browser, "dorset") == ["dorset: up", "hampshire: up"]  # fresh, as rendered
        link.cut()  # dorset hears no more of hampshire's view: only the script's re-reads can show it growing old
        stale = re.compile(r"hampshire: up — stale: not received for (\d+\.\d)s \(lease 12s\)")

        def marked(driver: Any) -> bool:
            texts = views(browser, "hampshire")
            return len(texts) == 2 and texts[0] == "dorset: up" and stale.fullmatch(texts[1]) is not None

        await browser.until(marked, "the page never marked hampshire's view stale", timeout=LEASE_TTL + WAIT)
        title: str = await browser.call(browser.driver.execute_script, TITLE_SCRIPT, "hampshire")
        own, theirs = title.splitlines()
        assert re.fullmatch(r"dorset: up, received \d+\.\ds ago: all probes passing", own), title
        assert re.fullmatch(r"hampshire: up, received \d+\.\ds ago \(stale\): all probes passing", theirs), title
