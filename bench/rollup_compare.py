"""Before/after for the rollup benchmark, interleaved: each run times an older checkout of
tlswatch on its store and then this one on its store, back to back, so that both see the
same load on a shared machine.  The dashboard pages (server time, in-process ASGI client,
one warm-up request) and whole processes (``summary``, ``failures --limit 100``,
``alerts --check``, ``--help``).  Prints figures; asserts nothing.

Usage: python bench/rollup_compare.py --before SRC DB --after SRC DB [--runs 3]
(SRC: a source tree such as ``git archive COMMIT | tar -x -C SRC``; DB: a store built by
``bench/rollup_bench.py --keep``; ``alerts --check`` writes to it.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TLSWATCH = str(Path(sys.executable).parent / "tlswatch")
PAGES = r'''
import asyncio, sys, time
from pathlib import Path
import httpx
from tlswatch.config import load_settings
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics
from tlswatch.web import create_app
path = Path(sys.argv[1])
settings = load_settings(None, environ={}, db=path, spool=path.parent / "spool")
app = create_app(settings, Spool(settings.spool), Metrics())
async def get(url):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1") as client:
        if (await client.get(url)).status_code != 200:
            raise SystemExit(f"{url}: not 200")
window = "since=2026-10-01&until=2026-10-30"
times = []
for url in (f"/?{window}", f"/domains/domain7.example?{window}"):
    asyncio.run(get(url))
    t0 = time.perf_counter()
    asyncio.run(get(url))
    times.append((time.perf_counter() - t0) * 1000)
print(*times)
'''
COMMANDS = (("summary --format json", ["summary", "--format", "json"]),
            ("failures --limit 100", ["failures", "--limit", "100", "--format", "json"]),
            ("alerts --check", ["alerts", "--check", "--format", "json"]),
            ("--help (start-up)", ["--help"]))


def one_run(src: str, db: str, add: dict[str, list[tuple[float, int]]]) -> None:
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run([sys.executable, "-c", PAGES, db], capture_output=True, text=True,
                          env=env, cwd=src, check=True)
    overview, domain = map(float, done.stdout.split())
    add.setdefault("dashboard overview", []).append((overview, 0))
    add.setdefault("domain page", []).append((domain, 0))
    for label, args in COMMANDS:
        full = args if label.startswith("--help") else ["--db", db, *args]
        t0 = time.perf_counter()
        ran = subprocess.run(["/usr/bin/time", "-f", "%M", TLSWATCH, *full], env=env,
                             cwd=src, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             check=False)
        rss = int(ran.stderr.decode().split()[-1]) // 1024
        add.setdefault(label, []).append(((time.perf_counter() - t0) * 1000, rss))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", nargs=2, metavar=("SRC", "DB"), required=True)
    parser.add_argument("--after", nargs=2, metavar=("SRC", "DB"), required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sides = {"before": args.before, "after": args.after}
    results: dict[str, dict[str, list[tuple[float, int]]]] = {side: {} for side in sides}
    for i in range(args.runs):
        for side, (src, db) in sides.items():
            one_run(src, db, results[side])
        print(f"run {i + 1}: load average {os.getloadavg()[0]:.1f}", flush=True)
    for label in results["before"]:
        cells = []
        for side in sides:
            figures = results[side][label]
            rss = max(r for _, r in figures)
            cells.append(f"{side} {statistics.median(t for t, _ in figures):7.0f} ms"
                         + (f", {rss} MB" if rss else "") + " (runs "
                         + ", ".join(f"{t:.0f}" for t, _ in figures) + ")")
        print(f"  {label:<22} " + " | ".join(cells))


if __name__ == "__main__":
    main()
