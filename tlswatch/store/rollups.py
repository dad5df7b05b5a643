"""Daily rollups: what summaries, pages, alerts and daily files read instead of detail rows.

Three tables, maintained in the loader's transaction:

* ``rollup_days``: per day, policy domain and reporting organisation, the reports and the
  sessions that count (the counting rule, ``policies.counted``), and all sessions listed.
  A report has one day and one organisation, so summing ``reports`` over days and
  organisations gives the exact number of distinct reports.
* ``rollup_policies``: the same per policy type, policy text and ``counted`` flag, with the
  failed sessions that DANE also failed (the delivery impact of ``sts`` entries).
* ``rollup_failures``: failed sessions per day, domain, organisation, policy type, result
  type, receiving MX, receiving IP and sending IP (name ids from ``names``, 0 for none),
  ``counted`` and ``seen`` (see ``tlswatch.analytics.queries.seen``), with the reports and
  the largest failure reason code of each group; ``rollup_results`` the same without the
  sending IP, recomputed from it for the (day, domain) pairs a load touches.
* ``rollup_ips``: the failed sessions that count per month, domain and sending IP (with the
  ``reports`` of the ``rollup_failures`` rows it sums: a row exists while they do), added to
  and subtracted from like ``rollup_failures``.  A period's failures per sending IP read
  its whole months here and only the days at its ends from ``rollup_failures``: a month
  of a domain's senders is one row per IP instead of one per IP, day, reporter and host.

Failure rollups are written in day and domain order: a rebuild sorts all of them so, a load
appends its batch's rows sorted (reports arrive roughly in day order, so a store grown by
loads stays close to day order).  DuckDB keeps the smallest and largest value of each column
per block of rows, so a read of one domain over a few days skips the blocks of other days
and domains instead of filtering every row.

Session rollups are recomputed for the (day, domain) pairs a load or removal touches, from
``policies``, which retention never prunes.  Failure rollups are added to (and subtracted
from, when a report is replaced) by the rows of those reports, so pruning failure details
leaves them as they are: old days keep their figures.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from tlswatch.deferred import deferred

if TYPE_CHECKING:
    import pyarrow as pa

    from tlswatch.store import Store
else:
    pa = deferred("pyarrow")

FAILURE_KEY = ("day", "domain_id", "organization_name_id", "policy_type", "result_type_id",
               "receiving_mx_hostname_id", "receiving_ip_id", "sending_mta_ip_id", "counted",
               "seen")
RESULT_KEY = tuple(k for k in FAILURE_KEY if k != "sending_mta_ip_id")
_KEY_TYPES = {"day": "DATE", "policy_type": "VARCHAR", "counted": "BOOLEAN",
              "seen": "BOOLEAN"}  # the others are name ids (INTEGER)


def _columns(key: tuple[str, ...], *more: str) -> str:
    """The column list of a failure rollup table: its key's columns, then ``more``."""
    return ",".join(f"\n        {c} {_KEY_TYPES.get(c, 'INTEGER')} NOT NULL" for c in key) + \
        "".join(f",\n        {m}" for m in more)


FAILURES_COLUMNS = _columns(FAILURE_KEY, "failed_sessions DECIMAL(38,0) NOT NULL",
                            "reports BIGINT NOT NULL", "failure_reason_code VARCHAR")
FAILURES_PRIMARY = ", ".join(FAILURE_KEY)

MIGRATION = f"""
    CREATE TABLE rollup_days (
        day DATE NOT NULL,
        policy_domain VARCHAR NOT NULL,
        organization_name VARCHAR NOT NULL,
        reports BIGINT NOT NULL,
        successful_sessions DECIMAL(38,0) NOT NULL,
        failed_sessions DECIMAL(38,0) NOT NULL,
        listed_sessions DECIMAL(38,0) NOT NULL,
        PRIMARY KEY (day, policy_domain, organization_name)
    );
    CREATE TABLE rollup_policies (
        day DATE NOT NULL,
        policy_domain VARCHAR NOT NULL,
        organization_name VARCHAR NOT NULL,
        policy_type VARCHAR NOT NULL,
        policy_string VARCHAR[],
        counted BOOLEAN NOT NULL,
        reports BIGINT NOT NULL,
        successful_sessions DECIMAL(38,0) NOT NULL,
        failed_sessions DECIMAL(38,0) NOT NULL,
        dane_failed DECIMAL(38,0) NOT NULL
    );
    CREATE TABLE rollup_failures ({FAILURES_COLUMNS},
        PRIMARY KEY ({FAILURES_PRIMARY})
    );
    CREATE TABLE rollup_results ({_columns(RESULT_KEY, "failed_sessions DECIMAL(38,0) NOT NULL",
                                           "failure_reason_code VARCHAR")}
    );
"""

IPS_MIGRATION = """
    CREATE TABLE rollup_ips (
        month DATE NOT NULL,
        domain_id INTEGER NOT NULL,
        sending_mta_ip_id INTEGER NOT NULL,
        failed_sessions DECIMAL(38,0) NOT NULL,
        reports BIGINT NOT NULL,
        PRIMARY KEY (month, domain_id, sending_mta_ip_id)
    );
"""

IPS_KEY = ("month", "domain_id", "sending_mta_ip_id")
REBUILD_DAYS = 7  # failure rollups rebuilt a week of days at a time


def _ips_groups(source: str) -> str:
    """``rollup_ips`` rows from the rows that count of ``source`` (rollup_failures rows)."""
    month = "CAST(date_trunc('month', day) AS DATE)"
    return f"""
        SELECT {month} AS month, domain_id, sending_mta_ip_id,
               CAST(sum(failed_sessions) AS DECIMAL(38,0)) AS failed_sessions,
               CAST(sum(reports) AS BIGINT) AS reports
        FROM {source} AS r WHERE counted
        GROUP BY {month}, domain_id, sending_mta_ip_id
    """


def ips_fill_sql() -> str:
    """The text of migration 0012_rollup_ips: create ``rollup_ips``, fill it."""
    keys = ", ".join(IPS_KEY)
    return (f"{IPS_MIGRATION.rstrip().rstrip(';')};\n"
            f"INSERT INTO rollup_ips ({keys}, failed_sessions, reports) "
            f"{_ips_groups('rollup_failures')} ORDER BY month, domain_id;")



def _results_fill(where: str, source: str = "rollup_failures") -> str:
    """``rollup_results``: ``rollup_failures`` without the sending IP (a tenth of its rows or
    fewer), for every reader that does not group by it; from the rollup, so pruned days
    keep their figures."""
    keys = ", ".join(RESULT_KEY)
    return f"""
        INSERT INTO rollup_results ({keys}, failed_sessions, failure_reason_code)
        SELECT {keys}, sum(failed_sessions), max(failure_reason_code)
        FROM {source} r WHERE {where}
        GROUP BY {keys}
        ORDER BY day, domain_id
    """

_SEEN = ("(f.counted OR NOT EXISTS (SELECT 1 FROM failure_details c WHERE c.report_pk = "
         "f.report_pk AND c.policy_domain = f.policy_domain AND c.result_type = f.result_type "
         "AND c.counted))")


def _failure_groups(where: str) -> str:
    """The failure rollup rows of the failure details chosen by ``where`` (on alias f)."""
    return f"""
        SELECT day, domain_id, organization_name_id, policy_type, result_type_id,
               receiving_mx_hostname_id, receiving_ip_id, sending_mta_ip_id, counted, seen,
               CAST(sum(failed_session_count) AS DECIMAL(38,0)) AS failed_sessions,
               count(DISTINCT report_pk) AS reports,
               max(failure_reason_code) AS failure_reason_code
        FROM (SELECT f.day, f.domain_id, f.organization_name_id, f.policy_type,
                     f.result_type_id, coalesce(f.receiving_mx_hostname_id, 0)
                         AS receiving_mx_hostname_id,
                     coalesce(f.receiving_ip_id, 0) AS receiving_ip_id,
                     coalesce(f.sending_mta_ip_id, 0) AS sending_mta_ip_id, f.counted,
                     {_SEEN} AS seen, f.failed_session_count, f.report_pk,
                     f.failure_reason_code
              FROM failure_details f WHERE {where}) AS d
        GROUP BY day, domain_id, organization_name_id, policy_type, result_type_id,
                 receiving_mx_hostname_id, receiving_ip_id, sending_mta_ip_id, counted, seen
    """


def _session_fill(where: str) -> list[str]:
    """INSERTs filling the session rollups from the policy rows chosen by ``where`` (alias p)."""
    return [f"""
        INSERT INTO rollup_days (day, policy_domain, organization_name, reports,
                                 successful_sessions, failed_sessions, listed_sessions)
        SELECT day, policy_domain, organization_name, count(DISTINCT report_pk),
               CAST(coalesce(sum(successful_sessions) FILTER (WHERE counted), 0)
                    AS DECIMAL(38,0)),
               CAST(coalesce(sum(failed_sessions) FILTER (WHERE counted), 0)
                    AS DECIMAL(38,0)),
               sum(CAST(successful_sessions AS DECIMAL(38,0)) + failed_sessions)
        FROM policies p WHERE {where}
        GROUP BY day, policy_domain, organization_name
    """, f"""
        INSERT INTO rollup_policies (day, policy_domain, organization_name, policy_type,
                                     policy_string, counted, reports, successful_sessions,
                                     failed_sessions, dane_failed)
        WITH p AS (SELECT * FROM policies p WHERE {where}),
        per_report AS (
            SELECT report_pk, day, policy_domain, organization_name, policy_type,
                   policy_string, counted,
                   CAST(sum(successful_sessions) AS DECIMAL(38,0)) AS successful_sessions,
                   CAST(sum(failed_sessions) AS DECIMAL(38,0)) AS failed_sessions
            FROM p GROUP BY report_pk, day, policy_domain, organization_name, policy_type,
                            policy_string, counted
        ),
        dane AS (
            SELECT report_pk, policy_domain,
                   CAST(sum(failed_sessions) AS DECIMAL(38,0)) AS failed_sessions
            FROM p WHERE policy_type = 'tlsa' AND NOT counted
            GROUP BY report_pk, policy_domain
        )
        SELECT r.day, r.policy_domain, r.organization_name, r.policy_type, r.policy_string,
               r.counted, count(*), CAST(sum(r.successful_sessions) AS DECIMAL(38,0)),
               CAST(sum(r.failed_sessions) AS DECIMAL(38,0)),
               CAST(sum(CASE WHEN r.counted AND r.policy_type = 'sts'
                             THEN least(r.failed_sessions, coalesce(d.failed_sessions, 0))
                             ELSE 0 END) AS DECIMAL(38,0))
        FROM per_report r LEFT JOIN dane d
             ON d.report_pk = r.report_pk AND d.policy_domain = r.policy_domain
        GROUP BY r.day, r.policy_domain, r.organization_name, r.policy_type, r.policy_string,
                 r.counted
    """]


@dataclass(frozen=True)
class Touched:
    """The (day, policy domain) pairs whose session rollups a removal changed."""

    pairs: list[tuple[date, str]]


def forget(store: Store, report_pks: Sequence[int]) -> Touched:
    """Before reports are removed: take their failures out of the rollups and note their
    (day, domain) pairs, recomputed by ``add`` once the batch is written."""
    if not report_pks:
        return Touched([])
    marks = ", ".join("?" for _ in report_pks)
    pks = list(report_pks)
    pairs = [(r["day"], r["policy_domain"]) for r in store.rows(
        f"SELECT DISTINCT day, policy_domain FROM policies WHERE report_pk IN ({marks}) "
        "ORDER BY day, policy_domain", pks)]
    match = " AND ".join(f"rollup_failures.{k} = x.{k}" for k in FAILURE_KEY)
    store.execute(f"""
        UPDATE rollup_failures SET failed_sessions = rollup_failures.failed_sessions
                                   - x.failed_sessions,
                                   reports = rollup_failures.reports - x.reports,
                                   failure_reason_code = NULL
        FROM ({_failure_groups(f"f.report_pk IN ({marks})")}) AS x
        WHERE {match}
    """, pks)
    store.execute("DELETE FROM rollup_failures WHERE reports <= 0")
    match = " AND ".join(f"rollup_ips.{k} = x.{k}" for k in IPS_KEY)
    store.execute(f"""
        UPDATE rollup_ips SET failed_sessions = rollup_ips.failed_sessions - x.failed_sessions,
                              reports = rollup_ips.reports - x.reports
        FROM ({_ips_groups(f"({_failure_groups(f'f.report_pk IN ({marks})')})")}) AS x
        WHERE {match}
    """, pks)
    store.execute("DELETE FROM rollup_ips WHERE reports <= 0")
    # The largest reason code of each changed group, from the rows that stay.
    store.execute(f"""
        UPDATE rollup_failures SET failure_reason_code = (
            SELECT max(f.failure_reason_code) FROM failure_details f
            WHERE f.report_pk NOT IN ({marks}) AND f.day = rollup_failures.day
              AND f.domain_id = rollup_failures.domain_id
              AND f.organization_name_id = rollup_failures.organization_name_id
              AND f.policy_type = rollup_failures.policy_type
              AND f.result_type_id = rollup_failures.result_type_id
              AND coalesce(f.receiving_mx_hostname_id, 0)
                  = rollup_failures.receiving_mx_hostname_id
              AND coalesce(f.receiving_ip_id, 0) = rollup_failures.receiving_ip_id
              AND coalesce(f.sending_mta_ip_id, 0) = rollup_failures.sending_mta_ip_id
              AND f.counted = rollup_failures.counted)
        WHERE failure_reason_code IS NULL AND EXISTS (
            SELECT 1 FROM failure_details g WHERE g.report_pk IN ({marks})
              AND g.day = rollup_failures.day AND g.domain_id = rollup_failures.domain_id)
    """, pks + pks)
    return Touched(pairs)


def add(store: Store, report_pks: Sequence[int], removed: Touched | None = None,
        written: Sequence[tuple[date, str]] | None = None) -> None:
    """After reports are written: add their failures and recompute the session rollups of
    their (day, domain) pairs (``written``, when the writer knows them) and of those
    ``forget`` noted."""
    pairs = set(removed.pairs if removed else [])
    if report_pks:
        among, pks = _pk_condition(report_pks)
        pairs |= set(written) if written is not None else {
            (r["day"], r["policy_domain"]) for r in store.rows(
                f"SELECT DISTINCT day, policy_domain FROM policies WHERE report_pk {among}",
                pks)}
        keys = ", ".join(FAILURE_KEY)
        # The batch's groups are computed once into a table, then added: an upsert whose
        # rows come straight from the grouping query took seconds on a store of millions
        # of rollup rows (DuckDB), from a table milliseconds.  (A failed statement rolls
        # the table back with the transaction, on both engines.)
        store.execute(f"CREATE TEMP TABLE _groups AS {_failure_groups(f'f.report_pk {among}')}",
                      pks)
        store.execute(f"""
            INSERT INTO rollup_failures ({keys}, failed_sessions, reports,
                                         failure_reason_code)
            SELECT {keys}, failed_sessions, reports, failure_reason_code FROM _groups
            ORDER BY day, domain_id
            ON CONFLICT ({keys}) DO UPDATE SET
                failed_sessions = rollup_failures.failed_sessions + excluded.failed_sessions,
                reports = rollup_failures.reports + excluded.reports,
                failure_reason_code = coalesce(
                    greatest(rollup_failures.failure_reason_code,
                             excluded.failure_reason_code),
                    rollup_failures.failure_reason_code, excluded.failure_reason_code)
        """)
        ips = ", ".join(IPS_KEY)
        store.execute(f"""
            INSERT INTO rollup_ips ({ips}, failed_sessions, reports)
            {_ips_groups("_groups")}
            ON CONFLICT ({ips}) DO UPDATE SET
                failed_sessions = rollup_ips.failed_sessions + excluded.failed_sessions,
                reports = rollup_ips.reports + excluded.reports
        """)
        store.execute("DROP TABLE _groups")
    if pairs:
        _refresh_sessions(store, sorted(pairs))


def _pk_condition(report_pks: Sequence[int]) -> tuple[str, list[int]]:
    """``report_pk`` among these: a range when they are consecutive (as a written batch's
    are), which the engines answer from their zone maps or index instead of a long list."""
    pks = sorted(report_pks)
    if pks[-1] - pks[0] == len(pks) - 1:
        return "BETWEEN ? AND ?", [pks[0], pks[-1]]
    return f"IN ({', '.join('?' for _ in pks)})", pks


def _refresh_sessions(store: Store, pairs: list[tuple[date, str]]) -> None:
    touched = pa.table({"day": pa.array([d for d, _ in pairs], pa.date32()),
                        "policy_domain": pa.array([n for _, n in pairs], pa.string())})
    # The days' range first: the engines skip the blocks of other days (rollups grow in
    # day order) before matching the pairs, instead of reading every row.
    days = [min(d for d, _ in pairs), max(d for d, _ in pairs)]
    within = "{0}.day BETWEEN ? AND ? AND "
    with store.scratch("_touched", touched):
        for table in ("rollup_days", "rollup_policies"):
            store.execute(f"DELETE FROM {table} WHERE {within.format(table)}EXISTS ("
                          f"SELECT 1 FROM _touched t WHERE t.day = {table}.day "
                          f"AND t.policy_domain = {table}.policy_domain)", days)
        for sql in _session_fill(f"{within.format('p')}EXISTS (SELECT 1 FROM _touched t "
                                 "WHERE t.day = p.day AND t.policy_domain = p.policy_domain)"):
            store.execute(sql, days)
        pair = (within + "EXISTS (SELECT 1 FROM _touched t JOIN names n ON n.value = "
                "t.policy_domain WHERE t.day = {0}.day AND n.name_id = {0}.domain_id)")
        store.execute(f"DELETE FROM rollup_results WHERE {pair.format('rollup_results')}", days)
        store.execute(_results_fill(pair.format("r")), days)


def fill_sql() -> str:
    """The migration's text: create the rollups and fill them from the detail tables."""
    keys = ", ".join(FAILURE_KEY)
    return ";\n".join([MIGRATION.rstrip().rstrip(";"), *_session_fill("true"),
                        f"INSERT INTO rollup_failures ({keys}, failed_sessions, reports, "
                        f"failure_reason_code) {_failure_groups('true')}",
                        _results_fill("true")]) + ";"


def pruned_before(store: Store) -> date | None:
    """The first day whose failure details are all still there (None: nothing pruned)."""
    value = store.value("SELECT before_day FROM retention WHERE kind = 'failure_details'")
    return value if isinstance(value, date) else None


def rebuild(store: Store) -> dict[str, Any]:
    """Recompute every rollup from the detail tables, in one transaction.

    Session rollups come from ``policies`` (never pruned) for every day.  Failure rollups of
    days whose failure details were pruned cannot be recomputed; their rows are kept.
    """
    with store.transaction():
        kept_before = pruned_before(store)
        store.execute("DELETE FROM rollup_days")
        store.execute("DELETE FROM rollup_policies")
        for sql in _session_fill("true"):
            store.execute(sql)
        _fill_new_failures(store, kept_before)
        store.execute("DELETE FROM rollup_results")
        store.execute(_results_fill("true", source="rollup_failures_new"))
        store.execute("DELETE FROM rollup_ips")
        store.execute(f"INSERT INTO rollup_ips ({', '.join(IPS_KEY)}, failed_sessions, "
                      f"reports) {_ips_groups('rollup_failures_new')} ORDER BY month, domain_id")
        counts = {t: int(store.value(f"SELECT count(*) FROM {source}"))
                  for t, source in (("rollup_days", "rollup_days"),
                                    ("rollup_policies", "rollup_policies"),
                                    ("rollup_failures", "rollup_failures_new"),
                                    ("rollup_results", "rollup_results"),
                                    ("rollup_ips", "rollup_ips"))}
        kept = int(store.value("SELECT count(*) FROM rollup_failures_new WHERE day < ?",
                               [kept_before])) if kept_before else 0
        _swap_failures(store)
    return {"rows": counts, "kept_before": kept_before, "kept_failure_rows": kept}


def _fill_new_failures(store: Store, kept_before: date | None) -> None:
    """Fill a new failure table, ``rollup_failures_new``: the rows before ``kept_before``,
    then those of the details from that day on, and give it its primary key.

    Deleting 70M rows and inserting 70M more under the key index in one transaction ran out
    of 24 GB; building the index once over the filled table does not.  The rows are sorted
    ``REBUILD_DAYS`` days at a time (one sort of them all also needed too much memory)."""
    keys = ", ".join(FAILURE_KEY)
    columns = f"{keys}, failed_sessions, reports, failure_reason_code"
    store.execute(f"CREATE TABLE rollup_failures_new ({FAILURES_COLUMNS})")
    if kept_before is not None:
        store.execute(f"INSERT INTO rollup_failures_new ({columns}) SELECT {columns} "
                      "FROM rollup_failures WHERE day < ? ORDER BY day, domain_id",
                      [kept_before])
    where, params = ("WHERE day >= ?", [kept_before]) if kept_before else ("", [])
    bounds = store.rows(f"SELECT min(day) AS lo, max(day) AS hi FROM failure_details {where}",
                        params)[0]
    lo, hi = bounds["lo"], bounds["hi"]
    while lo is not None and lo <= hi:
        end = min(lo + timedelta(days=REBUILD_DAYS - 1), hi)
        store.execute(f"INSERT INTO rollup_failures_new ({columns}) "
                      f"{_failure_groups('f.day BETWEEN ? AND ?')} ORDER BY day, domain_id",
                      [lo, end])
        lo = end + timedelta(days=1)
    # A name of its own: PostgreSQL's key index keeps its name through the rename below,
    # and the old table's index still holds the previous one until the drop.
    store.execute(f"ALTER TABLE rollup_failures_new ADD CONSTRAINT "
                  f"rollup_failures_key_{uuid.uuid4().hex[:12]} PRIMARY KEY ({FAILURES_PRIMARY})")


def _swap_failures(store: Store) -> None:
    """Put the filled and keyed ``rollup_failures_new`` in place of ``rollup_failures``.
    Last in the rebuild's transaction: on PostgreSQL the drop locks out the old table's
    readers until the commit, which then follows at once."""
    store.execute("DROP TABLE rollup_failures")
    store.execute("ALTER TABLE rollup_failures_new RENAME TO rollup_failures")


def rebuild_file(where: str | Any, *, lock_timeout: float = 10.0) -> dict[str, Any]:
    """Open the store at ``where`` and ``rebuild`` its rollups."""
    from tlswatch.store import Store

    with Store.open(where, lock_timeout=lock_timeout) as store:
        return rebuild(store)
