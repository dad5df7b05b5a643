"""The history of MTA-STS/TLS-RPT checks: ``check_runs`` (one row per run, with the facts a
later run is compared with) and ``check_findings``; written in batches, read by domain."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from tlswatch.store import Store

PROBLEM = "f.severity || ' ' || f.code || CASE WHEN f.subject <> '' THEN ' (' || f.subject " \
          "|| ')' ELSE '' END"


def insert_run(store: Store, run: dict[str, Any], findings: Sequence[dict[str, str]]) -> int:
    """Add one run (a dict of check_runs columns without run_pk) and its findings (severity,
    code, subject, message, fix); return the run's key.  Call inside a transaction."""
    pk = store.next_pk("check_runs", "run_pk")
    store.insert("check_runs", pa.table({
        "run_pk": pa.array([pk], pa.int64()),
        "domain": pa.array([run["domain"]], pa.string()),
        "checked_at": pa.array([run["checked_at"]], pa.timestamp("us")),
        "result": pa.array([run["result"]], pa.string()),
        "errors": pa.array([run["errors"]], pa.int32()),
        "warnings": pa.array([run["warnings"]], pa.int32()),
        **{c: pa.array([run[c]], pa.string())
           for c in ("sts_id", "policy", "policy_sha256", "hosted_id")},
        **{c: pa.array([run[c]], pa.list_(pa.string())) for c in ("rua", "mx", "alerts")},
        "certificates": pa.array([_certificates_json(run["certificates"])], pa.string()),
    }))
    n = len(findings)
    store.insert("check_findings", pa.table({
        "run_pk": pa.array([pk] * n, pa.int64()),
        "domain": pa.array([run["domain"]] * n, pa.string()),
        "checked_at": pa.array([run["checked_at"]] * n, pa.timestamp("us")),
        "finding_index": pa.array(range(n), pa.int32()),
        **{c: pa.array([f[c] for f in findings], pa.string())
           for c in ("severity", "code", "subject", "message", "fix")},
    }))
    return pk


def _certificates_json(certificates: Sequence[dict[str, Any]] | None) -> str | None:
    """The column's JSON text: not_after as an ISO timestamp (naive UTC)."""
    if certificates is None:
        return None
    return json.dumps([{**c, "not_after": c["not_after"].isoformat(sep=" ")}
                       for c in certificates])


def _certificates(text: str | None) -> list[dict[str, Any]] | None:
    """The column read back: not_after a datetime again."""
    if text is None:
        return None
    return [{**c, "not_after": datetime.fromisoformat(c["not_after"])}
            for c in json.loads(text)]


def last_checked(store: Store) -> dict[str, datetime]:
    """When each domain was last checked."""
    return {r["domain"]: r["at"] for r in store.rows(
        "SELECT domain, max(checked_at) AS at FROM check_runs GROUP BY domain")}


def latest_run(store: Store, domain: str) -> dict[str, Any] | None:
    """A domain's newest run, with its findings (in the order found)."""
    rows = store.rows("SELECT * FROM check_runs WHERE domain = ? "
                      "ORDER BY checked_at DESC, run_pk DESC LIMIT 1", [domain])
    if not rows:
        return None
    run = rows[0]
    run["certificates"] = _certificates(run["certificates"])
    run["findings"] = store.rows(
        "SELECT severity, code, subject, message, fix FROM check_findings WHERE run_pk = ? "
        "ORDER BY finding_index", [run["run_pk"]])
    return run


def policies_under_id(store: Store, domain: str, sts_id: str) -> list[dict[str, Any]]:
    """The distinct policies served while ``_mta-sts`` published ``sts_id``, oldest first,
    with when each was first seen."""
    return store.rows("""
        SELECT policy_sha256, min(checked_at) AS first_seen FROM check_runs
        WHERE domain = ? AND sts_id = ? AND policy_sha256 IS NOT NULL
        GROUP BY policy_sha256 ORDER BY first_seen
    """, [domain, sts_id])


def report_domains(store: Store, since: date) -> list[str]:
    """The policy domains of reports from ``since`` on."""
    return [r["policy_domain"] for r in store.rows(
        "SELECT DISTINCT policy_domain FROM policies WHERE day >= ? ORDER BY 1", [since])]


def history(store: Store, *, domain: str | None = None, since: date | None = None,
            limit: int = 1000) -> list[dict[str, Any]]:
    """Runs, the latest of each domain first, then the older ones newest first; each with
    its errors and warnings (``problems``), the ones that are new and gone since the
    domain's previous run, and the alert kinds it raised."""
    rows = store.rows(f"""
        WITH runs AS (
            SELECT r.run_pk, r.domain, r.checked_at, r.result, r.errors, r.warnings,
                   r.sts_id, r.alerts,
                   array_agg({PROBLEM} ORDER BY f.finding_index)
                            FILTER (WHERE f.severity IN ('error', 'warning')) AS problems
            FROM check_runs r LEFT JOIN check_findings f USING (run_pk)
            WHERE $domain::VARCHAR IS NULL OR r.domain = $domain
            GROUP BY r.run_pk, r.domain, r.checked_at, r.result, r.errors, r.warnings,
                     r.sts_id, r.alerts
        ), compared AS (
            SELECT *, lag(problems) OVER w AS before, lag(run_pk) OVER w AS before_run,
                   row_number() OVER (PARTITION BY domain ORDER BY checked_at DESC,
                                      run_pk DESC) AS age
            FROM runs WINDOW w AS (PARTITION BY domain ORDER BY checked_at, run_pk)
        )
        SELECT run_pk, checked_at, domain, result, errors, warnings, sts_id, problems,
               before, before_run, alerts
        FROM compared WHERE $since::DATE IS NULL OR checked_at::DATE >= $since
        ORDER BY age > 1, CASE WHEN age = 1 THEN domain END, checked_at DESC, domain
        LIMIT $limit
    """, {"domain": domain, "since": since, "limit": limit})
    found = []
    for row in rows:  # problems new and gone since the domain's previous run
        problems, before = row.pop("problems") or [], row.pop("before") or []
        first, alerts = row.pop("before_run") is None, row.pop("alerts") or []
        found.append({**row, "problems": problems,
                      "new": None if first else [p for p in problems if p not in before],
                      "gone": None if first else [p for p in before if p not in problems],
                      "alerts": alerts})
    return found
