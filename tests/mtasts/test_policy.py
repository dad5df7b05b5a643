from __future__ import annotations

import pytest

from tlswatch.mtasts.policy import mx_matches, parse_policy, policy_id, render_policy


@pytest.mark.parametrize(("pattern", "host", "matches"), [
    ("mail.example.com", "mail.example.com", True),
    ("mail.example.com", "MAIL.example.com.", True),
    ("*.example.com", "mail.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", ".example.com", False),
    ("*.mail.example.com", "mx1.mail.example.com", True),
    ("mail.example.com", "x.mail.example.com", False),
])
def test_wildcard_covers_exactly_the_leftmost_label(pattern: str, host: str,
                                                    matches: bool) -> None:
    assert mx_matches(pattern, host) is matches


def test_a_good_policy_parses_clean() -> None:
    text = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\n" \
           "max_age: 604800\r\n"
    policy = parse_policy(text)
    assert (policy.version, policy.mode, policy.max_age) == ("STSv1", "enforce", 604800)
    assert policy.mx == ["mx1.example.com", "*.example.net"] and policy.problems == []


def test_lf_lines_repeated_and_unknown_keys() -> None:
    policy = parse_policy("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\n"
                          "max_age: 86400\nflavour: vanilla\n")
    codes = {p.code: p.severity for p in policy.problems}
    assert policy.mode == "testing"  # the first value counts
    assert codes == {"policy_lf_line_endings": "info", "policy_repeated_key": "warning",
                     "policy_unknown_key": "info"}


@pytest.mark.parametrize(("text", "code"), [
    ("version: STSv2\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 1\r\n", "policy_version"),
    ("version: STSv1\r\nmode: strict\r\nmx: a.example\r\nmax_age: 1\r\n", "policy_mode"),
    ("version: STSv1\r\nmode: enforce\r\nmax_age: 1\r\n", "policy_mx_missing"),
    ("version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 31557601\r\n",
     "policy_max_age_too_large"),
    ("version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 1d\r\n",
     "policy_max_age_invalid"),
    ("version: STSv1\r\nmode: enforce\r\nmx: a.example\r\n", "policy_max_age_missing"),
    ("<html>not found</html>", "policy_syntax"),
])
def test_errors(text: str, code: str) -> None:
    assert code in {p.code for p in parse_policy(text).errors}


def test_mode_none_needs_no_mx_and_id_follows_content() -> None:
    assert parse_policy(render_policy("none", [], 86400)).errors == []
    a = render_policy("testing", ["mx.example.com"], 86400)
    b = render_policy("enforce", ["mx.example.com"], 86400)
    assert policy_id(a) != policy_id(b) and policy_id(a) == policy_id(a)
    assert len(policy_id(a)) <= 32 and policy_id(a).isalnum()
