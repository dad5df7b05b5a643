"""Report documents -> validated, normalised reports, or a ``ReportError`` naming the field.

Two tiers (issue 2): an *error* means the report cannot be loaded; a *warning* is a
real-world deviation that loses no meaning, recorded on the report and shown by
``report show``.  pydantic does the fast check; when it refuses, the JSON Schema is run to
say precisely where and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tlswatch.errors import ReportError
from tlswatch.ingest.decode import Container, Document
from tlswatch.schemas import RFC8460_RESULT_TYPES, Report, report_schema

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


def validate(doc: Document) -> ValidReport:
    """Validate one decoded document; raise ``ReportError`` for anything that cannot load."""
    try:
        report = Report.model_validate(doc.data)
    except ValidationError as exc:
        raise _explain(doc, exc) from None
    warnings: list[str] = []
    start = _parse_datetime(doc, report.date_range.start_datetime, "start-datetime", warnings)
    end = _parse_datetime(doc, report.date_range.end_datetime, "end-datetime", warnings)
    if end < start:
        raise ReportError(doc.source, "end-datetime is before start-datetime", path="date-range")
    if "contact-info" not in doc.data:
        warnings.append("contact-info: missing")
    elif report.contact_info is None:
        warnings.append("contact-info: null")
    if doc.container.subject_report_id and doc.container.subject_report_id != report.report_id:
        warnings.append(f"report-id: the Subject says {doc.container.subject_report_id!r}; "
                        "the JSON's value is used")
    facts = [_policy_facts(doc, i, entry, warnings) for i, entry in enumerate(report.policies)]
    return ValidReport(source=doc.source, report=report, start=start, end=end, policies=facts,
                       warnings=warnings, raw_json=doc.raw_json, raw_gzip=doc.raw_gzip,
                       container=doc.container)


def _policy_facts(doc: Document, index: int, entry: Any, warnings: list[str]) -> PolicyFacts:
    where = f"policies[{index}]"
    policy = entry.policy
    domain = policy.policy_domain or _domain_from_container(doc.container)
    if domain is None:
        raise ReportError(doc.source, "policy-domain is missing and no TLS-Report-Domain header "
                          "or report filename says which domain it is", path=f"{where}.policy")
    if policy.policy_domain is None:
        warnings.append(f"{where}.policy.policy-domain: missing; taken from the envelope "
                        f"({domain})")
    strings = policy.policy_string
    if strings is None and policy.policy_type != "no-policy-found":
        warnings.append(f"{where}.policy.policy-string: missing")
    elif policy.policy_type == "tlsa" and strings and len(strings) == 1:
        unpacked = _json_string_list(strings[0])
        if unpacked is not None:
            warnings.append(f"{where}.policy.policy-string: one string holding a JSON array; "
                            "unpacked")
            strings = unpacked
    mx: list[str] | None = None
    for key, value in (("mx-host", policy.mx_host), ("mx-host-pattern", policy.mx_host_pattern)):
        if value is None:
            continue
        if key == "mx-host-pattern":
            warnings.append(f"{where}.policy.mx-host-pattern: older name for mx-host")
        if isinstance(value, str):
            warnings.append(f"{where}.policy.{key}: a string, read as a one-item list")
            value = [value]
        else:
            warnings.append(f"{where}.policy.{key}: an array of {len(value)}, kept as a list")
        mx = (mx or []) + list(value)
    _check_summary(entry, where, warnings)
    for d_index, detail in enumerate(entry.failure_details or []):
        d_where = f"{where}.failure-details[{d_index}]"
        if detail.result_type not in RFC8460_RESULT_TYPES:
            warnings.append(f"{d_where}.result-type: {detail.result_type!r} is not in the "
                            "RFC 8460 registry; kept as sent")
        if detail.additional_info_uri is not None and detail.additional_information is None:
            warnings.append(f"{d_where}: additional-info-uri used for additional-information")
        if None in (detail.sending_mta_ip, detail.receiving_mx_hostname, detail.receiving_ip):
            missing = [k for k, v in (("sending-mta-ip", detail.sending_mta_ip),
                                      ("receiving-mx-hostname", detail.receiving_mx_hostname),
                                      ("receiving-ip", detail.receiving_ip)) if v is None]
            warnings.append(f"{d_where}: no {', '.join(missing)}")
    return PolicyFacts(policy_domain=domain.lower().rstrip("."), policy_string=strings, mx_host=mx)


def _check_summary(entry: Any, where: str, warnings: list[str]) -> None:
    details = entry.failure_details or []
    if not details:
        return
    detail_sum = sum(d.failed_session_count for d in details)
    total = entry.summary.total_failure_session_count
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


_FILENAME = re.compile(r"^[^!]+!([^!]+)!\d+!\d+(![^!]*)?\.json(\.gz)?$", re.IGNORECASE)


def _domain_from_container(container: Container) -> str | None:
    if container.report_domain:
        return container.report_domain
    if container.filename:
        match = _FILENAME.match(container.filename.rsplit("/", 1)[-1])
        if match:
            return match.group(1)
    return None


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
    except ValueError:
        raise ReportError(doc.source, f"not a valid RFC 3339 date-time, got {text!r}",
                          path=f"date-range.{key}") from None
    if value.tzinfo is None:
        warnings.append(f"date-range.{key}: no time zone; read as UTC")
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


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
    first = exc.errors()[0]  # the schema and the models disagree: say what pydantic said
    return ReportError(doc.source, first["msg"], path=_json_path(first["loc"]))


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
