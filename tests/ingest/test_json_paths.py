"""The two JSON parsers give one verdict: jiter's fast path and the standard library's.

Reports are parsed by jiter first; whatever it refuses goes to the standard library, whose
verdict and message stand.  So the fast path is only right if, wherever jiter accepts, the
standard library accepts the same value and the checks after parsing refuse the same
inputs.  These tests hold the two paths to that, on crafted inputs and on thousands of
mutations of real reports.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from tlswatch.errors import ReportError
from tlswatch.ingest.decode import UTF8_BOM, decode, parse_json, parse_json_slowly
from tlswatch.ingest.sources import Input, expand, iter_inputs

SAMPLES = Path(__file__).resolve().parents[2] / "sample_reports" / "valid"
DEPTH = 64


def verdict(parse: Any, data: bytes) -> tuple[str, Any]:
    """What a parser made of ``data``: the value (NaN made comparable) or the refusal."""
    try:
        return "value", _comparable(parse(data, source="in.json", max_depth=DEPTH))
    except ReportError as exc:
        return "refused", exc.detail


def _comparable(value: Any) -> Any:
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return (type(value).__name__, value)


def slowly(data: bytes, **kw: Any) -> dict[str, Any]:
    return parse_json_slowly(data.removeprefix(UTF8_BOM), **kw)


CRAFTED = [
    b'{"a": 1}', UTF8_BOM + b'{"a": 1}', b'  {"a": 1}\r\n\t', b'{"a": "x\ty"}', b'{"a": 01}',
    b'{"a": 1} x', b'{"a": 1}\x0c', b'\x0c{"a": 1}', b'{"a": 1}\x00', b'{"a": -0}',
    b'{"a": -0.0}', b'{"a": 1e400}', b'{"a": -1e400}', b'{"a": 1.5e-400}', b'{"a": 1E2}',
    b'{"a": 123456789012345678901234567890}', b'{"a": -123456789012345678901234567890}',
    b'{"a": 0.1}', b'{"a": 5.0}', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
    b'{"a": "\\u0000"}', b'{"\\u0000": 1}', b'{"a": "\\\\u0000"}', b'{"a": "\xff"}',
    b'{"a": "\xed\xa0\x80"}', b'{"a": "\xc0\xaf"}', b'{"a": "\\ud800"}', b'{"a": "\\udc00"}',
    b'{"a": "\\ud800\\u0041"}', b'{"\\udfff": 1}', b'{"a": "\\ud83d\\ude00"}',
    b'{"a": "\\uDBFF\\uDFFF"}', b'{"a": "\\/"}', b'{"a": "\\x"}', b'{"a": [1,]}',
    b'{"a": 1,}', b'{"a": .5}', b'{"a": +1}', b'{"a": 0x10}', b'{"a": tru}',
    b'{"a": 1, "a": 2}', b'{"\\u0061": 1, "a": 2}', b'{"o": {"k": 1, "k": 1}}',
    b'{"l": [{"k": 1}, {"k": 2, "k": 3}]}', b'[]', b'"text"', b'12', b'null', b'true',
    b'{}', b'', b' ', b'{"a": "\x7f"}', b'{"a": "\xe2\x80\xa8"}',
    b'{"d": ' + b'[' * 70 + b']' * 70 + b'}', b'{"d": ' + b'[' * 300 + b']' * 300 + b'}',
    b'{"d": ' + b'{"x": ' * 70 + b'1' + b'}' * 70 + b'}', b'[' * 5000 + b']' * 5000,
    b'{"a": "' + b'\\u00e9' * 50 + b'"}', b'{"a": "caf\xc3\xa9"}',
    b'{"a": ' + b'9' * 4300 + b'}', b'{"a": [-' + b'9' * 4301 + b']}', b'{"a": "x\x01"}',
    b'{"a": ' + b'9' * 4301 + b', "a": 1}', b'{"o": {"k": 1, "k": 2}, "a": ' + b'9' * 4301 + b'}',
]


@pytest.mark.parametrize("data", CRAFTED, ids=range(len(CRAFTED)))
def test_crafted_json_gets_the_same_verdict_from_both_parsers(data: bytes) -> None:
    assert verdict(parse_json, data) == verdict(slowly, data)


# What a hostile or broken sender puts into a report's text.
INSERTS = [b'"', b"\\", b"\\u0000", b"\\ud800", b"\\udc00", b"\\ud83d\\ude00", b"NaN",
           b"-Infinity", b",", b"}", b"]", b"{", b"[", b":", b"\x00", b"\t", b"\xff", b"\xc3",
           b"1e999", b"-0", b"01", b"99999999999999999999999", b'"a": 1, "a": 2',
           b'"k": 1, "k": 1', b"\\u0022", b"true", b"null", b" "]


def _mutated(rng: random.Random, text: bytes) -> bytes:
    at = rng.randrange(len(text) + 1)
    kind = rng.randrange(4)
    if kind == 0:
        return text[:at] + rng.choice(INSERTS) + text[at:]
    if kind == 1:
        return text[:at] + text[at + rng.randrange(1, 8):]
    if kind == 2:
        return text[:at] + bytes([rng.randrange(256)]) + text[at + 1:]
    end = min(len(text), at + rng.randrange(1, 40))
    return text[:at] + text[at:end] + text[at:]  # a stretch repeated (keys twice)


def _reports() -> list[bytes]:
    """The JSON text of every sample report (from files, messages, archives)."""
    texts = []
    for item in iter_inputs([str(SAMPLES)], max_bytes=10**7):
        for part in expand(item, max_bytes=10**7):
            assert isinstance(part, Input)
            texts += [doc.raw_json for doc in decode(part.data, source=part.source)]
    return texts


def test_mutated_reports_get_the_same_verdict_from_both_parsers() -> None:
    reports = _reports()
    assert len(reports) >= 20
    rng = random.Random(8460)
    outcomes = {"value": 0, "refused": 0}
    for _ in range(4000):
        data = rng.choice(reports)
        for _ in range(rng.randrange(1, 4)):
            data = _mutated(rng, data)
        fast = verdict(parse_json, data)
        assert fast == verdict(slowly, data), data[:300]
        outcomes[fast[0]] += 1
    # Both kinds of outcome were exercised, not only refusals.
    assert outcomes["value"] > 400 and outcomes["refused"] > 400, outcomes


def test_duplicate_keys_anywhere_are_refused_with_the_key_and_its_object_named() -> None:
    report = json.loads(_reports()[0])
    text = json.dumps(report).replace('"policy-type"', '"policy-type": "sts", "policy-type"',
                                      1).encode()
    kind, detail = verdict(parse_json, text)
    assert kind == "refused"
    assert detail == ("policies[0].policy: a JSON object has the key 'policy-type' more than "
                      "once (which one counts is not defined)")


def test_a_long_duplicate_key_is_shown_cut_short() -> None:
    key = "k" * 5000
    data = f'{{"o": {{"{key}": 1, "{key}": 2}}}}'.encode()
    kind, detail = verdict(parse_json, data)
    assert kind == "refused"
    assert detail == (f"o: a JSON object has the key '{'k' * 60}...' more than once "
                      "(which one counts is not defined)")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_where_they_are_even_in_an_ignored_field(
        constant: str) -> None:
    # JSON has no NaN: a report holding one, even where no field is read, would be stored
    # as no JSON at all.
    report = json.loads(_reports()[0])
    report["policies"][0]["x-vendor"] = ["a", "NUMBER"]
    text = json.dumps(report).replace('"NUMBER"', constant).encode()
    assert verdict(parse_json, text) == (
        "refused", f"policies[0].x-vendor[1]: not valid JSON: {constant} is no JSON value")


def test_a_lower_integer_digit_limit_is_kept_by_the_fast_path() -> None:
    # jiter reads integers of up to Python's default 4,300 digits; an administrator's
    # lower limit (PYTHONINTMAXSTRDIGITS) must refuse what the standard library refuses.
    data = b'{"a": ' + b"7" * 1000 + b"}"
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        assert verdict(parse_json, data) == (
            "refused", "a: an integer of 1,000 digits, over the limit of 640 digits")
    finally:
        sys.set_int_max_str_digits(limit)
    assert parse_json(data, source="in.json", max_depth=DEPTH) == {"a": int("7" * 1000)}


def test_an_integer_past_the_digit_limit_is_refused_with_its_place() -> None:
    # Python converts integers of up to 4,300 digits: a longer one in a report is refused
    # like any other bad value (not as an "unreadable input" quoting a Python function).
    report = json.loads(_reports()[0])
    report["policies"][0]["summary"]["total-successful-session-count"] = "LONG"
    text = json.dumps(report).replace('"LONG"', "9" * 4302).encode()
    assert verdict(parse_json, text) == (
        "refused", "policies[0].summary.total-successful-session-count: an integer of 4,302 "
        "digits, over the limit of 4,300 digits")
    # What comes first in the text is what is named, a duplicate key after it or before.
    assert verdict(parse_json, b'{"a": ' + b"9" * 4301 + b', "a": 1}') == (
        "refused", "a: an integer of 4,301 digits, over the limit of 4,300 digits")


def test_a_control_character_in_a_string_is_named_once() -> None:
    assert verdict(parse_json, b'{"a": "x\x01"}') == (
        "refused", "not valid JSON: Invalid control character at line 1, column 9")


def test_a_long_path_is_shown_cut_short() -> None:
    # A hostile report can put a value no report may hold under many long keys: the refusal
    # names where it starts, not a path of kilobytes (each key is cut, and the path too).
    key, depth = "k" * 60, 20
    opening = f'{{"{key}": ' * depth
    data = f'{{"a": {opening}NaN{"}" * depth}}}'.encode()
    path = "a" + f".{key}" * depth
    assert len(path) > 1000
    assert verdict(parse_json, data) == (
        "refused", f"{path[:200]}...: not valid JSON: NaN is no JSON value")


@pytest.mark.parametrize(("key", "shown"), [
    ("\\ud800", "\\ud800"), ("\\u0000", "\\x00"), ("\\u001b[2J", "\\x1b[2J"),
    ("\\u202eevil", "\\u202eevil"), ("caf\\u00e9 \\\\ x", "caf\u00e9 \\ x"),
])
@pytest.mark.parametrize(("value", "reason"), [
    ("NaN", "not valid JSON: NaN is no JSON value"),
    ("9" * 4301, "an integer of 4,301 digits, over the limit of 4,300 digits"),
])
def test_a_key_in_a_place_is_shown_with_escapes(key: str, shown: str, value: str,
                                                reason: str) -> None:
    # The place is stored (quarantine, spool/failed) and shown: a lone surrogate or a NUL
    # in it could not be stored at all, a terminal escape would act on a terminal.
    data = f'{{"{key}": {{"a": {value}}}}}'.encode()
    assert verdict(parse_json, data) == ("refused", f"{shown}.a: {reason}")


@pytest.mark.parametrize("value", ["NaN", "9" * 4301, '{"k": 1, "k": 2}'])
def test_a_bad_value_deeper_than_the_limit_is_refused_as_too_deep(value: str) -> None:
    # What comes first in the text is what is named: the nesting passes the limit before
    # the value is reached, so the refusal is the one the document gets without that value.
    data = b'{"a": ' + b"[" * 70 + value.encode() + b"]" * 70 + b"}"
    plain = b'{"a": ' + b"[" * 70 + b"1" + b"]" * 70 + b"}"
    assert verdict(parse_json, data) == verdict(parse_json, plain)
    assert verdict(parse_json, plain) == (
        "refused", f"{('a' + '[0]' * 63)[:60]}...: JSON nested deeper than 64 levels")


def test_nesting_too_deep_for_the_parser_is_refused_with_its_place() -> None:
    # Thousands of levels stop Python's parser before any path is known: the place is the
    # line and column of the bracket that goes past the limit, as for broken syntax.
    data = b'{"s": "[[[",\n "a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert verdict(parse_json, data) == (
        "refused", "JSON nested deeper than 64 levels at line 2, column 70")
