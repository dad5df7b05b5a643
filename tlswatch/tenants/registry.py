"""Tenants and the domains they own (table ``tenant_domains``)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlswatch.dnsname import BadDomain, parse_domain
from tlswatch.errors import NotFoundError, TlsWatchError
from tlswatch.store import Store
from tlswatch.tenants.scope import EVERYTHING, Scope

if TYPE_CHECKING:  # the ingest side (and pyarrow) only for a type: readers never load it
    from tlswatch.ingest.prepare import Options

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
ROLES = ("admin", "viewer")
# The accepted set of a provider whose tenants own no domain yet: no policy domain is "".
NOBODY = frozenset({""})


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def tenant_name(text: str) -> str:
    """A tenant (or user, token) name: 1 to 63 of a-z 0-9 . _ -, starting alphanumeric."""
    if not _NAME.fullmatch(text):
        raise TlsWatchError(f"name {text!r}: use 1 to 63 characters of a-z, 0-9, '.', '_', "
                            "'-', starting with a letter or digit")
    return text


def role_name(text: str) -> str:
    if text not in ROLES:
        raise TlsWatchError(f"role {text!r}: must be admin or viewer")
    return text


def domain_name(text: str) -> str:
    try:
        return parse_domain(text)
    except BadDomain as exc:
        raise TlsWatchError(f"domain: {exc}") from None


def require_tenant(store: Store, tenant: str) -> str:
    if not store.value("SELECT count(*) FROM tenants WHERE tenant = ?", [tenant]):
        raise NotFoundError(f"no tenant {tenant!r}; see 'tlswatch tenant list'")
    return tenant


def add_tenant(store: Store, tenant: str) -> None:
    tenant = tenant_name(tenant)
    if store.value("SELECT count(*) FROM tenants WHERE tenant = ?", [tenant]):
        raise TlsWatchError(f"tenant {tenant!r} exists already")
    store.execute("INSERT INTO tenants (tenant, created_at) VALUES (?, ?)", [tenant, now()])


def list_tenants(store: Store) -> list[dict[str, Any]]:
    return store.rows("""
        SELECT t.tenant, t.created_at,
               (SELECT count(*) FROM tenant_domains d WHERE d.tenant = t.tenant) AS domains,
               (SELECT count(*) FROM users u WHERE u.tenant = t.tenant) AS users,
               (SELECT count(*) FROM api_tokens k WHERE k.tenant = t.tenant) AS tokens
        FROM tenants t ORDER BY t.tenant""")


def remove_tenant(store: Store, tenant: str) -> dict[str, int]:
    """Remove a tenant that owns no domain, with its users and tokens."""
    require_tenant(store, tenant)
    owned = domains_of(store, tenant)
    if owned:
        raise TlsWatchError(f"tenant {tenant!r} still owns {', '.join(sorted(owned))}: "
                            "remove them first ('tlswatch domain remove DOMAIN')")
    with store.transaction():
        users = int(store.value("SELECT count(*) FROM users WHERE tenant = ?", [tenant]))
        tokens = int(store.value("SELECT count(*) FROM api_tokens WHERE tenant = ?", [tenant]))
        store.execute("DELETE FROM users WHERE tenant = ?", [tenant])
        store.execute("DELETE FROM api_tokens WHERE tenant = ?", [tenant])
        store.execute("DELETE FROM tenants WHERE tenant = ?", [tenant])
    return {"users": users, "tokens": tokens}


def add_domain(store: Store, domain: str, tenant: str) -> str:
    """Record that ``tenant`` owns ``domain``; its reports land in the tenant's view."""
    domain = domain_name(domain)
    require_tenant(store, tenant)
    owner = store.value("SELECT tenant FROM tenant_domains WHERE domain = ?", [domain])
    if owner == tenant:
        raise TlsWatchError(f"{domain} is owned by {tenant!r} already")
    if owner is not None:
        raise TlsWatchError(f"{domain} is owned by tenant {owner!r}; 'tlswatch domain remove "
                            f"{domain}' first if it moves")
    store.execute("INSERT INTO tenant_domains (domain, tenant, added_at) VALUES (?, ?, ?)",
                  [domain, tenant, now()])
    return domain


def list_domains(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
    if tenant is not None:
        require_tenant(store, tenant)
        return store.rows("SELECT domain, tenant, added_at FROM tenant_domains "
                          "WHERE tenant = ? ORDER BY domain", [tenant])
    return store.rows("SELECT domain, tenant, added_at FROM tenant_domains "
                      "ORDER BY tenant, domain")


def remove_domain(store: Store, domain: str) -> str:
    """Forget who owns ``domain`` (its stored reports stay; new ones are quarantined)."""
    domain = domain_name(domain)
    owner = store.value("SELECT tenant FROM tenant_domains WHERE domain = ?", [domain])
    if owner is None:
        raise NotFoundError(f"no tenant owns {domain}; see 'tlswatch domain list'")
    store.execute("DELETE FROM tenant_domains WHERE domain = ?", [domain])
    return str(owner)


def domains_of(store: Store, tenant: str) -> frozenset[str]:
    return frozenset(r["domain"] for r in store.rows(
        "SELECT domain FROM tenant_domains WHERE tenant = ? ORDER BY domain", [tenant]))


def scope_for(store: Store, tenant: str | None, role: str = "admin") -> Scope:
    """The view of ``tenant`` (None: everything), with its domains as they are now."""
    if tenant is None:
        return EVERYTHING
    require_tenant(store, tenant)
    return Scope(tenant, domains_of(store, tenant), role)


def accepted(store: Store, options: Options) -> Options:
    """The loader's checks in provider mode (once any tenant exists): the owned domains,
    plus the operator's own in the ``domains`` setting, are accepted; reports for any other
    domain are quarantined.  With no tenant, ``options`` as the settings made them."""
    if not store.value("SELECT count(*) FROM tenants"):
        return options
    owned = frozenset(r["domain"] for r in store.rows(
        "SELECT domain FROM tenant_domains ORDER BY domain"))
    return replace(options, domains=(owned | options.domains) or NOBODY,
                   refused_hint="no tenant owns it: 'tlswatch domain add'")


def open_for_changes(db: str | Path, *, lock_timeout: float) -> Store:
    """The store, writable, for a change to tenants, users, tokens or domains (waiting up to
    ``lock_timeout`` while 'serve' loads a batch)."""
    return Store.open(db, lock_timeout=lock_timeout)
