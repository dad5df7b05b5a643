"""Ingest benchmark: tlswatch end to end vs. plain parsing vs. parsedmarc, in one run.

Prints figures; asserts nothing.  Usage: python bench/ingest_bench.py [--reports 5000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import write_reports
from tlswatch.ingest.loader import load
from tlswatch.ingest.prepare import prepare
from tlswatch.ingest.sources import iter_inputs
from tlswatch.store import Store

CLI_RSS = r"""
import atexit, sys
from tlswatch.cli import main
def peak():
    status = open("/proc/self/status").read()
    print("VmHWM_kib", status.split("VmHWM:")[1].split()[0], file=sys.stderr)
atexit.register(peak)
sys.argv = ["tlswatch", *sys.argv[1:]]
main()
"""


def median_rate(label: str, count: int, runs: int, fn: Callable[[int], None]) -> float:
    times = []
    for run in range(runs):
        started = time.perf_counter()
        fn(run)
        times.append(time.perf_counter() - started)
    med = statistics.median(times)
    print(f"{label:<44} median {med * 1000:8.1f} ms  {count / med:10,.0f} reports/s  "
          f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms)")
    return count / med


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.reports} synthetic .json.gz reports, seed 8460")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "reports"
        paths = write_reports(folder, args.reports)

        def parse_only(_: int) -> None:
            for p in paths:
                json.loads(gzip.decompress(p.read_bytes()))

        base = median_rate("baseline: read + gunzip + json.loads", args.reports, args.runs,
                           parse_only)

        def parse_validate(_: int) -> None:
            for item in iter_inputs([str(folder)], max_bytes=10 << 20):
                prepare(item)

        checked = median_rate("tlswatch read+decode+validate, no store", args.reports,
                              args.runs, parse_validate)

        def ours(workers: int) -> Callable[[int], None]:
            def run(index: int) -> None:
                with Store.open(Path(tmp) / f"inproc{workers}-{index}.duckdb") as store:
                    result = load(iter_inputs([str(folder)], max_bytes=10 << 20), store,
                                  workers=workers)
                assert result.accepted == args.reports, result.as_dict()
            return run

        one = median_rate("tlswatch load(), 1 process (decode..DuckDB)", args.reports,
                          args.runs, ours(1))
        workers = os.cpu_count() or 1
        mine = median_rate(f"tlswatch load(), {workers} workers", args.reports, args.runs,
                           ours(workers))

        peaks = []

        def cli(run: int) -> None:
            db = Path(tmp) / f"cli{run}.duckdb"
            done = subprocess.run([sys.executable, "-c", CLI_RSS, "--db", str(db), "ingest",
                                   "--format", "json", str(folder)], capture_output=True,
                                  text=True, check=True)
            assert json.loads(done.stdout)["accepted"] == args.reports
            peaks.append(int(done.stderr.split("VmHWM_kib")[1].split()[0]) / 1024)

        cli_rate = median_rate("tlswatch ingest CLI (process start included)", args.reports,
                               args.runs, cli)
        print(f"{'':<44} peak RSS median {statistics.median(peaks):.0f} MiB "
              f"(max {max(peaks):.0f} MiB)")
        try:
            from parsedmarc import parse_report_file
        except ImportError:
            print("parsedmarc not installed: pip install parsedmarc (make bench does)")
            theirs = None
        else:
            def pm(_: int) -> None:
                for p in paths:
                    parse_report_file(str(p), offline=True)

            theirs = median_rate("parsedmarc parse_report_file (parse only)", args.reports,
                                 max(1, args.runs // 2), pm)
        print(f"ratios: validate-only / baseline parse = {checked / base:.2f}; "
              f"1 process / baseline parse = {one / base:.2f}; "
              f"{workers} workers / baseline parse = {mine / base:.2f}; "
              f"CLI / baseline = {cli_rate / base:.2f}", end="")
        if theirs:
            print(f"; validate-only / parsedmarc = {checked / theirs:.2f}; "
                  f"tlswatch workers / parsedmarc = {mine / theirs:.2f}; "
                  f"CLI / parsedmarc = {cli_rate / theirs:.2f}")
        else:
            print()


if __name__ == "__main__":
    main()
