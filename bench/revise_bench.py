"""What keeping the daily files up to date costs 'serve': the check every 30 s when nothing
changed (7 days tracked), and the rewrite of one day's five files.

The store is filled as in bench/summary_bench.py (90 days).  Prints figures; asserts
nothing.  Usage: python bench/revise_bench.py [--rows 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.summary_bench import FILL
from tlswatch import jobs
from tlswatch.config import load_settings
from tlswatch.revisions import ExportState
from tlswatch.store import Store

# summary_bench's fill, with failure_details.detail_index (added by a later migration).
_FILL = FILL.replace("r.name_id, i.name_id\n", "r.name_id, i.name_id, NULL\n")


def build(path: Path, detail_rows: int) -> int:
    with Store.open(path) as store:
        store.con.execute(_FILL.replace("$reports", str(int(detail_rows / 11)))).fetchall()
        store.con.execute("CHECKPOINT").fetchall()
        return int(store.con.execute("SELECT count(*) FROM failure_details").fetchall()[0][0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        db, out = Path(tmp) / "b.duckdb", Path(tmp) / "daily"
        print(f"{build(db, args.rows):,} failure-detail rows (90 days)")
        settings = load_settings(None, environ={}, db=db, export_dir=str(out))
        jobs.run_schedule(settings, datetime(2026, 11, 23, 7, 0))
        caught_up = jobs.run_schedule(settings, datetime(2026, 11, 30, 7, 0))
        print(f"days written: {len(caught_up) + 1}, of which tracked for rewrites: "
              f"{len(ExportState.load(out).days)}")
        idle, rewrite = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            assert jobs.run_schedule(settings, datetime(2026, 11, 30, 8, 0)) == []
            idle.append(time.perf_counter() - t0)
            record = ExportState.load(out).days[date(2026, 11, 29)]
            t0 = time.perf_counter()
            jobs.revise_day(settings, date(2026, 11, 29), record)
            rewrite.append(time.perf_counter() - t0)
        for label, times in (("check, nothing changed", idle),
                             ("rewrite one day (5 formats)", rewrite)):
            print(f"  {label:<30} median {statistics.median(times) * 1000:6.0f} ms (runs "
                  f"{', '.join(f'{t * 1000:.0f}' for t in times)} ms)")


if __name__ == "__main__":
    main()
