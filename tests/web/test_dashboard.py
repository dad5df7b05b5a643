"""The dashboard over HTTP (JSON forms, login, CSRF), on a real `tlswatch serve`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import VALID, make_report
from tests.serving import CLI, Serve
from tests.web.conftest import loaded_serve


def test_every_page_is_also_json(server: Serve) -> None:
    base = server.http_url
    overview = httpx.get(f"{base}/?format=json").json()
    names = [d["policy_domain"] for d in overview["domains"]]
    assert sorted(names) == ["evil.example", "example.com", "example.net", "example.org"]
    rates = [d["success_rate"] for d in overview["domains"]]
    assert names[0] == "evil.example" and rates == sorted(rates)  # the worst first
    com = next(d for d in overview["domains"] if d["policy_domain"] == "example.com")
    assert len(com["daily_success_rate"]) == 30 and com["failed_sessions"] == 127
    domain = httpx.get(f"{base}/domains/example.org?format=json").json()
    assert domain["summary"]["failed_sessions"] == 375
    assert {f["result_type"] for f in domain["findings"]} >= {"starttls-not-supported"}
    assert domain["policies"][0]["policy_string"][0] == "version: STSv1"
    reports = httpx.get(f"{base}/reports?format=json&org=Mail.ru").json()["reports"]
    assert [r["organization_name"] for r in reports] == ["Mail.ru"]
    one = httpx.get(f"{base}/reports/{reports[0]['id']}?format=json").json()
    assert '"organization-name": "Mail.ru"' in one["report"]["raw_report"]
    assert httpx.get(f"{base}/alerts?format=json").status_code == 200
    assert httpx.get(f"{base}/domains/nope.example").status_code == 404


def test_pages_escape_report_strings_and_forbid_scripts(server: Serve) -> None:
    base = server.http_url
    evil_id = httpx.get(f"{base}/reports?format=json&domain=evil.example").json()["reports"][0]
    for path in ("/", "/domains/evil.example", "/reports", f"/reports/{evil_id['id']}"):
        reply = httpx.get(base + path)
        assert reply.status_code == 200
        assert "<script>" not in reply.text, path
        assert "default-src 'none'" in reply.headers["content-security-policy"]
    detail_page = httpx.get(f"{base}/reports/{evil_id['id']}").text
    assert "&lt;script&gt;alert(&#39;code&#39;)&lt;/script&gt;" in detail_page


def test_upload_needs_the_csrf_token(server: Serve) -> None:
    base = server.http_url
    data = (VALID / "misc" / "with-bom.json").read_bytes().replace(b"bom-2026-11-21",
                                                                   b"upload-csrf")
    with httpx.Client(base_url=base) as client:
        blocked = client.post("/upload?csrf=guess", files={"report": ("r.json", data)})
        assert blocked.status_code == 403 and blocked.text.startswith("refused: upload: ")
        token = client.get("/upload?format=json").json()["csrf"]
        good = client.post("/upload", params={"format": "json", "csrf": token},
                           files={"report": ("r.json", data)})
        assert good.status_code == 200 and good.json()["ok"], good.text
        assert "upload-csrf" in good.json()["message"]
        bad = client.post("/upload?format=json", files={"report": ("bad.json", b"{oops")},
                          headers={"X-CSRF-Token": token})
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["message"]
    with httpx.Client(base_url=base) as other:  # another session cannot use that token
        other.get("/upload")
        stolen = other.post("/upload", params={"csrf": token}, files={"report": ("r", data)})
        assert stolen.status_code == 403 and "not issued to this session" in stolen.text
    server.wait_loaded()
    assert server.query("SELECT received_via FROM reports WHERE report_id = 'upload-csrf'") == \
        [("upload",)]


def test_login_required_when_asked_and_receiver_stays_open(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("TLSWATCH_TEST_WEB_PW", "dash-pw")
    server = loaded_serve(tmp_path, web_auth="always", web_user="admin",
                          web_password_env="TLSWATCH_TEST_WEB_PW", web_token="tok-123")
    try:
        base = server.http_url
        assert httpx.get(f"{base}/").status_code == 401
        assert httpx.get(f"{base}/", auth=("admin", "wrong")).status_code == 401
        assert httpx.get(f"{base}/", auth=("admin", "dash-pw")).status_code == 200
        assert httpx.get(f"{base}/?format=json",
                         headers={"Authorization": "Bearer tok-123"}).status_code == 200
        assert httpx.get(f"{base}/healthz").status_code == 200
        posted = httpx.post(f"{base}/v1/reports", json=make_report(rid="open-door"))
        assert posted.status_code == 201  # senders never log in
    finally:
        server.kill()


def test_beyond_loopback_without_credentials_refuses_to_start() -> None:
    from tlswatch.config import load_settings
    from tlswatch.web import needs_login

    assert needs_login(load_settings(None, environ={}, http="192.0.2.10:443"))
    assert needs_login(load_settings(None, environ={}, http="0.0.0.0:8080"))
    assert not needs_login(load_settings(None, environ={}, http="127.0.0.1:8080"))
    assert not needs_login(load_settings(None, environ={}, http="[::1]:8080"))
    assert needs_login(load_settings(None, environ={}, http="127.0.0.1:8080", web_auth="always"))


def test_serve_refuses_an_open_dashboard_beyond_loopback(tmp_path: Path) -> None:
    from tlswatch.config import load_settings
    from tlswatch.errors import ConfigError
    from tlswatch.ingest.spool import Spool
    from tlswatch.metrics import Metrics
    from tlswatch.web import create_app

    settings = load_settings(None, environ={}, http="192.0.2.10:443", spool=tmp_path)
    with pytest.raises(ConfigError, match="needs a login: set web_token"):
        create_app(settings, Spool(tmp_path), Metrics())


def _summary(server: Serve, since: str, until: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run([*CLI, "--db", str(server.db), "summary", "--since", since, "--until",
                           until, "--format", "json"], check=True, capture_output=True,
                          text=True)
    return {d["policy_domain"]: d for d in json.loads(done.stdout)["domains"]}


def test_the_window_ends_today_and_the_url_chooses_any_range(server: Serve) -> None:
    base, today = server.http_url, datetime.now(UTC).date()
    default = httpx.get(f"{base}/?format=json").json()
    if today - date(2026, 11, 26) < timedelta(days=30):  # the samples' newest day is recent
        assert (default["since"], default["until"]) == \
            (str(today - timedelta(days=29)), str(today)) and default["note"] == ""
    else:  # a store of old reports shows its newest 30 days, and says so
        assert default["until"] == "2026-11-26" and "newest report day" in default["note"]
    one = httpx.get(f"{base}/?format=json&since=2026-11-26&until=2026-11-26").json()
    expected = _summary(server, "2026-11-26", "2026-11-26")
    assert {d["policy_domain"]: (d["sessions"], d["failed_sessions"])
            for d in one["domains"]} == \
        {k: (v["successful_sessions"] + v["failed_sessions"], v["failed_sessions"])
         for k, v in expected.items()}
    assert all(len(d["daily_success_rate"]) == 1 for d in one["domains"])
    years = httpx.get(f"{base}/?format=json&since=2017-01-01&until=2026-11-30").json()
    assert years["days"] == 3621 and len(years["domains"][0]["daily_success_rate"]) == 3621
    week = httpx.get(f"{base}/?format=json&days=7&until=2026-11-26").json()
    assert (week["since"], week["until"]) == ("2026-11-20", "2026-11-26")
    page = httpx.get(f"{base}/domains/example.com?since=2026-11-26&until=2026-11-26&format=json")
    assert page.json()["summary"]["failed_sessions"] == \
        expected["example.com"]["failed_sessions"]
    html = httpx.get(f"{base}/?since=2026-11-20&until=2026-11-26").text
    assert 'href="/domains/example.com?since=2026-11-20&amp;until=2026-11-26"' in html
    assert 'name="since" value="2026-11-20"' in html
    empty = httpx.get(f"{base}/domains/example.com?since=2020-01-01&until=2020-01-31")
    assert empty.status_code == 404 and "from 2020-01-01 to 2020-01-31" in empty.text


@pytest.mark.parametrize(("query", "says"), [
    ("since=2026-13-01", "since: &#39;2026-13-01&#39; is not a date; use YYYY-MM-DD"),
    ("until=yesterday", "until: &#39;yesterday&#39; is not a date"),
    ("since=20261101", "since: &#39;20261101&#39; is not a date"),
    ("since=%3Cscript%3E", "since: &#39;&lt;script&gt;&#39; is not a date"),
    ("since=2026-11-27&until=2026-11-20", "since: 2026-11-27 is after until: 2026-11-20"),
    ("since=0001-01-01&until=2026-11-20", "more than the 3,660 the dashboard shows at once"),
    ("days=0", "days: &#39;0&#39; is not a whole number of days from 1 to 3,660"),
    ("days=30&until=0001-01-05", "before year 1"),
])
def test_a_bad_range_is_a_clear_400(server: Serve, query: str, says: str) -> None:
    for path in ("/", "/domains/example.com"):
        reply = httpx.get(f"{server.http_url}{path}?{query}")
        assert reply.status_code == 400 and says in reply.text, reply.text
        assert "<script>" not in reply.text and "Bad date range" in reply.text
    as_json = httpx.get(f"{server.http_url}/?{query}&format=json")
    assert as_json.status_code == 400 and as_json.json()["error"]


def test_the_empty_alerts_page_says_when_the_rules_run(tmp_path: Path) -> None:
    from tlswatch.config import load_settings
    from tlswatch.ingest.spool import Spool
    from tlswatch.metrics import Metrics
    from tlswatch.web import create_app

    for export_dir, expected in (("", "export_dir is not set"),
                                 (str(tmp_path / "daily"), "Daily at 07:30 UTC")):
        settings = load_settings(None, environ={}, db=tmp_path / "t.duckdb", export_time="07:30",
                                 spool=tmp_path / "spool", export_dir=export_dir,
                                 alert_success_threshold=0.95)
        app = create_app(settings, Spool(settings.spool), Metrics())

        async def get(path: str, app: Any = app) -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://127.0.0.1") as client:
                return await client.get(path)

        page = asyncio.run(get("/alerts")).text
        assert "No alerts yet" in page and "After each load of new reports" in page
        assert expected in page and "below 95.0% (setting alert_success_threshold)" in page
        data = asyncio.run(get("/alerts?format=json")).json()
        assert data["alerts"] == [] and data["schedule"]["after_load"]
        assert {r["kind"] for r in data["rules"]} >= {"low_success_rate", "reporter_silent"}
        # the daily checks' alerts are rules too, each said in words
        assert "expires within 14 days (setting check_cert_days)" in page
        assert "each domain every 24.0 hours" in page
        assert all(r["when"] for r in data["rules"]), data["rules"]
        assert "acme_renewal_failing" not in {r["kind"] for r in data["rules"]}  # ACME off
    acme = create_app(settings.replace(acme_directory="https://127.0.0.1:14000/dir"),
                      Spool(settings.spool), Metrics())
    data = asyncio.run(get("/alerts?format=json", acme)).json()
    assert {"kind": "acme_renewal_failing", "when": "a certificate obtained by ACME expires "
            "within 14 days and its renewal failed (setting acme_alert_days)"} in data["rules"]


def test_the_overview_pages_domains_worst_first_with_totals_over_all(tmp_path: Path) -> None:
    from tests.conftest import policy, write_json
    from tlswatch.config import load_settings
    from tlswatch.ingest.spool import Spool
    from tlswatch.metrics import Metrics
    from tlswatch.web import create_app

    # 205 domains: d000 fails 0 of 100 sessions, d001 1, ... d204 204 (of 100 + i).
    policies = [policy(f"d{i:03d}.example", 100, i) for i in range(205)]
    write_json(tmp_path / "many.json", make_report(day="2026-11-20", policies=policies))
    db = tmp_path / "t.duckdb"
    subprocess.run([*CLI, "--db", str(db), "ingest", str(tmp_path / "many.json")], check=True,
                   capture_output=True)
    settings = load_settings(None, environ={}, db=db, spool=tmp_path / "spool")
    app = create_app(settings, Spool(settings.spool), Metrics())

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1") as client:
            return await client.get(path)

    window = "since=2026-11-01&until=2026-11-30"
    first = asyncio.run(get(f"/?{window}&format=json")).json()
    assert (first["page"], first["pages"], first["first"], first["last"]) == (1, 3, 1, 100)
    assert [d["policy_domain"] for d in first["domains"][:3]] == \
        ["d204.example", "d203.example", "d202.example"]
    assert first["totals"] == {"domains": 205, "sessions": 205 * 100 + sum(range(205)),
                               "successful_sessions": 205 * 100,
                               "failed_sessions": sum(range(205)),
                               "success_rate": round(20500 / (20500 + sum(range(205))), 6),
                               "rate_text": "49.5%"}
    assert first["previous"] is None
    assert first["next"] == f"/?{window}&page=2&format=json"
    seen = [d["policy_domain"] for d in first["domains"]]
    page = first
    while page["next"]:
        page = asyncio.run(get(page["next"])).json()
        seen += [d["policy_domain"] for d in page["domains"]]
    assert seen == [f"d{i:03d}.example" for i in range(204, -1, -1)]  # each once, in order
    assert (page["page"], page["first"], page["last"], page["next"]) == (3, 201, 205, None)
    assert page["domains"][-1]["top_failure"] is None and \
        page["domains"][-1]["daily_success_rate"][19] == 1.0
    html = asyncio.run(get(f"/?{window}&page=2")).text
    assert "Domains 101&ndash;200 of 205 (page 2 of 3)" in html
    assert f'href="/?{window.replace("&", "&amp;")}&amp;page=3" rel="next"' in html
    assert "205 domains, the lowest success rate first: 41,410 sessions, 20,910 failed" in html
    assert html.count('class="sparkline"') == 100
    past = asyncio.run(get(f"/?{window}&page=99&format=json")).json()
    assert past["page"] == 3 and len(past["domains"]) == 5  # the last page
