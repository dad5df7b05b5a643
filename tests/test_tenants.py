"""Provider mode on the command line: tenants, domains, users, tokens, --tenant scoping."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json
from tlswatch.store import Store
from tlswatch.tenants.accounts import password_login, token_login

YESTERDAY = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def two_tenants(cli: Cli, tmp_path: Path) -> dict[str, int]:
    """Tenants a (a.example) and b (b.example), one report each (b's with failures);
    the stored ids by domain."""
    for tenant in ("a", "b"):
        cli("tenant", "add", tenant)
        cli("domain", "add", f"{tenant}.example", "--tenant", tenant)
    for name, failed in (("a", 0), ("b", 40)):
        doc = make_report(rid=f"rid-{name}", day=YESTERDAY, policies=[policy(
            f"{name}.example", 60, failed, [detail("certificate-expired", failed)] if failed
            else None)])
        cli("ingest", str(write_json(tmp_path / f"{name}.json", doc)))
    return {r["policy_domains"][0]: r["id"] for r in cli.json("reports")}


def test_tenant_sees_only_its_domains_in_every_reading_command(cli: Cli, tmp_path: Path
                                                               ) -> None:
    ids = two_tenants(cli, tmp_path)
    assert set(ids) == {"a.example", "b.example"}  # no --tenant: everything, as before
    cli("alerts", "--check")
    assert {r["policy_domain"] for r in cli.json("alerts")} >= {"b.example"}
    for tenant, other in (("a", "b"), ("b", "a")):
        assert [d["policy_domain"] for d in cli.json("summary", "--tenant", tenant)[
            "domains"]] == [f"{tenant}.example"]
        assert [r["policy_domains"] for r in cli.json("reports", "--tenant", tenant)] == \
            [[f"{tenant}.example"]]
        assert {r["policy_domain"] for r in cli.json("failures", "--tenant", tenant)} <= \
            {f"{tenant}.example"}
        assert {r["policy_domain"] for r in cli.json("alerts", "--tenant", tenant)} <= \
            {f"{tenant}.example"}
        assert cli.json("report", "show", str(ids[f"{tenant}.example"]), "--tenant",
                        tenant)["report_id"] == f"rid-{tenant}"
        for ident in (str(ids[f"{other}.example"]), f"rid-{other}"):  # as if it did not exist
            missing = cli("report", "show", ident, "--tenant", tenant, code=1)
            assert f"no report with id or report-id {ident!r}" in missing.stderr
        out = tmp_path / f"files-{tenant}"
        cli("export", "daily", "--out", str(out), "--date", YESTERDAY, "--format", "md,json",
            "--tenant", tenant)
        text = "".join(p.read_text() for p in out.iterdir())
        assert f"{tenant}.example" in text and f"{other}.example" not in text
    assert cli.json("failures", "--tenant", "a") == []
    unknown = cli("summary", "--tenant", "nobody", code=1)
    assert "no tenant 'nobody'" in unknown.stderr


def test_provider_mode_quarantines_reports_nobody_owns(cli: Cli, tmp_path: Path) -> None:
    stranger = write_json(tmp_path / "c.json", make_report(rid="c", policies=[
        policy("c.example", 5, 0)]))
    assert cli.json("ingest", str(stranger))["accepted"] == 1  # single tenant: as ever
    cli("tenant", "add", "a")
    cli("domain", "add", "a.example", "--tenant", "a")
    again = write_json(tmp_path / "c2.json", make_report(rid="c2", policies=[
        policy("c.example", 5, 0)]))
    out = cli.json("ingest", str(again), code=1)
    assert [r["reason"] for r in out["rejections"]] == [
        "not one of our domains: c.example (no tenant owns it: 'tlswatch domain add')"]
    owned = write_json(tmp_path / "a.json", make_report(rid="a", policies=[
        policy("a.example", 5, 0)]))
    assert cli.json("ingest", str(owned))["accepted"] == 1
    cli("domain", "remove", "a.example")
    late = write_json(tmp_path / "a2.json", make_report(rid="a2", policies=[
        policy("a.example", 5, 0)]))
    assert cli.json("ingest", str(late), code=1)["rejected"] == 1  # a tenant, no owner


def test_domain_add_prints_the_records_to_publish(cli: Cli, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLSWATCH_PUBLIC_HOST", "tlsrpt.provider.example")
    monkeypatch.setenv("TLSWATCH_POLICY_DIR", str(tmp_path / "policies"))
    cli("tenant", "add", "acme")
    text = cli("domain", "add", "Acme.Example", "--tenant", "acme", "--mx", "mx.acme.example",
               "--format", "table").stdout
    data = cli.json("domain", "list")
    assert [(d["domain"], d["tenant"]) for d in data] == [("acme.example", "acme")]
    lines = text.splitlines()
    assert lines[0] == "acme.example is owned by tenant acme."
    assert lines[3] == "  mta-sts.acme.example.  IN CNAME  tlsrpt.provider.example."
    assert lines[4].startswith('  _mta-sts.acme.example.  IN TXT  "v=STSv1; id=')
    assert lines[5] == ('  _smtp._tls.acme.example.  IN TXT  "v=TLSRPTv1; '
                        'rua=https://tlsrpt.provider.example/v1/reports/acme.example"')
    taken = cli("domain", "add", "acme.example", "--tenant", "acme", code=1)
    assert "acme.example is owned by 'acme' already" in taken.stderr
    cli("tenant", "add", "other")
    moved = cli("domain", "add", "acme.example", "--tenant", "other", code=1)
    assert "owned by tenant 'acme'" in moved.stderr
    busy = cli("tenant", "remove", "acme", code=1)
    assert "still owns acme.example" in busy.stderr


def test_tokens_and_passwords_are_never_stored(cli: Cli, db: Path | str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cli("tenant", "add", "a")
    token = cli("token", "add", "ci", "--tenant", "a", "--role", "viewer").stdout.strip()
    assert token.startswith("tw_") and len(token) > 40
    monkeypatch.setenv("ALICE_PW", "correct horse battery")
    cli("user", "add", "alice", "--tenant", "a", "--role", "admin", "--password-env",
        "ALICE_PW")
    refused = cli("user", "add", "bob", "--tenant", "a", "--role", "owner", "--password-env",
                  "ALICE_PW", code=1)
    assert "role 'owner': must be admin or viewer" in refused.stderr
    asked = cli("user", "add", "carol", "--tenant", "a", "--role", "viewer",
                input=b"carol's passphrase\ncarol's passphrase\n")  # asked twice, not shown
    assert "carol's passphrase" not in asked.stdout
    with Store.open(db) as store:
        assert password_login(store, "carol", "carol's passphrase") is not None
        stored = [str(v) for table in ("api_tokens", "users")
                  for row in store.rows(f"SELECT * FROM {table}") for v in row.values()]
        assert not any(token in v or "correct horse" in v for v in stored)
        assert hashlib.sha256(token.encode()).hexdigest() in stored
        assert any(v.startswith("scrypt$") for v in stored)
        viewer = token_login(store, token)
        assert viewer is not None and (viewer.tenant, viewer.role) == ("a", "viewer")
        assert token_login(store, token[:-1] + "x") is None
        admin = password_login(store, "alice", "correct horse battery")
        assert admin is not None and (admin.tenant, admin.role) == ("a", "admin")
        assert password_login(store, "alice", "wrong horse battery") is None
        assert password_login(store, "nobody", "correct horse battery") is None
    if isinstance(db, Path):
        with Store.open(db) as store:
            store.execute("CHECKPOINT")
        assert token.encode() not in db.read_bytes()
    assert [t["name"] for t in cli.json("token", "list", "--tenant", "a")] == ["ci"]
    cli("token", "revoke", "ci", "--tenant", "a")
    with Store.open(db) as store:
        assert token_login(store, token) is None
    removed = cli("tenant", "remove", "a").stdout
    assert "with 2 user(s) and 0 token(s)" in removed
