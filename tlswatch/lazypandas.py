"""pyarrow without pandas until pandas is really wanted.

pyarrow looks for pandas at its first conversion (``pa.array``, ``pa.table``) and imports it
if installed: a fifth of a second and about 40 MB in every process, though tlswatch needs
pandas in one place only (``db copy`` checks tables with it).  ``defer`` lets pyarrow's one
look find no pandas; a later call that needs pandas (``Table.to_pandas``) imports it then,
as pyarrow retries the import whenever pandas is required.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

import pyarrow as pa

_done = False


class _NoPandas(MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] == "pandas":
            raise ImportError("pandas is imported when it is needed")
        return None


def defer() -> None:
    """Make pyarrow's first look for pandas come back empty (once; no-op if imported)."""
    global _done
    if _done or "pandas" in sys.modules:
        return
    _done = True
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow looks now, finds none, and does not look again
    finally:
        sys.meta_path.remove(finder)
