"""The daily check in 'serve': runs stored with history, and one alert per new condition (a
new error, a certificate close to expiry, a stale _mta-sts id, a TLS-RPT record that does
not list this deployment first), delivered through the outbox; a second run raises none."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli, make_report, policy, write_json
from tests.mtasts.fixtures import World, publish, world
from tests.serving import Serve
from tests.test_delivery import Hook, webhook  # noqa: F401  (the webhook receiver fixture)
from tlswatch.config import Settings, load_settings
from tlswatch.mtasts.hosting import init_policy
from tlswatch.mtasts.monitor import check_domain, due, run_checks
from tlswatch.store import Store

REPORTS = "tlsrpt@reports.example.net"  # the rua every published record lists first
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n"


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from world(tmp_path_factory.mktemp("world"))


def check_settings(w: World, root: Path, **more: Any) -> dict[str, Any]:
    return {"policy_dir": str(root / "policies"), "check_nameserver": w.dns,
            "check_ca_bundle": str(w.ca_bundle), "check_https_port": w.https_port,
            "check_smtp_port": w.smtp_port, "check_timeout": 5,
            "report_addresses": [REPORTS], "public_host": "reports.example.net",
            "check_interval_hours": 24, **more}


def settings_of(w: World, root: Path, **more: Any) -> Settings:
    return load_settings(None, environ={}, db=root / "tlswatch.duckdb",
                         **check_settings(w, root, **more))


def alerts(db: Path) -> list[tuple[str, str, str]]:
    with Store.open(db, read_only=True) as store:
        return [(r["policy_domain"], r["kind"], r["message"]) for r in store.rows(
            "SELECT policy_domain, kind, message FROM alerts WHERE kind LIKE 'check_%' "
            "ORDER BY alert_pk")]


def test_serve_checks_each_domain_daily_and_alerts_once(w: World, tmp_path: Path,
                                                        webhook: Hook) -> None:  # noqa: F811
    good = publish(w, "mon-good", mx=["mx1.good.example", "mx2.good.example"])
    soon = publish(w, "mon-soon", mx=["mx.soon.example"],
                   policy=POLICY.format(mx="mx.soon.example").encode())
    error = publish(w, "mon-error", mx=["mx.plain.example"],
                    policy=POLICY.format(mx="mx.plain.example").encode())
    rua = publish(w, "mon-rua", mx=["mx1.good.example", "mx2.good.example"],
                  tlsrpt=[f"v=TLSRPTv1; rua=mailto:tls@elsewhere.example,mailto:{REPORTS}"])
    server = Serve(tmp_path, smtp="", webhook_url=webhook.url, delivery_interval=0.1,
                   domains=[good, soon, error], **check_settings(w, tmp_path))
    settings = load_settings(server.config, environ={})
    # Hosted here: the policy changed after its id was published (DNS still has the old id).
    first = init_policy(settings, "mon-hosted.example", mx=["mx1.good.example"],
                        mode="testing", max_age=86400)
    init_policy(settings, "mon-hosted.example", mx=["mx1.good.example", "mx2.good.example"],
                mode="testing", max_age=86400)
    hosted = publish(w, "mon-hosted", mx=["mx1.good.example", "mx2.good.example"],
                     sts=[f"v=STSv1; id={first.id};"])
    # mon-rua is known only from its reports.
    Cli(tmp_path / "tlswatch.duckdb")("ingest", str(write_json(tmp_path / "r.json", make_report(
        rid="rua-1", day=(datetime.now(UTC).date() - timedelta(days=1)).isoformat(),
        policies=[policy(rua, 10, 0)]))))
    with server:
        deadline = time.monotonic() + 120
        while server.query("SELECT count(*) FROM check_runs")[0][0] < 5 or \
                len(webhook.delivered) < 1 or \
                server.query("SELECT count(*) FROM outbox WHERE status <> 'delivered'")[0][0]:
            assert time.monotonic() < deadline, "".join(server.output)
            time.sleep(0.05)
        page = httpx.get(f"{server.http_url}/domains/{rua}")
        history = httpx.get(f"{server.http_url}/domains/{rua}/checks")
        no_reports = httpx.get(f"{server.http_url}/domains/{hosted}")
        unknown = httpx.get(f"{server.http_url}/domains/never.example")
        assert server.stop() == 0
    assert f"INFO tlswatch.mtasts.monitor: checked {good}: ok, 0 new alert(s)\n" in \
        server.output
    raised = alerts(server.db)
    assert sorted((d, k) for d, k, _ in raised) == [
        (error, "check_new_error"), (hosted, "check_sts_id_stale"),
        (rua, "check_tlsrpt_rua"), (soon, "check_cert_expiring")]
    text = {k: m for _, k, m in raised}
    assert "starttls_missing" not in text["check_new_error"]  # the message, not the code
    assert "mx.plain.example does not offer STARTTLS" in text["check_new_error"]
    assert "mx.soon.example" in text["check_cert_expiring"]
    assert "mta-sts.mon-soon.example" in text["check_cert_expiring"]
    assert f"id={first.id}, the id of an earlier policy" in text["check_sts_id_stale"]
    assert "Microsoft sends TLS reports only to the first rua" in text["check_tlsrpt_rua"]
    assert f"rua=mailto:{REPORTS},mailto:tls@elsewhere.example" in text["check_tlsrpt_rua"]
    posted = [a for p in webhook.delivered for a in p["alerts"]]
    assert sorted(a["kind"] for a in posted) == sorted(k for _, k, _ in raised)
    # The domain page says when it was last checked and links to the history.
    assert page.status_code == 200 and "Last checked" in page.text
    assert "tlsrpt_rua_not_first" in page.text and f"/domains/{rua}/checks" in page.text
    assert history.status_code == 200 and "tlsrpt_rua_not_first" in history.text
    # A domain without reports (hosted here, say) still shows its last check.
    assert no_reports.status_code == 200 and f"No reports for {hosted}" in no_reports.text
    assert "Last checked" in no_reports.text and "mta_sts_id_stale" in no_reports.text
    assert unknown.status_code == 404

    # The next day's run (due again 24 h later) finds the same conditions: no alert.
    assert due(settings, datetime.now(UTC) + timedelta(hours=23)) == []
    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    assert due(settings, later) == sorted([good, soon, error, rua, hosted])
    again = run_checks(settings, later)
    assert [(o.domain, o.alerts) for o in again] == [(d, []) for d in sorted(
        [good, soon, error, rua, hosted])]
    assert alerts(server.db) == raised


def test_a_policy_changed_under_the_same_id_alerts_once(w: World, tmp_path: Path) -> None:
    domain = publish(w, "mon-change", mx=["mx1.good.example", "mx2.good.example"],
                     sts=["v=STSv1; id=20261101;"])
    settings = settings_of(w, tmp_path)
    assert due(settings, datetime.now(UTC)) == []  # not hosted, not configured, no reports
    assert check_domain(settings, domain, record=True).alerts == []
    changed = POLICY.format(mx="mx1.good.example\r\nmx: mx2.good.example").replace(
        "enforce", "testing")
    w.policies.answers[f"mta-sts.{domain}"] = (200, {}, changed.encode())
    stale = check_domain(settings, domain, record=True)
    assert [a.kind for a in stale.alerts] == ["check_sts_id_stale"]
    assert "still publishes id=20261101" in stale.alerts[0].message
    assert check_domain(settings, domain, record=True).alerts == []  # still stale: no repeat
    w.zone.records[(f"_mta-sts.{domain}", "TXT")] = ["v=STSv1; id=20261128;"]
    fixed = check_domain(settings, domain, record=True)
    assert fixed.alerts == [] and fixed.result == "ok"
    # A new error later on is news again.
    w.zone.records[(domain, "MX")] = [("mx1.good.example", 10), ("mx.plain.example", 20)]
    broken = check_domain(settings, domain, record=True)
    assert [a.kind for a in broken.alerts] == ["check_new_error"]
    assert "mx.plain.example is not covered" in broken.alerts[0].message
    assert check_domain(settings, domain, record=True).alerts == []


def test_cert_days_setting_and_the_checks_command(w: World, tmp_path: Path) -> None:
    domain = publish(w, "mon-cli", mx=["mx.soon.example"],
                     policy=POLICY.format(mx="mx.soon.example").encode())
    config = tmp_path / "tlswatch.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in
                              check_settings(w, tmp_path, check_cert_days=5).items()))
    cli = Cli(tmp_path / "tlswatch.duckdb")
    cli("--config", str(config), "check", domain, "--record", "--format", "json")
    cli("--config", str(config), "check", domain, "--record", "--format", "json")
    assert alerts(cli.db) == []  # 10 days left is not within 5
    runs = cli.json("--config", str(config), "checks", domain)
    assert [r["domain"] for r in runs["runs"]] == [domain, domain]
    assert runs["runs"][0]["new"] == [] and runs["runs"][1]["new"] is None
    assert "warning mx_cert_expiring (mx.soon.example)" in runs["runs"][0]["problems"]
    table = cli("--config", str(config), "checks", "--format", "table").stdout
    assert domain in table and "first check" in table and "no change" in table
    none = cli("--config", str(config), "checks", domain, "--since", "2999-01-01",
               "--format", "table").stdout
    assert none.startswith(f"No checks recorded for {domain} since 2999-01-01:")
    bad = cli("--config", str(config), "checks", "--since", "yesterday", code=2)
    assert "'yesterday' is not a date" in bad.stderr


def test_a_missing_tlsrpt_record_alerts_once_and_says_what_to_publish(w: World,
                                                                     tmp_path: Path) -> None:
    domain = publish(w, "mon-norua", mx=["mx1.good.example", "mx2.good.example"], tlsrpt=[])
    settings = settings_of(w, tmp_path)
    first = check_domain(settings, domain, record=True)
    assert [a.kind for a in first.alerts] == ["check_tlsrpt_rua"]
    assert f"no v=TLSRPTv1 TXT record at _smtp._tls.{domain}" in first.alerts[0].message
    assert f"Fix: publish _smtp._tls.{domain} TXT \"v=TLSRPTv1; rua=mailto:{REPORTS}\"" in \
        first.alerts[0].message
    assert check_domain(settings, domain, record=True).alerts == []
    # Without public_host or report_addresses the check cannot tell whose rua comes first.
    w.zone.add(f"_smtp._tls.{domain}", "TXT", "v=TLSRPTv1; rua=mailto:tls@elsewhere.example")
    plain = check_domain(settings, domain, record=False)  # 'tlswatch check' says it too
    assert "tlsrpt_rua_not_first" in [f.code for f in plain.findings]
    unknown = check_domain(settings.replace(public_host="", report_addresses=()), domain,
                           record=True)
    assert unknown.alerts == [] and unknown.result == "ok"
    assert [f.code for f in unknown.findings if f.code.startswith("tlsrpt_rua")] == [
        "tlsrpt_rua_unknown"]


def _tarpit(address: str, port: int, stop: threading.Event) -> socket.socket:
    """An MX that never finishes its greeting: a '220-' line every 0.2 s, forever."""
    listener = socket.create_server((address, port))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"220-still greeting you\r\n")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_a_tarpit_mx_cannot_hold_the_daily_checks(w: World, tmp_path: Path) -> None:
    # A sender's report names tarpit.example; its MX answers each read within check_timeout
    # but never ends its greeting.  The daily check must give up, not hold the worker (and
    # with it the daily summary, prune and deliveries) for ever.
    w.zone.add("tarpit.example", "MX", ("mx.tarpit.example", 10))
    w.zone.add("mx.tarpit.example", "A", "127.0.0.10")
    stop = threading.Event()
    listener = _tarpit("127.0.0.10", w.smtp_port, stop)
    settings = settings_of(w, tmp_path, check_timeout=1, domains=["tarpit.example"])
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(run_checks(
        settings, datetime.now(UTC))), daemon=True)
    try:
        worker.start()
        worker.join(120)
    finally:
        stop.set()
        listener.close()
    assert done, "the check of a tarpit MX never ended"
    [outcome] = done[0]
    assert outcome.result == "errors"
    assert [f.code for f in outcome.findings if f.code == "check_unfinished"] == \
        ["check_unfinished"]


def test_report_domains_are_checked_only_when_domains_is_set(tmp_path: Path) -> None:
    """With ``domains`` empty anyone's report is stored; its domain must not choose the
    hosts the daily check connects to. Hosted and configured domains are always checked."""
    db = tmp_path / "t.duckdb"
    Cli(db)("ingest", str(write_json(tmp_path / "r.json", make_report(
        rid="stranger-1", day=(datetime.now(UTC).date() - timedelta(days=1)).isoformat(),
        policies=[policy("stranger.example", 10, 0)]))))
    today = datetime.now(UTC)
    open_to_all = load_settings(None, environ={}, db=db, policy_dir=tmp_path / "policies")
    init_policy(open_to_all, "hosted.example", mx=["mx.hosted.example"], mode="testing",
                max_age=86400)
    assert due(open_to_all, today) == ["hosted.example"]
    ours = open_to_all.replace(domains=("stranger.example",))
    assert due(ours, today) == ["hosted.example", "stranger.example"]
