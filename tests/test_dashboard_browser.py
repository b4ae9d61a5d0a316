"""The dashboard in a real browser (Chromium from Debian, driven by Playwright) against a
`nextbuy serve` process loaded with the bundled sample and a short simulated traffic run.

Every page must draw every chart with data points, Explore must show lists with reasons,
and no request may leave the server (everything ships in the package). Screenshots go to a
temporary folder, and to $NEXTBUY_SCREENSHOTS when set. Without Chromium or Playwright the
tests are skipped, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard_helpers import build_shop, known_users
from nextbuy.dashboard.traffic import simulate_traffic
from nextbuy.serving.keys import KeyStore
from serving_helpers import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("NEXTBUY_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
PAGES = ("", "business", "quality", "experiments", "data", "explore")


def _need_browser() -> None:
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not Path(CHROMIUM).exists():
        reason = (
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` (scripts/test does it as root)"
        )
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)


@dataclass
class Site:
    url: str
    admin_key: str
    users: list[str]
    sent: dict[str, int]
    shots: list[Path]

    def shoot(self, page: Any, name: str) -> None:
        for folder in self.shots:
            page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _need_browser()
    root = tmp_path_factory.mktemp("dashboard-shop")
    settings = build_shop(root)
    _, admin_key = KeyStore(settings.store_path).create("dashboard-test", ["admin"])
    shots = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("NEXTBUY_SCREENSHOTS"):
        shots.append(Path(os.environ["NEXTBUY_SCREENSHOTS"]))
        shots[-1].mkdir(parents=True, exist_ok=True)
    server = Server(root).start()
    try:
        users = known_users(settings, 40)
        headers = {"X-API-Key": admin_key}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            sent = simulate_traffic(client, users)
        # figures refresh by themselves within seconds; asking saves the test the wait
        httpx.post(
            f"{server.url}/v1/dashboard/refresh",
            params={"audit": "true"},
            headers=headers,
            timeout=300,
        ).raise_for_status()
        yield Site(server.url, admin_key, users, sent, shots)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(site: Site, browser: Any) -> Iterator[Any]:
    """A logged-in page that records every URL the browser asks for."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    opened = context.new_page()
    opened.requested = []
    opened.on("request", lambda request: opened.requested.append(request.url))
    _log_in(opened, site)
    yield opened
    context.close()


def _log_in(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/dashboard")
    page.wait_for_url("**/dashboard/login**")
    page.fill("#key", site.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/dashboard")


def _open(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    error = page.locator("#error")
    assert error.is_hidden(), error.text_content()


def test_pages_need_an_admin_log_in_and_keep_only_a_session_cookie(site: Site, browser: Any):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{site.url}/dashboard/quality")
        assert "/dashboard/login" in page.url
        read_key = httpx.post(
            f"{site.url}/v1/admin/keys",
            json={"name": "storefront", "scopes": ["read"]},
            headers={"X-API-Key": site.admin_key},
        ).json()["key"]
        page.fill("#key", read_key)
        page.click("button[type=submit]")
        assert "not an admin API key" in page.locator("[role=alert]").text_content()
        page.fill("#key", site.admin_key)
        page.click("button[type=submit]")
        page.wait_for_url(f"{site.url}/dashboard/quality")  # back where the user was going
        cookies = context.cookies()
        assert [c["name"] for c in cookies] == ["nextbuy_dashboard"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        assert site.admin_key not in cookies[0]["value"]
        assert page.evaluate("document.cookie") == ""  # scripts never see the session
        page.click("text=Log out")
        page.goto(f"{site.url}/dashboard")
        assert "/dashboard/login" in page.url
    finally:
        context.close()


@pytest.mark.parametrize("name", PAGES)
def test_every_chart_of_every_page_has_data_points(site: Site, page: Any, name: str):
    _open(page, f"{site.url}/dashboard/{name}".rstrip("/"))
    if name == "explore":
        page.wait_for_selector(".rec-list")
    canvases = page.eval_on_selector_all(
        "canvas", "els => els.map(e => [e.id, Number(e.dataset.points || 0)])"
    )
    if name != "explore":
        assert canvases, f"page {name or 'overview'} drew no chart"
    empty = [chart_id for chart_id, points in canvases if points <= 0]
    assert not empty, f"charts without data on {name or 'overview'}: {empty}"
    recorded = page.evaluate("window.nextbuyCharts")
    assert set(recorded) == {chart_id for chart_id, _ in canvases}
    site.shoot(page, name or "overview")


def test_overview_counts_the_traffic_run(site: Site, page: Any):
    _open(page, f"{site.url}/dashboard")
    body = httpx.get(
        f"{site.url}/v1/dashboard/overview", headers={"X-API-Key": site.admin_key}
    ).json()
    counts = {row["event_type"]: row for row in body["event_types"]}
    assert counts["click"]["events"] == site.sent["click"]
    assert counts["click"]["attributed"] == site.sent["click"]
    assert body["requests"]["requests"] >= site.sent["lists"] + site.sent["unknown"]
    assert body["model"]["version"] == "v0001"
    assert page.locator(".kpi").first.is_visible()


def test_explore_shows_a_customers_lists_with_reasons(site: Site, page: Any):
    _open(page, f"{site.url}/dashboard/explore?user={site.users[0]}")
    lists = page.locator(".rec-list")
    lists.first.wait_for()
    placements = lists.evaluate_all("els => els.map(e => e.dataset.placement)")
    assert {"home", "email", "buy_again"} <= set(placements)
    reasons = page.locator(".rec-list .reason").all_text_contents()
    assert reasons and all(reason.strip() for reason in reasons)
    assert any(reason.startswith("because you") for reason in reasons)
    scores = page.locator(".rec-list td.num").all_text_contents()
    assert any(text.strip() not in ("", "–") for text in scores)
    site.shoot(page, "explore-user")


def test_explore_shows_an_items_neighbours_with_reasons(site: Site, page: Any):
    _open(page, f"{site.url}/dashboard/explore")
    page.fill("#item-input", "85123A")
    page.click("#item-form button")
    page.wait_for_selector("#item-view .rec-list")
    routes = page.locator("#item-view .rec-list .badge").all_text_contents()
    assert routes == ["similar", "bought_together"]
    reasons = page.locator("#item-view .rec-list .reason").all_text_contents()
    assert any(reason.startswith("similar to") for reason in reasons)
    site.shoot(page, "explore-item")


def test_nothing_is_loaded_from_outside_the_server(site: Site, page: Any):
    for name in PAGES:
        _open(page, f"{site.url}/dashboard/{name}".rstrip("/"))
    outside = [url for url in page.requested if not url.startswith(site.url)]
    assert page.requested and not outside


def test_pages_fit_a_phone_screen(site: Site, browser: Any):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        _log_in(phone, site)
        for name in ("", "business", "quality"):
            _open(phone, f"{site.url}/dashboard/{name}".rstrip("/"))
            wider = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert wider <= 1, f"{name or 'overview'} scrolls sideways on a phone"
            site.shoot(phone, f"phone-{name or 'overview'}")
        assert phone.locator("nav").is_hidden()  # the menu folds behind its button
    finally:
        context.close()
