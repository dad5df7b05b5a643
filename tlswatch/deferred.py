"""Modules imported when first used, for what most commands never need.

A read-only command on a DuckDB file (``summary``, ``failures``) runs in about a second;
psycopg (PostgreSQL only) and pyarrow with numpy (batch writes, scratch tables, exports)
would add a fifth of that to each start.  ``deferred("pyarrow")`` stands for the module and
imports it at the first attribute looked up on it; type checkers see the real module
(import it under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from tlswatch import lazypandas


class Deferred:
    """A module, imported at the first attribute looked up on it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        if self._name == "pyarrow":
            lazypandas.defer()  # before its first conversion, in the CLI's processes
        return getattr(module, attr)


def deferred(name: str) -> Any:
    """The module ``name``, imported when first used."""
    return Deferred(name)
