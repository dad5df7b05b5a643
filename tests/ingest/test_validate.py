from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import detail, make_report, policy
from tlswatch.errors import ReportError
from tlswatch.ingest.decode import Container, Document
from tlswatch.ingest.validate import schema_errors, validate


def doc(data: dict[str, Any], **container: Any) -> Document:
    return Document(source="r07.json", data=data, raw_json=json.dumps(data).encode(),
                    raw_gzip=None, container=Container(**container))


def warnings_of(data: dict[str, Any], **container: Any) -> list[str]:
    return validate(doc(data, **container)).warnings


def test_clean_report_has_no_warnings() -> None:
    data = make_report(policies=[policy("example.com", 5, 1, [detail("certificate-expired", 1)])])
    assert warnings_of(data) == []


def test_real_world_deviations_load_with_warnings() -> None:
    data = make_report(policies=[
        policy("example.com", 5, 9, [
            {"result-type": "certificate-expired", "failed-session-count": 2,
             "additional-info-uri": "https://x.example/info"},
            detail("brand-new-type", 1),
        ]),
        {"policy": {"policy-type": "tlsa", "policy-domain": "example.com",
                    "policy-string": ['["3 1 1 abcd", "3 1 1 ef01"]'], "mx-host": "mx.example.com"},
         "summary": {"total-successful-session-count": 5, "total-failure-session-count": 0}},
        {"policy": {"policy-type": "sts", "policy-domain": "example.com",
                    "mx-host-pattern": ["*.example.com"]},
         "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0}},
    ])
    data["contact-info"] = None
    data["date-range"]["start-datetime"] = "2026-11-25T00:00:00"
    result = validate(doc(data))
    text = "\n".join(result.warnings)
    for expected in [
        "contact-info: null",
        "date-range.start-datetime: no time zone; read as UTC",
        "policies[0].summary.total-failure-session-count: 9 but the failure-details add up to 3",
        "policies[0].failure-details[0]: additional-info-uri used for additional-information",
        "policies[0].failure-details[1].result-type: 'brand-new-type' is not in the RFC 8460",
        "policies[2].policy.mx-host-pattern: older name for mx-host",
    ]:
        assert expected in text
    # What the big senders all do is normal, not a warning: Microsoft's JSON array in one
    # string and its details without addresses, mx-host as a string or an array.
    assert "policies[1]" not in text and "sending-mta-ip" not in text
    assert "policy-string: missing" not in text  # Mail.ru never sends one
    assert result.policies[1].policy_string == ["3 1 1 abcd", "3 1 1 ef01"]
    assert result.policies[1].mx_host == ["mx.example.com"]
    assert result.start.isoformat() == "2026-11-25T00:00:00"


def test_zoned_datetimes_are_converted_to_utc() -> None:
    data = make_report()
    data["date-range"] = {"start-datetime": "2026-11-25T02:00:00+02:00",
                          "end-datetime": "2026-11-26T01:59:59+02:00"}
    result = validate(doc(data))
    assert result.start.isoformat() == "2026-11-25T00:00:00"


NO_DOMAIN = {"policy": {"policy-type": "no-policy-found"},
             "summary": {"total-successful-session-count": 3, "total-failure-session-count": 0}}


def domains_of(data: dict[str, Any], **container: Any) -> list[str]:
    return [p.policy_domain for p in validate(doc(data, **container)).policies]


@pytest.mark.parametrize("missing", [None, "", "  "])
def test_missing_policy_domain_is_taken_from_where_it_is_said_in_order(
        missing: str | None) -> None:
    entry = copy.deepcopy(NO_DOMAIN)
    if missing is not None:
        entry["policy"]["policy-domain"] = missing
    data = make_report(rid="opaque-id", policies=[entry])
    assert domains_of(data, report_domain="Example.NET", url_domain="example.com") == \
        ["example.net"]
    assert domains_of(data, filename="google.com!example.org!1!2!001.json.gz",
                      url_domain="example.com") == ["example.org"]
    assert domains_of(data, url_domain="example.com") == ["example.com"]
    with_other = make_report(rid="opaque-id", policies=[entry, policy("example.info", 5, 0)])
    assert domains_of(with_other) == ["example.info", "example.info"]
    postfix = make_report(rid="2026-11-25T00:00:00Z_idx1_example.biz", policies=[entry])
    assert domains_of(postfix) == ["example.biz"]
    result = validate(doc(data))
    assert [p.policy_domain for p in result.policies] == ["(unattributed)"]
    assert any("stored under (unattributed)" in w for w in result.warnings)


def test_domains_are_attributed_without_warnings_when_a_source_names_them() -> None:
    data = make_report(rid="2026-11-25T00:00:00Z_idx1_example.biz",
                       policies=[copy.deepcopy(NO_DOMAIN), policy("example.biz", 5, 0)])
    assert warnings_of(data) == []


def test_a_hostile_envelope_domain_is_not_taken() -> None:
    data = make_report(rid="x", policies=[copy.deepcopy(NO_DOMAIN)])
    assert domains_of(data, report_domain="../../etc", filename="a!/tmp/x!1!2.json") == \
        ["(unattributed)"]


def test_a_subject_report_id_in_msg_id_form_is_normal() -> None:
    data = make_report(rid="2026-11-25T00:00:00Z_example.com")
    assert warnings_of(data, subject_report_id="2026.11.25T00.00.00Z+example.com@google.com") \
        == []
    assert warnings_of(data, subject_report_id="other-id") != []


def mutated(fn: Any) -> dict[str, Any]:
    data = make_report(policies=[policy("example.com", 1, 1, [detail("starttls-not-supported",
                                                                     1)])])
    fn(data)
    return data


BAD = {
    "count text": (lambda d: d["policies"][0]["summary"].update(
        {"total-successful-session-count": "many"}),
        'r07.json: policies[0].summary.total-successful-session-count: must be a '
        'non-negative integer, got "many"'),
    "count float": (lambda d: d["policies"][0]["failure-details"][0].update(
        {"failed-session-count": 1.5}), "failure-details[0].failed-session-count: must be a "
        "non-negative integer, got 1.5"),
    "count bool": (lambda d: d["policies"][0]["summary"].update(
        {"total-failure-session-count": True}), "must be a non-negative integer, got true"),
    "no org": (lambda d: d.pop("organization-name"),
               "r07.json: missing required field 'organization-name'"),
    "policies object": (lambda d: d.update(policies={}), "policies: must be an array, got {}"),
    "policy type": (lambda d: d["policies"][0]["policy"].update({"policy-type": "x"}),
                    "policies[0].policy.policy-type: must be one of 'tlsa', 'sts', "
                    "'no-policy-found', got \"x\""),
    "datetime": (lambda d: d["date-range"].update({"end-datetime": "26/11/2026"}),
                 'date-range.end-datetime: not a valid RFC 3339 date-time, got "26/11/2026"'),
    "reversed": (lambda d: d["date-range"].update({"end-datetime": "2020-01-01T00:00:00Z"}),
                 "date-range: end-datetime is before start-datetime"),
    "org number": (lambda d: d.update({"organization-name": 7}),
                   "organization-name: must be a string, got 7"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_errors_name_input_field_and_reason(case: str) -> None:
    fn, message = BAD[case]
    with pytest.raises(ReportError) as caught:
        validate(doc(mutated(fn)))
    assert message in str(caught.value)


POISON = {  # each once passed validation and then broke every later load or summary
    "2^63": (("policies", 0, "summary", "total-successful-session-count"), 2**63,
             "total-successful-session-count: must be at most 1,000,000,000,000, got "
             "9223372036854775808"),
    "2^63-1": (("policies", 0, "failure-details", 0, "failed-session-count"), 2**63 - 1,
               "failed-session-count: must be at most 1,000,000,000,000"),
    "1e300": (("policies", 0, "summary", "total-failure-session-count"), 1e300,
              "total-failure-session-count: must be at most 1,000,000,000,000, got 1e+300"),
    "5.0": (("policies", 0, "summary", "total-successful-session-count"), 5.0,
            "total-successful-session-count: must be a non-negative integer, got 5.0"),
    "year 1": (("date-range", "start-datetime"), "0001-01-01T00:00:00+01:00",
               "date-range.start-datetime: not a valid RFC 3339 date-time"),
    "year 1 UTC": (("date-range", "start-datetime"), "0001-01-01T00:00:00Z",
                   "date-range: start-datetime 0001-01-01 is before 2010-01-01"),
    "year 9999": (("date-range", "end-datetime"), "9999-12-31T23:59:59Z",
                  "date-range: covers 2912114 days; a report covers one day"),
    "future": (("date-range", "start-datetime"), "2026-11-30T00:00:01Z",
               "date-range: future-dated: start-datetime 2026-11-30T00:00:01Z is more than 1 "
               "day ahead"),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_poisoned_values_are_refused_with_the_field(case: str) -> None:
    path, value, message = POISON[case]
    data = mutated(lambda d: None)
    data["date-range"]["end-datetime"] = "2026-11-30T23:59:59Z"
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ReportError) as caught:
        validate(doc(data), now=datetime(2026, 11, 28, 12))
    assert message in str(caught.value)


def test_a_report_of_today_and_within_a_day_of_clock_skew_loads() -> None:
    data = mutated(lambda d: d["date-range"].update({"start-datetime": "2026-11-29T00:00:00Z",
                                                    "end-datetime": "2026-11-29T23:59:59Z"}))
    assert validate(doc(data), now=datetime(2026, 11, 28, 12)).start == datetime(2026, 11, 29)


def test_schema_and_models_agree_on_every_mutation() -> None:
    """The fast pydantic path must accept exactly what the JSON Schema accepts."""
    base = make_report(policies=[policy("example.com", 1, 1, [detail("x", 1)])])
    values: list[Any] = [None, "", "text", -1, 0, 1.0, 2.5, True, [], {}, ["a"], [1]]
    paths = [["organization-name"], ["report-id"], ["contact-info"], ["policies"],
             ["date-range", "start-datetime"], ["policies", 0, "policy", "policy-type"],
             ["policies", 0, "policy", "policy-string"], ["policies", 0, "policy", "mx-host"],
             ["policies", 0, "policy", "policy-domain"], ["date-range"],
             ["policies", 0, "summary", "total-failure-session-count"],
             ["policies", 0, "failure-details"],
             ["policies", 0, "failure-details", 0, "result-type"],
             ["policies", 0, "failure-details", 0, "sending-mta-ip"],
             ["policies", 0, "failure-details", 0, "failed-session-count"]]
    checked = 0
    for path in paths:
        for value in values:
            data = copy.deepcopy(base)
            target: Any = data
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            # Only an integral decimal count (1.0) splits them: JSON Schema cannot tell 1.0
            # from 1; the models refuse it.
            by_schema = not schema_errors(data) and not (path[-1].endswith("count")
                                                         and value == 1.0)
            try:
                validate(doc(data, report_domain="example.com"))
                by_model = True
            except ReportError:
                by_model = False
            assert by_schema == by_model, (path, value)
            checked += 1
    assert checked == len(paths) * len(values)


@pytest.mark.parametrize("path", [
    ["organization-name"], ["report-id"], ["date-range"], ["date-range", "start-datetime"],
    ["policies", 0, "policy", "policy-type"],
    ["policies", 0, "summary", "total-successful-session-count"],
    ["policies", 0, "failure-details", 0, "result-type"],
    ["policies", 0, "failure-details", 0, "failed-session-count"]])
def test_a_required_field_under_its_python_name_is_missing(path: list[Any]) -> None:
    # "organization_name" is not "organization-name": the models take fields by their JSON
    # names only, as the JSON Schema does (they once took the Python names too).
    data = make_report(policies=[policy("example.com", 1, 1, [detail("x", 1)])])
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1].replace("-", "_")] = target.pop(path[-1])
    assert schema_errors(data)
    with pytest.raises(ReportError, match=f"missing required field '{path[-1]}'"):
        validate(doc(data, report_domain="example.com"))


@pytest.mark.parametrize("given", ["../../etc", "exa\x1bmple.com", "(unattributed)"])
def test_a_policy_domain_that_is_no_host_name_is_taken_as_missing(given: str) -> None:
    data = make_report(rid="2026-11-25T00:00:00Z_idx1_example.biz",
                       policies=[policy(given, 5, 0)])
    result = validate(doc(data))
    assert [p.policy_domain for p in result.policies] == ["example.biz"]
    assert any("is no domain name; taken as missing" in w for w in result.warnings)


def test_text_fields_and_lists_are_bounded() -> None:
    long_org = make_report(org="x" * 5_000_000)
    with pytest.raises(ReportError, match="organization-name: longer than 2,048 characters"):
        validate(doc(long_org))
    many_mx = make_report(policies=[policy("example.com", 1, 0)])
    many_mx["policies"][0]["policy"]["mx-host"] = ["mx.example.com"] * 101
    with pytest.raises(ReportError, match="mx-host: "):
        validate(doc(many_mx))


def test_fields_beyond_rfc_8460_are_ignored_at_every_level() -> None:
    data = make_report(policies=[policy("example.com", 5, 1, [detail("certificate-expired", 1)])])
    data["x-vendor"] = {"build": 7}
    data["policies"][0]["x-vendor"] = [1, 2]
    data["policies"][0]["policy"]["x-vendor"] = "note"
    data["policies"][0]["summary"]["x-vendor"] = None
    data["policies"][0]["failure-details"][0]["x-vendor"] = 3
    result = validate(doc(data))
    assert result.warnings == []
    assert "x-vendor" not in json.dumps(result.report)
    assert result.report["policies"][0]["summary"]["total-failure-session-count"] == 1
