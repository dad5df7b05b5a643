"""A report whose entries name no policy-domain (Postfix) is stored, never refused."""

from __future__ import annotations

import copy
import gzip
import json
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli, make_report, write_json
from tests.serving import Serve

NPF = {"policy": {"policy-type": "no-policy-found"},
       "summary": {"total-successful-session-count": 6, "total-failure-session-count": 1},
       "failure-details": [{"result-type": "starttls-not-supported", "failed-session-count": 1}]}


def postfix_report(rid: str, domain_field: Any = ...) -> dict[str, Any]:
    entry = copy.deepcopy(NPF)
    if domain_field is not ...:
        entry["policy"]["policy-domain"] = domain_field
    return make_report(org="mail.postfix.example", rid=rid, policies=[entry])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with Serve(tmp_path_factory.mktemp("serve")) as running:
        yield running


def domains(server: Serve, rid: str) -> list[tuple[str, int, int]]:
    return [tuple(r) for r in server.query(  # type: ignore[misc]
        "SELECT p.policy_domain, p.successful_sessions, p.failed_sessions FROM policies p "
        f"JOIN reports r USING (report_pk) WHERE r.report_id = '{rid}'")]


def post(server: Serve, path: str, doc: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.http_url}{path}", content=gzip.compress(json.dumps(doc).encode()),
                      headers={"Content-Type": "application/tlsrpt+gzip"})


@pytest.mark.parametrize(("rid", "field"), [("url-absent", ...), ("url-empty", ""),
                                            ("url-null", None)])
def test_http_post_to_the_domain_url_takes_the_domain_from_it(server: Serve, rid: str,
                                                              field: Any) -> None:
    answer = post(server, "/v1/reports/Example.ORG", postfix_report(rid, field))
    assert answer.status_code == 201, answer.text
    server.wait_loaded()
    assert domains(server, rid) == [("example.org", 6, 1)]


def test_http_post_without_any_domain_is_stored_unattributed(server: Serve) -> None:
    answer = post(server, "/v1/reports", postfix_report("nowhere"))
    assert answer.status_code == 201, answer.text
    server.wait_loaded()
    assert domains(server, "nowhere") == [("(unattributed)", 6, 1)]


def test_http_post_with_the_reporters_report_id_form(server: Serve) -> None:
    rid = "2026-11-25T00:00:00Z_idx1_example.net"
    assert post(server, "/v1/reports", postfix_report(rid, "")).status_code == 201
    server.wait_loaded()
    assert domains(server, rid) == [("example.net", 6, 1)]


def test_a_bad_domain_in_the_url_is_refused_by_name(server: Serve) -> None:
    answer = post(server, "/v1/reports/bad_name..x", postfix_report("bad-url"))
    assert answer.status_code == 400
    assert "URL path" in answer.json()["error"]


def test_mail_takes_the_domain_from_the_tls_report_domain_header(server: Serve) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"] = "tlsrpt@postfix.example", "tlsrpt@reports.example"
    msg["Subject"] = "Report Domain: example.info Submitter: postfix.example Report-ID: <m1>"
    msg["TLS-Report-Domain"], msg["TLS-Report-Submitter"] = "example.info", "postfix.example"
    msg.set_content("report attached")
    msg.add_attachment(gzip.compress(json.dumps(postfix_report("mail-1", "")).encode()),
                       maintype="application", subtype="tlsrpt+gzip", filename="r.json.gz")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
        smtp.send_message(msg)
    server.wait_loaded()
    assert domains(server, "mail-1") == [("example.info", 6, 1)]


def test_files_take_the_domain_from_the_rfc_file_name(cli: Cli, tmp_path: Path) -> None:
    name = "postfix.example!example.biz!1795564800!1795651199!x.json"
    out = cli.json("ingest", str(write_json(tmp_path / name, postfix_report("file-1", None))))
    assert out["accepted"] == 1
    assert [d["policy_domain"] for d in cli.json("summary")["domains"]] == ["example.biz"]


def test_with_our_domains_listed_entries_naming_none_are_still_kept(tmp_path: Path) -> None:
    with Serve(tmp_path, domains=["example.org"], smtp="") as server:
        assert post(server, "/v1/reports", postfix_report("ours-1")).status_code == 201
        assert post(server, "/v1/reports/example.org", postfix_report("ours-2")).status_code \
            == 201
        stranger = make_report(rid="theirs", policies=[
            {"policy": {"policy-type": "sts", "policy-domain": "stranger.example"},
             "summary": {"total-successful-session-count": 1,
                         "total-failure-session-count": 0}}])
        assert post(server, "/v1/reports", stranger).status_code == 400
        server.wait_loaded()
        assert domains(server, "ours-1") == [("(unattributed)", 6, 1)]
        assert domains(server, "ours-2") == [("example.org", 6, 1)]
