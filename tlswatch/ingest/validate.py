"""Report documents -> validated, normalised reports, or a ``ReportError`` naming the field.

Two tiers: an *error* means the report cannot be loaded; a *warning* is a
real-world deviation that loses no meaning, recorded on the report and shown by
``report show``.  pydantic does the fast check; when it refuses, the JSON Schema is run to
say precisely where and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tlswatch.dnsname import BadDomain, is_domain, parse_domain
from tlswatch.errors import ReportError
from tlswatch.ingest.decode import Container, Document
from tlswatch.schemas import REPORT, RFC8460_RESULT_TYPES, Report, report_schema
from tlswatch.schemas.models import PolicyEntry

if TYPE_CHECKING:  # jsonschema is imported only when a report is refused (it is slow to load)
    import jsonschema


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """What a policy entry says once normalised (lists are lists, the domain is known)."""

    policy_domain: str
    policy_string: list[str] | None
    mx_host: list[str] | None


@dataclass(frozen=True, slots=True)
class ValidReport:
    source: str
    report: Report
    start: datetime  # UTC, naive
    end: datetime
    policies: list[PolicyFacts]
    warnings: list[str]
    raw_json: bytes
    raw_gzip: bytes | None
    container: Container
    digest: str  # sha256 of the report's JSON bytes: what an ordinary duplicate must match


# Reports cover one UTC day (RFC 8460 s4.1); a start outside these bounds is no real report
# and would poison every later computation (year 1 cannot even be moved to UTC).
EARLIEST_START = datetime(2010, 1, 1)
CLOCK_SKEW = timedelta(days=1)  # how far ahead of our clock a report's start may be
LONGEST_RANGE = timedelta(days=31)


def validate(doc: Document, *, now: datetime | None = None) -> ValidReport:
    """Validate one decoded document; raise ``ReportError`` for anything that cannot load.

    ``now`` (naive UTC; default: the clock) bounds how far in the future a report may start.
    """
    try:
        return _validate(doc, now or datetime.now(UTC).replace(tzinfo=None))
    except ReportError:
        raise
    except Exception as exc:  # whatever a hostile document finds, it is a refusal, never a crash
        raise ReportError(doc.source, f"unreadable report ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from exc


def _validate(doc: Document, now: datetime) -> ValidReport:
    try:
        report = REPORT.validate_python(doc.data)
    except ValidationError as exc:
        raise _explain(doc, exc) from None
    warnings: list[str] = []
    date_range = report["date-range"]
    start = _parse_datetime(doc, date_range["start-datetime"], "start-datetime", warnings)
    end = _parse_datetime(doc, date_range["end-datetime"], "end-datetime", warnings)
    _check_range(doc, start, end, now)
    if "contact-info" not in report:
        warnings.append("contact-info: missing")
    elif report["contact-info"] is None:
        warnings.append("contact-info: null")
    subject_id = doc.container.subject_report_id
    # A Subject Report-ID in msg-id form (<id@host>) is normal (RFC 8460's own example).
    if subject_id and "@" not in subject_id and subject_id != report["report-id"]:
        warnings.append(f"report-id: the Subject says {subject_id!r}; the JSON's value is used")
    needed = any(_given_domain(e["policy"].get("policy-domain")) is None
                 for e in report["policies"])
    fallback = _fallback_domain(doc, report) if needed else (UNATTRIBUTED, "")
    facts = [_policy_facts(doc, i, entry, fallback, warnings)
             for i, entry in enumerate(report["policies"])]
    # The report's bytes as received: senders re-send the very same bytes (to each rua, and
    # on retries), so other bytes under a known report-id are other content.
    digest = hashlib.sha256(doc.raw_json.strip()).hexdigest()
    return ValidReport(source=doc.source, report=report, start=start, end=end, policies=facts,
                       warnings=warnings, raw_json=doc.raw_json, raw_gzip=doc.raw_gzip,
                       container=doc.container, digest=digest)


def _check_range(doc: Document, start: datetime, end: datetime, now: datetime) -> None:
    where = "date-range"
    if end < start:
        raise ReportError(doc.source, "end-datetime is before start-datetime", path=where)
    if start < EARLIEST_START:
        raise ReportError(doc.source, f"start-datetime {start.date().isoformat()} is before "
                          f"{EARLIEST_START:%Y-%m-%d}: not a real report", path=where)
    if start > now + CLOCK_SKEW:
        raise ReportError(doc.source, f"future-dated: start-datetime {start.isoformat()}Z is "
                          f"more than {CLOCK_SKEW.days} day ahead of this host's clock "
                          f"({now:%Y-%m-%dT%H:%M}Z)", path=where)
    if end - start > LONGEST_RANGE:
        raise ReportError(doc.source, f"covers {(end - start).days} days; a report covers one "
                          f"day (at most {LONGEST_RANGE.days} accepted)", path=where)


def _policy_facts(doc: Document, index: int, entry: PolicyEntry, fallback: tuple[str, str],
                  warnings: list[str]) -> PolicyFacts:
    where = f"policies[{index}]"
    policy = entry["policy"]
    given = policy.get("policy-domain")
    domain = _given_domain(given)
    if domain is None and given and given.strip():
        warnings.append(f"{where}.policy.policy-domain: {given[:80]!r} is no "
                        "domain name; taken as missing")
    if domain is None:
        domain, said_by = fallback
        if domain == UNATTRIBUTED:
            warnings.append(f"{where}.policy.policy-domain: missing, and {said_by}; stored "
                            f"under {UNATTRIBUTED}")
    strings = policy.get("policy-string")
    # A missing policy-string is no warning: Mail.ru never sends one (the delivery impact is
    # then "unknown"), and a warning on each of its reports would hide the real ones.
    if policy["policy-type"] == "tlsa" and strings and len(strings) == 1:
        # Microsoft sends one string holding a JSON array: unpacked, as every report of
        # theirs does it (a warning on each would hide the real ones).
        strings = _json_string_list(strings[0]) or strings
    mx: list[str] | None = None
    # mx-host is a string in RFC 8460's example and an array in its errata: both are normal.
    for key, value in (("mx-host", policy.get("mx-host")),
                       ("mx-host-pattern", policy.get("mx-host-pattern"))):
        if value is None:
            continue
        if key == "mx-host-pattern":
            warnings.append(f"{where}.policy.mx-host-pattern: older name for mx-host")
        mx = (mx or []) + ([value] if isinstance(value, str) else list(value))
    _check_summary(entry, where, warnings)
    for d_index, detail in enumerate(entry.get("failure-details") or ()):
        d_where = f"{where}.failure-details[{d_index}]"
        if detail["result-type"] not in RFC8460_RESULT_TYPES:
            warnings.append(f"{d_where}.result-type: {detail['result-type']!r} is not in the "
                            "RFC 8460 registry; kept as sent")
        if detail.get("additional-info-uri") is not None \
                and detail.get("additional-information") is None:
            warnings.append(f"{d_where}: additional-info-uri used for additional-information")
    return PolicyFacts(policy_domain=domain, policy_string=strings, mx_host=mx)


def _check_summary(entry: PolicyEntry, where: str, warnings: list[str]) -> None:
    details = entry.get("failure-details")
    if not details:
        return
    detail_sum = sum(d["failed-session-count"] for d in details)
    total = entry["summary"]["total-failure-session-count"]
    if detail_sum != total:
        warnings.append(f"{where}.summary.total-failure-session-count: {total} but the "
                        f"failure-details add up to {detail_sum}; both kept")


def _json_string_list(text: str) -> list[str] | None:
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


UNATTRIBUTED = "(unattributed)"
_FILENAME = re.compile(r"^[^!]+!([^!]+)!\d+!\d+(![^!]*)?\.json(\.gz)?$", re.IGNORECASE)
# sys4 tlsrpt-reporter (Postfix): "2026-11-27T00:00:00Z_idx1_example.com"
_REPORT_ID_DOMAIN = re.compile(r"^\d{4}-\d\d-\d\dT[0-9:.]+Z?_idx\d+_([^_\s]+)$")


def _given_domain(value: str | None) -> str | None:
    """A policy-domain as sent, as a checked host name; missing, blank or no host name (a
    path, an escape sequence, the placeholder's own name) is None."""
    if value is None or not value.strip():
        return None
    try:
        return parse_domain(value)
    except BadDomain:
        return None


def _fallback_domain(doc: Document, report: Report) -> tuple[str, str]:
    """The domain for entries without one, and what said it (or why nothing did).

    In order: the envelope (TLS-Report-Domain header, RFC 8460 file name), the receiving
    URL, the other entries of the report when they all name one domain, and the report-id
    form of sys4 tlsrpt-reporter; else a visible placeholder.
    """
    c = doc.container
    match = _FILENAME.match(c.filename.rsplit("/", 1)[-1]) if c.filename else None
    named = {d for p in report["policies"]
             if (d := _given_domain(p["policy"].get("policy-domain")))}
    id_match = _REPORT_ID_DOMAIN.match(report["report-id"])
    for candidate, said_by in (
        (c.report_domain, "the TLS-Report-Domain header"),
        (match.group(1) if match else None, "the report's file name"),
        (c.url_domain, "the receiving URL"),
        (next(iter(named)) if len(named) == 1 else None, "the report's other entries"),
        (id_match.group(1) if id_match else None, "the report-id"),
    ):
        if candidate and is_domain(candidate):
            return parse_domain(candidate), said_by
    return UNATTRIBUTED, ("no header, file name, URL, other entry or report-id names the "
                          "domain")


def _parse_datetime(doc: Document, text: str, key: str, warnings: list[str]) -> datetime:
    if len(text) == 20 and text[19] == "Z" and text[10] == "T":  # what nearly all send
        try:
            return datetime.fromisoformat(text[:19])
        except ValueError:
            pass  # the slow path below gives the error
    normal = text.upper().replace(" ", "T")
    if normal.endswith("Z"):
        normal = normal[:-1] + "+00:00"
    normal = normal.replace("T23:59:60", "T23:59:59")  # a leap second, as RFC 3339 allows
    try:
        value = datetime.fromisoformat(normal)
        if value.tzinfo is None:
            warnings.append(f"date-range.{key}: no time zone; read as UTC")
            return value
        return value.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: year 1 moved to UTC
        raise ReportError(doc.source, f"not a valid RFC 3339 date-time, got {text!r}",
                          path=f"date-range.{key}") from None


@cache
def _schema_validator() -> jsonschema.protocols.Validator:
    import jsonschema

    cls = jsonschema.validators.validator_for(report_schema())
    cls.check_schema(report_schema())
    validator: jsonschema.protocols.Validator = cls(report_schema())
    return validator


def schema_errors(data: Any) -> list[tuple[str, str]]:
    """Every JSON Schema error as (JSON path, plain message), in document order."""
    errors = sorted(_schema_validator().iter_errors(data), key=lambda e: list(map(str, e.path)))
    return [(_json_path(e.absolute_path), _message(e)) for e in errors]


def _explain(doc: Document, exc: ValidationError) -> ReportError:
    found = schema_errors(doc.data)
    if found:
        path, message = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return ReportError(doc.source, message + more, path=path)
    # Only the models refuse it (a decimal number as a count): say what pydantic said.
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    return ReportError(doc.source, f"{message}, got {_show(first.get('input'))}",
                       path=_json_path(first["loc"]))


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_KIND = {"integer": "an integer", "string": "a string", "array": "an array",
         "object": "an object", "null": "null", "number": "a number", "boolean": "a boolean"}


def _message(error: jsonschema.ValidationError) -> str:
    got = _show(error.instance)
    keyword = error.validator
    value: Any = error.validator_value
    schema: Any = error.schema
    instance: Any = error.instance
    if keyword == "maximum":
        return f"must be at most {value:,}, got {got}"
    if keyword == "maxLength":
        return f"longer than {value:,} characters ({len(instance):,})"
    if keyword == "maxItems":
        return f"more than {value:,} items ({len(instance):,})"
    if keyword == "required":
        missing = [k for k in value if k not in instance]
        return f"missing required field {missing[0]!r}" if missing else error.message
    if schema.get("$ref") == "#/$defs/count" or (
        keyword in ("type", "minimum") and schema.get("minimum") == 0
    ):
        return f"must be a non-negative integer, got {got}"
    if keyword == "type":
        kinds: list[str] = value if isinstance(value, list) else [value]
        return f"must be {' or '.join(_KIND.get(k, str(k)) for k in kinds)}, got {got}"
    if keyword == "enum":
        allowed = ", ".join(repr(v) for v in value)
        return f"must be one of {allowed}, got {got}"
    if keyword == "pattern":
        return f"not a valid RFC 3339 date-time, got {got}"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "anyOf":
        return f"must be a string or an array of strings, got {got}"
    return error.message


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
