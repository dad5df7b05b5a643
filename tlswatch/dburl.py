"""Where the store lives: a DuckDB file (a path) or a PostgreSQL server (a URL).

A URL's password must never reach a terminal or a log, so a ``DatabaseUrl`` *is* the
redacted text (``postgresql://tlswatch:***@db.example/tlswatch``): printing it, logging it
or formatting it into a message is safe.  Only the store reads ``secret``, to connect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")


def is_url(value: object) -> bool:
    """Whether ``value`` names a PostgreSQL server rather than a DuckDB file."""
    return isinstance(value, str) and value.lower().startswith(SCHEMES)


def redact(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        auth, _, host = netloc.rpartition("@")
        if ":" in auth:
            auth = auth.split(":", 1)[0] + ":***"
        netloc = f"{auth}@{host}"
    query = "&".join("password=***" if q.lower().startswith("password=") else q
                     for q in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
    return DatabaseUrl(value) if isinstance(value, str) and is_url(value) else Path(value)
