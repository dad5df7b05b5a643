from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import make_report
from tlswatch.errors import ReportError
from tlswatch.ingest.decode import Limits, decode, gunzip

REPORT = json.dumps(make_report()).encode()


def only(data: bytes, **kw: object) -> dict:
    docs = decode(data, source="in", **kw)  # type: ignore[arg-type]
    assert len(docs) == 1
    return docs[0].data


def test_content_is_sniffed_not_named() -> None:
    assert only(REPORT)["report-id"] == "r-1"
    assert only(gzip.compress(REPORT), filename="report.json")["report-id"] == "r-1"
    assert only(b"\xef\xbb\xbf" + REPORT)["report-id"] == "r-1"
    assert only(b"\n  " + REPORT)["report-id"] == "r-1"


def test_gzip_keeps_the_original_compressed_bytes() -> None:
    packed = gzip.compress(REPORT)
    doc = decode(packed, source="in")[0]
    assert doc.raw_gzip == packed and doc.raw_json == REPORT


def test_multi_member_gzip_is_read_whole() -> None:
    half = len(REPORT) // 2
    packed = gzip.compress(REPORT[:half]) + gzip.compress(REPORT[half:])
    assert only(packed)["report-id"] == "r-1"


def test_zip_with_one_report_plain_or_gzipped() -> None:
    for member in (REPORT, gzip.compress(REPORT)):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("r.json", member)
        assert only(buf.getvalue())["report-id"] == "r-1"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty input"),
        (gzip.compress(REPORT)[:-10], "truncated gzip data"),
        (gzip.compress(REPORT)[:15], "truncated gzip data"),
        (gzip.compress(b""), "empty report"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 64 levels"),
        (b'"just a string"', "not a TLS-RPT report"),
        (b'{"a": [1, 2', "not valid JSON: "),
        (gzip.compress(b"\xff\xfe{}"), "not UTF-8 text: invalid byte at offset 0"),
    ],
)
def test_hostile_bytes_get_a_clear_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ReportError) as caught:
        decode(data, source="r07.json.gz")
    assert str(caught.value).startswith("r07.json.gz: ")
    assert reason in str(caught.value)


def test_depth_limit_is_exact() -> None:
    def nested(levels: int) -> bytes:
        doc = make_report()
        inner: object = 1
        for _ in range(levels - 1):  # the report object itself is level 1
            inner = {"x": inner}
        doc["ext"] = inner
        return json.dumps(doc).encode()

    assert only(nested(64), limits=Limits(max_json_depth=64))
    with pytest.raises(ReportError, match="nested deeper than 64 levels"):
        decode(nested(65), source="in", limits=Limits(max_json_depth=64))


def test_input_size_limit() -> None:
    with pytest.raises(ReportError, match="over the limit of 100"):
        decode(REPORT + b" " * 200, source="in", limits=Limits(max_input_bytes=100))


def test_inflated_size_is_capped_while_inflating() -> None:
    bomb = gzip.compress(b" " * (3 * 1024 * 1024))
    with pytest.raises(ReportError, match="inflates to more than 1,048,576 bytes"):
        gunzip(bomb, source="bomb", limit=1024 * 1024)


def test_zip_member_is_capped_while_inflating() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.json", b" " * (3 * 1024 * 1024))
    with pytest.raises(ReportError, match="inflates to more than"):
        decode(buf.getvalue(), source="in", limits=Limits(max_inflated_bytes=1024 * 1024))


BOMB_CHILD = r"""
import gzip, sys, zlib
from tlswatch.errors import ReportError
from tlswatch.ingest.decode import decode
# 400 MiB of zeros, compressed in pieces so the test itself never holds it inflated.
comp = zlib.compressobj(9, zlib.DEFLATED, 31)
block = bytes(1024 * 1024)
bomb = b"".join(comp.compress(block) for _ in range(400)) + comp.flush()
assert len(bomb) < 10 * 1024 * 1024
try:
    decode(bomb, source="bomb.json.gz")
except ReportError as exc:
    print("refused:", exc)
# VmHWM is this address space's peak (ru_maxrss would carry the parent's over exec).
status = open("/proc/self/status").read()
print("maxrss_kib", int(status.split("VmHWM:")[1].split()[0]))
"""


def test_400_mib_gzip_bomb_is_refused_with_small_memory() -> None:
    out = subprocess.run([sys.executable, "-c", BOMB_CHILD], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout
    assert "refused: bomb.json.gz: inflates to more than 52,428,800 bytes" in out
    rss_mib = int(out.split("maxrss_kib")[1]) / 1024
    assert rss_mib < 200, f"peak RSS {rss_mib:.0f} MiB"


def test_a_key_given_twice_is_refused_not_silently_overwritten() -> None:
    data = (b'{"organization-name": "O", "report-id": "shown", "report-id": "stored", '
            b'"date-range": {}, "policies": []}')
    with pytest.raises(ReportError, match="the key 'report-id' more than once"):
        decode(data, source="dup.json")
