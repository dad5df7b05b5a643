"""Listing stored reports and showing one in full (warnings and raw JSON included)."""

from __future__ import annotations

import gzip
import io
from typing import Any

from tlswatch.analytics.queries import Filters
from tlswatch.analytics.reasons import explain_reason
from tlswatch.analytics.retention import pruned_notes
from tlswatch.errors import NotFoundError
from tlswatch.store import Store
from tlswatch.tenants.scope import EVERYTHING, Scope


def list_reports(store: Store, filters: Filters, *, limit: int = 100) -> list[dict[str, Any]]:
    """Stored reports, newest day first, with per-report session totals (counting rule)."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        WITH per_report AS (
            SELECT report_pk,
                   array_agg(DISTINCT policy_domain ORDER BY policy_domain) AS policy_domains,
                   coalesce(sum(successful_sessions) FILTER (WHERE counted), 0)::DECIMAL(38,0)
                       AS successful_sessions,
                   coalesce(sum(failed_sessions) FILTER (WHERE counted), 0)::DECIMAL(38,0)
                       AS failed_sessions
            FROM policies{where} GROUP BY report_pk
        )
        SELECT r.report_pk AS id, r.day, r.organization_name, r.report_id, p.policy_domains,
               p.successful_sessions, p.failed_sessions,
               coalesce(array_length(r.warnings, 1), 0) AS warnings
        FROM reports r JOIN per_report p USING (report_pk)
        ORDER BY r.day DESC, r.organization_name, r.report_id
        LIMIT {int(limit)}
    """, params)


def find_report(store: Store, ident: str, *, scope: Scope = EVERYTHING) -> int:
    """The stored key of a report named by its number (``id``) or its report-id.

    A tenant's ``scope`` finds only reports whose every policy domain it owns: another
    tenant's report is "no report", exactly as one that does not exist."""
    visible, params = _visible(scope)
    if ident.isdigit():
        rows = store.rows(f"SELECT report_pk FROM reports WHERE report_pk = ?{visible}",
                          [int(ident), *params])
        if rows:
            return int(rows[0]["report_pk"])
    rows = store.rows("SELECT report_pk, organization_name FROM reports WHERE report_id = ?"
                      f"{visible} ORDER BY report_pk", [ident, *params])
    if len(rows) == 1:
        return int(rows[0]["report_pk"])
    if len(rows) > 1:
        names = ", ".join(f"{r['report_pk']} ({r['organization_name']})" for r in rows)
        raise NotFoundError(f"report-id {ident!r} is used by several organisations: give the "
                            f"id instead: {names}")
    raise NotFoundError(f"no report with id or report-id {ident!r}")


def _visible(scope: Scope) -> tuple[str, list[str]]:
    """A condition on ``reports``: every policy domain of the report is in ``scope``."""
    clause, names = scope.clause("p.policy_domain")
    if clause is None:
        return "", []
    return (f" AND NOT EXISTS (SELECT 1 FROM policies p WHERE p.report_pk = reports.report_pk "
            f"AND NOT ({clause}))"), names


def show_report(store: Store, ident: str, *, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """One report: its stored fields, policies (with the counting rule that applied), failure
    details in the sender's order, warnings, and the report exactly as received."""
    pk = find_report(store, ident, scope=scope)
    report, policies = _report_and_policies(store, pk)
    _attach(policies, store.rows(_DETAILS, [pk]))
    raw = raw_report(store, pk)
    return {"id": pk, **report, "policies": policies,
            "raw_report": None if raw is None else raw_text(gzip.decompress(raw)),
            "pruned": pruned_notes(store, day=report["day"])}


DETAILS_PER_PAGE = 500
RAW_SHOWN_BYTES = 64 * 1024
_DETAILS = """
    SELECT p.policy_index, f.result_type, f.sending_mta_ip, f.receiving_mx_hostname,
           f.receiving_mx_helo, f.receiving_ip, f.failed_session_count,
           f.additional_information, f.failure_reason_code, f.counted
    FROM failure_details f JOIN policies p USING (policy_pk)
    WHERE f.report_pk = ? ORDER BY p.policy_index, f.detail_index, f.result_type,
          f.receiving_mx_hostname, f.receiving_ip, f.sending_mta_ip, f.failed_session_count"""


def report_page(store: Store, ident: str, *, page: int = 1, per_page: int = DETAILS_PER_PAGE,
                raw_bytes: int = RAW_SHOWN_BYTES, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """One report for a page: like ``show_report``, but one page of its failure details
    and at most ``raw_bytes`` of the report as received: a report with 200,000 failure
    details still makes a small page."""
    pk = find_report(store, ident, scope=scope)
    report, policies = _report_and_policies(store, pk)
    total = store.rows("SELECT count(*) AS n FROM failure_details WHERE report_pk = ?",
                       [pk])[0]["n"]
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    details = store.rows(f"{_DETAILS} LIMIT {int(per_page)} OFFSET {int((page - 1) * per_page)}",
                         [pk])
    _attach(policies, details)
    raw = raw_report(store, pk)
    head = b"" if raw is None else _raw_head(raw, raw_bytes)
    return {"id": pk, **report, "policies": policies,
            "failure_details_page": {"page": page, "pages": pages, "per_page": per_page,
                                     "total": total,
                                     "first": (page - 1) * per_page + 1 if details else 0,
                                     "last": (page - 1) * per_page + len(details)},
            "raw_report": raw_text(head[:raw_bytes]),
            "raw_truncated": len(head) > raw_bytes,
            "pruned": pruned_notes(store, day=report["day"])}


def _report_and_policies(store: Store, pk: int
                         ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    report = store.rows("SELECT * FROM reports WHERE report_pk = ?", [pk])[0]
    del report["report_pk"]
    policies = store.rows("""
        SELECT policy_index, policy_type, policy_domain, policy_string, mx_host,
               successful_sessions, failed_sessions, counted, counting
        FROM policies WHERE report_pk = ? ORDER BY policy_index""", [pk])
    for policy in policies:
        policy["counting_rule"] = describe(policy["counting"], policy["policy_type"],
                                           policy["counted"])
    return report, policies


def _attach(policies: list[dict[str, Any]], details: list[dict[str, Any]]) -> None:
    for detail in details:
        known = explain_reason(detail["failure_reason_code"])
        detail["reason_explained"] = None if known is None else {
            "cause": known.cause, "fix": known.fix, "side": known.side}
    for policy in policies:
        policy["failure_details"] = [
            {k: v for k, v in d.items() if k != "policy_index"}
            for d in details if d["policy_index"] == policy["policy_index"]]


def raw_report(store: Store, pk: int) -> bytes | None:
    """The report's JSON as stored, gzip-compressed (None: pruned, see raw_keep_days)."""
    rows = store.rows("SELECT raw_gzip FROM report_raw WHERE report_pk = ?", [pk])
    return bytes(rows[0]["raw_gzip"]) if rows else None


def _raw_head(raw_gzip: bytes, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the JSON: enough to tell whether there is more."""
    with gzip.GzipFile(fileobj=io.BytesIO(raw_gzip)) as inflating:
        return inflating.read(limit + 1)


def raw_text(data: bytes) -> str:
    """The report's JSON text exactly as received (a BOM dropped; a cut character replaced)."""
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")


def describe(counting: str, policy_type: str, counted: bool) -> str:
    """Why a policy row counts or not, under the rule the loader applied (``counting``)."""
    if counting == "same-sessions" and policy_type != "no-policy-found":
        if counted:
            return ("counted: sts and tlsa list the same sessions (equal totals); this type "
                    "has at least as many failures")
        return "not counted: sts and tlsa list the same sessions; the other type counts"
    if policy_type == "no-policy-found":
        return "counted: no-policy-found sessions add to the rest"
    return "counted: sessions of their own, added to the other entries"
