from __future__ import annotations

import base64
import gzip
import json
from email.message import EmailMessage

import pytest

from tests.conftest import make_report
from tlswatch.errors import ReportError
from tlswatch.ingest.decode import Limits, decode
from tlswatch.ingest.mail import mime_depth

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


def _nest(depth: int, inner: bytes, *, siblings: int = 0) -> bytes:
    """``inner`` at the bottom of ``depth`` multiparts (the outermost being the message),
    with ``siblings`` extra multipart parts beside it at the deepest level."""
    opening = closing = b""
    for level in range(depth):
        mark = f"b{level}".encode()
        opening += b'Content-Type: multipart/mixed; boundary="' + mark + b'"\r\n\r\n--' + \
            mark + b"\r\n"
        closing = b"\r\n--" + mark + b"--\r\n" + closing
    extra = b"".join(b'Content-Type: multipart/alternative; boundary="s%d"\r\n\r\n--s%d\r\n'
                     b"Content-Type: text/plain\r\n\r\nhello\r\n--s%d--\r\n\r\n--b%d\r\n"
                     % (i, i, i, depth - 1) for i in range(siblings))
    return b"From: a@sender.example\r\nMIME-Version: 1.0\r\n" + opening + extra + inner + closing


REPORT_PART = (b"Content-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n"
               b"\r\n" + base64.encodebytes(gzip.compress(REPORT)).replace(b"\n", b"\r\n"))


def test_mime_nesting_up_to_the_limit_is_read_deeper_is_refused_before_parsing() -> None:
    assert mime_depth(_nest(21, REPORT_PART)) == 21
    assert decode(_nest(20, REPORT_PART), source="m.eml")[0].data["report-id"] == "mail-1"
    with pytest.raises(ReportError, match=r"m.eml: MIME parts nested more than 20 levels deep"):
        decode(_nest(21, REPORT_PART), source="m.eml")
    with pytest.raises(ReportError, match="more than 3 levels"):
        decode(_nest(4, REPORT_PART), source="m.eml", limits=Limits(max_mime_depth=3))


def test_many_parts_side_by_side_are_not_nesting() -> None:
    wide = _nest(2, REPORT_PART, siblings=40)  # 42 boundaries, but only 3 levels deep
    assert mime_depth(wide) == 3
    assert decode(wide, source="w.eml")[0].data["report-id"] == "mail-1"


def _base64_mail(body: bytes) -> bytes:
    """A report attachment whose base64 text is ``body``, exactly as given."""
    return build(body, "application/tlsrpt+gzip", "r.json.gz", cte="7bit").replace(
        b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: base64")


def test_broken_base64_is_refused_missing_padding_is_not() -> None:
    good = base64.b64encode(gzip.compress(REPORT)).rstrip(b"=")
    one_over = good[:len(good) - len(good) % 4] + b"A"  # no padding can make this whole
    for body, reason in ((good[:10] + b"*%!" + good[10:], "characters outside the base64"),
                         (one_over, "padding could fix")):
        with pytest.raises(ReportError, match=f"attachment 'r.json.gz': broken base64: .*{reason}"):
            decode(_base64_mail(body), source="b.eml")
    assert decode(_base64_mail(good), source="p.eml")[0].data["report-id"] == "mail-1"
