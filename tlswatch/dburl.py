"""Where the store lives: a DuckDB file (a path) or a PostgreSQL server (a URL).

A URL's password must never reach a terminal or a log, so a ``DatabaseUrl`` *is* the
redacted text (``postgresql://tlswatch:***@db.example/tlswatch``): printing it, logging it
or formatting it into a message is safe.  Only the store reads ``secret``, to connect.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tlswatch.errors import ConfigError

SCHEMES = ("postgresql://", "postgres://")


def is_url(value: object) -> bool:
    """Whether ``value`` names a PostgreSQL server rather than a DuckDB file."""
    return isinstance(value, str) and value.lower().startswith(SCHEMES)


def redact(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) as ***.

    Read as text, not parsed: a password that is not percent-encoded may hold ``/ ? # @
    : %``, which a URL parser takes for the path, the query or the port.  Everything from
    ``://`` to the last ``@`` is the user and password: the user (up to the first ``:``)
    is shown, the rest is not.  ``postgresql:///db`` keeps its three slashes."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    auth, at, tail = rest.rpartition("@")
    if at:
        user, colon, _ = auth.partition(":")
        auth = f"{user}:***@" if colon else f"{user}@"
    head, question, query = tail.partition("?")
    if question:
        query = _PASSWORD_PARAM.sub(r"\1password=***", query)
    return f"{scheme}://{auth}{head}{question}{query}"


# A password= parameter's value runs to the next parameter (``&name=``) or the end: an
# unencoded ``&`` or ``#`` in it stays hidden.
_PASSWORD_PARAM = re.compile(r"(?i)(^|&)password=.*?(?=&[a-z_]+=|$)", re.DOTALL)

# A libpq keyword DSN ("host=/run/postgresql dbname=tlswatch user=tlswatch password=...").
_KEYWORDS = ("host", "hostaddr", "port", "dbname", "user", "password", "passfile",
             "sslmode", "service", "options", "application_name", "connect_timeout")
_DSN = re.compile(r"^\s*(" + "|".join(_KEYWORDS) + r")\s*=", re.IGNORECASE)


def looks_like_dsn(value: str) -> bool:
    """Whether ``value`` is a libpq keyword DSN rather than a file name: it starts with a
    connection keyword and ``=``, or holds ``=`` and a space."""
    return bool(_DSN.match(value)) or ("=" in value and " " in value.strip())


class DatabaseUrl(str):
    """A PostgreSQL URL whose text is the redacted form; ``secret`` is the URL itself."""

    secret: str

    def __new__(cls, url: str) -> DatabaseUrl:
        if isinstance(url, DatabaseUrl):
            return url
        shown = super().__new__(cls, redact(url))
        shown.secret = url
        return shown

    def __reduce__(self) -> tuple[Any, ...]:
        return (DatabaseUrl, (self.secret,))


def location(value: str | Path) -> Path | DatabaseUrl:
    """A setting's or option's value as a DuckDB path or a PostgreSQL URL."""
    if isinstance(value, DatabaseUrl):
        return value
    if isinstance(value, str) and is_url(value):
        return DatabaseUrl(value)
    if isinstance(value, str) and looks_like_dsn(value):  # not echoed: it may hold a password
        raise ConfigError("setting db: this looks like a PostgreSQL keyword connection string "
                          "(host=... dbname=...), which tlswatch does not read; give a URL: "
                          "postgresql://USER@HOST/DBNAME, or postgresql://USER@/DBNAME?host="
                          "/run/postgresql for a unix socket (the password in PGPASSWORD or "
                          "~/.pgpass)")
    return Path(value)
