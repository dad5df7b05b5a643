"""In tlswatch's own processes pyarrow conversions do not import pandas (a fifth of a second
and ~40 MB in every command); the one use of pandas (``db copy``'s check) still gets it, and a
process that imports tlswatch as a library keeps pyarrow's pandas support."""

import subprocess
import sys
from pathlib import Path

CLI_INGEST = """
import atexit, sys
atexit.register(lambda: print("pandas loaded:", "pandas" in sys.modules))
from tlswatch.cli import main
sys.argv = ["tlswatch", "--db", sys.argv[1], "ingest", "--format", "json", sys.argv[2]]
main()
"""

TABLE_TO_PANDAS = """
import sys
from tlswatch import lazypandas
lazypandas.enable()  # what the CLI does for its process
import tlswatch.ingest.rows
import pyarrow as pa
table = pa.table({"a": pa.array([1, 2], pa.int64())})
assert "pandas" not in sys.modules, "pandas was imported by a conversion"
assert table.to_pandas()["a"].tolist() == [1, 2]
print("pandas" in sys.modules)
"""


def test_an_ingest_by_the_cli_does_not_load_pandas(tmp_path: Path) -> None:
    samples = Path(__file__).parent.parent / "sample_reports" / "valid"
    done = subprocess.run([sys.executable, "-c", CLI_INGEST, str(tmp_path / "a.duckdb"),
                           str(samples)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"accepted": ' in done.stdout and done.stdout.rstrip().endswith(
        "pandas loaded: False")


def test_pandas_is_still_loaded_when_it_is_needed() -> None:
    done = subprocess.run([sys.executable, "-c", TABLE_TO_PANDAS], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


# The checks below run in a fresh process: pytest's own may have imported pandas already.
COPY_AFTER_LOADS = """
import sys
from typer.testing import CliRunner
from tlswatch.cli import app
src, dst, samples = sys.argv[1:4]
runner = CliRunner()
out = runner.invoke(app, ["--db", src, "ingest", samples], catch_exceptions=False)
assert "pandas" not in sys.modules, "pandas was imported by an ingest"
out = runner.invoke(app, ["db", "copy", src, dst], catch_exceptions=False)
assert out.exit_code == 0, out.output
assert "verified" in out.stdout, out.stdout
print("copied")
"""


def test_db_copy_after_loads_in_the_same_process_still_checks_with_pandas(tmp_path: Path) -> None:
    samples = Path(__file__).parent.parent / "sample_reports" / "valid"
    done = subprocess.run([sys.executable, "-c", COPY_AFTER_LOADS, str(tmp_path / "a.duckdb"),
                           str(tmp_path / "b.duckdb"), str(samples)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("copied")


PANDAS_INTO_ARROW = """
import tlswatch.store
import pandas as pd
import pyarrow as pa
assert pa.array(pd.Series(["a", None])).to_pylist() == ["a", None]
assert pa.array(pd.Series([1, None], dtype="Int64")).to_pylist() == [1, None]
assert pa.types.is_dictionary(pa.array(pd.Categorical(["a", "b"])).type)
"""


def test_pandas_objects_still_convert_after_tlswatch_store_is_imported() -> None:
    done = subprocess.run([sys.executable, "-c", PANDAS_INTO_ARROW], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
