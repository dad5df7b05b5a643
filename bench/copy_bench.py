"""`db copy` and `export lake` on a generated store: time and peak RSS, as whole processes.

Prints figures; asserts nothing.  Usage: python bench/copy_bench.py [--rows 1000000]
Needs PostgreSQL 15 binaries (a throw-away cluster on a unix socket, as the tests use).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.summary_bench import build
from tests.pg import Cluster

TLSWATCH = str(Path(sys.executable).with_name("tlswatch"))


def timed(*args: str) -> tuple[float, int]:
    """Seconds and peak RSS (MB) of one whole tlswatch process."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", TLSWATCH, *args], capture_output=True,
                          text=True, check=True)
    seconds = time.perf_counter() - started
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return seconds, rss // 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    cluster = Cluster()
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src.duckdb"
            rows = build(src, args.rows)
            print(f"store: {rows:,} failure-detail rows, {src.stat().st_size / 2**20:.0f} MB")
            url = cluster.url(cluster.create())
            for label, argv in (
                ("db copy DuckDB -> DuckDB", ["db", "copy", str(src), f"{tmp}/dst.duckdb"]),
                ("db copy DuckDB -> PostgreSQL", ["db", "copy", str(src), url]),
                ("db copy PostgreSQL -> DuckDB", ["db", "copy", url, f"{tmp}/back.duckdb"]),
                ("export lake (first run)", ["--db", str(src), "export", "lake", "--out",
                                             f"{tmp}/lake"]),
                ("export lake (nothing new)", ["--db", str(src), "export", "lake", "--out",
                                               f"{tmp}/lake"]),
            ):
                seconds, rss = timed(*argv)
                print(f"{label:<32} {seconds:7.1f} s  peak RSS {rss:5d} MB")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
