"""Our verdicts beside checkdmarc's on the same loopback fixtures, where checkdmarc can see
them (its DNS-level checks and policy parser; it fetches policies with the system resolver)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dns.resolver
import pytest

from tests.mtasts.fixtures import World, publish, world
from tlswatch.mtasts.check import Checker
from tlswatch.mtasts.policy import mx_matches, parse_policy

checkdmarc_sts = pytest.importorskip("checkdmarc.mta_sts")
checkdmarc_rpt = pytest.importorskip("checkdmarc.smtp_tls_reporting")


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from world(tmp_path_factory.mktemp("world"))


def theirs_sts(w: World, domain: str) -> bool:
    resolver = dns.resolver.Resolver(configure=False)
    host, port = w.dns.split(":")
    resolver.nameservers, resolver.port = [host], int(port)
    try:
        record = checkdmarc_sts.query_mta_sts_record(domain, resolver=resolver)["record"]
        checkdmarc_sts.parse_mta_sts_record(record)
    except Exception:
        return False
    return True


def ours_sts(w: World, domain: str) -> bool:
    checker = Checker(nameserver=w.dns, timeout=5)
    checker.findings = []
    return checker._sts_record(domain) is not None


@pytest.mark.parametrize(("name", "records"), [
    ("good", ["v=STSv1; id=20261127T01;"]),
    ("norecord", []),
    ("twotxt", ["v=STSv1; id=one;", "v=STSv1; id=two;"]),
    ("badid", ["v=STSv1; id=not-valid_id!;"]),
])
def test_mta_sts_record_verdicts_agree(w: World, name: str, records: list[Any]) -> None:
    domain = publish(w, name, mx=["mx1.good.example"], sts=records)
    assert ours_sts(w, domain) == theirs_sts(w, domain) == (name == "good")


@pytest.mark.parametrize(("record", "valid"), [
    ("v=TLSRPTv1; rua=mailto:tlsrpt@reports.example.net", True),
    ("v=TLSRPTv1; rua=mailto:a@b.example,https://r.example/v1/reports", True),
    ("v=TLSRPTv1; rua=ftp://wrong.example/", False),
])
def test_tlsrpt_record_verdicts_agree(record: str, valid: bool) -> None:
    try:
        checkdmarc_rpt.parse_smtp_tls_reporting_record(record)
        theirs = True
    except Exception:
        theirs = False
    from tlswatch.mtasts.check import _fields

    uris = [u.strip() for u in _fields(record).get("rua", "").split(",")]
    ours = all(u.startswith(("mailto:", "https://")) for u in uris)
    assert ours == theirs == valid


@pytest.mark.parametrize(("host", "pattern"), [
    ("mail.example.com", "*.example.com"), ("example.com", "*.example.com"),
    ("a.b.example.com", "*.example.com"), ("mail.example.com", "mail.example.com"),
])
def test_wildcard_rule_agrees(host: str, pattern: str) -> None:
    assert mx_matches(pattern, host) == checkdmarc_sts.mx_in_mta_sts_patterns(host, [pattern])


@pytest.mark.parametrize("text", [
    "version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 86400\r\n",
    "version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 31557601\r\n",
    "version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n",
    "version: STSv1\r\nmode: testing\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 86400\r\n",
])
def test_policy_grammar_verdicts_agree(text: str) -> None:
    try:
        checkdmarc_sts.parse_mta_sts_policy(text)
        theirs = True
    except Exception:
        theirs = False
    assert (not parse_policy(text).errors) == theirs
