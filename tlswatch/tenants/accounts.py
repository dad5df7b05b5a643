"""Users and API tokens of tenants, and the logins they make.

Passwords are stored as scrypt hashes (``hashlib.scrypt``: memory-hard, in the standard
library, so no dependency); tokens are random (``secrets.token_urlsafe``), shown once and
stored as their SHA-256: the database never holds a password or a token.  Comparisons are
made in constant time.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import replace
from typing import Any

from tlswatch.errors import NotFoundError, TlsWatchError
from tlswatch.store import Store
from tlswatch.tenants.registry import domains_of, now, require_tenant, role_name, tenant_name
from tlswatch.tenants.scope import Scope

# scrypt cost: 2**15 x 8 x 128 bytes = 32 MiB and some 0.1 s a check (RFC 7914 section 2).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSWORD = 12
TOKEN_PREFIX = "tw_"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        offered = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(offered, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=n * r * 256,
                          dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(store: Store, name: str, *, tenant: str, role: str, password: str) -> None:
    name, role = tenant_name(name), role_name(role)
    require_tenant(store, tenant)
    if len(password) < MIN_PASSWORD:
        raise TlsWatchError(f"password of user {name!r}: at least {MIN_PASSWORD} characters, "
                            f"got {len(password)}")
    if store.value("SELECT count(*) FROM users WHERE name = ?", [name]):
        raise TlsWatchError(f"user {name!r} exists already")
    store.execute("INSERT INTO users (name, tenant, role, password_hash, created_at) "
                  "VALUES (?, ?, ?, ?, ?)", [name, tenant, role, hash_password(password), now()])


def list_users(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
    where, params = (" WHERE tenant = ?", [tenant]) if tenant else ("", [])
    return store.rows(f"SELECT name, tenant, role, created_at FROM users{where} "
                      "ORDER BY tenant, name", params)


def add_token(store: Store, name: str, *, tenant: str, role: str) -> str:
    """A new token for ``tenant``: returned once, stored only as its SHA-256."""
    name, role = tenant_name(name), role_name(role)
    require_tenant(store, tenant)
    if store.value("SELECT count(*) FROM api_tokens WHERE tenant = ? AND name = ?",
                   [tenant, name]):
        raise TlsWatchError(f"tenant {tenant!r} has a token named {name!r} already")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.execute("INSERT INTO api_tokens (token_sha256, tenant, name, role, created_at) "
                  "VALUES (?, ?, ?, ?, ?)", [token_digest(token), tenant, name, role, now()])
    return token


def list_tokens(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
    where, params = (" WHERE tenant = ?", [tenant]) if tenant else ("", [])
    return store.rows(f"SELECT tenant, name, role, created_at, last_used_at FROM api_tokens"
                      f"{where} ORDER BY tenant, name", params)


def revoke_token(store: Store, name: str, *, tenant: str) -> None:
    require_tenant(store, tenant)
    if not store.value("SELECT count(*) FROM api_tokens WHERE tenant = ? AND name = ?",
                       [tenant, name]):
        raise NotFoundError(f"tenant {tenant!r} has no token named {name!r}; see "
                            f"'tlswatch token list --tenant {tenant}'")
    store.execute("DELETE FROM api_tokens WHERE tenant = ? AND name = ?", [tenant, name])


def token_login(store: Store, token: str) -> Scope | None:
    """The scope of a tenant's API token, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = token_digest(token)
    rows = store.rows("SELECT token_sha256, tenant, role, name FROM api_tokens "
                      "WHERE token_sha256 = ?", [digest])
    if not rows or not hmac.compare_digest(rows[0]["token_sha256"], digest):
        return None
    return replace(_scope(store, rows[0]["tenant"], rows[0]["role"]),
                   who=f"token:{rows[0]['name']}")


def password_login(store: Store, name: str, password: str) -> Scope | None:
    """The scope of a tenant's user, or None; as slow for an unknown user as a known one."""
    rows = store.rows("SELECT tenant, role, password_hash FROM users WHERE name = ?", [name])
    stored = rows[0]["password_hash"] if rows else _dummy()
    if not verify_password(password, stored) or not rows:
        return None
    return _scope(store, rows[0]["tenant"], rows[0]["role"])


def _scope(store: Store, tenant: str, role: str) -> Scope:
    return Scope(tenant, domains_of(store, tenant), role)


@functools.cache
def _dummy() -> str:
    return hash_password(secrets.token_urlsafe(16))


def remove_user(store: Store, name: str) -> str:
    """Remove a user; return its tenant."""
    tenant = store.value("SELECT tenant FROM users WHERE name = ?", [name])
    if tenant is None:
        raise NotFoundError(f"no user {name!r}; see 'tlswatch user list'")
    store.execute("DELETE FROM users WHERE name = ?", [name])
    return str(tenant)
