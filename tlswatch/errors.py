"""The exceptions tlswatch raises on purpose.

Every error names the input it is about.  ``terminal`` decides what happens to the bytes:
a terminal error goes to quarantine, a transient one is retried later.
"""

from __future__ import annotations


class TlsWatchError(Exception):
    """Root of every error tlswatch raises on purpose."""

    terminal = True


class ConfigError(TlsWatchError):
    """The settings file or an environment variable is unusable."""


class ReportError(TlsWatchError):
    """An input is not a loadable TLS-RPT report; the message names input, place and reason."""

    def __init__(self, source: str, reason: str, *, path: str = "") -> None:
        self.source = source
        self.path = path
        self.reason = reason
        where = f"{path}: " if path else ""
        super().__init__(f"{source}: {where}{reason}")

    @property
    def detail(self) -> str:
        """The place and reason without the input's name."""
        return f"{self.path}: {self.reason}" if self.path else self.reason


class StoreError(TlsWatchError):
    """The database could not be used."""


class StoreRowError(StoreError):
    """A row the database cannot hold (``index``: its place in the batch written)."""

    def __init__(self, table: str, index: int, reason: str) -> None:
        self.table, self.index, self.reason = table, index, reason
        super().__init__(f"table {table}, row {index + 1} of the batch: {reason}")


class StoreLockedError(StoreError):
    """Another process holds the database's write lock and did not let go in time."""

    terminal = False


class StoreWriteError(StoreError):
    """The database file could not be written now (disk full, I/O error): retry later."""

    terminal = False


class SpoolError(TlsWatchError):
    """The spool could not store a message (disk full, permissions): the sender must retry."""

    terminal = False


class NotFoundError(TlsWatchError):
    """A report or other named thing is not in the store."""
