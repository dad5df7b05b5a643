"""The TLS-RPT report contract: the JSON Schema (the published form) and pydantic types.

The JSON Schema is what a report must satisfy and is what error messages are made from.
The pydantic types (TypedDicts, validated by ``REPORT``) accept exactly the same documents
(tests hold the two together over the whole corpus) and are the fast path: pydantic-core
validates a report in a few microseconds where ``jsonschema`` takes a quarter of a millisecond.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from tlswatch.schemas.models import (
    MAX_COUNT,
    REPORT,
    RFC8460_RESULT_TYPES,
    DateRange,
    FailureDetail,
    Policy,
    PolicyEntry,
    Report,
    Summary,
)

__all__ = [
    "MAX_COUNT",
    "REPORT",
    "RFC8460_RESULT_TYPES",
    "DateRange",
    "FailureDetail",
    "Policy",
    "PolicyEntry",
    "Report",
    "Summary",
    "report_schema",
]


@cache
def report_schema() -> dict[str, Any]:
    """The TLS-RPT JSON Schema (draft 2020-12) as a dict."""
    text = resources.files(__name__).joinpath("tlsrpt-report.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
