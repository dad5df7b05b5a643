"""Every stored column holds the field it is named for (rows are built by name)."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.conftest import Cli
from tlswatch.store import Store

# Every value distinct, so two columns of one type swapped anywhere between the report
# and the table cannot go unnoticed.
REPORT = b"""{
  "organization-name": "Org Name",   "date-range": {"start-datetime": "2026-11-25T00:00:00Z",
  "end-datetime": "2026-11-25T23:59:59Z"}, "contact-info": "contact@org.example",
  "report-id": "rid-1",
  "policies": [{"policy": {"policy-type": "sts", "policy-domain": "example.com",
                "policy-string": ["version: STSv1", "mode: testing"],
                "mx-host": ["mx.example.com"]},
                "summary": {"total-successful-session-count": 11,
                            "total-failure-session-count": 12},
                "failure-details": [
                  {"result-type": "validation-failure", "sending-mta-ip": "198.51.100.1",
                   "receiving-mx-hostname": "rx-host.example.com",
                   "receiving-mx-helo": "rx-helo.example.com", "receiving-ip": "192.0.2.2",
                   "failed-session-count": 7, "additional-information": "more-info",
                   "failure-reason-code": "REASON_CODE"},
                  {"result-type": "certificate-expired", "failed-session-count": 5},
                  {"result-type": "starttls-not-supported", "failed-session-count": 9}]}]
}"""


def test_each_column_holds_its_own_field(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(REPORT)
    cli.json("ingest", str(path))
    with Store.open(db) as store:
        (report,) = store.rows("SELECT * FROM reports")
        (policy,) = store.rows("SELECT * FROM policies")
        details = store.rows("SELECT * FROM failure_details ORDER BY detail_index")
        (raw,) = store.rows("SELECT raw_gzip FROM report_raw")
    assert {k: report[k] for k in ("organization_name", "report_id", "contact_info",
                                   "source", "filename", "received_via")} == {
        "organization_name": "Org Name", "report_id": "rid-1",
        "contact_info": "contact@org.example", "source": str(path), "filename": "r.json",
        "received_via": "file"}
    assert (str(report["start_datetime"]), str(report["end_datetime"]), str(report["day"])) \
        == ("2026-11-25 00:00:00", "2026-11-25 23:59:59", "2026-11-25")
    assert {k: policy[k] for k in ("policy_type", "policy_domain", "policy_string", "mx_host",
                                   "successful_sessions", "failed_sessions", "counted",
                                   "policy_index", "organization_name")} == {
        "policy_type": "sts", "policy_domain": "example.com",
        "policy_string": ["version: STSv1", "mode: testing"], "mx_host": ["mx.example.com"],
        "successful_sessions": 11, "failed_sessions": 12, "counted": True, "policy_index": 0,
        "organization_name": "Org Name"}
    first = details[0]
    assert {k: first[k] for k in ("result_type", "sending_mta_ip", "receiving_mx_hostname",
                                  "receiving_mx_helo", "receiving_ip", "failed_session_count",
                                  "additional_information", "failure_reason_code",
                                  "policy_domain", "policy_type", "detail_index")} == {
        "result_type": "validation-failure", "sending_mta_ip": "198.51.100.1",
        "receiving_mx_hostname": "rx-host.example.com",
        "receiving_mx_helo": "rx-helo.example.com", "receiving_ip": "192.0.2.2",
        "failed_session_count": 7, "additional_information": "more-info",
        "failure_reason_code": "REASON_CODE", "policy_domain": "example.com",
        "policy_type": "sts", "detail_index": 0}
    assert [d["report_pk"] == report["report_pk"] == policy["report_pk"] for d in details] \
        == [True] * 3
    assert all(d["policy_pk"] == policy["policy_pk"] for d in details)
    assert gzip.decompress(raw["raw_gzip"]) == REPORT


def test_report_show_prints_the_report_as_received_in_the_senders_order(
        cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(REPORT)
    cli.json("ingest", str(path))
    shown = cli.json("report", "show", "rid-1")
    assert shown["raw_report"] == REPORT.decode()
    (policy,) = shown["policies"]
    assert [d["result_type"] for d in policy["failure_details"]] == [
        "validation-failure", "certificate-expired", "starttls-not-supported"]
    text = cli("report", "show", "rid-1", "--format", "table").stdout
    assert REPORT.decode() in text  # byte for byte: spacing and key order kept
