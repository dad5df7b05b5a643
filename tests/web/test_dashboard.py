"""The dashboard over HTTP (JSON forms, login, CSRF), on a real `tlswatch serve`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import VALID, make_report
from tests.serving import Serve
from tests.web.conftest import loaded_serve


def test_every_page_is_also_json(server: Serve) -> None:
    base = server.http_url
    overview = httpx.get(f"{base}/?format=json").json()
    names = [d["policy_domain"] for d in overview["domains"]]
    assert names == ["evil.example", "example.com", "example.net", "example.org"]
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
