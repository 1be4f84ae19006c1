"""The review page in a real headless browser (Debian's chromium, driven by Playwright).

The page is served by uvicorn on loopback, inside a small Core API whose stand-in sign-in is
the cookie ``admin=<organization>:<user>[:reviewer]``. Skipped, with the reason, only where no
chromium is installed (``.ci/run`` installs it when missing).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.register_assert_rewrite("review_support")

from review_support import (  # noqa: E402
    CUTOFF,
    MOUNT,
    ORG,
    OTHER_ORG,
    PER_ORG,
    _seed,
    build,
    seed_event,
)

from audit_middleware import migrate_sync  # noqa: E402
from auditevt import Action  # noqa: E402

CHROMIUM = os.environ.get("AUDITEVT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_SIZE = 10

if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no browser: {CHROMIUM} is missing (apt-get install chromium; .ci/run does)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def run_async(make: Any) -> None:
    """Run ``make()``'s coroutine on a thread of its own: Playwright's loop owns this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(make())).result()


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The Core API on loopback, over a freshly seeded database; yields its base URL."""
    from conftest import fresh_pg_database
    from telemetry_client.testing import serve_asgi

    with fresh_pg_database("auditevt_browser") as url:
        migrate_sync(url)
        run_async(lambda: _seed(url))
        harness = build(url, page_size=PAGE_SIZE)
        try:
            with serve_asgi(harness.core_api) as base_url:
                yield base_url
        finally:
            run_async(harness.aclose)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def signed_in(browser: Any, site: str, value: str, **options: Any) -> Any:
    context = browser.new_context(**options)
    context.add_cookies([{"name": "admin", "value": value, "url": site}])
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def rows(page: Any) -> list[str]:
    """The request path of each row of the events table."""
    return [cell.strip() for cell in page.locator("table.events tbody td.path").all_inner_texts()]


def expected_paths(org: int, keep: Any = lambda e: True) -> list[str]:
    return [
        seed_event(org, n).request_path
        for n in reversed(range(PER_ORG[org]))
        if keep(seed_event(org, n))
    ]


def test_browser_page_loads_with_labels_and_keyboard_focus(browser: Any, site: str) -> None:
    page = signed_in(browser, site, f"{ORG}:41")
    response = page.goto(f"{site}{MOUNT}/")
    assert response.status == 200
    assert page.title() == "Audit log · audit review"
    assert page.locator("h1").inner_text() == "Audit events"
    assert len(rows(page)) == PAGE_SIZE
    # Every form control has a label the browser associates with it.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => el.labels.length === 0).map(el => el.name)"""
    )
    assert unlabelled == []
    # The keyboard reaches the skip link first, then the navigation; focus is visible.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.textContent, s.outlineStyle, s.outlineWidth]; })()"
    )
    assert focused[0] == "Events" and focused[1] == "solid" and focused[2] != "0px"
    page.context.close()


def test_browser_page_reads_at_200_percent_zoom(browser: Any, site: str) -> None:
    # 200% zoom of a 1280-pixel window is a 640-CSS-pixel viewport at device scale 2.
    page = signed_in(
        browser, site, f"{ORG}:41", viewport={"width": 640, "height": 480}, device_scale_factor=2
    )
    page.goto(f"{site}{MOUNT}/?until={CUTOFF}")
    # The page does not scroll sideways; only the table's own region may.
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1]
    assert page.get_by_label("Entity type").is_visible()
    assert page.get_by_role("button", name="Apply filter").is_visible()
    page.context.close()


def test_browser_filter_narrows_the_table(browser: Any, site: str) -> None:
    page = signed_in(browser, site, f"{ORG}:41")
    page.goto(f"{site}{MOUNT}/")
    page.get_by_label("Until").fill(CUTOFF)
    page.get_by_label("Entity type").fill("patient")
    page.get_by_label("Action", exact=True).select_option("DELETE")
    page.get_by_role("button", name="Apply filter").click()
    page.wait_for_url(re.compile(r"entity_type=patient"))
    want = expected_paths(ORG, lambda e: e.entity_type == "patient" and e.action is Action.DELETE)
    assert 0 < len(want) <= PAGE_SIZE
    assert rows(page) == want
    # The form keeps what was asked; the export links carry the same filter.
    assert page.get_by_label("Entity type").input_value() == "patient"
    csv_link = page.get_by_role("link", name="CSV").get_attribute("href")
    assert "entity_type=patient" in csv_link and "action=DELETE" in csv_link
    # A bad value is named, with the form still there to correct it.
    page.get_by_label("Actor (user id)").fill("abc")
    with page.expect_navigation():
        page.get_by_role("button", name="Apply filter").click()
    assert "user_id='abc' is not an integer" in page.get_by_role("alert").inner_text()
    page.context.close()


def test_browser_paging_walks_every_event_once(browser: Any, site: str) -> None:
    page = signed_in(browser, site, f"{ORG}:41")
    page.goto(f"{site}{MOUNT}/?until={CUTOFF}")
    seen = rows(page)
    for _ in range(20):
        older = page.get_by_role("link", name="Older events")
        if older.count() == 0:
            break
        # From the keyboard: focus the link, press Enter.
        older.focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        seen.extend(rows(page))
    assert seen == expected_paths(ORG)
    with page.expect_navigation():
        page.get_by_role("link", name="Newest events").click()
    assert rows(page) == expected_paths(ORG)[:PAGE_SIZE]
    page.context.close()


def test_browser_review_is_recorded_and_another_organization_sees_none_of_it(
    browser: Any, site: str
) -> None:
    page = signed_in(browser, site, f"{ORG}:41:reviewer")
    page.goto(f"{site}{MOUNT}/queue")
    cards = page.locator("li.card")
    waiting = cards.count()
    assert waiting == PAGE_SIZE  # the first page of 30 reviewable events
    first = cards.first
    event_href = first.locator("h2 a").get_attribute("href")
    first.get_by_label("Decision").select_option("unjustified")
    first.get_by_label("Note").fill("no emergency on record for this patient")
    first.get_by_role("button", name="Record review").click()
    page.wait_for_url(re.compile(r"reviewed="))
    assert "recorded" in page.get_by_role("status").inner_text()
    assert page.locator(f'li.card h2 a[href="{event_href}"]').count() == 0
    page.goto(f"{site}{event_href}")
    reviews = page.locator("ol.reviews li").all_inner_texts()
    assert len(reviews) == 1 and "unjustified" in reviews[0] and "by admin 41" in reviews[0]
    assert "no emergency on record" in reviews[0]
    assert '"portal_password": "[REDACTED]"' in page.locator("pre.changes").inner_text()

    # Organization 8's admin: none of organization 7's events, review or note.
    other = signed_in(browser, site, f"{OTHER_ORG}:51:reviewer")
    other.goto(f"{site}{MOUNT}/?limit=1000")
    links = other.locator("table.events tbody a").evaluate_all("els => els.map(a => a.href)")
    assert links and event_href not in {link.removeprefix(site) for link in links}
    assert "no emergency on record" not in other.content()
    assert other.goto(f"{site}{event_href}").status == 404
    other.goto(f"{site}{MOUNT}/queue")
    assert other.locator(f'a[href="{event_href}"]').count() == 0
    own = [
        n
        for n in range(PER_ORG[OTHER_ORG])
        if seed_event(OTHER_ORG, n).break_glass_id or seed_event(OTHER_ORG, n).impersonation_id
    ]
    assert other.locator("li.card").count() == len(own) == 6  # organization 8's own queue
    assert "no emergency on record" not in other.content()
    other.context.close()
    page.context.close()
