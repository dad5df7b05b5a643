"""Hosting policies with `serve`, the DNS records to publish, status, advice, retirement."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json
from tests.mtasts.fixtures import World, world
from tests.serving import Serve
from tlswatch.mtasts.check import Checker


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def cli(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("TLSWATCH_POLICY_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("TLSWATCH_PUBLIC_HOST", "reports.example.net")
    monkeypatch.setenv("TLSWATCH_REPORT_ADDRESSES", "tlsrpt@reports.example.net")
    return Cli(db)


def test_init_prints_policy_and_records(cli: Cli) -> None:
    out = cli.json("policy", "init", "example.com", "--mx", "mx1.example.com", "--mx",
                   "*.mx.example.com", "--mode", "testing", "--max-age", "86400")
    assert out["policy"] == ("version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\n"
                             "mx: *.mx.example.com\r\nmax_age: 86400\r\n")
    assert out["records"] == [
        {"name": "_mta-sts.example.com", "type": "TXT", "value": f"v=STSv1; id={out['id']};"},
        {"name": "mta-sts.example.com", "type": "CNAME", "value": "reports.example.net."},
        {"name": "_smtp._tls.example.com", "type": "TXT",
         "value": "v=TLSRPTv1; rua=mailto:tlsrpt@reports.example.net,"
                  "https://reports.example.net/v1/reports/example.com"}]
    again = cli.json("policy", "init", "example.com", "--mx", "mx1.example.com", "--mx",
                     "*.mx.example.com", "--mode", "testing", "--max-age", "86400")
    refused = cli("policy", "init", "example.com", "--mx", "mx1.example.com", "--mode",
                  "enforce", code=1)
    assert "refused: a policy moves to enforce with 'tlswatch policy enforce example.com'" \
        in refused.stderr
    changed = cli.json("policy", "init", "example.com", "--mx", "mx1.example.com",
                       "--mode", "enforce", "--max-age", "86400", "--force")
    history = cli.json("policy", "history", "example.com")["changes"]
    assert (history[-1]["forced"], history[-1]["new_mode"]) == (True, "enforce")
    assert cli("policy", "history", "nosuch.example", code=1).stderr.startswith(
        "tlswatch: policy history nosuch.example: no hosted policy")
    assert again["id"] == out["id"] and changed["id"] != out["id"]
    bad = cli("policy", "init", "example.com", "--mx", "not a host", code=1)
    assert "not a host name" in bad.stderr


def test_published_policy_passes_check(w: World, tmp_path: Path, cli: Cli) -> None:
    cert = w.ca.issue_cert("mta-sts.hosted.example")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "host.pem"))
    out = cli.json("policy", "init", "hosted.example", "--mx", "mx1.good.example",
                   "--mode", "enforce", "--max-age", "604800", "--force")
    (tmp_path / "srv").mkdir()
    server = Serve(tmp_path / "srv", smtp="", policy_dir=str(tmp_path / "policies"),
                   tls_cert=str(tmp_path / "host.pem"), tls_key=str(tmp_path / "host.pem"))
    with server:
        port = int(str(server.http_url).rsplit(":", 1)[1])
        for record in out["records"]:  # published as printed (the CNAME as the A it names)
            if record["type"] == "TXT":
                w.zone.add(record["name"], "TXT", record["value"])
        w.zone.add("mta-sts.hosted.example", "A", "127.0.0.1")
        w.zone.add("hosted.example", "MX", ("mx1.good.example", 10))
        checker = Checker(nameserver=w.dns, ca_bundle=str(w.ca_bundle), https_port=port,
                          smtp_port=w.smtp_port, timeout=5)
        findings = checker.check("hosted.example")
        assert [f for f in findings if f.severity != "info"] == []
        trust = ssl.create_default_context(cafile=str(w.ca_bundle))
        client = httpx.Client(verify=trust)
        url = f"{server.http_url}/.well-known/mta-sts.txt"
        sni = {"sni_hostname": "mta-sts.hosted.example"}
        served = client.get(url, headers={"Host": "mta-sts.hosted.example"}, extensions=sni)
        assert served.status_code == 200
        assert served.headers["content-type"].startswith("text/plain")
        assert served.content == out["policy"].encode()
        unknown = client.get(url, headers={"Host": "mta-sts.other.example"}, extensions=sni)
        client.close()
        assert unknown.status_code == 404


def test_status_finds_stale_id_and_uncovered_mx(w: World, cli: Cli) -> None:
    first = cli.json("policy", "init", "status.example", "--mx", "mx1.good.example")
    w.zone.add("_mta-sts.status.example", "TXT", f"v=STSv1; id={first['id']};")
    w.zone.add("status.example", "MX", ("mx1.good.example", 10), ("mx2.good.example", 20))
    rows = cli.json("policy", "status", "status.example", "--nameserver", w.dns, code=1)
    assert [r["code"] for r in rows] == ["mx_not_covered"]
    cli.json("policy", "init", "status.example", "--mx", "mx1.good.example", "--mx",
             "mx2.good.example")
    rows = cli.json("policy", "status", "status.example", "--nameserver", w.dns, code=1)
    assert [r["code"] for r in rows] == ["stale_id"]
    assert "update _mta-sts.status.example" in rows[0]["fix"]


def test_advise_from_reports(cli: Cli, tmp_path: Path) -> None:
    files = []
    today = datetime.now(UTC).date()
    for i, org in enumerate(["Google Inc.", "Microsoft Corporation"]):
        for back in range(1, 8):
            day = today - timedelta(days=back)
            doc = make_report(org=org, rid=f"{org}-{day}", day=day.isoformat(),
                              policies=[policy("clean.example", 100, 0, []),
                                        policy("broken.example", 100, 3 if i == 0 else 0,
                                               [detail("certificate-expired", 3,
                                                       mx="mx.broken.example")] if i == 0
                                               else [])])
            files.append(str(write_json(tmp_path / f"{i}-{day}.json", doc)))
    cli.json("ingest", *files)
    cli.json("policy", "init", "clean.example", "--mx", "mx.clean.example")
    clean = cli.json("policy", "advise", "clean.example")
    assert clean["until"] == today.isoformat()
    assert clean["enforce"] is True and clean["advice"].startswith("move to enforce")
    broken = cli.json("policy", "advise", "broken.example")
    assert broken["enforce"] is False and broken["advice"].startswith("stay in testing")
    (blocker,) = broken["blockers"]
    assert (blocker["result_type"], blocker["receiving_mx_hostname"], blocker["reporters"]) \
        == ("certificate-expired", "mx.broken.example", ["Google Inc."])


def test_advise_reads_the_days_up_to_today_not_to_the_last_report(cli: Cli,
                                                                   tmp_path: Path) -> None:
    # Clean reports from a month ago say nothing about today's senders.
    old = (datetime.now(UTC).date() - timedelta(days=40)).isoformat()
    files = [str(write_json(tmp_path / f"{org}.json", make_report(
        org=org, rid=org, day=old, policies=[policy("quiet.example", 100, 0, [])])))
        for org in ("Google Inc.", "Microsoft Corporation")]
    cli.json("ingest", *files)
    advice = cli.json("policy", "advise", "quiet.example")
    assert advice["enforce"] is False and advice["reporters"] == []
    assert advice["advice"].startswith("wait: only 0 reporting organisation(s)")


def test_retire_serves_mode_none_with_a_new_id(cli: Cli) -> None:
    first = cli.json("policy", "init", "bye.example", "--mx", "mx.bye.example",
                     "--max-age", "86400")
    retired = json.loads(cli("policy", "retire", "bye.example", "--format", "json").stdout)
    assert retired["id"] != first["id"] and "mode: none" in retired["policy"]
    assert "Senders may keep the old policy until" in retired["note"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "evil/../../x", "a..b", "evil-.example",
                                  "evil.example/x", "%2e%2e%2fevil"])
@pytest.mark.parametrize("command", ["init", "status", "retire", "advise"])
def test_policy_commands_refuse_names_that_are_not_dns_names(cli: Cli, tmp_path: Path,
                                                             command: str, name: str) -> None:
    before = _tree(tmp_path)
    extra = ["--mx", "mx.example.com"] if command == "init" else []
    refused = cli("policy", command, name, *extra, code=2)
    assert "not a DNS host name" in refused.stderr and "DOMAIN" in refused.stderr
    assert _tree(tmp_path) == before  # nothing written, inside policy_dir or outside it


def test_traversal_hosts_get_404_and_nothing_outside_policy_dir(cli: Cli, tmp_path: Path
                                                                ) -> None:
    """A Host header is a stranger's text: it must never pick a file outside policy_dir."""
    cli.json("policy", "init", "hosted.example", "--mx", "mx.hosted.example")
    outside = tmp_path / "outside"
    outside.mkdir()
    bait = json.dumps({"domain": "bait", "mode": "enforce", "mx": ["bait.example"],
                       "max_age": 1})
    (outside / "x.json").write_text(bait)
    (tmp_path / "srv").mkdir()
    before = _tree(tmp_path / "outside")
    hosts = [f"mta-sts.{outside}/x", "mta-sts.../outside/x", "mta-sts../../outside/x",
             "mta-sts.%2e%2e%2foutside%2fx", "mta-sts.%2E%2E/outside/x",
             "mta-sts.hosted.example/../../outside/x", "mta-sts.\\..\\outside\\x",
             "mta-sts.unknown.example", "mta-sts.", "example.com"]
    with Serve(tmp_path / "srv", smtp="", policy_dir=str(tmp_path / "policies")) as server, \
            httpx.Client(base_url=server.http_url) as client:
        good = client.get("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.hosted.example"})
        assert good.status_code == 200 and "mx: mx.hosted.example" in good.text
        upper = client.get("/.well-known/mta-sts.txt",
                           headers={"Host": "MTA-STS.Hosted.Example.:443"})
        assert upper.status_code == 200
        for host in hosts:
            reply = client.get("/.well-known/mta-sts.txt", headers={"Host": host})
            assert reply.status_code == 404, host
            assert "bait" not in reply.text, host
    assert _tree(tmp_path / "outside") == before
    assert (outside / "x.json").read_text() == bait


def test_the_store_lists_its_domains_before_building_a_path(tmp_path: Path) -> None:
    from tlswatch.mtasts.hosting import PolicyStore

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "not a name.json").write_text("{}")
    (tmp_path / "x.json").write_text("{}")
    store = PolicyStore(tmp_path / "policies")
    assert store.domains() == frozenset()
    for name in ("../x", str(tmp_path / "x"), "not a name"):
        assert store.hosted(name) is None
