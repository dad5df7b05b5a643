"""The dashboard in real headless Chromium (Debian's), driven by Playwright.

Set TLSWATCH_SCREENSHOTS=DIR to keep the screenshots (the README's come from here).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import VALID
from tests.serving import Serve
from tests.web.conftest import HOSTILE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: 'make test' installs it"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    tab.dialogs = dialogs
    try:
        yield tab
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    folder = os.environ.get("TLSWATCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_overview_lists_every_domain_with_a_sparkline(server: Serve, page: Any) -> None:
    page.goto(server.http_url + "/")
    rows = page.locator("#domains tr")
    assert rows.count() == 5  # header + 4 domains
    for name in ("example.com", "example.net", "example.org"):
        assert page.get_by_role("link", name=name).is_visible()
    lines = page.locator("svg.sparkline polyline")
    assert lines.count() >= 3
    box = page.locator("svg.sparkline").first.bounding_box()
    assert box and box["width"] > 50  # drawn, not collapsed
    shot(page, "overview")


def test_domain_page_draws_charts_and_tables(server: Serve, page: Any) -> None:
    page.goto(server.http_url + "/")
    page.get_by_role("link", name="example.org").click()
    page.wait_for_url("**/domains/example.org")
    assert page.locator("h1").inner_text() == "example.org"
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart polyline").count() >= 1  # the success-rate line
    assert page.locator("svg.chart rect").count() >= 11  # bars for every result type
    assert "starttls-not-supported" in page.locator(".finding").first.inner_text()
    assert page.locator("#mx tr").count() > 5 and page.locator("#policies pre").count() >= 1
    shot(page, "domain")


def test_hostile_strings_stay_text(server: Serve, page: Any) -> None:
    page.goto(server.http_url + "/reports?domain=evil.example")
    page.locator("#reports a").first.click()
    assert HOSTILE in page.locator("#fields").inner_text()
    assert "<script>alert('code')</script>" in page.locator("td.reason").inner_text()
    assert '"<script>rid</script>"' in page.locator("#raw").inner_text()
    page.goto(server.http_url + "/")
    page.goto(server.http_url + "/domains/evil.example")
    assert page.dialogs == []  # no alert() ever ran
    assert page.evaluate("document.scripts.length") == 0
    shot(page, "report")


def test_upload_form_accepts_a_report(server: Serve, page: Any, tmp_path: Path) -> None:
    report = tmp_path / "uploaded.json"
    report.write_bytes((VALID / "misc" / "with-bom.json").read_bytes()
                       .replace(b"bom-2026-11-21", b"browser-upload"))
    page.goto(server.http_url + "/upload")
    page.set_input_files("input[type=file]", str(report))
    page.get_by_role("button", name="Upload").click()
    result = page.locator("#result")
    assert "accepted 1 report(s) from uploaded.json: browser-upload" in result.inner_text()
    server.wait_loaded()
    page.goto(server.http_url + "/reports?org=BOM+Writer")
    assert "browser-upload" in page.locator("#reports").inner_text()
    shot(page, "upload")


def test_range_form_changes_the_numbers(server: Serve, page: Any) -> None:
    page.goto(server.http_url + "/")
    row = page.locator("#domains tr", has=page.get_by_role("link", name="example.com"))
    before = row.locator("td.num").first.inner_text()
    page.fill("#range input[name=since]", "2026-11-26")
    page.fill("#range input[name=until]", "2026-11-26")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/?since=2026-11-26&until=2026-11-26")
    expected = httpx.get(server.http_url + "/?format=json&since=2026-11-26&until=2026-11-26")
    com = next(d for d in expected.json()["domains"] if d["policy_domain"] == "example.com")
    after = row.locator("td.num").first.inner_text()
    assert after == f"{com['sessions']:,}" and after != before
    assert page.locator("#range input[name=since]").input_value() == "2026-11-26"
    assert "2026-11-26 .. 2026-11-26" in page.locator("#domains th").nth(1).inner_text()
    row.get_by_role("link", name="example.com").click()  # the domain page keeps the range
    page.wait_for_url("**/domains/example.com?since=2026-11-26&until=2026-11-26")
    assert page.locator("#range input[name=until]").input_value() == "2026-11-26"
    page.fill("#range input[name=since]", "2026-11-27")
    page.get_by_role("button", name="Show").click()
    assert "since: 2026-11-27 is after until: 2026-11-26" in page.locator("#error").inner_text()


def test_refused_upload_is_on_the_refused_page(server: Serve, page: Any, tmp_path: Path) -> None:
    bad = tmp_path / "refused.json"
    bad.write_bytes(b'{"organization-name": "<script>alert(1)</script>\xe2\x80\xae", '
                    b'"report-id": "x"}')
    page.goto(server.http_url + "/upload")
    page.set_input_files("input[type=file]", str(bad))
    page.get_by_role("button", name="Upload").click()
    assert "missing required field" in page.locator("#result").inner_text()
    page.goto(server.http_url + "/")
    page.get_by_role("link", name="Refused").click()
    page.wait_for_url("**/refused")
    assert "refused.json" in page.locator("#refused").inner_text()
    page.locator("#refused a").first.click()
    content = page.locator("#content").inner_text()
    assert '"<script>alert(1)</script>\\u202e"' in content
    assert page.dialogs == [] and page.evaluate("document.scripts.length") == 0
    shot(page, "refused")
