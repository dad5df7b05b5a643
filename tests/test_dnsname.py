"""Domain names from untrusted text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli, make_report, policy, write_json
from tlswatch.dnsname import BadDomain, is_domain, parse_domain


@pytest.mark.parametrize(("text", "expected"), [
    ("Example.COM.", "example.com"),
    ("mta-sts.example.org", "mta-sts.example.org"),
    ("bücher.de", "xn--bcher-kva.de"),
])
def test_names_are_made_canonical(text: str, expected: str) -> None:
    assert parse_domain(text) == expected


@pytest.mark.parametrize("text", [
    "", ".", "../evil", "/tmp/x", "a..b", "-a.com", "a-.com", "a_b.com", "x" * 64 + ".com",
    ("a" * 60 + ".") * 5, "example.com/../../etc", "exa mple.com", "example.com\x1b[31m",
])
def test_what_is_not_a_host_name_is_refused(text: str) -> None:
    with pytest.raises(BadDomain):
        parse_domain(text)
    assert not is_domain(text)


@pytest.mark.parametrize("text", ["1.2.3.4", "1.2.3.4.", "127.1", "10.0.0.1", "0x7f.1",
                                  "example.123"])
def test_an_ip_address_literal_is_no_host_name(text: str) -> None:
    with pytest.raises(BadDomain, match="IP address literal"):
        parse_domain(text)


def test_an_ip_literal_policy_domain_is_taken_as_missing(cli: Cli, tmp_path: Path) -> None:
    doc = make_report(rid="ip-literal", policies=[policy("1.2.3.4", 5, 0),
                                                  policy("example.com", 5, 0)])
    out = cli.json("ingest", str(write_json(tmp_path / "r.json", doc)))
    assert out["accepted"] == 1
    [report] = cli.json("reports")
    assert "1.2.3.4" not in report["policy_domains"]
    shown = cli.json("report", "show", "ip-literal")
    assert any("'1.2.3.4' is no domain name; taken as missing" in w
               for w in shown["warnings"]), shown["warnings"]
    assert [d["policy_domain"] for d in cli.json("summary")["domains"]] == ["example.com"]
