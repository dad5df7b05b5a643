"""Write sample_reports/: the team's own corpus of valid and invalid TLS-RPT inputs.

Deterministic (gzip mtime 0, fixed boundaries), so re-running changes nothing.  Every
RFC 8460 result type, every real-world quirk real senders show, every container.
Run: python tools/make_samples.py
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import zipfile
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent / "sample_reports"
VALID, INVALID = ROOT / "valid", ROOT / "invalid"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, indent=1).encode()


def report(org: str, rid: str, day: str, policies: list[dict[str, Any]], *,
           contact: Any = "tlsrpt@reporter.example", end: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "organization-name": org,
        "date-range": {"start-datetime": f"{day}T00:00:00Z",
                       "end-datetime": end or f"{day}T23:59:59Z"},
        "contact-info": contact,
        "report-id": rid,
        "policies": policies,
    }
    if contact is ...:
        del doc["contact-info"]
    return doc


def sts(domain: str, mx: list[str], mode: str = "enforce") -> list[str]:
    return ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], "max_age: 604800"]


def entry(ptype: str, domain: str | None, ok: int, failed: int, details: list[dict[str, Any]]
          | None = None, **policy: Any) -> dict[str, Any]:
    pol: dict[str, Any] = {"policy-type": ptype, **policy}
    if domain is not None:
        pol["policy-domain"] = domain
    out: dict[str, Any] = {"policy": pol, "summary": {"total-successful-session-count": ok,
                                                      "total-failure-session-count": failed}}
    if details is not None:
        out["failure-details"] = details
    return out


def fail(rtype: str, n: int, mx: str | None = None, rip: str | None = None,
         sip: str | None = "192.0.2.10", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"result-type": rtype}
    if sip:
        d["sending-mta-ip"] = sip
    if mx:
        d["receiving-mx-hostname"] = mx
    if rip:
        d["receiving-ip"] = rip
    d["failed-session-count"] = n
    d.update(extra)
    return d


def message(*, domain: str, submitter: str, rid: str, attachments: list[tuple[bytes, str, str]],
            human: tuple[str, str] = ("plain", "This is an aggregate TLS report."),
            subject_brackets: bool = True, report_headers: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"noreply-tlsrpt@{submitter}"
    msg["To"] = "tlsrpt@reports.example.com"
    shown = f"<{rid}>" if subject_brackets else rid
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: {shown}"
    msg["Date"] = "Fri, 27 Nov 2026 06:00:00 +0000"
    msg["Message-ID"] = f"<{rid.replace(' ', '')}@{submitter}>"
    if report_headers:
        msg["TLS-Report-Domain"] = domain
        msg["TLS-Report-Submitter"] = submitter
    msg.set_content(human[1], subtype=human[0])
    for payload, ctype, filename in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    msg.replace_header("Content-Type", msg["Content-Type"].replace("multipart/mixed",
                                                                   "multipart/report"))
    msg.set_param("report-type", "tlsrpt")
    msg.set_boundary("tlswatch-sample-boundary")
    return msg.as_bytes(policy=SMTP)


def fname(submitter: str, domain: str, day_epoch: int, uid: str, ext: str) -> str:
    return f"{submitter}!{domain}!{day_epoch}!{day_epoch + 86399}!{uid}.{ext}"


DAYS = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25",
        "2026-11-26"]
EPOCH = {d: 1795132800 + 86400 * i for i, d in enumerate(DAYS)}  # 2026-11-20T00:00:00Z
MX_COM = ["mx1.example.com", "mx2.example.com"]
ALL_TYPES = ["starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
             "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
             "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"]


def valid_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    # Google: one mail a day for example.com, gzip attachment, mx-host as an array,
    # a no-policy-found entry carrying only type and domain; attachment id != subject id.
    for i, day in enumerate(DAYS):
        failed = [] if i < 5 else [fail("certificate-expired", 40 + i, "mx2.example.com",
                                        "198.51.100.25", "209.85.220.41")]
        doc = report("Google Inc.", f"{day}T00:00:00Z_example.com", day, [
            entry("sts", "example.com", 9000 + 100 * i, sum(f["failed-session-count"]
                                                           for f in failed), failed,
                  **{"policy-string": sts("example.com", MX_COM), "mx-host": MX_COM}),
            entry("no-policy-found", "example.com", 3, 0),
        ], contact="smtp-tls-reporting@google.com")
        files[f"google/example.com-{day}.eml"] = message(
            domain="example.com", submitter="google.com",
            rid=f"{day.replace('-', '.')}T00.00.00Z+example.com@google.com",
            attachments=[(gz(dumps(doc)), "application/tlsrpt+gzip",
                          fname("google.com", "example.com", EPOCH[day], "001", "json.gz"))])
    # Microsoft: text/html human part, subject id without brackets, sts AND tlsa for the same
    # sessions, a tlsa policy-string that is one JSON-encoded array, no mx-host, failure
    # details without IPs, date-times without a zone.
    for day in DAYS[-3:]:
        details = [fail("starttls-not-supported", 12, sip=None)]
        doc = report("Microsoft Corporation", f"1342{EPOCH[day]}+example.com", day, [
            entry("sts", "example.com", 2400, 12, details,
                  **{"policy-string": sts("example.com", MX_COM)}),
            entry("tlsa", "example.com", 2400, 12, details,
                  **{"policy-string": [json.dumps(["3 1 1 4f8a...", "3 1 1 9c2b..."])]}),
        ], contact="tlsrpt-noreply@microsoft.com")
        doc["date-range"] = {"start-datetime": f"{day}T00:00:00",
                             "end-datetime": f"{day}T23:59:59"}
        files[f"microsoft/example.com-{day}.eml"] = message(
            domain="example.com", submitter="microsoft.com", rid=f"1342{EPOCH[day]}+example.com",
            subject_brackets=False,
            human=("html", "<html><body><p>TLS report for example.com</p></body></html>"),
            attachments=[(gz(dumps(doc)), "application/tlsrpt+gzip",
                          fname("microsoft.com", "example.com", EPOCH[day], "1342", "json.gz"))])
    # Mail.ru: no policy-string, end-datetime next-day midnight, totals that do not equal
    # the detail sums, long Go error text; a plain .json file.
    doc = report("Mail.ru", "b3c1d2e4-0001@mail.ru", "2026-11-25", [
        entry("sts", "example.net", 310, 1, [
            fail("sts-policy-fetch-error", 1, sip=None, **{
                "failure-reason-code": "bad https response code: 404"}),
            fail("sts-webpki-invalid", 2, sip=None, **{
                "failure-reason-code": "Get \"https://mta-sts.example.net/.well-known/mta-sts"
                ".txt\": tls: failed to verify certificate: x509: certificate has expired or "
                "is not yet valid: current time 2026-11-25T10:00:00Z is after "
                "2026-11-20T23:59:59Z"}),
        ]),
    ], contact="tls_support@corp.mail.ru", end="2026-11-26T00:00:00Z")
    files["mailru/example.net-2026-11-25.json"] = dumps(doc)
    # RFC 8460's own shape: mx-host as a string, additional-info-uri, contact-info null;
    # a bare .json.gz with the recommended file name.
    doc = report("Company-X", "5065427c-23d3-47ca-b6e0-946ea0e8c4be", "2026-11-24", [
        entry("sts", "example.org", 5326, 303, [
            fail("certificate-expired", 100, "mx1.example.org", sip="2001:db8:abcd:12::1"),
            fail("starttls-not-supported", 200, "mx2.example.org", "203.0.113.56",
                 "2001:db8:abcd:13::1", **{"additional-info-uri":
                                          "https://reports.company-x.example/info#starttls"}),
            fail("validation-failure", 3, "mx-backup.example.org", "203.0.113.58",
                 "198.51.100.62", **{"failure-reason-code":
                                     "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"}),
        ], **{"policy-string": sts("example.org", ["*.example.org"], "testing"),
              "mx-host": "*.example.org"}),
    ], contact=None)
    files[f"company-x/{fname('company-x.example', 'example.org', EPOCH['2026-11-24'], 'a1', 'json.gz')}"] = gz(dumps(doc))  # noqa: E501
    # Every RFC 8460 result type (and one outside the registry) in one report for
    # example.org, as a .zip holding one report; receiving-mx-helo present.
    details = [fail(t, i + 1, f"mx{i % 2 + 1}.example.org", f"203.0.113.{10 + i}",
                    f"192.0.2.{20 + i}", **{"receiving-mx-helo": f"helo{i}.example.org"})
               for i, t in enumerate(ALL_TYPES)]
    details.append(fail("tls-version-too-old", 4, "mx1.example.org", "203.0.113.9",
                        **{"failure-reason-code": "peer offered TLS 1.0 only"}))
    doc = report("Every Result Types Ltd", "every-type-2026-11-25", "2026-11-25", [
        entry("sts", "example.org", 1000, sum(d["failed-session-count"] for d in details),
              details, **{"policy-string": sts("example.org", ["*.example.org"], "testing"),
                          "mx-host": ["*.example.org"]}),
    ])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("every-type.json", date_time=(2026, 11, 26, 0, 0, 0))
        zf.writestr(info, dumps(doc), compress_type=zipfile.ZIP_DEFLATED)
    files["zip/every-type-example.org.zip"] = buf.getvalue()
    # An older Postfix reporter: policy-domain missing on no-policy-found (taken from the
    # TLS-Report-Domain header), uncompressed JSON as application/octet-stream under a
    # long RFC 2231 file name.
    doc = report("Postfix Site", "postfix-2026-11-23-0001", "2026-11-23",
                 [entry("no-policy-found", None, 77, 0)], contact=...)
    files["postfix/example.net-2026-11-23.eml"] = message(
        domain="example.net", submitter="mail.postfix-site.example",
        rid="postfix-2026-11-23-0001",
        attachments=[(dumps(doc), "application/octet-stream",
                      fname("mail.postfix-site.example", "example.net", EPOCH["2026-11-23"],
                            "a-very-long-unique-identifier-that-needs-rfc2231-folding-x" * 2,
                            "json"))])
    # Postfix 3.10+ with sys4 tlsrpt-reporter, as POSTed: one entry per policy *used*, so the
    # entries are different sessions (they add up); no policy-domain on no-policy-found
    # (taken from the other entries); the report-id names the domain.
    day = "2026-11-24"
    doc = report("mail.postfix-site.example", f"{day}T00:00:00Z_idx1_example.net", day, [
        entry("no-policy-found", None, 30, 0),
        entry("sts", "example.net", 120, 3, [fail("certificate-expired", 3, "mx.example.net",
                                                  "198.51.100.7", "203.0.113.80", **{
                                                      "failure-reason-code":
                                                      "X509_V_ERR_CERT_HAS_EXPIRED"})],
              **{"policy-string": sts("example.net", ["mx.example.net"]),
                 "mx-host": ["mx.example.net"]}),
        entry("tlsa", "example.net", 40, 0, [],
              **{"policy-string": ["3 1 1 0f1e2d3c4b5a69788796a5b4c3d2e1f0"],
                 "mx-host": ["mx.example.net"]}),
    ], contact="postmaster@postfix-site.example")
    files[f"postfix/tlsrpt-reporter-example.net-{day}.json"] = dumps(doc)
    # The same reporter for a domain without policies: only a no-policy-found entry whose
    # policy-domain is "", so the domain comes from the report-id.
    day = "2026-11-25"
    doc = report("mail.postfix-site.example", f"{day}T00:00:00Z_idx1_example.com", day,
                 [entry("no-policy-found", "", 52, 0)], contact="postmaster@postfix-site.example")
    files[f"postfix/tlsrpt-reporter-example.com-{day}.json"] = dumps(doc)
    # Bare application/tlsrpt with the older mx-host-pattern, and a JSON file with a BOM.
    doc = report("Old Reporter", "old-2026-11-22", "2026-11-22", [
        entry("sts", "example.net", 120, 0, [], **{"policy-string": sts("example.net",
                                                                        ["mx.example.net"]),
                                                    "mx-host-pattern": "mx.example.net"})])
    files["misc/bare-tlsrpt-type.eml"] = message(
        domain="example.net", submitter="old.example", rid="old-2026-11-22",
        attachments=[(gz(dumps(doc)), "application/tlsrpt", "report.json.gz")])
    doc = report("BOM Writer", "bom-2026-11-21", "2026-11-21", [
        entry("sts", "example.net", 55, 0, None, **{"policy-string": sts("example.net",
                                                                          ["mx.example.net"])})])
    files["misc/with-bom.json"] = b"\xef\xbb\xbf" + dumps(doc)
    # application/gzip attachment, and an mbox holding two reports.
    doc = report("Gzip Labeller", "gzl-2026-11-26", "2026-11-26", [
        entry("sts", "example.net", 400, 5, [fail("certificate-host-mismatch", 5,
                                                  "mx.example.net", "198.51.100.7")],
              **{"policy-string": sts("example.net", ["mx.example.net"])})])
    files["misc/application-gzip.eml"] = message(
        domain="example.net", submitter="gzl.example", rid="gzl-2026-11-26",
        attachments=[(gz(dumps(doc)), "application/gzip", "gzl.json.gz")])
    mbox = b""
    for day in DAYS[-2:]:
        doc = report("Mbox Sender", f"mbox-{day}", day, [
            entry("sts", "example.org", 60, 1, [fail("certificate-not-trusted", 1,
                                                     "mx2.example.org", "203.0.113.57")],
                  **{"policy-string": sts("example.org", ["*.example.org"], "testing")})])
        mbox += b"From tlsrpt@mbox.example Fri Nov 27 06:00:00 2026\n" + message(
            domain="example.org", submitter="mbox.example", rid=f"mbox-{day}",
            attachments=[(gz(dumps(doc)), "application/tlsrpt+gzip", f"mbox-{day}.json.gz")]
        ).replace(b"\r\n", b"\n") + b"\n"
    files["mbox/reports.mbox"] = mbox
    return files


def invalid_files() -> dict[str, tuple[bytes, str]]:
    good = report("Bad Inc.", "bad-1", "2026-11-25", [entry("sts", "example.com", 1, 0)])

    def mutate(fn: Any) -> bytes:
        doc = json.loads(json.dumps(good))
        fn(doc)
        return dumps(doc)

    deep: Any = {"x": 1}
    for _ in range(70):
        deep = {"x": deep}
    return {
        "empty.json": (b"", "empty input"),
        "whitespace.json": (b"  \n\t ", "empty input"),
        "not-json.json": (b'{"organization-name": "x",', "not valid JSON"),
        "array.json": (b"[1, 2, 3]", "JSON is an array, not a report object"),
        "not-utf8.json": (b'{"organization-name": "caf\xe9"}', "not UTF-8"),
        "garbage.bin": (b"\x00\x01\x02binary", "neither JSON, gzip, zip nor an e-mail"),
        "truncated.json.gz": (gz(dumps(good))[:-12], "truncated gzip data"),
        "corrupt.json.gz": (b"\x1f\x8b\x08\x00" + b"\xff" * 40, "corrupt gzip data"),
        "bomb-60MiB.json.gz": (gzip.compress(b" " * (60 * 1024 * 1024), mtime=0),
                               "inflates to more than"),
        "deep-array.json": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
        "deep-object.json": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                             "nested deeper than 64 levels"),
        "deep-extension.json": (mutate(lambda d: d.update({"x-extension": deep})),
                                "nested deeper than 64 levels"),
        "missing-report-id.json": (mutate(lambda d: d.pop("report-id")),
                                   "missing required field 'report-id'"),
        "missing-organization.json": (mutate(lambda d: d.pop("organization-name")),
                                      "missing required field 'organization-name'"),
        "missing-date-range.json": (mutate(lambda d: d.pop("date-range")),
                                    "missing required field 'date-range'"),
        "missing-policies.json": (mutate(lambda d: d.pop("policies")),
                                  "missing required field 'policies'"),
        "policies-not-array.json": (mutate(lambda d: d.update({"policies": {"a": 1}})),
                                    "policies: must be an array"),
        "count-is-text.json": (mutate(lambda d: d["policies"][0]["summary"].update(
            {"total-successful-session-count": "many"})),
            'policies[0].summary.total-successful-session-count: must be a non-negative '
            'integer, got "many"'),
        "count-negative.json": (mutate(lambda d: d["policies"][0]["summary"].update(
            {"total-failure-session-count": -3})), "must be a non-negative integer, got -3"),
        "unknown-policy-type.json": (mutate(lambda d: d["policies"][0]["policy"].update(
            {"policy-type": "dane"})), "policy-type: must be one of"),
        "bad-datetime.json": (mutate(lambda d: d["date-range"].update(
            {"start-datetime": "yesterday"})), "date-range.start-datetime: not a valid RFC 3339"),
        "impossible-date.json": (mutate(lambda d: d["date-range"].update(
            {"start-datetime": "2026-02-30T00:00:00Z"})), "not a valid RFC 3339 date-time"),
        "count-over-the-bound.json": (mutate(lambda d: d["policies"][0]["summary"].update(
            {"total-successful-session-count": 2**63})),
            "total-successful-session-count: must be at most 1,000,000,000,000"),
        "count-decimal.json": (mutate(lambda d: d["policies"][0]["summary"].update(
            {"total-failure-session-count": 1e300})), "must be at most 1,000,000,000,000"),
        "year-one.json": (mutate(lambda d: d["date-range"].update(
            {"start-datetime": "0001-01-01T00:00:00+01:00"})),
            "date-range.start-datetime: not a valid RFC 3339 date-time"),
        "no-report.eml": (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\n"
                          b"Just a note, no report here.\r\n",
                          "no TLS-RPT report in message"),
        "two-reports.zip": (_zip({"a.json": dumps(good), "b.json": dumps(good)}),
                            "zip archive must hold exactly one report file"),
    }


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 11, 26, 0, 0, 0)), data)
    return buf.getvalue()


def main() -> None:
    for folder in (VALID, INVALID):
        shutil.rmtree(folder, ignore_errors=True)
    for name, data in valid_files().items():
        path = VALID / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # A Maildir with one report in new/ (a reporter of its own, so no duplicate).
    maildir = VALID / "maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    doc = report("Maildir Reporter", "maildir-2026-11-26", "2026-11-26", [
        entry("sts", "example.com", 800, 0, [], **{"policy-string": sts("example.com", MX_COM),
                                                   "mx-host": MX_COM})])
    (maildir / "new" / "1795564800.M1P1.sample").write_bytes(message(
        domain="example.com", submitter="maildir.example", rid="maildir-2026-11-26",
        attachments=[(gz(dumps(doc)), "application/tlsrpt+gzip", "maildir.json.gz")]))
    expected = {}
    INVALID.mkdir(parents=True, exist_ok=True)
    for name, (data, reason) in invalid_files().items():
        (INVALID / name).write_bytes(data)
        expected[name] = reason
    manifest = json.dumps(expected, indent=2, sort_keys=True) + "\n"
    (ROOT / "invalid-expected.json").write_text(manifest)


if __name__ == "__main__":
    main()
