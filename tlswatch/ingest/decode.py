"""Bytes in, report documents out: sniff gzip / zip / JSON / e-mail by content, never by label.

Pure: no I/O.  Hostile input is expected: sizes are capped before and *while* inflating,
JSON nesting is capped, and every failure is a ``ReportError`` naming input, place, reason.
"""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile
import zlib
from dataclasses import dataclass, replace
from typing import Any

import jiter

from tlswatch.errors import ReportError
from tlswatch.ingest.jsontext import parse as parse_json_text

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
UTF8_BOM = b"\xef\xbb\xbf"
_MESSAGE_START = re.compile(rb"^(From |[!-9;-~]+:)")
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps applied to every input (defaults match the settings' defaults)."""

    max_input_bytes: int = 10 * 1024 * 1024
    max_inflated_bytes: int = 50 * 1024 * 1024
    max_json_depth: int = 64
    max_policies: int = 1_000  # policy entries in one report
    max_failure_details: int = 20_000  # failure details in one report, all entries together
    max_mime_depth: int = 20


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Container:
    """What the envelope said about a report; the JSON stays authoritative (RFC 8460 s5.3)."""

    filename: str | None = None
    content_type: str | None = None
    report_domain: str | None = None
    submitter: str | None = None
    subject_report_id: str | None = None
    message_id: str | None = None
    sender_domain: str | None = None  # the From address's domain
    url_domain: str | None = None  # the domain of the receiving URL (POST /v1/reports/<domain>)
    message: bool = False  # the report came inside an e-mail message


@dataclass(frozen=True, slots=True)
class Document:
    """One report as parsed JSON, with its exact JSON bytes and where it came from."""

    source: str
    data: dict[str, Any]
    raw_json: bytes
    raw_gzip: bytes | None
    container: Container


def decode(
    data: bytes, *, source: str, filename: str | None = None, url_domain: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Document]:
    """Turn one input (a report file or an e-mail message) into its report documents.

    ``url_domain`` is the domain the receiving URL named, if any (checked by the receiver).
    """
    if len(data) > limits.max_input_bytes:
        raise ReportError(
            source, f"input is {len(data):,} bytes, over the limit of {limits.max_input_bytes:,}"
        )
    if _blank(data):
        raise ReportError(source, "empty input")
    if _is_report_payload(data):
        container = Container(filename=filename, url_domain=url_domain)
        return [decode_payload(data, source=source, container=container, limits=limits)]
    if _MESSAGE_START.match(data):
        from tlswatch.ingest.mail import parse_message

        message = parse_message(data, source=source, max_depth=limits.max_mime_depth)
        documents: list[Document] = []
        errors: list[ReportError] = []
        for part in message.parts:
            try:
                documents.append(decode_payload(
                    part.payload, source=f"{source} [{part.label}]",
                    container=replace(message.container, filename=part.filename,
                                      content_type=part.content_type, url_domain=url_domain),
                    limits=limits))
            except ReportError as exc:
                # A part picked only for its generic type (a logo as octet-stream) that is no
                # report is not one: it spoils nothing when another part is.
                if not (_GENERIC.match(part.content_type) and not _is_report_payload(
                        part.payload) and not _REPORT_NAME.search(part.filename or "")):
                    raise
                errors.append(exc)
        if not documents:
            raise errors[0]
        return documents
    raise ReportError(source, "not a TLS-RPT report: neither JSON, gzip, zip nor an e-mail message")


def _blank(data: bytes) -> bool:
    """Whether the bytes are empty or ASCII white space (what ``not data.strip()`` says,
    without copying them)."""
    return not data or data.isspace()


_GENERIC = re.compile(r"^application/octet-stream$", re.IGNORECASE)
_REPORT_NAME = re.compile(r"\.json(\.gz)?$|\.gz$|\.zip$", re.IGNORECASE)


def _is_report_payload(data: bytes) -> bool:
    if data.startswith((GZIP_MAGIC, ZIP_MAGIC)):
        return True
    head = data[3:67] if data.startswith(UTF8_BOM) else data[:64]
    return head.lstrip()[:1] in (b"{", b"[")


def decode_payload(
    data: bytes, *, source: str, container: Container | None = None, limits: Limits = DEFAULT_LIMITS
) -> Document:
    """Decode one report payload: gzip, zip with one report, or JSON."""
    raw_gzip: bytes | None = None
    container = container or Container()
    if data.startswith(GZIP_MAGIC):
        raw_gzip = data
        data = gunzip(data, source=source, limit=limits.max_inflated_bytes)
    elif data.startswith(ZIP_MAGIC):
        data = unzip_one(data, source=source, limit=limits.max_inflated_bytes)
        if data.startswith(GZIP_MAGIC):
            raw_gzip = data
            data = gunzip(data, source=source, limit=limits.max_inflated_bytes)
    if _blank(data):
        raise ReportError(source, "empty report")
    # Counted in the bytes first: parsing a report of 200,000 details costs ~300 MB.
    _check_sizes_unparsed(data, source=source, limits=limits)
    parsed = parse_json(data, source=source, max_depth=limits.max_json_depth)
    _check_sizes(parsed, source=source, limits=limits)
    return Document(source=source, data=parsed, raw_json=data, raw_gzip=raw_gzip,
                    container=container)


def _check_sizes_unparsed(data: bytes, *, source: str, limits: Limits) -> None:
    details = data.count(b'"result-type"')
    if details > limits.max_failure_details:
        raise ReportError(source, f"{details:,} failure details, over the limit of "
                          f"{limits.max_failure_details:,} per report",
                          path="policies[].failure-details")
    policies = data.count(b'"policy-type"')
    if policies > limits.max_policies:
        raise ReportError(source, f"{policies:,} policy entries, over the limit of "
                          f"{limits.max_policies:,}", path="policies")


def _check_sizes(report: dict[str, Any], *, source: str, limits: Limits) -> None:
    """Refuse reports with more entries than any real one, before they are validated."""
    policies = report.get("policies")
    if not isinstance(policies, list):
        return  # validation says what is wrong
    if len(policies) > limits.max_policies:
        raise ReportError(source, f"{len(policies):,} policy entries, over the limit of "
                          f"{limits.max_policies:,}", path="policies")
    details = sum(len(p["failure-details"]) for p in policies
                  if isinstance(p, dict) and isinstance(p.get("failure-details"), list))
    if details > limits.max_failure_details:
        raise ReportError(source, f"{details:,} failure details, over the limit of "
                          f"{limits.max_failure_details:,} per report",
                          path="policies[].failure-details")


def gunzip(data: bytes, *, source: str, limit: int) -> bytes:
    """Inflate gzip (all members), refusing as soon as the output would pass ``limit``."""
    # Nearly every report is one whole member: inflated in one call (capped), else again
    # piece by piece below, which says what is wrong.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        whole = inflater.decompress(data, limit + 1)
    except zlib.error:
        pass
    else:
        if inflater.eof and not inflater.unused_data and len(whole) <= limit:
            return whole
    chunks: list[bytes] = []
    size = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while pending:
                chunk = inflater.decompress(pending, _CHUNK)
                size += len(chunk)
                if size > limit:
                    raise ReportError(source, f"inflates to more than {limit:,} bytes (refused "
                                      "while inflating; a compression bomb?)")
                chunks.append(chunk)
                pending = inflater.unconsumed_tail
            chunks.append(inflater.flush())  # all input is consumed: what is left is small
        except zlib.error as exc:
            raise ReportError(source, f"corrupt gzip data ({exc})") from exc
        if not inflater.eof:
            raise ReportError(source, f"truncated gzip data: the stream ends after "
                              f"{len(data):,} compressed bytes without its end marker")
        rest = inflater.unused_data.lstrip(b"\x00")
        if rest and not rest.startswith(GZIP_MAGIC):
            raise ReportError(source, "unexpected bytes after the end of the gzip data")
    return b"".join(chunks)


def unzip_one(data: bytes, *, source: str, limit: int) -> bytes:
    """Read the one report file in a zip archive, capped while reading."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist()
                   if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
        if len(members) != 1:
            names = ", ".join(repr(m.filename) for m in members[:5]) or "none"
            raise ReportError(source, f"zip archive must hold exactly one report file, "
                              f"holds {len(members)} ({names})")
        with archive.open(members[0]) as fh:
            content = fh.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise ReportError(source, f"corrupt zip archive ({exc})") from exc
    except RuntimeError as exc:  # encrypted member
        raise ReportError(source, f"unreadable zip archive ({exc})") from exc
    if len(content) > limit:
        raise ReportError(source, f"zip member {members[0].filename!r} inflates to more than "
                          f"{limit:,} bytes (refused while inflating)")
    return content


def parse_json(data: bytes, *, source: str, max_depth: int) -> dict[str, Any]:
    """Parse UTF-8 JSON (BOM allowed) into an object no deeper than ``max_depth``.

    jiter (a compiled parser that refuses duplicate keys itself) parses first; whatever it
    refuses (broken or unusual JSON: NaN, escaped duplicate keys, deep nesting) is parsed
    again by the standard library, whose verdict and message stand.  Where jiter accepts,
    the two give the same value (tests compare them on crafted and mutated reports)."""
    if data.startswith(UTF8_BOM):
        data = data[3:]
    if 0 < sys.get_int_max_str_digits() < _JITER_MAX_DIGITS:  # a lower limit than jiter's
        return parse_json_slowly(data, source=source, max_depth=max_depth)
    try:
        value: Any = jiter.from_json(data, catch_duplicate_keys=True, allow_inf_nan=False)
    except ValueError:
        return parse_json_slowly(data, source=source, max_depth=max_depth)
    return _checked(value, data, source=source, max_depth=max_depth)


# jiter reads integers of up to 4,300 digits, Python's default limit
# (``sys.set_int_max_str_digits``); where a lower one is set, the standard library decides.
_JITER_MAX_DIGITS = 4300


def parse_json_slowly(data: bytes, *, source: str, max_depth: int) -> dict[str, Any]:
    """``parse_json`` by the standard library alone (``data`` without a BOM)."""
    value = parse_json_text(data, source=source, max_depth=max_depth)
    return _checked(value, data, source=source, max_depth=max_depth)


def _checked(value: Any, data: bytes, *, source: str, max_depth: int) -> dict[str, Any]:
    """The parsed value if it is a report object with nothing no column can hold."""
    if not isinstance(value, dict):
        raise ReportError(source, f"JSON is {_json_kind(value)}, not a report object")
    if _SURROGATE_ESCAPE.search(data) and not _encodable(value):
        raise ReportError(source, "a JSON string holds an unpaired UTF-16 surrogate escape "
                          "(\\uD800-\\uDFFF): not text")
    if b"\\u0000" in data:
        path = _nul_path(value)
        if path is not None:
            raise ReportError(source, "a JSON string holds a NUL character (\\u0000): not "
                              "text (no database column can hold it)", path=path)
    # Nesting can be no deeper than the number of brackets: most reports need no walk.
    if data.count(b"{") + data.count(b"[") <= max_depth:
        return value
    path = _too_deep(value, max_depth)
    if path is not None:
        raise ReportError(source, f"JSON nested deeper than {max_depth} levels", path=path)
    return value


# Only an escape can put a lone surrogate into a parsed string; pairs are legal (emoji).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_deep(value: Any, max_depth: int) -> str | None:
    """The path of the first container nested deeper than ``max_depth``, else None."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            return (path[:60] + "...") if len(path) > 60 else (path or "$")
        if isinstance(node, dict):
            for key, child in node.items():
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, f"{path}.{key}" if path else key))
        else:
            for index, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, f"{path}[{index}]"))
    return None


def _nul_path(value: Any) -> str | None:
    """The path of the first key or string holding a NUL character, else None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path or "$"
        elif isinstance(node, dict):
            for key, child in node.items():
                where = f"{path}.{key}" if path else key
                if "\x00" in key:
                    return (path or "$") + " (a key)"
                stack.append((child, where))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
    return None


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
