"""Pydantic models of an RFC 8460 section 4 report, accepting what the JSON Schema accepts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictStr

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


class _Model(BaseModel):
    # Fields by their JSON names only: "organization_name" is not "organization-name".
    model_config = ConfigDict(extra="ignore", frozen=True)


class DateRange(_Model):
    start_datetime: DateTimeText = Field(alias="start-datetime")
    end_datetime: DateTimeText = Field(alias="end-datetime")


class Policy(_Model):
    policy_type: Literal["tlsa", "sts", "no-policy-found"] = Field(alias="policy-type")
    policy_string: Texts | None = Field(default=None, alias="policy-string")
    # Missing or empty for no-policy-found (Postfix): the loader finds the domain elsewhere.
    policy_domain: Text | None = Field(default=None, alias="policy-domain")
    mx_host: StringOrList | None = Field(default=None, alias="mx-host")
    mx_host_pattern: StringOrList | None = Field(default=None, alias="mx-host-pattern")


class Summary(_Model):
    total_successful_session_count: Count = Field(alias="total-successful-session-count")
    total_failure_session_count: Count = Field(alias="total-failure-session-count")


class FailureDetail(_Model):
    result_type: NonEmpty = Field(alias="result-type")
    sending_mta_ip: Text | None = Field(default=None, alias="sending-mta-ip")
    receiving_mx_hostname: Text | None = Field(default=None, alias="receiving-mx-hostname")
    receiving_mx_helo: Text | None = Field(default=None, alias="receiving-mx-helo")
    receiving_ip: Text | None = Field(default=None, alias="receiving-ip")
    failed_session_count: Count = Field(alias="failed-session-count")
    additional_information: Text | None = Field(default=None, alias="additional-information")
    additional_info_uri: Text | None = Field(default=None, alias="additional-info-uri")
    failure_reason_code: Text | None = Field(default=None, alias="failure-reason-code")


class PolicyEntry(_Model):
    policy: Policy
    summary: Summary
    failure_details: list[FailureDetail] | None = Field(default=None, alias="failure-details")


class Report(_Model):
    organization_name: NonEmpty = Field(alias="organization-name")
    date_range: DateRange = Field(alias="date-range")
    contact_info: Text | None = Field(default=None, alias="contact-info")
    report_id: NonEmpty = Field(alias="report-id")
    policies: list[PolicyEntry]
