"""Provider mode: `tenant`, `user`, `token` and `domain add|list|remove`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import (
    FormatOpt,
    _errors,
    _format,
    _read_store,
    _state,
    app,
    echo,
    listing,
)
from tlswatch.cli.mtasts import record_warnings
from tlswatch.cli.onboarding import domain_group
from tlswatch.config import Settings

if TYPE_CHECKING:
    from tlswatch.store import Store

tenant_app = typer.Typer(help="Tenants: customers who own domains (provider mode).",
                         no_args_is_help=True)
user_app = typer.Typer(help="Dashboard users of a tenant.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens of a tenant (Authorization: Bearer TOKEN).",
                        no_args_is_help=True)
domain_app = domain_group()  # shared with 'domain status' (onboarding)
app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

TenantOpt = Annotated[str, typer.Option("--tenant", help="The tenant.")]
TenantFilter = Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")]
RoleOpt = Annotated[str, typer.Option("--role", help="admin (may change things) or viewer "
                                                      "(reads only).")]


@contextmanager
def _writing(ctx: typer.Context) -> Iterator[Store]:
    from tlswatch.tenants import registry

    settings = _state(ctx).settings
    with _errors(), registry.open_for_changes(settings.db,
                                              lock_timeout=settings.lock_timeout) as store:
        yield store


@contextmanager
def _reading(ctx: typer.Context) -> Iterator[Store]:
    with _errors(), _read_store(_state(ctx).settings) as store:
        yield store


def _list(rows: list[dict[str, Any]], fmt: FormatOpt, *, title: str, nothing: str) -> None:
    columns = list(rows[0]) if rows else []
    echo(listing(rows, _format(fmt), columns=columns, title=title, nothing=nothing), nl=False)


@tenant_app.command("add")
def tenant_add(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="TENANT")]
               ) -> None:
    """Add a tenant.

    From then on (provider mode) only reports for domains a tenant owns are accepted.
    """
    from tlswatch.tenants import registry

    with _writing(ctx) as store:
        registry.add_tenant(store, name)
    echo(f"tenant {name} added; give it domains with 'tlswatch domain add DOMAIN "
         f"--tenant {name}'")


@tenant_app.command("list")
def tenant_list(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """List the tenants, with their domains, users and tokens."""
    from tlswatch.tenants import registry

    with _reading(ctx) as store:
        rows = registry.list_tenants(store)
    _list(rows, fmt, title="Tenants", nothing="No tenants: this is a single-tenant set-up.")


@tenant_app.command("remove")
def tenant_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="TENANT")]
                  ) -> None:
    """Remove a tenant (with its users and tokens).

    A tenant that still owns a domain is refused.
    """
    from tlswatch.tenants import registry

    with _writing(ctx) as store:
        gone = registry.remove_tenant(store, name)
    echo(f"tenant {name} removed, with {gone['users']} user(s) and {gone['tokens']} token(s)")


@user_app.command("add")
def user_add(
    ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="USER")],
    tenant: TenantOpt, role: RoleOpt,
    password_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the password (default: ask for it).")] = None,
) -> None:
    """Add a dashboard user (HTTP basic auth) to a tenant.

    The password comes from an environment variable or is asked for, never from an
    argument (arguments are visible to every user of the machine); it is stored as an
    scrypt hash.
    """
    from tlswatch.tenants import accounts

    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise typer.BadParameter(f"environment variable {password_env} is not set",
                                     param_hint="--password-env")
    else:
        password = typer.prompt(f"password for {name}", hide_input=True,
                                confirmation_prompt=True)
    with _writing(ctx) as store:
        accounts.add_user(store, name, tenant=tenant, role=role, password=password)
    echo(f"user {name} added to tenant {tenant} as {role}")


@user_app.command("list")
def user_list(ctx: typer.Context, tenant: TenantFilter = None, fmt: FormatOpt = None) -> None:
    """List the users, their tenant and role."""
    from tlswatch.tenants import accounts

    with _reading(ctx) as store:
        rows = accounts.list_users(store, tenant)
    _list(rows, fmt, title="Users", nothing="No users.")


@user_app.command("remove")
def user_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="USER")]
                ) -> None:
    """Remove a user.

    A dashboard that checked its password accepts it for up to a minute more.
    """
    from tlswatch.tenants import accounts

    with _writing(ctx) as store:
        tenant = accounts.remove_user(store, name)
    echo(f"user {name} removed from tenant {tenant}")


@token_app.command("add")
def token_add(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME")],
              tenant: TenantOpt, role: RoleOpt) -> None:
    """Make an API token for a tenant and print it.

    It is shown this once: only its SHA-256 is stored.
    """
    from tlswatch.tenants import accounts

    with _writing(ctx) as store:
        token = accounts.add_token(store, name, tenant=tenant, role=role)
    echo(token)
    echo(f"token {name} of tenant {tenant} ({role}): shown once; keep it now", err=True)


@token_app.command("list")
def token_list(ctx: typer.Context, tenant: TenantFilter = None, fmt: FormatOpt = None) -> None:
    """List the tokens (names, roles, dates; never the tokens)."""
    from tlswatch.tenants import accounts

    with _reading(ctx) as store:
        rows = accounts.list_tokens(store, tenant)
    _list(rows, fmt, title="API tokens", nothing="No API tokens.")


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME")],
                 tenant: TenantOpt) -> None:
    """Revoke a token at once."""
    from tlswatch.tenants import accounts

    with _writing(ctx) as store:
        accounts.revoke_token(store, name, tenant=tenant)
    echo(f"token {name} of tenant {tenant} revoked")


@domain_app.command("add")
def domain_add(
    ctx: typer.Context, domain: Annotated[str, typer.Argument(metavar="DOMAIN")],
    tenant: TenantOpt,
    mx: Annotated[list[str] | None, typer.Option(
        "--mx", help="Also host its MTA-STS policy: MX host or *.pattern (repeat).")] = None,
    mode: Annotated[str, typer.Option(help="Mode of the hosted policy (with --mx).")] =
        "testing",
    fmt: FormatOpt = None,
) -> None:
    """Give a domain to a tenant; print the DNS records to publish.

    Its reports land in the tenant's view from now on.
    """
    from tlswatch.tenants import records

    settings = _state(ctx).settings
    with _writing(ctx) as store:
        data = records.onboard(store, settings, domain, tenant=tenant, mx=mx, mode=mode)
    print_records(settings, data, fmt)


def print_records(settings: Settings, data: dict[str, Any], fmt: FormatOpt) -> None:
    """What a tenant publishes for a domain, in every format (the one place that prints
    them)."""
    dns = data["records"]
    cname = next(r["value"] for r in dns if r["type"] == "CNAME")
    warnings = record_warnings(settings, cname)
    for warning in warnings:
        echo(f"tlswatch: warning: {warning}", err=True)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json({**data, "warnings": warnings}))
        return
    if chosen is not Format.table:
        echo(render_rows(dns, chosen), nl=False)
        return
    echo(f"{data['domain']} is owned by tenant {data['tenant']}.")
    if data["policy_id"]:
        echo(f"Policy served at {data['policy_url']} (id {data['policy_id']}).")
    echo("Publish these DNS records:")
    for r in dns:  # zone-file syntax: a TXT value is quoted, a host name is not
        value = f'"{r["value"]}"' if r["type"] == "TXT" else r["value"]
        echo(f'  {r["name"]}.  IN {r["type"]}  {value}')
    for note in data["notes"]:
        echo(f"note: {note}")


@domain_app.command("list")
def domain_list(ctx: typer.Context, tenant: TenantFilter = None, fmt: FormatOpt = None) -> None:
    """List the domains tenants own."""
    from tlswatch.tenants import registry

    with _reading(ctx) as store:
        rows = registry.list_domains(store, tenant)
    _list(rows, fmt, title="Domains", nothing="No domain is owned by a tenant.")


@domain_app.command("remove")
def domain_remove(ctx: typer.Context, domain: Annotated[str, typer.Argument(metavar="DOMAIN")]
                  ) -> None:
    """Take a domain from its tenant.

    Its stored reports stay; new ones are quarantined.
    """
    from tlswatch.tenants import registry

    with _writing(ctx) as store:
        owner = registry.remove_domain(store, domain)
    echo(f"{domain} no longer owned by tenant {owner}")
