"""Schema migrations, applied in order and recorded by name in ``schema_migrations``.

Columns that every summary filters or groups on (day, policy domain, organisation, policy
type) are copied onto ``failure_details`` so that a summary over millions of failure rows
is one scan with no join.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
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
            report_pk BIGINT PRIMARY KEY,
            raw_gzip BLOB NOT NULL
        );
        CREATE TABLE policies (
            policy_pk BIGINT PRIMARY KEY,
            report_pk BIGINT NOT NULL,
            policy_index INTEGER NOT NULL,
            day DATE NOT NULL,
            organization_name VARCHAR NOT NULL,
            policy_type VARCHAR NOT NULL,
            policy_domain VARCHAR NOT NULL,
            policy_string VARCHAR[],
            mx_host VARCHAR[],
            successful_sessions BIGINT NOT NULL,
            failed_sessions BIGINT NOT NULL
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
            failure_reason_code VARCHAR
        );
        CREATE TABLE quarantine (
            quarantine_pk BIGINT PRIMARY KEY,
            sha256 VARCHAR NOT NULL UNIQUE,
            source VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            received_at TIMESTAMP NOT NULL,
            size BIGINT NOT NULL,
            raw_gzip BLOB NOT NULL
        );
        """,
    ),
]
