"""Policy fetch telemetry and onboarding: a real 'serve' hosting a policy, real HTTP clients
fetching it from different loopback addresses, a loopback DNS zone for the records and the
reverse names, and the domain page that puts the fetches beside the sts-* reports."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from dnslib import CNAME, PTR, QTYPE, RR  # type: ignore[import-untyped]
from dnslib.server import DNSLogger, DNSServer  # type: ignore[import-untyped]

from tests.conftest import Cli, detail, make_report, policy, write_json
from tests.mtasts.fixtures import Zone
from tests.serving import CLI, Serve
from tlswatch.analytics.senders import SenderMap
from tlswatch.config import Settings
from tlswatch.mtasts.hosting import init_policy

DOMAIN = "fetch.example"
HERE = "deploy.test"


class NamedZone(Zone):
    """The fixtures' zone, with CNAME and PTR answers too."""

    def resolve(self, request: Any, handler: Any) -> Any:
        kind = QTYPE[request.q.qtype]
        if kind not in ("CNAME", "PTR"):
            return super().resolve(request, handler)
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        for value in self.records.get((name, kind), []):
            rdata = CNAME(value) if kind == "CNAME" else PTR(value)
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=60))
        if not reply.rr and not any(n == name for n, _ in self.records):
            reply.header.rcode = 3
        return reply


def _hosting(tmp_path: Path) -> Settings:
    """Settings for the hosted policies, with a store of their own in the test's folder
    (the default store is a file in the working directory)."""
    return Settings(policy_dir=tmp_path / "policies", db=tmp_path / "policies.duckdb")


@pytest.fixture(scope="module")
def zone() -> Iterator[tuple[NamedZone, str]]:
    records = NamedZone()
    server = DNSServer(records, port=0, address="127.0.0.1",
                       logger=DNSLogger(logf=lambda _: None))
    server.start_thread()
    try:
        yield records, f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()


def fetch(url: str, host: str, *, source: str, headers: dict[str, str] | None = None
          ) -> httpx.Response:
    """GET the policy as a sender at ``source`` (any 127/8 address is this machine)."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.get(f"{url}/.well-known/mta-sts.txt",
                          headers={"Host": host, **(headers or {})})


def wait_rows(server: Serve, count: int) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + 60
    while True:
        rows = server.query("SELECT domain, client_ip, policy_id, status, node, fetched_at "
                            "FROM policy_fetches ORDER BY client_ip, domain")
        if len(rows) >= count:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(rows)} fetch(es) stored, {count} expected:\n"
                                 + "".join(server.output[-30:]))
        time.sleep(0.1)


def test_fetches_are_recorded_and_told_beside_the_reports(
        tmp_path: Path, db: Path | str, zone: tuple[NamedZone, str]) -> None:
    records, nameserver = zone
    today = datetime.now(UTC).date()
    # Google's fetching address is known by its reverse name (confirmed forward),
    # Microsoft's by the operator's range; the proxy forwards for a third client.
    records.add("2.0.0.127.in-addr.arpa", "PTR", "mail-x.google.com")
    records.add("mail-x.google.com", "A", "127.0.0.2")
    hosted = init_policy(_hosting(tmp_path), DOMAIN,
                         mx=[f"mx.{DOMAIN}"], mode="testing", max_age=86400)
    (tmp_path / "srv").mkdir()
    server = Serve(tmp_path / "srv", db=db, smtp="", policy_dir=str(tmp_path / "policies"),
                   sender_ranges='{"Microsoft": ["127.0.0.3/32"]}',
                   check_nameserver=nameserver, trusted_proxies=["127.0.0.5/32"],
                   web_token="secret", node_name="node-a", policy_fetch_flush=0.1,
                   public_host=HERE)
    reports = [make_report(org="Microsoft Corporation", rid="ms-1", day=today.isoformat(),
                           policies=[policy(DOMAIN, 10, 6,
                                            [detail("sts-policy-fetch-error", 6)])]),
               make_report(org="Google LLC", rid="g-1", day=today.isoformat(),
                           policies=[policy(DOMAIN, 10, 2, [detail("sts-webpki-invalid", 2)])])]
    files = [str(write_json(tmp_path / f"r{i}.json", r)) for i, r in enumerate(reports)]
    subprocess.run([*CLI, "--db", str(db), "ingest", *files], check=True, capture_output=True)
    with server:
        url = server.http_url
        assert url is not None
        google = fetch(url, f"mta-sts.{DOMAIN}", source="127.0.0.2")
        assert google.status_code == 200 and google.text == hosted.text
        assert fetch(url, "mta-sts.nothing.example", source="127.0.0.4").status_code == 404
        proxied = fetch(url, f"mta-sts.{DOMAIN}:443", source="127.0.0.5",
                        headers={"X-Forwarded-For": "198.51.100.7"})
        assert proxied.status_code == 200
        rows = wait_rows(server, 3)
        assert [r[:5] for r in rows] == [
            (DOMAIN, "127.0.0.2", hosted.id, 200, "node-a"),
            ("nothing.example", "127.0.0.4", None, 404, "node-a"),
            (DOMAIN, "198.51.100.7", hosted.id, 200, "node-a")]
        assert all(r[5].date() == today for r in rows)
        auth = {"Authorization": "Bearer secret"}
        page = httpx.get(f"{url}/domains/{DOMAIN}?format=json", headers=auth).json()
        html = httpx.get(f"{url}/domains/{DOMAIN}", headers=auth).text
    day = f"{today:%m-%d}"
    findings = page["policy_fetches"]["findings"]
    assert findings == [
        f"Google reported 2 sts-webpki-invalid on {day}, yet this host served 1 fetch(es) "
        f"(200 x1) to Google's addresses that day (id {hosted.id}): the failing fetches came "
        "from other addresses, at another time, or failed after the answer (a timeout, a "
        "proxy in front)",
        f"Microsoft reported 6 sts-policy-fetch-error on {day}; this host served no fetch to "
        "Microsoft's addresses that day: look at DNS, a CDN or a firewall in front"]
    assert "this host served no fetch to Microsoft&#39;s addresses that day" in html
    assert {(d["sender"], d["fetches"]) for d in page["policy_fetches"]["by_day"]} == {
        ("Google", 1), ("other", 1)}
    steps = {s["step"]: s for s in page["onboarding"]["steps"]}
    assert steps["first policy fetch"]["done"] and steps["first report received"]["done"]
    assert [s["sender"] for s in page["onboarding"]["senders"] if s["reported"]] == [
        "Google", "Microsoft"]
    assert 'id="onboarding"' in html


def test_served_id_against_dns(tmp_path: Path, db: Path | str) -> None:
    """A sender fetched, reported sts-policy-invalid, and the stored check saw another id
    in DNS: the page says which id was served and which DNS names."""
    today = datetime.now(UTC).date()
    hosted = init_policy(_hosting(tmp_path), DOMAIN,
                         mx=[f"mx.{DOMAIN}"], mode="testing", max_age=86400)
    (tmp_path / "srv").mkdir()
    server = Serve(tmp_path / "srv", db=db, smtp="", policy_dir=str(tmp_path / "policies"),
                   sender_ranges='{"Yahoo": ["127.0.0.8/32"]}', sender_ptr=False,
                   policy_fetch_flush=0.1)
    report = make_report(org="Yahoo Inc.", rid="y-1", day=today.isoformat(), policies=[
        policy(DOMAIN, 3, 1, [detail("sts-policy-invalid", 1)])])
    write_json(tmp_path / "y.json", report)
    subprocess.run([*CLI, "--db", str(db), "ingest", str(tmp_path / "y.json")], check=True,
                   capture_output=True)
    _store_check(db, tmp_path, sts_id="old1")
    with server:
        url = server.http_url
        assert url is not None
        assert fetch(url, f"mta-sts.{DOMAIN}", source="127.0.0.8").status_code == 200
        wait_rows(server, 1)
        page = httpx.get(f"{url}/domains/{DOMAIN}?format=json").json()
    [finding] = page["policy_fetches"]["findings"]
    assert finding.startswith(f"Yahoo reported 1 sts-policy-invalid on {today:%m-%d}, yet "
                              f"this host served 1 fetch(es) (200 x1) to Yahoo's addresses "
                              f"that day (id {hosted.id}) while DNS says id=old1 (checked ")
    assert finding.endswith(": publish the id served, or the senders keep an older policy")
    # The page's onboarding steps take the records from that stored check.
    steps = {s["step"]: (s["done"], s["detail"]) for s in page["onboarding"]["steps"]}
    done, said = steps[f"_mta-sts.{DOMAIN} TXT"]
    assert not done and said.startswith(f"publishes id=old1; the policy served here has id="
                                        f"{hosted.id} (the check of {today}")


def _store_check(db: Path | str, tmp_path: Path, *, sts_id: str) -> None:
    """One stored check run of DOMAIN that saw ``sts_id`` (as 'serve' records them)."""
    from tlswatch.store import Store
    from tlswatch.store.checks import insert_run

    with Store.open(db) as store, store.transaction():
        insert_run(store, {"domain": DOMAIN, "checked_at": datetime.now(UTC).replace(
            tzinfo=None), "result": "error", "errors": 1, "warnings": 0, "sts_id": sts_id,
            "policy": None, "policy_sha256": None, "hosted_id": None, "rua": [], "mx": [],
            "certificates": [], "alerts": []}, [])


def test_domain_status(tmp_path: Path, db: Path | str, zone: tuple[NamedZone, str]) -> None:
    records, nameserver = zone
    name = "onboard.example"
    config = tmp_path / "tlswatch.toml"
    config.write_text(f'policy_dir = "{tmp_path / "policies"}"\npublic_host = "{HERE}"\n')
    cli = Cli(db)  # type: ignore[arg-type]
    hosted = init_policy(_hosting(tmp_path), name,
                         mx=[f"mx.{name}"], mode="testing", max_age=86400)
    records.add(f"mta-sts.{name}", "CNAME", f"{HERE}.")
    records.add(f"_mta-sts.{name}", "TXT", f"v=STSv1; id={hosted.id};")
    records.add(f"_smtp._tls.{name}", "TXT",
                f"v=TLSRPTv1; rua=https://{HERE}/v1/reports/{name},mailto:x@elsewhere.example")
    report = make_report(org="Google LLC", rid="g-9", policies=[policy(name, 5, 0)])
    cli("ingest", str(write_json(tmp_path / "g.json", report)), code=None)
    result = cli.json("--config", str(config), "domain", "status", name, "--nameserver",
                      nameserver, code=1)  # no fetch yet
    steps = {s["step"]: (s["done"], s["detail"]) for s in result["steps"]}
    assert steps[f"mta-sts.{name} points here"] == (True, f"CNAME {HERE} (DNS now)")
    assert steps[f"_mta-sts.{name} TXT"] == (True, f"id={hosted.id} (DNS now)")
    assert steps[f"_smtp._tls.{name} TXT names this deployment first"][0] is True
    assert steps["first report received"][0] is True
    assert steps["first policy fetch"] == (False, "no sender has fetched the policy here yet")
    assert steps["certificate issued"][0] is None  # no ACME here: not a step to wait for
    assert [s["sender"] for s in result["senders"] if s["reported"]] == ["Google"]
    text = cli("--config", str(config), "domain", "status", name, "--nameserver", nameserver,
               "--format", "table", code=1).stdout
    assert "Big senders reporting: Google (since 2026-11-25); not yet: Microsoft" in text


def test_domain_status_says_what_is_wrong(tmp_path: Path, db: Path | str,
                                          zone: tuple[NamedZone, str]) -> None:
    records, nameserver = zone
    name = "wrong.example"
    config = tmp_path / "tlswatch.toml"
    config.write_text(f'policy_dir = "{tmp_path / "policies"}"\npublic_host = "{HERE}"\n')
    hosted = init_policy(_hosting(tmp_path), name,
                         mx=[f"mx.{name}"], mode="testing", max_age=86400)
    records.add(f"mta-sts.{name}", "A", "192.0.2.9")
    records.add(HERE, "A", "127.0.0.1")
    records.add(f"_mta-sts.{name}", "TXT", "v=STSv1; id=stale1;")
    records.add(f"_smtp._tls.{name}", "TXT", "v=TLSRPTv1; rua=mailto:tlsrpt@other.example")
    cli = Cli(db)  # type: ignore[arg-type]
    cli("ingest", str(write_json(tmp_path / "x.json", make_report())), code=None)
    result = cli.json("--config", str(config), "domain", "status", name, "--nameserver",
                      nameserver, code=1)
    steps = {s["step"]: (s["done"], s["detail"]) for s in result["steps"]}
    assert steps[f"mta-sts.{name} points here"] == (
        False, f"A/AAAA 192.0.2.9, not {HERE}'s; publish mta-sts.{name} CNAME {HERE}. "
               "(DNS now)")
    assert steps[f"_mta-sts.{name} TXT"] == (
        False, f"publishes id=stale1; the policy served here has id={hosted.id} (DNS now)")
    assert steps[f"_smtp._tls.{name} TXT names this deployment first"] == (
        False, "rua=mailto:tlsrpt@other.example (DNS now)")
    assert steps["first report received"] == (False, "no report yet")


def test_sender_ranges_and_confirmed_reverse_names(zone: tuple[NamedZone, str]) -> None:
    records, nameserver = zone
    records.add("6.0.0.127.in-addr.arpa", "PTR", "claims.google.com")  # no forward record
    records.add("7.0.0.127.in-addr.arpa", "PTR", "smtp.mail.yahoo.com")
    records.add("smtp.mail.yahoo.com", "A", "127.0.0.7")
    senders = SenderMap(Settings(check_nameserver=nameserver,
                                 sender_ranges={"Example ISP": ["17.1.0.0/16"]}))
    assert senders.classify(["17.2.3.4", "17.1.2.3", "40.107.1.1", "127.0.0.6",
                             "127.0.0.7", "2a00:1450:4001::5"]) == {
        "17.2.3.4": "Apple iCloud", "17.1.2.3": "Example ISP", "40.107.1.1": "Microsoft",
        "127.0.0.6": None, "127.0.0.7": "Yahoo", "2a00:1450:4001::5": "Google"}


def test_a_wrong_sender_range_is_refused() -> None:
    from tlswatch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sender_ranges: Google: '10\.0\.0\.300/8' is not"):
        Settings(sender_ranges={"Google": ("10.0.0.300/8",)})
