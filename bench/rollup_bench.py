"""Rollup benchmark: what the readers cost on the bench/summary_bench.py store.

Builds the store (10M failure-detail rows, 1,000 domains by default), fills the rollups
with ``rebuild`` (the bench store is written by SQL, not by the loader), then times:
the dashboard overview and a domain page (server time, in-process ASGI client), and as
whole processes (start-up included) ``summary --format json``, ``failures --limit 100``
(with peak RSS) and ``alerts --check``.  Medians of several runs.  Prints figures; asserts
nothing.  Usage: python bench/rollup_bench.py [--rows 10000000] [--runs 5] [--keep PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.summary_bench import build
from tlswatch.store import Store
from tlswatch.store.rollups import rebuild

TLSWATCH = str(Path(sys.executable).parent / "tlswatch")


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), times


def process(args: list[str]) -> tuple[float, int]:
    """Wall time (ms) and peak RSS (MB, from /usr/bin/time: a child's own rusage would carry
    this process's peak across fork) of one whole ``tlswatch`` process."""
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", TLSWATCH, *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = (time.perf_counter() - t0) * 1000
    return elapsed, int(done.stderr.decode().strip().splitlines()[-1]) // 1024


def pages(path: Path, runs: int) -> None:
    import httpx

    from tlswatch.config import load_settings
    from tlswatch.ingest.spool import Spool
    from tlswatch.metrics import Metrics
    from tlswatch.web import create_app

    settings = load_settings(None, environ={}, db=path, spool=path.parent / "spool")
    app = create_app(settings, Spool(settings.spool), Metrics())
    window = "since=2026-10-01&until=2026-10-30"

    async def get(url: str) -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1") as client:
            response = await client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code}")

    for label, url in (("dashboard overview (30 days)", f"/?{window}"),
                       ("domain page (30 days)", f"/domains/domain7.example?{window}")):
        asyncio.run(get(url))  # first request opens the store
        ms, times = median_ms(lambda url=url: asyncio.run(get(url)), runs)
        print(f"  {label:<40} median {ms:7.0f} ms (runs {', '.join(f'{t:.0f}' for t in times)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the store here and keep it")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average "
          f"{os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.duckdb"
        if not path.exists():
            t0 = time.perf_counter()
            rows = build(path, args.rows)
            print(f"{rows:,} failure-detail rows built in {time.perf_counter() - t0:.1f} s")
            with Store.open(path) as store:
                t0 = time.perf_counter()
                done = rebuild(store)
                print(f"rollups rebuilt in {time.perf_counter() - t0:.1f} s: {done['rows']}")
        pages(path, args.runs)
        db = ["--db", str(path)]
        for label, command in (
            ("tlswatch summary --format json", [*db, "summary", "--format", "json"]),
            ("tlswatch failures --limit 100", [*db, "failures", "--limit", "100",
                                               "--format", "json"]),
            ("tlswatch alerts --check", [*db, "alerts", "--check", "--format", "json"]),
            ("tlswatch --help (start-up)", ["--help"]),
        ):
            results = [process(command) for _ in range(args.runs)]
            times = [t for t, _ in results]
            print(f"  {label:<40} median {statistics.median(times):7.0f} ms, peak RSS "
                  f"{max(r for _, r in results)} MB (runs "
                  f"{', '.join(f'{t:.0f}' for t in times)})")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
