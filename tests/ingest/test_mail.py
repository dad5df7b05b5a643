from __future__ import annotations

import gzip
import json
from email.message import EmailMessage

import pytest

from tests.conftest import make_report
from tlswatch.errors import ReportError
from tlswatch.ingest.decode import decode

REPORT = json.dumps(make_report(rid="mail-1")).encode()


def build(payload: bytes, ctype: str, filename: str | None, *, cte: str | None = None,
          subject_id: str = "<mail-1>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "reports@sender.example"
    msg["Subject"] = f"Report Domain: example.com Submitter: sender.example Report-ID: {subject_id}"
    msg["TLS-Report-Domain"] = "example.com"
    msg["TLS-Report-Submitter"] = "sender.example"
    msg["Message-ID"] = "<abc@sender.example>"
    msg.set_content("human readable part")
    maintype, subtype = ctype.split("/")
    kwargs = {"cte": cte} if cte else {}
    msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename, **kwargs)
    return msg.as_bytes()


@pytest.mark.parametrize("ctype", [
    "application/tlsrpt+gzip", "application/tlsrpt+json", "application/tlsrpt",
    "application/gzip", "application/x-gzip", "application/json", "application/octet-stream",
])
@pytest.mark.parametrize("compress", [True, False])
def test_every_label_real_senders_use(ctype: str, compress: bool) -> None:
    payload = gzip.compress(REPORT) if compress else REPORT
    docs = decode(build(payload, ctype, "r.json"), source="m.eml")
    assert [d.data["report-id"] for d in docs] == ["mail-1"]


@pytest.mark.parametrize("cte", ["base64", "quoted-printable", "7bit"])
def test_any_transfer_encoding(cte: str) -> None:
    docs = decode(build(REPORT, "application/tlsrpt+json", "r.json", cte=cte), source="m.eml")
    assert docs[0].data["report-id"] == "mail-1"


def test_container_facts_are_kept() -> None:
    long_name = "sender.example!example.com!1795132800!1795219199!" + "x" * 120 + ".json.gz"
    doc = decode(build(gzip.compress(REPORT), "application/tlsrpt+gzip", long_name,
                       subject_id="mail-1"), source="m.eml")[0]
    c = doc.container
    assert (c.report_domain, c.submitter, c.subject_report_id, c.message_id) == (
        "example.com", "sender.example", "mail-1", "abc@sender.example")
    assert c.filename == long_name  # RFC 2231-folded on the wire
    assert doc.source == f"m.eml [attachment {long_name!r}]"


def test_forwarded_report_inside_message_rfc822() -> None:
    inner = build(gzip.compress(REPORT), "application/tlsrpt+gzip", "r.json.gz")
    outer = EmailMessage()
    outer["From"] = "admin@example.com"
    outer["Subject"] = "Fwd: report"
    outer.set_content("see attached")
    from email import message_from_bytes
    outer.add_attachment(message_from_bytes(inner))
    assert decode(outer.as_bytes(), source="fwd.eml")[0].data["report-id"] == "mail-1"


def test_message_without_report_part() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = "hello"
    msg.set_content("no report here")
    msg.add_attachment(b"a picture", maintype="image", subtype="png", filename="cat.png")
    with pytest.raises(ReportError, match=r"^note\.eml: no TLS-RPT report in message"):
        decode(msg.as_bytes(), source="note.eml")


def test_bad_attachment_names_the_part() -> None:
    data = build(gzip.compress(REPORT)[:-9], "application/tlsrpt+gzip", "r.json.gz")
    with pytest.raises(ReportError) as caught:
        decode(data, source="m.eml")
    assert str(caught.value).startswith("m.eml [attachment 'r.json.gz']: truncated gzip data")
