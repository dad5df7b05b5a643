"""Behind a reverse proxy: whose X-Forwarded-For is believed, who must log in, which Host
names are answered (DNS rebinding), on a real `tlswatch serve`.

Loopback has room for several peers: a trusted proxy at 127.0.0.1 and a stranger at
127.0.0.2 (the client binds that source address)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import make_report
from tests.serving import Serve
from tests.web.conftest import loaded_serve


def stranger(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address="127.0.0.2"))


def test_forwarded_for_from_an_untrusted_peer_earns_no_loopback_exemption(server: Serve
                                                                           ) -> None:
    base = server.http_url
    assert httpx.get(f"{base}/?format=json").status_code == 200  # a local user, no proxy
    for header in ({"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"},
                   {"Forwarded": "for=127.0.0.1"}, {"X-Forwarded-For": "203.0.113.9"}):
        reply = httpx.get(f"{base}/?format=json", headers=header)
        assert reply.status_code == 401, header  # a proxy stands in front: its clients log in
    with stranger(base) as client:
        assert client.get("/", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 401
    # Senders and health checks stay open whatever they send.
    assert httpx.get(f"{base}/healthz", headers={"X-Forwarded-For": "203.0.113.9"}
                     ).status_code == 200


def test_behind_a_trusted_proxy_forwarded_clients_log_in(tmp_path: Path) -> None:
    server = loaded_serve(tmp_path, trusted_proxies=["127.0.0.1/32"], web_token="tok-proxy",
                          http_rate_limit=1, http_rate_burst=1)
    base = server.http_url
    internet = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9", "X-Forwarded-Proto": "https"}
    try:
        assert httpx.get(f"{base}/", headers=internet).status_code == 401
        assert httpx.get(f"{base}/?format=json", headers={
            **internet, "Authorization": "Bearer tok-proxy"}).status_code == 200
        # a client on the proxy's own host, as the proxy reports it
        assert httpx.get(f"{base}/", headers={"X-Forwarded-For": "127.0.0.1"}
                         ).status_code == 200
        # the proxy host without saying who asked: unknown, so a login
        assert httpx.get(f"{base}/").status_code == 401
        with stranger(base) as client:  # 127.0.0.2 is no trusted proxy: its header is text
            assert client.get("/", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 401
        bad = httpx.get(f"{base}/", headers={"X-Forwarded-For": "127.0.0.1, <script>"})
        assert bad.status_code == 400 and "is not an IP address" in bad.text
        # The receiver's per-IP rate limit counts the client behind the proxy.
        first = httpx.post(f"{base}/v1/reports", json=make_report(rid="via-proxy-1"),
                           headers=internet)
        again = httpx.post(f"{base}/v1/reports", json=make_report(rid="via-proxy-2"),
                           headers=internet)
        other = httpx.post(f"{base}/v1/reports", json=make_report(rid="via-proxy-3"),
                           headers={"X-Forwarded-For": "198.51.100.8"})
        assert (first.status_code, again.status_code, other.status_code) == (201, 429, 201)
        server.wait_loaded()
        assert server.query("SELECT report_id FROM reports WHERE report_id LIKE 'via-proxy%' "
                            "ORDER BY 1") == [("via-proxy-1",), ("via-proxy-3",)]
    finally:
        server.kill()


def test_a_rebinding_host_is_refused(server: Serve) -> None:
    base = server.http_url
    port = base.rsplit(":", 1)[1]
    for host in ("attacker.example", f"attacker.example:{port}", "localhost.attacker.example",
                 "127.0.0.1.nip.io"):
        reply = httpx.get(f"{base}/?format=json", headers={"Host": host})
        assert reply.status_code == 421 and "allowed_hosts" in reply.text, host
        posted = httpx.post(f"{base}/v1/reports", json=make_report(rid="rebound"),
                            headers={"Host": host})
        assert posted.status_code == 421, host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "LOCALHOST."):
        assert httpx.get(f"{base}/?format=json", headers={"Host": host}).status_code == 200
    # The policy route answers by Host: mta-sts.<domain> (404 here: none is hosted).
    policy = httpx.get(f"{base}/.well-known/mta-sts.txt",
                       headers={"Host": "mta-sts.attacker.example"})
    assert policy.status_code == 404


def test_allowed_hosts_setting_and_published_names(tmp_path: Path) -> None:
    from tlswatch.config import load_settings
    from tlswatch.web.proxy import HostCheck

    published = HostCheck(load_settings(None, environ={}, public_host="reports.example.com"))
    assert published.allows("reports.example.com:443") and published.allows("192.0.2.1")
    assert not published.allows("attacker.example")
    chosen = HostCheck(load_settings(None, environ={}, allowed_hosts="dash.example.com"))
    assert chosen.allows("DASH.example.com") and not chosen.allows("localhost")


def test_trusted_proxies_need_a_login_and_valid_networks(tmp_path: Path) -> None:
    from tlswatch.config import load_settings
    from tlswatch.errors import ConfigError
    from tlswatch.ingest.spool import Spool
    from tlswatch.metrics import Metrics
    from tlswatch.web import create_app

    settings = load_settings(None, environ={}, trusted_proxies="127.0.0.1", spool=tmp_path)
    with pytest.raises(ConfigError, match=r"trusted_proxies is set .* need a login"):
        create_app(settings, Spool(tmp_path), Metrics())
    with pytest.raises(ConfigError, match=r"'proxy\.example' is not an IP address or CIDR"):
        load_settings(None, environ={}, trusted_proxies="proxy.example")


def test_the_documented_proxy_set_up_has_a_login(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/tlswatch-behind-proxy.toml as written, with only the folders moved: a client
    that the proxy reports from the internet must log in; the receiver stays open."""
    import asyncio

    from tests.conftest import ROOT
    from tlswatch.config import load_settings
    from tlswatch.ingest.spool import Spool
    from tlswatch.metrics import Metrics
    from tlswatch.web import create_app

    monkeypatch.setenv("TLSWATCH_WEB_PASSWORD", "pw-from-env")
    settings = load_settings(ROOT / "deploy" / "tlswatch-behind-proxy.toml", environ={
        "TLSWATCH_WEB_PASSWORD": "pw-from-env"}, db=tmp_path / "t.duckdb",
        spool=tmp_path / "spool", policy_dir=tmp_path / "policies")
    app = create_app(settings, Spool(settings.spool), Metrics())
    forwarded = {"Host": "reports.example.com", "X-Forwarded-For": "203.0.113.9",
                 "X-Forwarded-Proto": "https"}

    async def ask() -> list[int]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [(await c.get("/reports", headers=forwarded)).status_code,
                    (await c.get("/healthz", headers=forwarded)).status_code,
                    (await c.get("/alerts?format=json", headers=forwarded,
                                 auth=("admin", "pw-from-env"))).status_code,
                    (await c.get("/healthz", headers={**forwarded,
                                                      "Host": "rebound.example"})).status_code]

    assert asyncio.run(ask()) == [401, 200, 200, 421]


def test_forwarded_for_is_read_from_the_right_past_trusted_hops() -> None:
    from tlswatch.web.proxy import ClientView, ForwardingError

    view = ClientView(["127.0.0.1", "10.0.0.0/8"])

    def client(peer: str, *forwarded: str) -> tuple[str, bool]:
        headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
        seen = view.client({"type": "http", "client": (peer, 1), "headers": headers})
        return seen.host, seen.loopback

    # a client's own claim sits left of what the proxies appended: it is never reached
    assert client("127.0.0.1", "127.0.0.1, 203.0.113.9, 10.1.2.3") == ("203.0.113.9", False)
    assert client("::ffff:127.0.0.1", "127.0.0.1") == ("127.0.0.1", True)
    assert client("127.0.0.1", "10.0.0.1", "127.0.0.1") == ("10.0.0.1", False)
    assert client("127.0.0.1", "[2001:db8::1]:443") == ("2001:db8::1", False)
    assert client("192.0.2.1", "127.0.0.1") == ("192.0.2.1", False)  # not a proxy of ours
    with pytest.raises(ForwardingError, match="'unknown' is not an IP address"):
        client("127.0.0.1", "unknown")
