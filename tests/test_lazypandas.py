"""pyarrow conversions do not import pandas (a fifth of a second and ~40 MB in every command);
the one use of pandas (``db copy``'s check) still gets it."""

import subprocess
import sys

CODE = """
import sys
import tlswatch.store
import pyarrow as pa
table = pa.table({"a": pa.array([1, 2], pa.int64())})
assert "pandas" not in sys.modules, "pandas was imported by a conversion"
assert table.to_pandas()["a"].tolist() == [1, 2]
print("pandas" in sys.modules)
"""


def test_pyarrow_does_not_import_pandas_until_pandas_is_needed() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
