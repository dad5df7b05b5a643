"""Schema migrations, applied in order and recorded by name in ``schema_migrations``.

Columns that every summary filters or groups on (day, policy domain, organisation, policy
type) are copied onto ``failure_details`` so that a summary over millions of failure rows
is one scan with no join.

The counting rule is decided once, when a report is loaded, because it only looks inside
one report (see ``tlswatch.ingest.counting``): ``policies.counted`` marks the policy rows
whose sessions count, ``policies.counting`` names the rule that applied to that report and
domain, and ``failure_details.counted`` follows its policy row, so successful, failed and
per-result-type figures always come from one consistent choice.  Every query sums the
flagged rows; all rows keep the per-policy-type figures.

``names`` numbers every distinct domain, organisation, result type, host and IP seen in
failure details; the ``*_id`` columns beside the strings let summaries group by integers,
about three times faster than by strings at 10M rows (bench/summary_bench.py).
"""

from __future__ import annotations

from tlswatch.store import rollups

_CHECKS = """
        CREATE TABLE check_runs (
            run_pk BIGINT PRIMARY KEY,
            domain VARCHAR NOT NULL,
            checked_at TIMESTAMP NOT NULL,
            result VARCHAR NOT NULL,
            errors INTEGER NOT NULL,
            warnings INTEGER NOT NULL,
            sts_id VARCHAR,
            policy VARCHAR,
            policy_sha256 VARCHAR,
            hosted_id VARCHAR,
            rua VARCHAR[],
            mx VARCHAR[],{certificates}
            alerts VARCHAR[]
        );
        CREATE TABLE check_findings (
            run_pk BIGINT NOT NULL,
            domain VARCHAR NOT NULL,
            checked_at TIMESTAMP NOT NULL,
            finding_index INTEGER NOT NULL,
            severity VARCHAR NOT NULL,
            code VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            fix VARCHAR NOT NULL
        );
        """

_INITIAL = """
        CREATE TABLE reports (
            report_pk BIGINT PRIMARY KEY,
            organization_name VARCHAR NOT NULL,
            report_id VARCHAR NOT NULL,
            contact_info VARCHAR,
            start_datetime TIMESTAMP NOT NULL,
            end_datetime TIMESTAMP NOT NULL,
            day DATE NOT NULL,
            source VARCHAR,
            filename VARCHAR,
            message_id VARCHAR,
            header_report_domain VARCHAR,
            header_submitter VARCHAR,
            subject_report_id VARCHAR,
            warnings VARCHAR[],
            received_at TIMESTAMP NOT NULL,
            UNIQUE (organization_name, report_id)
        );
        CREATE TABLE report_raw (
            report_pk BIGINT NOT NULL,
            raw_gzip BYTEA NOT NULL
        );
        CREATE TABLE policies (
            policy_pk BIGINT NOT NULL,
            report_pk BIGINT NOT NULL,
            policy_index INTEGER NOT NULL,
            day DATE NOT NULL,
            organization_name VARCHAR NOT NULL,
            policy_type VARCHAR NOT NULL,
            policy_domain VARCHAR NOT NULL,
            policy_string VARCHAR[],
            mx_host VARCHAR[],
            successful_sessions BIGINT NOT NULL,
            failed_sessions BIGINT NOT NULL,
            counted_successful BOOLEAN NOT NULL,
            counted_failed BOOLEAN NOT NULL
        );
        CREATE TABLE failure_details (
            report_pk BIGINT NOT NULL,
            policy_pk BIGINT NOT NULL,
            day DATE NOT NULL,
            organization_name VARCHAR NOT NULL,
            policy_type VARCHAR NOT NULL,
            policy_domain VARCHAR NOT NULL,
            result_type VARCHAR NOT NULL,
            sending_mta_ip VARCHAR,
            receiving_mx_hostname VARCHAR,
            receiving_mx_helo VARCHAR,
            receiving_ip VARCHAR,
            failed_session_count BIGINT NOT NULL,
            additional_information VARCHAR,
            failure_reason_code VARCHAR,
            counted BOOLEAN NOT NULL,
            domain_id INTEGER NOT NULL,
            organization_name_id INTEGER NOT NULL,
            result_type_id INTEGER NOT NULL,
            receiving_mx_hostname_id INTEGER,
            receiving_ip_id INTEGER,
            sending_mta_ip_id INTEGER
        );
        CREATE TABLE names (
            name_id INTEGER PRIMARY KEY,
            value VARCHAR NOT NULL UNIQUE
        );
        CREATE TABLE quarantine (
            quarantine_pk BIGINT PRIMARY KEY,
            sha256 VARCHAR NOT NULL UNIQUE,
            source VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            received_at TIMESTAMP NOT NULL,
            size BIGINT NOT NULL,
            raw_gzip BYTEA NOT NULL
        );
        """


def _gzip_as_is(sql: str) -> str:
    """DuckDB's text: raw reports (gzip already) in columns it stores as they are; it would
    otherwise try every compression on them at each checkpoint and keep none (a third of
    the checkpoint's time after an ingest, for the same file size).  A store made before
    keeps its columns (changing one copies the table)."""
    return sql.replace("raw_gzip BYTEA NOT NULL",
                       "raw_gzip BYTEA USING COMPRESSION uncompressed NOT NULL")


# (name, SQL): one text for both engines, or a text per engine where one statement cannot
# be shared.
MIGRATIONS: list[tuple[str, str | dict[str, str]]] = [
    ("0001_initial", {"duckdb": _gzip_as_is(_INITIAL), "postgresql": _INITIAL}),
    (
        "0002_receivers",
        """
        ALTER TABLE reports ADD COLUMN received_via VARCHAR;
        ALTER TABLE reports ADD COLUMN dkim_result VARCHAR;
        ALTER TABLE reports ADD COLUMN dkim_domain VARCHAR;
        """,
    ),
    (
        "0003_alerts",
        """
        CREATE TABLE alerts (
            alert_pk BIGINT PRIMARY KEY,
            policy_domain VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            day DATE NOT NULL,
            message VARCHAR NOT NULL,
            details JSON,
            created_at TIMESTAMP NOT NULL,
            delivered_at TIMESTAMP,
            delivery_error VARCHAR,
            UNIQUE (policy_domain, kind, day)
        );
        """,
    ),
    (
        "0004_counting_by_layout",
        # The counting rule now depends on the sender's layout (see the module docstring):
        # one ``counted`` flag per policy row, the rule that applied in ``counting``, the
        # sender's order of failure details, and a digest of each report's content.
        """
        ALTER TABLE policies ADD COLUMN counted BOOLEAN;
        ALTER TABLE policies ADD COLUMN counting VARCHAR;
        UPDATE policies SET counted = d.counted, counting = d.counting
        FROM (
            SELECT report_pk, policy_domain, policy_type,
                   CASE WHEN sts_total IS NULL OR tlsa_total IS NULL OR policy_type
                             = 'no-policy-found' THEN true
                        WHEN sts_total = tlsa_total THEN policy_type = (CASE WHEN tlsa_failed
                             > sts_failed THEN 'tlsa' ELSE 'sts' END)
                        ELSE true END AS counted,
                   CASE WHEN sts_total IS NULL OR tlsa_total IS NULL THEN 'added'
                        WHEN sts_total = tlsa_total THEN 'same-sessions'
                        ELSE 'added' END AS counting
            FROM (SELECT report_pk, policy_domain, policy_type,
                         max(total) FILTER (WHERE kind = 'sts') OVER w AS sts_total,
                         max(total) FILTER (WHERE kind = 'tlsa') OVER w AS tlsa_total,
                         max(failed) FILTER (WHERE kind = 'sts') OVER w AS sts_failed,
                         max(failed) FILTER (WHERE kind = 'tlsa') OVER w AS tlsa_failed
                  FROM (SELECT report_pk, policy_domain, policy_type, policy_type AS kind,
                               sum(CAST(successful_sessions AS DECIMAL(38,0))
                                   + failed_sessions) AS total,
                               sum(CAST(failed_sessions AS DECIMAL(38,0))) AS failed
                        FROM policies GROUP BY report_pk, policy_domain, policy_type) AS t
                  WINDOW w AS (PARTITION BY report_pk, policy_domain)) AS f
        ) d
        WHERE policies.report_pk = d.report_pk AND policies.policy_domain = d.policy_domain
          AND policies.policy_type = d.policy_type;
        ALTER TABLE policies DROP COLUMN counted_successful;
        ALTER TABLE policies DROP COLUMN counted_failed;
        ALTER TABLE failure_details ADD COLUMN detail_index INTEGER;
        UPDATE failure_details SET counted = p.counted
        FROM policies p WHERE failure_details.policy_pk = p.policy_pk;
        ALTER TABLE reports ADD COLUMN content_sha256 VARCHAR;
        """,
    ),
    (
        "0005_outbox",
        # Deliveries waiting to be sent, written in the same transaction as what they
        # announce: one row per destination (a group of mail recipients, or the webhook)
        # with its fully rendered body, tried with back-off by the delivery worker.
        """
        CREATE SEQUENCE outbox_batches START 1;
        CREATE TABLE outbox (
            outbox_pk BIGINT PRIMARY KEY,
            batch BIGINT NOT NULL,
            kind VARCHAR NOT NULL,
            channel VARCHAR NOT NULL,
            recipient VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            body JSON NOT NULL,
            created_at TIMESTAMP NOT NULL,
            status VARCHAR NOT NULL,
            attempts INTEGER NOT NULL,
            next_try_at TIMESTAMP NOT NULL,
            delivered_at TIMESTAMP,
            last_error VARCHAR
        );
        ALTER TABLE alerts ADD COLUMN outbox_batch BIGINT;
        """,
    ),
    (
        "0006_checks",
        # The MTA-STS/TLS-RPT checks 'serve' runs daily: one row per run with what it saw
        # (the facts a later run is compared with), and its findings.  DuckDB databases
        # got ``certificates`` as a list of STRUCTs here, which PostgreSQL has no column
        # for; 0009_portable makes it JSON text on both (added there on PostgreSQL).
        {
            "duckdb": _CHECKS.format(certificates="""
            certificates STRUCT(host VARCHAR, role VARCHAR, not_after TIMESTAMP,
                                sha256 VARCHAR)[],"""),
            "postgresql": _CHECKS.format(certificates=""),
        },
    ),
    (
        "0007_retention",
        # What retention pruning removed, one row per kind (failure_details, report_raw,
        # quarantine) plus the run itself: every command can then say "pruned after N days"
        # for an old day instead of showing nothing, and the record travels with a backup.
        """
        CREATE TABLE retention (
            kind VARCHAR PRIMARY KEY,
            before_day DATE NOT NULL,
            keep_days INTEGER NOT NULL,
            pruned_at TIMESTAMP NOT NULL,
            removed BIGINT NOT NULL
        );
        """,
    ),
    (
        "0008_rollups",
        # Daily rollups that summaries, pages, alerts and daily files read (see
        # tlswatch/store/rollups.py), filled here from the stored reports.
        rollups.fill_sql(),
    ),
    (
        "0009_portable",
        # The check runs' certificates as JSON text on both engines (see 0006_checks):
        # [{"host", "role", "not_after" (ISO, UTC), "sha256"}, ...].
        {
            "duckdb": """
            ALTER TABLE check_runs ADD COLUMN certificates_json JSON;
            UPDATE check_runs SET certificates_json = CAST(to_json(certificates) AS JSON);
            ALTER TABLE check_runs DROP COLUMN certificates;
            ALTER TABLE check_runs RENAME COLUMN certificates_json TO certificates;
            """,
            "postgresql": """
            ALTER TABLE check_runs ADD COLUMN certificates JSON;
            """,
        },
    ),
    (
        "0010_nodes",
        # What the once-a-day work of a cluster of 'serve' nodes did for which day (task
        # 'daily summary': the record of each day's files and summary, JSON text), so that
        # no node repeats it; see tlswatch.cluster.
        """
        CREATE TABLE cluster_days (
            task VARCHAR NOT NULL,
            day DATE NOT NULL,
            done_at TIMESTAMP NOT NULL,
            node VARCHAR NOT NULL,
            record VARCHAR,
            PRIMARY KEY (task, day)
        );
        """,
    ),
    (
        "0011_tenants",
        # Provider mode: tenants own domains (a domain in no row belongs to the default
        # single tenant); users and API tokens belong to a tenant with a role.  Passwords
        # are scrypt hashes, tokens their SHA-256: the database never holds either.
        """
        CREATE TABLE tenants (
            tenant VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL
        );
        CREATE TABLE tenant_domains (
            domain VARCHAR PRIMARY KEY,
            tenant VARCHAR NOT NULL,
            added_at TIMESTAMP NOT NULL
        );
        CREATE TABLE users (
            name VARCHAR PRIMARY KEY,
            tenant VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            password_hash VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        );
        CREATE TABLE api_tokens (
            token_sha256 VARCHAR PRIMARY KEY,
            tenant VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            last_used_at TIMESTAMP
        );
        """,
    ),
    (
        "0012_rollup_ips",
        # Failed sessions per month, domain and sending IP (see tlswatch/store/rollups.py):
        # a period's sending IPs without reading every day's rows per reporter and host.
        rollups.ips_fill_sql(),
    ),
    (
        "0013_acme",
        # Certificates obtained by ACME for the hosted mta-sts.<domain> names (name = the
        # host name), kept here so every node serves the same ones; the HTTP-01 answers
        # pending (any node may be asked); the account key of each ACME directory.
        """
        CREATE TABLE acme_certificates (
            name VARCHAR PRIMARY KEY,
            cert_pem VARCHAR,
            key_pem VARCHAR,
            not_after TIMESTAMP,
            issued_at TIMESTAMP,
            last_error VARCHAR,
            next_attempt TIMESTAMP,
            attempts INTEGER
        );
        CREATE TABLE acme_challenges (
            token VARCHAR PRIMARY KEY,
            key_authorization VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        );
        CREATE TABLE acme_accounts (
            directory VARCHAR PRIMARY KEY,
            key_pem VARCHAR NOT NULL,
            uri VARCHAR,
            created_at TIMESTAMP NOT NULL
        );
        """,
    ),
    (
        "0014_policy_fetches",
        # Every fetch of a hosted MTA-STS policy: who (the client's address, behind a trusted
        # proxy the forwarded one), what was served, by which node; pruned after
        # policy_fetch_keep_days.  PostgreSQL gets an index for the domain page's reads
        # (DuckDB's zone maps serve them: rows arrive in time order).
        {
            "duckdb": """
            CREATE TABLE policy_fetches (fetched_at TIMESTAMP, domain VARCHAR,
                client_ip VARCHAR, policy_id VARCHAR, status INTEGER, node VARCHAR);
            """,
            "postgresql": """
            CREATE TABLE policy_fetches (fetched_at TIMESTAMP, domain VARCHAR,
                client_ip VARCHAR, policy_id VARCHAR, status INTEGER, node VARCHAR);
            CREATE INDEX policy_fetches_domain ON policy_fetches (domain, fetched_at);
            """,
        },
    ),
    (
        "0015_policy_changes",
        # Every change of a hosted MTA-STS policy (init, rotate, enforce, fallback, retire,
        # apply-staged) with who made it, when, from what to what and why; and the policies
        # the MX watcher stages (action 'stage': new_* is the staged policy, not served).
        """
        CREATE SEQUENCE policy_changes_seq;
        CREATE TABLE policy_changes (
            change_pk BIGINT PRIMARY KEY,
            changed_at TIMESTAMP NOT NULL,
            domain VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            actor VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            forced BOOLEAN NOT NULL,
            old_id VARCHAR,
            old_mode VARCHAR,
            old_mx VARCHAR[],
            old_max_age INTEGER,
            new_id VARCHAR NOT NULL,
            new_mode VARCHAR NOT NULL,
            new_mx VARCHAR[] NOT NULL,
            new_max_age INTEGER NOT NULL,
            revision INTEGER NOT NULL
        );
        CREATE INDEX policy_changes_domain ON policy_changes (domain, change_pk);
        """,
    ),
    (
        "0016_dns_updates",
        # Where the publication of each hosted policy's id by DNS update stands, one row
        # per domain (see tlswatch.mtasts.dnsupdate): the id last tried, published or
        # failed (with the error), the tries for that id, when, and when to try again.
        """
        CREATE TABLE dns_updates (
            domain VARCHAR PRIMARY KEY,
            policy_id VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            error VARCHAR,
            attempts INTEGER NOT NULL,
            attempted_at TIMESTAMP NOT NULL,
            next_attempt TIMESTAMP
        );
        """,
    ),
]


def migration_sql(sql: str | dict[str, str], engine: str) -> str:
    """A migration's text for ``engine`` ("duckdb" or "postgresql")."""
    return sql if isinstance(sql, str) else sql[engine]
