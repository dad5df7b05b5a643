"""Pydantic types of an RFC 8460 section 4 report, accepting what the JSON Schema accepts."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field, PlainValidator, StrictStr, TypeAdapter
from typing_extensions import TypedDict  # pydantic refuses typing's on Python < 3.12

# IANA "STARTTLS Validation Result Types" registry as defined by RFC 8460 section 4.3.
RFC8460_RESULT_TYPES = frozenset(
    {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "tlsa-invalid",
        "dnssec-invalid",
        "dane-required",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
    }
)

DATETIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?$"
)


# The largest session count accepted in one place of a report: far above any real day's
# mail (a trillion sessions), far below where 64-bit sums could overflow.
MAX_COUNT = 10**12


def _count(value: Any) -> int:
    # Booleans and every float are refused: 1e300 or 5.0 is no session count (JSON Schema's
    # "integer" would admit 5.0; the schema is only used to word refusals).
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a non-negative integer")
    if value > MAX_COUNT:
        raise ValueError(f"must be at most {MAX_COUNT:,}")
    return value


# Every text field: real values are short (a Go error text with a URL is a few hundred
# characters); a 5 MB organisation name would make every page and summary 5 MB.
MAX_TEXT = 2048
MAX_ITEMS = 100  # policy-string lines, mx-host entries

Count = Annotated[int, PlainValidator(_count)]
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]
NonEmpty = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT)]
Texts = Annotated[list[Text], Field(max_length=MAX_ITEMS)]
StringOrList = Text | Texts
DateTimeText = Annotated[StrictStr, Field(pattern=DATETIME_PATTERN, max_length=64)]


# The report's shapes as TypedDicts, keyed by their JSON names (and by those only:
# "organization_name" is not "organization-name").  Validated, a report is plain dicts and
# lists: pydantic-core builds them in about half the time it takes to build models.  Keys
# the report does not send are absent from the result (so ``.get`` them); unknown keys are
# dropped.
DateRange = TypedDict("DateRange", {
    "start-datetime": DateTimeText,
    "end-datetime": DateTimeText,
})

Policy = TypedDict("Policy", {
    "policy-type": Literal["tlsa", "sts", "no-policy-found"],
    "policy-string": NotRequired[Texts | None],
    # Missing or empty for no-policy-found (Postfix): the loader finds the domain elsewhere.
    "policy-domain": NotRequired[Text | None],
    "mx-host": NotRequired[StringOrList | None],
    "mx-host-pattern": NotRequired[StringOrList | None],
})

Summary = TypedDict("Summary", {
    "total-successful-session-count": Count,
    "total-failure-session-count": Count,
})

FailureDetail = TypedDict("FailureDetail", {
    "result-type": NonEmpty,
    "sending-mta-ip": NotRequired[Text | None],
    "receiving-mx-hostname": NotRequired[Text | None],
    "receiving-mx-helo": NotRequired[Text | None],
    "receiving-ip": NotRequired[Text | None],
    "failed-session-count": Count,
    "additional-information": NotRequired[Text | None],
    "additional-info-uri": NotRequired[Text | None],
    "failure-reason-code": NotRequired[Text | None],
})

PolicyEntry = TypedDict("PolicyEntry", {
    "policy": Policy,
    "summary": Summary,
    "failure-details": NotRequired[list[FailureDetail] | None],
})

Report = TypedDict("Report", {
    "organization-name": NonEmpty,
    "date-range": DateRange,
    "contact-info": NotRequired[Text | None],
    "report-id": NonEmpty,
    "policies": list[PolicyEntry],
})

REPORT = TypeAdapter(Report)  # REPORT.validate_python(data) -> Report, or ValidationError
