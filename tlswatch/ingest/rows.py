"""The shapes of the rows the loader writes, declared once, by column name.

``prepare`` builds these rows by keyword; the loader turns a list of them into an Arrow
table whose column names come from the same declaration, and inserts by name.  No code
relies on the position of a field, so two columns of one type cannot be swapped silently.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple, get_type_hints

import pyarrow as pa

from tlswatch import lazypandas

lazypandas.defer()  # before the first conversion (in the CLI's processes)


class ReportRow(NamedTuple):
    report_pk: int
    organization_name: str
    report_id: str
    contact_info: str | None
    start_datetime: datetime
    end_datetime: datetime
    day: date
    source: str
    filename: str | None
    message_id: str | None
    header_report_domain: str | None
    header_submitter: str | None
    subject_report_id: str | None
    warnings: list[str]
    received_via: str
    dkim_result: str | None
    dkim_domain: str | None
    received_at: datetime
    content_sha256: str


class PolicyRow(NamedTuple):
    policy_pk: int
    report_pk: int
    policy_index: int
    day: date
    organization_name: str
    policy_type: str
    policy_domain: str
    policy_string: list[str] | None
    mx_host: list[str] | None
    successful_sessions: int
    failed_sessions: int
    counted: bool
    counting: str


class DetailRow(NamedTuple):
    report_pk: int
    policy_pk: int
    detail_index: int
    day: date
    organization_name: str
    policy_type: str
    policy_domain: str
    result_type: str
    sending_mta_ip: str | None
    receiving_mx_hostname: str | None
    receiving_mx_helo: str | None
    receiving_ip: str | None
    failed_session_count: int
    additional_information: str | None
    failure_reason_code: str | None
    counted: bool


_ARROW = {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_(), "date": pa.date32(),
          "datetime": pa.timestamp("us"), "list[str]": pa.list_(pa.string())}


def arrow_schema(shape: type[Any]) -> pa.Schema:
    """The Arrow schema of a row shape, field by field from its type hints."""
    hints = get_type_hints(shape)
    fields = []
    for name in shape._fields:
        kind = str(hints[name]).replace("typing.", "").replace("datetime.", "")
        kind = kind.replace("<class '", "").replace("'>", "").removesuffix(" | None")
        fields.append(pa.field(name, _ARROW[kind]))
    return pa.schema(fields)


def to_table(shape: type[Any], rows: list[Any], schema: pa.Schema) -> pa.Table:
    """Rows of one shape to an Arrow table, each column named by the shape's field."""
    if not rows:
        return pa.Table.from_batches([], schema=schema)  # (empty_table() imports pandas)
    columns = zip(*rows, strict=True)  # transposed in C, not a Python loop per cell
    return pa.table({name: pa.array(values, type=schema.field(name).type)
                     for name, values in zip(shape._fields, columns, strict=True)},
                    schema=schema)


REPORT_SCHEMA = arrow_schema(ReportRow)
POLICY_SCHEMA = arrow_schema(PolicyRow)
DETAIL_SCHEMA = arrow_schema(DetailRow)
