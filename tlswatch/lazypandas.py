"""pyarrow without pandas until pandas is really wanted, in tlswatch's own processes.

pyarrow looks for pandas at its first conversion (``pa.array``, ``pa.table``) and imports it
if installed: a fifth of a second and about 40 MB in every command, though tlswatch needs
pandas in one place only (``db copy`` checks tables with it).  The CLI calls ``enable`` for
its process; ``defer`` (where tlswatch imports pyarrow) then lets pyarrow's one look find no
pandas.  A later call that needs pandas (``Table.to_pandas``) imports it then, as pyarrow
retries the import whenever pandas is required.  A process that merely imports tlswatch as
a library is left alone: there pyarrow may be handed pandas objects, which it would take
for plain sequences until that retry.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

_wanted = False
_done = False


class _NoPandas(MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] == "pandas":
            raise ImportError("pandas is imported when it is needed")
        return None


def enable() -> None:
    """This process is tlswatch's own (the CLI): defer pandas here."""
    global _wanted
    _wanted = True
    if "pyarrow" in sys.modules:
        defer()


def defer() -> None:
    """Make pyarrow's first look for pandas come back empty (once, when enabled, and only
    while pandas is not imported)."""
    global _done
    if not _wanted or _done or "pandas" in sys.modules:
        return
    _done = True
    import pyarrow as pa

    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow looks now, finds none, and does not look again
    finally:
        sys.meta_path.remove(finder)
