"""/metrics benchmark: computing the per-domain figures of the last complete report day, and
a scrape served from the cache, over a store of synthetic reports (bench/generate.py: 200
domains over 56 days), loaded by 'tlswatch ingest'.  Prints figures; asserts nothing.
Usage: python bench/metrics_bench.py [--reports 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest

from bench.generate import write_reports
from tlswatch.analytics.lastday import day_figures
from tlswatch.config import Settings
from tlswatch.daymetrics import DomainDayMetrics
from tlswatch.store import Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.duckdb"
        write_reports(Path(tmp) / "in", args.reports)
        subprocess.run([sys.executable, "-c", "from tlswatch.cli import main; main()", "--db",
                        str(path), "ingest", str(Path(tmp) / "in")], check=True,
                       capture_output=True)
        with Store.open(path, read_only=True) as store:
            rows = store.rows("SELECT count(*) AS n FROM failure_details")[0]["n"]
        print(f"{args.reports:,} reports, {rows:,} failure-detail rows")
        compute = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            with Store.open(path, read_only=True) as store:
                figures = day_figures(store, date(2026, 12, 31), max_domains=200,
                                      max_result_types=25)
            compute.append(time.perf_counter() - t0)
        assert figures is not None
        print(f"  open + compute the last day's figures: median "
              f"{statistics.median(compute) * 1000:.0f} ms ({len(figures.domains)} domains "
              f"kept, {figures.domains_left_off} left off)")
        registry = CollectorRegistry()
        registry.register(DomainDayMetrics(Settings(db=path)))
        generate_latest(registry)  # the first scrape computes
        cached = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            body = generate_latest(registry)
            cached.append(time.perf_counter() - t0)
        print(f"  a scrape from the cache: median {statistics.median(cached) * 1000:.1f} ms "
              f"({len(body):,} bytes)")


if __name__ == "__main__":
    main()
