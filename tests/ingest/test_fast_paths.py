"""The shortcuts the ingest takes for speed give what the general path gives."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tlswatch.ingest import counting
from tlswatch.ingest.decode import _DECODER, _unique_keys


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
