"""sys4 tlsrpt-reporter (what Postfix 3.10+ uses) reporting to a real ``tlswatch serve``.

The reporter runs for real (collectd, fetcher, reportd) and delivers by mail to serve's SMTP
port and by HTTPS POST to ``/v1/reports`` and ``/v1/reports/<domain>``.  tlswatch must store
exactly the sessions sent, per policy domain: Postfix lists each session under the one policy
it used (different sessions, added up), libtlsrpt's "both policies" sessions appear under sts
and tlsa (the same sessions, not doubled), and no-policy-found sessions carry no
policy-domain (or "") and must still be stored under the domain the report is about.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.senders.conftest import Delivered
from tests.senders.sessions import BY_DOMAIN, LAYOUTS, Layout

DATA = Path(__file__).with_name("data")  # saved output of one run (see data/README.md)
SAVED = ["mixed", "midday", "both", "nodomain"]

TYPE_NAMES = {1: "tlsa", 2: "sts", 9: "no-policy-found"}


def sent_entries(layout: Layout) -> dict[tuple[str, Any], tuple[int, int]]:
    """(policy type, policy-domain or None) -> (successful, failed), as the sessions were sent."""
    counts: Counter[tuple[str, Any, bool]] = Counter()
    for count, policies in layout.sessions:
        for p in policies:
            counts[(TYPE_NAMES[p["policy-type"]], p.get("policy-domain"), bool(p["f"]))] += count
    keys = {(t, d) for t, d, _ in counts}
    return {(t, d): (counts[(t, d, False)], counts[(t, d, True)]) for t, d in keys}


def report_entries(report: dict[str, Any]) -> dict[tuple[str, Any], tuple[int, int]]:
    out: dict[tuple[str, Any], tuple[int, int]] = {}
    for entry in report["policies"]:
        key = (entry["policy"]["policy-type"], entry["policy"].get("policy-domain"))
        ok, failed = out.get(key, (0, 0))
        out[key] = (ok + entry["summary"]["total-successful-session-count"],
                    failed + entry["summary"]["total-failure-session-count"])
    return out


def counted(report: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    """The counting rule applied by hand: (successful, failed, failures by result type).

    no-policy-found is added to the rest; sts and tlsa are the same sessions when their totals
    are equal (then the type with more failures counts), otherwise they are added.
    """
    kinds: dict[str, tuple[int, int, Counter[str]]] = {}
    for entry in report["policies"]:
        ok, failed, details = kinds.get(entry["policy"]["policy-type"], (0, 0, Counter()))
        for d in entry.get("failure-details", []):
            details[d["result-type"]] += d["failed-session-count"]
        kinds[entry["policy"]["policy-type"]] = (
            ok + entry["summary"]["total-successful-session-count"],
            failed + entry["summary"]["total-failure-session-count"], details)
    none: tuple[int, int, Counter[str]] = (0, 0, Counter())
    sts, tlsa = kinds.get("sts", none), kinds.get("tlsa", none)
    if sts[0] + sts[1] == tlsa[0] + tlsa[1] > 0:
        used = [max(sts, tlsa, key=lambda k: k[1])]
    else:
        used = [sts, tlsa]
    used.append(kinds.get("no-policy-found", none))
    by_type: Counter[str] = Counter()
    for _, _, details in used:
        by_type.update(details)
    return sum(k[0] for k in used), sum(k[1] for k in used), dict(by_type)


def test_the_reporter_built_and_delivered_one_report_per_domain(delivered: Delivered) -> None:
    assert delivered.delivery == {layout.domain: "sent" for layout in LAYOUTS}, delivered.logs
    for layout in LAYOUTS:  # the harness sent what the layouts say (tlswatch not involved)
        report = delivered.reports[layout.domain]
        assert report["report-id"].endswith(f"_idx1_{layout.domain}")
        assert report_entries(report) == sent_entries(layout), layout.domain
        assert counted(report) == (layout.successful, layout.failed,
                                   layout.failures_by_result_type), layout.domain


def test_every_mail_was_accepted(delivered: Delivered) -> None:
    mailed = sorted(x.domain for x in LAYOUTS if x.route == "mail")
    assert len(delivered.smtp_replies) == len(mailed), delivered.logs
    for line in delivered.smtp_replies:
        assert line.startswith("250 "), line
    assert sorted(re.search(r"Report Domain: (\S+)", line)[1]  # type: ignore[index]
                  for line in delivered.smtp_replies) == mailed


def test_every_https_post_got_2xx(delivered: Delivered) -> None:
    posted = [x for x in LAYOUTS if x.route != "mail"]
    assert len(delivered.http_replies) == len(posted), delivered.logs
    refused = [(code, url) for code, url in delivered.http_replies if not 200 <= code < 300]
    assert refused == [], delivered.logs


def test_nothing_was_refused_or_quarantined(delivered: Delivered) -> None:
    assert delivered.spool_failed == {}
    assert delivered.quarantine == []


def test_only_the_reported_domains_are_stored(delivered: Delivered) -> None:
    assert sorted(delivered.summary) == sorted(BY_DOMAIN)


@pytest.mark.parametrize("domain", [x.domain for x in LAYOUTS])
def test_stored_sessions_equal_the_sessions_sent(delivered: Delivered, domain: str) -> None:
    layout = BY_DOMAIN[domain]
    stored = delivered.summary.get(domain)
    assert stored is not None, f"nothing stored for {domain}; stored: {sorted(delivered.summary)}"
    assert stored["reports"] == 1
    assert (stored["successful_sessions"], stored["failed_sessions"]) == (
        layout.successful, layout.failed)
    assert stored["failures_by_result_type"] == layout.failures_by_result_type


@pytest.mark.parametrize("name", SAVED)
def test_saved_reporter_output_holds_the_layout(name: str) -> None:
    raw = (DATA / f"{name}.json").read_bytes()
    assert report_entries(json.loads(raw)) == sent_entries(BY_DOMAIN[f"{name}-mail.example"])
    mail = message_from_bytes((DATA / f"{name}.eml").read_bytes(), policy=policy.default)
    attachment = next(p for p in mail.walk() if p.get_content_type() == "application/tlsrpt+gzip")
    assert gzip.decompress(attachment.get_content()) == raw  # the mail carries the same report


@pytest.mark.parametrize("suffix", [".eml", ".json"])
def test_saved_reporter_output_loads_as_files(cli: Cli, suffix: str) -> None:
    loaded = cli.json("ingest", *(str(DATA / f"{name}{suffix}") for name in SAVED), code=None)
    assert loaded["rejections"] == []
    assert loaded["accepted"] == len(SAVED)
    stored = {d["policy_domain"]: d for d in cli.json("summary")["domains"]}
    assert sorted(stored) == sorted(f"{name}-mail.example" for name in SAVED)
    for domain, got in stored.items():
        layout = BY_DOMAIN[domain]
        assert (got["successful_sessions"], got["failed_sessions"],
                got["failures_by_result_type"]) == (
            layout.successful, layout.failed, layout.failures_by_result_type), domain
