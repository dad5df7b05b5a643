"""Domain names from untrusted text."""

from __future__ import annotations

import pytest

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
