"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The story is served by a real `gocluster serve`; the tests read the pages as a
programme officer would (by label, role and link text), in German, the
default, unless a test switches.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.dbutil import in_ci, sqlite_file_url
from tests.office_browser import chromium_path, launch
from tests.office_support import BY_LABEL, BY_STATE, get_json, load_story, office_env, office_server

PAGES = ("/", "/clusters", "/clusters/wasserstoff-nord", "/deadlines", "/rejections")
TOKEN = "office-test-token-0123456789"  # noqa: S105 (a test value)


@pytest.fixture(scope="module")
def story_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = sqlite_file_url(tmp_path_factory.mktemp("dashboard"))
    load_story(url)
    return url


@pytest.fixture(scope="module")
def base(story_url: str) -> Iterator[str]:
    with office_server(story_url) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        message = "Chromium is missing: scripts/ensure-test-machine.sh installs it"
        if in_ci():
            pytest.fail(f"CI is set, so this is an error, not a skip: {message}")
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = launch(playwright, executable)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def test_overview_shows_the_story_counts(page: Page, base: str) -> None:
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Programmübersicht")
    expect(page.locator("#count-clusters")).to_have_text("11")
    expect(page.locator("#count-breaches")).to_have_text("2")
    expect(page.locator("#count-due-30")).to_have_text("1")
    expect(page.locator("#count-due-90")).to_have_text("2")
    for state, count in BY_STATE.items():
        expect(page.locator(f"#by-state tr[data-state='{state}'] td")).to_have_text(str(count))
    for level, count in BY_LABEL.items():
        expect(page.locator(f"#by-label tr[data-level='{level}'] td")).to_have_text(str(count))
    breaches = page.locator("#breaches tbody tr")
    expect(breaches).to_have_count(2)
    expect(page.locator("#expiring tbody tr")).to_have_count(2)
    # The same figures as the API's overview.
    api = get_json(base, "/api/overview")
    assert int(page.locator("#count-breaches").inner_text()) == len(api["breaches"])
    assert int(page.locator("#count-due-90").inner_text()) == len(api["due_90_days"])


def test_clicking_a_breach_opens_the_cluster_page_with_its_state_marked(
    page: Page, base: str
) -> None:
    page.goto(f"{base}/")
    page.locator("#breaches").get_by_role("link", name="Wasserstoff-Netzwerk Nord").click()
    expect(page).to_have_url(f"{base}/clusters/wasserstoff-nord")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Wasserstoff-Netzwerk Nord")
    current = page.locator("svg.statechart g.node.current")
    expect(current).to_have_count(1)
    expect(current).to_have_attribute("data-state", "in_breach")
    expect(page.locator("#current-state")).to_have_text("im Fristverstoß")
    expect(page.locator("#obligations tbody tr")).to_have_count(2)
    expect(page.locator("#obligations")).to_contain_text("überfällig seit 75 Tagen")
    expect(page.locator("#labels")).to_contain_text("05.12.2026")
    expect(page.locator("#timers tbody tr")).to_have_count(1)
    expect(page.locator("#history li.moved")).to_have_count(3)  # applied, admitted, in breach


def test_cluster_list_filters_and_search_work_from_the_keyboard(page: Page, base: str) -> None:
    page.goto(f"{base}/clusters")
    expect(page.locator("#clusters tbody tr")).to_have_count(11)
    search = page.get_by_label("Suche (ID, Name, Träger)")
    search.fill("sachsen")
    search.press("Enter")
    expect(page.locator("#clusters tbody tr")).to_have_count(1)
    expect(page.locator("#clusters")).to_contain_text("Kunststoff-Netzwerk Sachsen")
    page.goto(f"{base}/clusters")
    page.get_by_label("im Fristverstoß").focus()
    page.keyboard.press("Space")
    page.get_by_role("button", name="Filtern").press("Enter")
    expect(page).to_have_url(f"{base}/clusters?q=&state=in_breach&label=")
    rows = page.locator("#clusters tbody tr")
    expect(rows).to_have_count(2)
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.cluster)")) == {
        "luftfahrt-bremen",
        "wasserstoff-nord",
    }
    page.get_by_label("Label", exact=True).select_option("bronze")
    page.get_by_role("button", name="Filtern").click()
    expect(rows).to_have_count(1)  # in breach and holding a valid Bronze


def test_language_switch_to_english_is_remembered(page: Page, base: str) -> None:
    page.goto(f"{base}/")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Programme overview")
    page.get_by_role("navigation").get_by_role("link", name="Deadlines").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Open deadlines")
    expect(page.locator("#result-count")).to_contain_text("Results: 4")


def test_pages_are_offline_script_free_and_labelled(page: Page, base: str) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for path in PAGES:
        response = page.goto(f"{base}{path}")
        assert response is not None, path
        assert response.status == 200, path
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert page.locator("script").count() == 0, path
        assert page.locator("main#main").count() == 1, path
        assert page.get_by_role("navigation").count() == 1, path
        unlabelled = page.locator("input, select").evaluate_all(
            "els => els.filter(e => e.labels.length === 0).map(e => e.outerHTML)"
        )
        assert unlabelled == [], path
        headless = page.locator("table").evaluate_all(
            "ts => ts.filter(t => t.querySelectorAll('th').length === 0).length"
        )
        assert headless == 0, path
    assert requested
    assert all(url.startswith(base) for url in requested), requested


def test_dashboard_behind_a_token_opens_with_basic_credentials(
    browser: Browser, story_url: str
) -> None:
    env = office_env(story_url, GOCLUSTER_HTTP_TOKEN=TOKEN)
    with office_server(story_url, env) as guarded:
        assert httpx.get(f"{guarded}/", timeout=30).status_code == 401
        context = browser.new_context(http_credentials={"username": "office", "password": TOKEN})
        try:
            page = context.new_page()
            page.goto(f"{guarded}/")
            expect(page.locator("#count-clusters")).to_have_text("11")
        finally:
            context.close()


def test_unknown_cluster_page_says_so(page: Page, base: str) -> None:
    response = page.goto(f"{base}/clusters/no-such-cluster")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Cluster nicht gefunden")
    expect(page.locator("main")).to_contain_text("no-such-cluster")
