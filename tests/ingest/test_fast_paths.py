"""The shortcuts the ingest takes for speed give what the general path gives."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest

from tlswatch.errors import ReportError
from tlswatch.ingest import counting
from tlswatch.ingest.decode import gunzip
from tlswatch.ingest.jsontext import DECODER as _DECODER
from tlswatch.ingest.jsontext import unique_keys as _unique_keys


@pytest.mark.parametrize("policy_type", ["sts", "tlsa", "no-policy-found"])
@pytest.mark.parametrize("failed", [0, 7])
def test_a_report_of_one_entry_is_decided_as_the_rule_decides(policy_type: str,
                                                             failed: int) -> None:
    alone = counting.decide([counting.Entry("example.com", policy_type, 10, failed)])
    assert alone == counting.ALONE


@pytest.mark.parametrize("text", [
    '{"a": 1, "b": {"c": [1, {"d": 2}]}}',
    '{"a": 1, "b": {"a": 2, "a": 3}}',  # a duplicate
    '{"a": 1, "a": 2, "b": [}',  # a duplicate before a syntax error
    '{"a": [1, 2}',
    '[1, 2]',
])
def test_the_decoder_built_once_parses_and_refuses_as_json_loads_does(text: str) -> None:
    assert _outcome(lambda: _DECODER.decode(text)) == _outcome(
        lambda: json.loads(text, object_pairs_hook=_unique_keys))
    # Two documents one after the other: nothing of the first stays in the decoder.
    assert _outcome(lambda: _DECODER.decode(text)) == _outcome(
        lambda: json.loads(text, object_pairs_hook=_unique_keys))


def _outcome(parse: Callable[[], Any]) -> object:
    try:
        return parse()
    except ValueError as exc:
        return type(exc).__name__, str(exc)


_BODY = b'{"report-id": "r-1"}' * 150  # 3,000 bytes


@pytest.mark.parametrize(("data", "outcome"), [
    (gzip.compress(_BODY), _BODY),
    (gzip.compress(_BODY) + b"\0\0\0", _BODY),  # zero padding after the member
    (gzip.compress(_BODY[:7]) + gzip.compress(_BODY[7:]), _BODY),  # two members
    (gzip.compress(_BODY) + b"junk", "unexpected bytes after the end of the gzip data"),
    (gzip.compress(_BODY)[:-4], "truncated gzip data"),
    (gzip.compress(_BODY)[:10] + b"\0\0\0\0" + b"\xff" * 30, "corrupt gzip data"),
    (gzip.compress(_BODY * 2), "inflates to more than 5,000 bytes"),
    (gzip.compress((_BODY * 2)[:5000]), (_BODY * 2)[:5000]),  # exactly the limit
    (gzip.compress((_BODY * 2)[:5001]), "inflates to more than 5,000 bytes"),
    (gzip.compress(_BODY) + gzip.compress(_BODY[:2001]), "inflates to more than 5,000 bytes"),
])
def test_gzip_in_one_call_or_in_pieces_gives_the_same_answer(data: bytes,
                                                            outcome: bytes | str) -> None:
    if isinstance(outcome, bytes):
        assert gunzip(data, source="in", limit=5000) == outcome
    else:
        with pytest.raises(ReportError, match=outcome):
            gunzip(data, source="in", limit=5000)
