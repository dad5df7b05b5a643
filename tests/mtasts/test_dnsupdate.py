"""The policy id without DNS edits: every change of a hosted policy replaces the TXT at
DOMAIN.<zone> on a real BIND 9 by a TSIG-signed dynamic update, only once the new policy is
served; a refused update is recorded and retried by 'serve'; 'policy status' follows the
customer's CNAME to it."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.name
import dns.query
import dns.tsigkeyring
import dns.update
import pytest

from tests.conftest import Cli
from tests.mtasts import bind
from tests.serving import Serve
from tlswatch.config import load_settings
from tlswatch.errors import ConfigError
from tlswatch.mtasts.dnsupdate import delegation_records, publish_due
from tlswatch.mtasts.hosting import HostedPolicy, apply_change, writing
from tlswatch.store import Store

DOMAIN = "customer.example"
TARGET = f"{DOMAIN}.{bind.PROVIDER_ZONE}"
CUSTOMER_ZONE = (f"_mta-sts CNAME {TARGET}.\n@ MX 10 mx1.{DOMAIN}.\n"
                 f"mx1 A 127.0.0.1\n")
UNDELEGATED = ('_mta-sts TXT "v=STSv1; id=byhand1;"\n@ MX 10 mx1.undelegated.example.\n'
               "mx1 A 127.0.0.1\n")
ELSEWHERE = ("_mta-sts CNAME elsewhere.example.other-provider.example.\n"
             "@ MX 10 mx1.elsewhere.example.\nmx1 A 127.0.0.1\n")
WRONG = base64.b64encode(b"not the key of tlswatch-update!!").decode()


@pytest.fixture
def named(tmp_path: Path) -> Iterator[bind.Named]:
    """The provider's zone (with two stale TXT at the customer's name) and two customers'
    zones: one delegates _mta-sts by CNAME, the other publishes a TXT of its own."""
    stale = f'{DOMAIN} TXT "v=STSv1; id=stale1;"\n{DOMAIN} TXT "v=STSv1; id=stale2;"\n'
    with bind.running(tmp_path / "named", {bind.PROVIDER_ZONE: stale,
                                           DOMAIN: CUSTOMER_ZONE,
                                           "undelegated.example": UNDELEGATED,
                                           "elsewhere.example": ELSEWHERE}) as server:
        yield server


@pytest.fixture
def cli(db: Path, tmp_path: Path, named: bind.Named, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name, value in {"POLICY_DIR": str(tmp_path / "policies"),
                        "PUBLIC_HOST": "reports.provider.example",
                        "HTTP": "127.0.0.1:0",  # no 'serve' to ask unless a test starts one
                        "DNS_UPDATE_ZONE": bind.PROVIDER_ZONE,
                        "DNS_UPDATE_SERVER": named.address,
                        "DNS_UPDATE_TSIG_NAME": bind.KEY_NAME,
                        "DNS_UPDATE_TSIG_SECRET_ENV": "TEST_TSIG_SECRET"}.items():
        monkeypatch.setenv(f"TLSWATCH_{name}", value)
    monkeypatch.setenv("TEST_TSIG_SECRET", bind.SECRET)
    return Cli(db)


@contextmanager
def serving(root: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Iterator[Serve]:
    """A real 'serve' with only its own settings (not the CLI's TLSWATCH_* variables)."""
    root.mkdir()
    with monkeypatch.context() as scratch:
        for name in [n for n in os.environ if n.startswith("TLSWATCH_")]:
            scratch.delenv(name)
        server = Serve(root, smtp="", **settings).start()
    try:
        yield server
    finally:
        server.kill()


def row(db: Path | str, domain: str = DOMAIN) -> dict[str, object]:
    with Store.open(db, read_only=True) as store:
        return store.rows("SELECT * FROM dns_updates WHERE domain = ?", [domain])[0]


def test_init_and_retire_publish_each_new_id_once_served(
        cli: Cli, named: bind.Named, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(tmp_path / "srv", monkeypatch, policy_dir=str(tmp_path / "policies")
                 ) as server:
        monkeypatch.setenv("TLSWATCH_HTTP", str(server.http_url).removeprefix("http://"))
        assert named.txt(TARGET) == ["v=STSv1; id=stale1;", "v=STSv1; id=stale2;"]
        first = cli.json("policy", "init", DOMAIN, "--mx", f"mx1.{DOMAIN}")
        assert first["records"][0] == {"name": f"_mta-sts.{DOMAIN}", "type": "CNAME",
                                       "value": f"{TARGET}."}
        assert not any(r["type"] == "TXT" and r["name"].startswith("_mta-sts")
                       for r in first["records"])
        assert first["dns_update"]["status"] == "published"
        assert named.txt(TARGET) == [f"v=STSv1; id={first['id']};"]  # the stale ones gone
        assert named.ask(TARGET, "TXT")[1] == 300
        shown = cli("policy", "init", DOMAIN, "--mx", f"mx1.{DOMAIN}", "--mode", "enforce",
                    "--force", "--format", "table")
        enforce = cli.json("policy", "init", DOMAIN, "--mx", f"mx1.{DOMAIN}", "--mode",
                           "enforce")["id"]
        assert "Publish these DNS records once (this deployment publishes each new id " \
               "itself):" in shown.stdout
        assert f"_mta-sts.{DOMAIN}.  IN CNAME  {TARGET}." in shown.stdout
        assert f'Published "v=STSv1; id={enforce};" at {TARGET}. (TTL 300 s) by DNS ' \
               f"update to {named.address}, once the new policy was in place." in shown.stdout
        assert named.txt(TARGET) == [f"v=STSv1; id={enforce};"]
        retired = cli.json("policy", "retire", DOMAIN)
        assert retired["dns_update"]["status"] == "published"
        assert retired["id"] not in (first["id"], enforce)
        assert named.txt(TARGET) == [f"v=STSv1; id={retired['id']};"]
    assert row(cli.db)["status"] == "published"


def test_an_id_is_not_published_before_serve_answers_its_policy(
        cli: Cli, named: bind.Named, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 'serve' reading another folder: it answers 404.
    with serving(tmp_path / "srv", monkeypatch, policy_dir=str(tmp_path / "elsewhere")
                 ) as server:
        where = str(server.http_url).removeprefix("http://")
        monkeypatch.setenv("TLSWATCH_HTTP", where)
        out = cli("policy", "init", DOMAIN, "--mx", f"mx1.{DOMAIN}", code=1)
    assert out.stderr.startswith("tlswatch: error: The new policy is in place, but its id ")
    assert f"is NOT published at {TARGET}.: 'serve' at {where} answers HTTP 404 for " \
           f"mta-sts.{DOMAIN}, not the new policy" in out.stderr
    assert named.txt(TARGET) == ["v=STSv1; id=stale1;", "v=STSv1; id=stale2;"]
    assert row(cli.db)["status"] == "failed"


def test_a_refused_key_is_recorded_and_tried_again_with_back_off(
        cli: Cli, named: bind.Named, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TSIG_SECRET", WRONG)
    out = cli("policy", "init", DOMAIN, "--mx", f"mx1.{DOMAIN}", code=1)
    assert "the server refused the TSIG signature (BADSIG): the secret in TEST_TSIG_SECRET " \
           "is not the one of key tlswatch-update" in out.stderr
    assert "Nothing is lost: try 1 failed; 'serve' tries again after " in out.stderr
    assert "request has invalid signature: TSIG tlswatch-update" in named.log()
    assert named.txt(TARGET) == ["v=STSv1; id=stale1;", "v=STSv1; id=stale2;"]
    first = row(cli.db)
    assert (first["status"], first["attempts"]) == ("failed", 1)
    assert "BADSIG" in str(first["error"])
    # The worker's task, called as 'serve' calls it: nothing due before the back-off ends,
    # then a second try (refused again) and a doubled back-off.
    settings = load_settings(db=cli.db)
    assert publish_due(settings, datetime.now(UTC)) == []
    later = datetime.now(UTC) + timedelta(minutes=2)
    assert [p.error is not None for p in publish_due(settings, later)] == [True]
    second = row(cli.db)
    assert second["attempts"] == 2
    assert second["next_attempt"] - second["attempted_at"] == timedelta(seconds=120)
    alerts = cli.json("alerts")
    assert [(a["policy_domain"], a["kind"]) for a in alerts] == [(DOMAIN, "dns_update_failing")]
    assert "still not published at " in alerts[0]["message"]
    assert "after 2 tries: " in alerts[0]["message"] and TARGET in alerts[0]["message"]
    # The key is put right; 'policy publish' does not wait for the back-off.
    monkeypatch.setenv("TEST_TSIG_SECRET", bind.SECRET)
    done = cli("policy", "publish", DOMAIN, "--format", "table")
    assert done.stdout.startswith(f'Published "v=STSv1; id={first["policy_id"]};" at ')
    assert named.txt(TARGET) == [f"v=STSv1; id={first['policy_id']};"]
    assert (row(cli.db)["status"], row(cli.db)["attempts"]) == ("published", 3)
    assert publish_due(settings, later + timedelta(hours=2)) == []  # nothing left to do


def test_serve_publishes_what_failed(cli: Cli, named: bind.Named, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TSIG_SECRET", WRONG)
    monkeypatch.setenv("TLSWATCH_DNS_UPDATE_RETRY", "0")
    policy_id = cli.json("policy", "init", DOMAIN, "--mx", f"mx1.{DOMAIN}", code=1)["id"]
    assert row(cli.db)["status"] == "failed"
    monkeypatch.setenv("TEST_TSIG_SECRET", bind.SECRET)  # the key put right
    with serving(tmp_path / "srv", monkeypatch, db=cli.db,
                 policy_dir=str(tmp_path / "policies"), dns_update_retry=0,
                 dns_update_zone=bind.PROVIDER_ZONE, dns_update_server=named.address,
                 dns_update_tsig_name=bind.KEY_NAME,
                 dns_update_tsig_secret_env="TEST_TSIG_SECRET") as server:
        deadline = time.monotonic() + 60
        ask = f"SELECT status, attempts FROM dns_updates WHERE domain = '{DOMAIN}'"
        while server.query(ask) != [("published", 2)]:  # the worker's round is recorded
            assert time.monotonic() < deadline, (server.query(ask), "".join(server.output))
            time.sleep(0.1)
    assert named.txt(TARGET) == [f"v=STSv1; id={policy_id};"]


def test_every_change_publishes_once_written(cli: Cli, named: bind.Named, tmp_path: Path) -> None:
    settings = load_settings(db=cli.db)
    policy = HostedPolicy(DOMAIN, "testing", [f"mx1.{DOMAIN}"], 86400)
    with writing(settings) as store:
        apply_change(settings, store, DOMAIN, policy, "test", "first", action="init")
        assert named.txt(TARGET) != [f"v=STSv1; id={policy.id};"]  # not before it is served
    assert named.txt(TARGET) == [f"v=STSv1; id={policy.id};"]
    policy = HostedPolicy(DOMAIN, "enforce", [f"mx1.{DOMAIN}"], 604800)
    with writing(settings) as store:
        apply_change(settings, store, DOMAIN, policy, "test", "second", action="enforce")
    assert named.txt(TARGET) == [f"v=STSv1; id={policy.id};"]
    assert delegation_records(settings, "Other.Example") == [
        {"name": "_mta-sts.other.example", "type": "CNAME",
         "value": f"other.example.{bind.PROVIDER_ZONE}."}]
    assert delegation_records(settings.replace(dns_update_zone=""), DOMAIN) == []
    with pytest.raises(ConfigError) as refused:
        settings.replace(dns_update_server="ns.example")
    assert str(refused.value) == ("setting dns_update_server: HOST:PORT of the server that "
                                  "takes updates for sts.provider.example, got 'ns.example'")
    with pytest.raises(ConfigError, match="setting dns_update_tsig_secret_env: needed with "
                                          "dns_update_zone"):
        settings.replace(dns_update_tsig_secret_env="")


def test_status_follows_the_cname_to_the_published_id(cli: Cli, named: bind.Named) -> None:
    out = cli.json("policy", "init", DOMAIN, "--mx", f"mx1.{DOMAIN}")
    rows = cli.json("policy", "status", DOMAIN, "--nameserver", named.address)
    codes = {r["code"]: r for r in rows}
    assert list(codes) == ["delegated", "in_sync", "senders_see"]
    assert codes["delegated"]["message"] == (
        f"_mta-sts.{DOMAIN} is a CNAME to {TARGET}., whose TXT this deployment updates at "
        f"{named.address}")
    assert f"id={out['id']}" in codes["in_sync"]["message"]
    onboarding = cli("domain", "status", DOMAIN, "--nameserver", named.address, "--format",
                     "json", code=None)
    steps = json.loads(onboarding.stdout)["steps"]
    step = next((s for s in steps if s["step"].startswith(f"_mta-sts.{DOMAIN}")), steps)
    assert isinstance(step, dict), onboarding.stdout + onboarding.stderr
    assert (step["done"], step["detail"]) == (True, f"id={out['id']} (DNS now)"), step
    when = codes["senders_see"]["message"]
    assert "resolvers may answer the previous id for up to 300 s (the TXT's TTL, until " in when
    assert f"a sender that sees id {out['id']} fetches the policy again at once; one that " \
           "sees no new id keeps its cached policy up to its max_age (86400 s)" in when
    # Someone else changes the TXT: the served id and the published one differ.
    keyring = dns.tsigkeyring.from_text({bind.KEY_NAME: bind.SECRET})
    update = dns.update.UpdateMessage(bind.PROVIDER_ZONE, keyring=keyring)
    update.replace(dns.name.from_text(f"{TARGET}."), 300, "TXT", '"v=STSv1; id=other1;"')
    dns.query.tcp(update, "127.0.0.1", port=named.port, timeout=5)
    stale = cli.json("policy", "status", DOMAIN, "--nameserver", named.address, code=1)
    assert [r["code"] for r in stale] == ["delegated", "stale_id"]
    assert stale[1]["message"].startswith("DNS publishes id=other1 but the policy served is")
    # A domain whose _mta-sts is a TXT of its own is told the CNAME to publish.
    cli("policy", "init", "undelegated.example", "--mx", "mx1.undelegated.example", code=0)
    own = cli.json("policy", "status", "undelegated.example", "--nameserver", named.address,
                   code=1)
    assert own[0] == {"severity": "warning", "code": "not_delegated",
                      "message": "_mta-sts.undelegated.example is not delegated: each new id "
                                 "must be published there by hand",
                      "fix": "publish _mta-sts.undelegated.example CNAME "
                             f"undelegated.example.{bind.PROVIDER_ZONE}. (in place of any "
                             "TXT there)"}
    assert own[1]["code"] == "stale_id"
    # One delegated to somebody else's zone is told where it should point.
    cli("policy", "init", "elsewhere.example", "--mx", "mx1.elsewhere.example")
    other = cli.json("policy", "status", "elsewhere.example", "--nameserver", named.address,
                     code=1)
    assert other[0]["severity"] == "error"
    assert other[0]["message"] == ("_mta-sts.elsewhere.example is a CNAME to "
                                   "elsewhere.example.other-provider.example., not to "
                                   f"elsewhere.example.{bind.PROVIDER_ZONE}.")


def test_domain_add_prints_the_delegation_before_any_policy(cli: Cli) -> None:
    cli("tenant", "add", "acme")
    out = cli.json("domain", "add", "New.Example", "--tenant", "acme")
    assert {"name": "_mta-sts.new.example", "type": "CNAME",
            "value": f"new.example.{bind.PROVIDER_ZONE}."} in out["records"]
    assert not any(r["type"] == "TXT" and r["name"] == "_mta-sts.new.example"
                   for r in out["records"])
