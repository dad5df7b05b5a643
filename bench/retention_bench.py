"""Retention benchmark: the database file's size before and after `tlswatch prune`.

Loads N synthetic reports (bench/generate.py, spread over 112 days, with failure details)
through the real loader, then prunes details and raw reports older than 56 days: prints the
file size before, after the DELETEs alone (DuckDB keeps the space) and after compaction,
and how long the compaction took (median of --runs).  Prints figures; asserts nothing.
Usage: python bench/retention_bench.py [--reports 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import synthetic_report
from tlswatch.config import load_settings
from tlswatch.ingest.loader import load
from tlswatch.ingest.sources import iter_inputs
from tlswatch.store import Store
from tlswatch.store.maintenance import compact, file_size
from tlswatch.upkeep import run_prune

FIRST = date(2026, 6, 1)
TODAY = FIRST + timedelta(days=112)


def build(folder: Path, reports: int) -> Path:
    """A database of ``reports`` reports, half of them older than 56 days on TODAY."""
    import gzip
    import json

    rng = random.Random(8460)
    inputs = folder / "in"
    inputs.mkdir()
    for i in range(reports):
        first = FIRST if i % 2 else FIRST + timedelta(days=56)
        doc = synthetic_report(rng, i, first_day=first)
        (inputs / f"r{i}.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    db = folder / "tlswatch.duckdb"
    with Store.open(db) as store:
        load(iter_inputs([str(inputs)], max_bytes=10 << 20), store)
    shutil.rmtree(inputs)
    return db


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = build(Path(tmp), args.reports)
        with Store.open(base, read_only=True) as store:
            rows = store.rows("SELECT (SELECT count(*) FROM reports) AS reports, "
                              "(SELECT count(*) FROM failure_details) AS details")[0]
        print(f"{rows['reports']:,} reports, {rows['details']:,} failure-detail rows")
        times, sizes = [], []
        for run in range(args.runs):
            db = Path(tmp) / f"run{run}.duckdb"
            shutil.copyfile(base, db)
            settings = load_settings(db=db, spool=Path(tmp) / "spool", detail_keep_days=56,
                                     raw_keep_days=56, compact_after_prune=False)
            before = file_size(db)
            pruned = run_prune(settings, today=TODAY)
            deleted = file_size(db)
            started = time.perf_counter()
            compact(db, lock_timeout=10)
            times.append(time.perf_counter() - started)
            sizes = [before, deleted, file_size(db)]
        print(f"removed: {pruned.removed['failure_details']:,} detail rows, "
              f"{pruned.removed['report_raw']:,} raw reports")
        print(f"file before prune:          {sizes[0]:>12,} bytes")
        print(f"after the DELETEs alone:    {sizes[1]:>12,} bytes")
        print(f"after compaction:           {sizes[2]:>12,} bytes "
              f"({sizes[2] / sizes[0]:.0%} of before)")
        print(f"compaction time: median {statistics.median(times):.2f} s of {args.runs} runs")


if __name__ == "__main__":
    main()
