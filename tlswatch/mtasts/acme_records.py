"""The ACME tables (migration 0013_acme): the certificates every node serves by SNI, the
HTTP-01 answers any node may be asked for, and the account key of each ACME directory.

Reads open the store read-only and find nothing on a database without the tables; the
writes take an open, writable store (the ACME job's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tlswatch.config import Settings
from tlswatch.store import Store, exists


@dataclass(frozen=True)
class CertificateRecord:
    name: str
    cert_pem: str | None
    key_pem: str | None
    not_after: datetime | None
    issued_at: datetime | None
    last_error: str | None
    next_attempt: datetime | None
    attempts: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> CertificateRecord:
        return cls(**{**row, "attempts": row["attempts"] or 0})


_COLUMNS = "name, cert_pem, key_pem, not_after, issued_at, last_error, next_attempt, attempts"


def _reading(settings: Settings) -> Store | None:
    """The store opened read-only, or None when it has no ACME tables (yet)."""
    if not exists(settings.db):
        return None
    store = Store.open(settings.db, read_only=True, pending_ok=True,
                       lock_timeout=settings.lock_timeout)
    if not store.has_table("acme_certificates"):
        store.close()
        return None
    return store


def certificates(settings: Settings) -> dict[str, CertificateRecord]:
    """Every name's record, issued or not."""
    store = _reading(settings)
    if store is None:
        return {}
    with store:
        rows = store.rows(f"SELECT {_COLUMNS} FROM acme_certificates ORDER BY name")
    return {r["name"]: CertificateRecord.of(r) for r in rows}


def key_authorization(settings: Settings, token: str) -> str | None:
    """The answer to the HTTP-01 challenge ``token``, while it is pending."""
    store = _reading(settings)
    if store is None:
        return None
    with store:
        value = store.value("SELECT key_authorization FROM acme_challenges WHERE token = ?",
                            [token])
    return None if value is None else str(value)


def save_challenge(store: Store, token: str, answer: str, name: str, now: datetime) -> None:
    store.execute("""
        INSERT INTO acme_challenges (token, key_authorization, name, created_at)
        VALUES (?, ?, ?, ?)
        ON CONFLICT (token) DO UPDATE SET key_authorization = excluded.key_authorization
    """, [token, answer, name, now])


def drop_challenges(store: Store, name: str) -> None:
    store.execute("DELETE FROM acme_challenges WHERE name = ?", [name])


def save_certificate(store: Store, name: str, cert_pem: str, key_pem: str,
                     not_after: datetime, now: datetime) -> None:
    store.execute("""
        INSERT INTO acme_certificates (name, cert_pem, key_pem, not_after, issued_at,
                                       last_error, next_attempt, attempts)
        VALUES (?, ?, ?, ?, ?, NULL, NULL, 0)
        ON CONFLICT (name) DO UPDATE SET cert_pem = excluded.cert_pem,
            key_pem = excluded.key_pem, not_after = excluded.not_after,
            issued_at = excluded.issued_at, last_error = NULL, next_attempt = NULL,
            attempts = 0
    """, [name, cert_pem, key_pem, not_after, now])


def save_failure(store: Store, name: str, error: str, next_attempt: datetime,
                 attempts: int) -> None:
    """Record a failed order (the certificate in place, if any, stays)."""
    store.execute("""
        INSERT INTO acme_certificates (name, last_error, next_attempt, attempts)
        VALUES (?, ?, ?, ?)
        ON CONFLICT (name) DO UPDATE SET last_error = excluded.last_error,
            next_attempt = excluded.next_attempt, attempts = excluded.attempts
    """, [name, error, next_attempt, attempts])


def account_key(store: Store, directory: str) -> str | None:
    value = store.value("SELECT key_pem FROM acme_accounts WHERE directory = ?", [directory])
    return None if value is None else str(value)


def save_account(store: Store, directory: str, key_pem: str, uri: str | None,
                 now: datetime) -> None:
    store.execute("""
        INSERT INTO acme_accounts (directory, key_pem, uri, created_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (directory) DO UPDATE SET uri = excluded.uri
    """, [directory, key_pem, uri, now])
