"""The ``tlswatch`` command line: parse options, call one library function, print.

Exit codes: 0 success, 1 something was rejected or failed (the rest still
done), 2 usage error.  The commands live in modules by concern; importing them registers
them on the one Typer app.
"""

from __future__ import annotations

from tlswatch.cli import acme as acme  # acme status
from tlswatch.cli import (
    checks,
    dnsupdates,
    fetches,
    ingesting,
    moving,
    mtasts,
    onboarding,
    policyops,
    quarantine,
    reading,
    rollups,
    serving,
    upkeep,
)
from tlswatch.cli import tenants as tenants  # provider mode: tenant, user, token, domain
from tlswatch.cli.base import app, plain_help

__all__ = ["app", "checks", "dnsupdates", "fetches", "ingesting", "main", "moving", "mtasts",
           "onboarding", "policyops", "quarantine", "reading", "rollups", "serving", "upkeep"]

plain_help(app)  # after every command module above has registered its commands


def main() -> None:
    app()
