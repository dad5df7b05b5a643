"""`tlswatch check` finds each seeded fault on loopback fixtures, and passes a good set-up."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from tests.mtasts.fixtures import World, publish, world
from tlswatch.cli import app
from tlswatch.mtasts.check import Checker


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from world(tmp_path_factory.mktemp("world"))


def check(w: World, domain: str) -> dict[str, list[str]]:
    checker = Checker(nameserver=w.dns, ca_bundle=str(w.ca_bundle), https_port=w.https_port,
                      smtp_port=w.smtp_port, timeout=5)
    out: dict[str, list[str]] = {}
    for finding in checker.check(domain):
        out.setdefault(finding.severity, []).append(finding.code)
    return out


def test_correct_setup_has_no_errors(w: World) -> None:
    domain = publish(w, "good", mx=["mx1.good.example", "mx2.good.example"])
    found = check(w, domain)
    assert "error" not in found and "warning" not in found, found
    assert {"mta_sts_record", "tlsrpt_record", "policy", "mx_tls"} <= set(found["info"])


@pytest.mark.parametrize(("name", "setup", "code"), [
    ("norecord", {"sts": []}, "mta_sts_record_missing"),
    ("twotxt", {"sts": ["v=STSv1; id=one;", "v=STSv1; id=two;"]}, "mta_sts_record_multiple"),
    ("badid", {"sts": ["v=STSv1; id=not-valid_id!;"]}, "mta_sts_id_invalid"),
    ("redirect", {"status": 301, "headers": {"Location": "https://elsewhere.example/"}},
     "policy_redirect"),
    ("ctype", {"headers": {"Content-Type": "text/html"}}, "policy_content_type"),
])
def test_seeded_record_and_policy_faults(w: World, name: str, setup: dict, code: str) -> None:
    domain = publish(w, name, mx=["mx1.good.example", "mx2.good.example"], **setup)
    assert code in check(w, domain).get("error", [])


def test_expired_mx_certificate(w: World) -> None:
    domain = publish(w, "expired", mx=["mx.expired.example"],
                     policy=b"version: STSv1\r\nmode: enforce\r\nmx: mx.expired.example\r\n"
                            b"max_age: 86400\r\n")
    assert check(w, domain)["error"] == ["mx_cert_expired"]


def test_mx_not_covered(w: World) -> None:
    domain = publish(w, "notcovered", mx=["mx1.good.example", "mx2.good.example"],
                     policy=b"version: STSv1\r\nmode: testing\r\nmx: mx1.good.example\r\n"
                            b"max_age: 86400\r\n")
    assert check(w, domain)["error"] == ["mx_not_covered"]


def test_wildcard_covers_one_label_only(w: World) -> None:
    domain = publish(w, "wild", mx=["a.b.wild.example"],
                     policy=b"version: STSv1\r\nmode: enforce\r\nmx: *.wild.example\r\n"
                            b"max_age: 86400\r\n")
    assert check(w, domain)["error"] == ["mx_not_covered"]


def test_certificate_problems_are_told_apart(w: World) -> None:
    for name, host, code in (("wrongname", "mx.wrongname.example", "mx_cert_name_mismatch"),
                             ("selfsigned", "mx.selfsigned.example", "mx_cert_untrusted")):
        domain = publish(w, name, mx=[host], policy=f"version: STSv1\r\nmode: enforce\r\n"
                         f"mx: {host}\r\nmax_age: 86400\r\n".encode())
        assert check(w, domain)["error"] == [code]


def test_certificate_expiring_soon_is_a_warning(w: World) -> None:
    domain = publish(w, "soon", mx=["mx.soon.example"],
                     policy=b"version: STSv1\r\nmode: enforce\r\nmx: mx.soon.example\r\n"
                            b"max_age: 86400\r\n")
    checker = Checker(nameserver=w.dns, ca_bundle=str(w.ca_bundle), https_port=w.https_port,
                      smtp_port=w.smtp_port, timeout=5)
    findings = checker.check(domain)
    assert [f for f in findings if f.severity == "error"] == []
    (soon,) = [f for f in findings if f.code == "mx_cert_expiring"]
    assert soon.severity == "warning" and "expires in 10 days (within 14)" in soon.message


def test_no_starttls_is_an_error_in_enforce_mode(w: World) -> None:
    domain = publish(w, "plain", mx=["mx.plain.example"],
                     policy=b"version: STSv1\r\nmode: enforce\r\nmx: mx.plain.example\r\n"
                            b"max_age: 86400\r\n",
                     tlsrpt=["v=TLSRPTv1; rua=ftp://wrong.example/"])
    found = check(w, domain)
    assert set(found["error"]) == {"starttls_missing", "tlsrpt_rua_invalid"}


def test_cli_json_and_exit_code(w: World) -> None:
    runner = CliRunner()
    args = ["check", "--nameserver", w.dns, "--ca-bundle", str(w.ca_bundle),
            "--https-port", str(w.https_port), "--smtp-port", str(w.smtp_port),
            "--format", "json"]
    good = runner.invoke(app, [*args[:1], "good.example", *args[1:]])
    bad = runner.invoke(app, [*args[:1], "wild.example", *args[1:]])
    assert good.exit_code == 0 and bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert data["domain"] == "wild.example"
    (finding,) = [f for f in data["findings"] if f["severity"] == "error"]
    assert set(finding) == {"severity", "code", "message", "fix", "subject"}
    assert "a.b.wild.example" in finding["message"] and "exactly one label" in finding["fix"]
