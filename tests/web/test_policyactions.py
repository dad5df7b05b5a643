"""The dashboard's policy actions on a real 'serve': a real browser rotates a hosted policy
(a form, a confirmation, the new id served), and a POST without a good CSRF token is
refused with 403 and changes nothing."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_report, policy, write_json
from tests.serving import CLI, Serve
from tests.web.test_browser import browser, page  # noqa: F401  (the Chromium fixtures)

PASSWORD = "correct horse battery"


@pytest.fixture
def hosting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """'serve' hosting pol.example (testing), with a report for it; login as 'admin'."""
    monkeypatch.setenv("TLSWATCH_TEST_WEB_PASSWORD", PASSWORD)
    server = Serve(tmp_path, smtp="", policy_dir=str(tmp_path / "policies"),
                   web_auth="always", web_user="admin",
                   web_password_env="TLSWATCH_TEST_WEB_PASSWORD")
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    report = write_json(tmp_path / "r.json", make_report(rid="pol-1", day=day, policies=[
        policy("pol.example", 10, 0)]))
    for args in (["ingest", str(report)],
                 ["policy", "init", "pol.example", "--mx", "mx.pol.example"]):
        subprocess.run([*CLI, "--config", str(server.config), *args], check=True,
                       capture_output=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def served(server: Serve) -> httpx.Response:
    return httpx.get(f"{server.http_url}/.well-known/mta-sts.txt",
                     headers={"Host": "mta-sts.pol.example"})


def test_rotate_from_the_domain_page_serves_the_new_id(hosting: Serve, browser: Any  # noqa: F811
                                                       ) -> None:
    before = served(hosting)
    old_id = before.headers["etag"].strip('"')
    context = browser.new_context(http_credentials={"username": "admin",
                                                    "password": PASSWORD})
    try:
        tab = context.new_page()
        tab.goto(f"{hosting.http_url}/domains/pol.example")
        assert tab.locator("#policy-id").inner_text() == old_id
        form = tab.locator("#policy-rotate")
        form.locator("input[name=reason]").fill("a sender cached a broken copy")
        form.get_by_role("button", name="Rotate").click()
        tab.wait_for_url("**/policy/rotate")
        assert "serve the same policy under a new id" in tab.locator("p.card").inner_text()
        tab.get_by_role("button", name="Confirm: rotate").click()
        new_id = tab.locator("#new-id").inner_text()
        assert "rotate by dashboard:admin" in tab.locator("#result").inner_text()
        after = served(hosting)
        assert after.status_code == 200 and after.headers["etag"] == f'"{new_id}"'
        assert new_id != old_id and after.text == before.text  # same policy, new id
        tab.get_by_role("link", name="Policy of pol.example").click()
        row = tab.locator("#policy-history tr").nth(1).inner_text()
        assert re.search(rf"rotate\s+dashboard:admin\s+{old_id} \(testing\)\s+{new_id}", row)
        assert "a sender cached a broken copy" in row
    finally:
        context.close()


def test_a_post_without_a_good_csrf_token_is_refused(hosting: Serve) -> None:
    auth = ("admin", PASSWORD)
    url = f"{hosting.http_url}/domains/pol.example/policy/fallback"
    before = served(hosting).headers["etag"]
    with httpx.Client(auth=auth) as client:
        none = client.post(f"{hosting.http_url}/domains/pol.example/policy/rotate",
                           data={"reason": "x", "confirm": "yes"})
        assert none.status_code == 403
        assert "refused: policy rotate of pol.example: the form carries no CSRF token" \
            in none.text
        page = client.get(f"{hosting.http_url}/domains/pol.example/policy")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
    with httpx.Client(auth=auth) as stranger:  # another session: the token is not its own
        stranger.get(f"{hosting.http_url}/domains/pol.example/policy")
        forged = stranger.post(url, data={"csrf": token.group(1), "confirm": "yes"})
        assert forged.status_code == 403
        assert "the CSRF token was not issued to this session" in forged.text
    assert served(hosting).headers["etag"] == before
    history = httpx.get(f"{hosting.http_url}/domains/pol.example/policy", auth=auth).text
    assert history.count("<td>init</td>") == 1 and "<td>rotate" not in history


def test_enforce_from_the_dashboard_follows_the_advice_or_is_forced(hosting: Serve) -> None:
    base = f"{hosting.http_url}/domains/pol.example/policy"
    with httpx.Client(auth=("admin", PASSWORD), timeout=60) as client:
        page = client.get(base)
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None and 'id="policy-enforce"' in page.text
        asked = client.post(f"{base}/enforce", data={"csrf": token.group(1), "force": "yes"})
        assert asked.status_code == 200 and "Confirm: enforce" in asked.text  # confirm first
        form = {"csrf": token.group(1), "confirm": "yes", "reason": "try"}
        refused = client.post(f"{base}/enforce", data=form)
        assert refused.status_code == 409
        assert "policy enforce pol.example: refused: policy advise says: wait" in refused.text
        forced = client.post(f"{base}/enforce", data={**form, "force": "yes"})
        assert forced.status_code == 200
        assert "enforce by <bdi>dashboard:admin</bdi> (forced)" in forced.text
    assert "mode: enforce" in served(hosting).text
