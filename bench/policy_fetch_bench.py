"""Policy fetch benchmark: GET /.well-known/mta-sts.txt under load (wrk, 20 connections)
against `tlswatch serve` with fetch recording on (the default) and off
(policy_fetch_buffer = 0), then the fetches the store holds once the batches are stored.

Prints requests/s and p50/p99 latency per run and the median of the runs.  Asserts nothing.
Usage: python bench/policy_fetch_bench.py [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serving import Serve  # noqa: E402
from tlswatch.config import Settings  # noqa: E402
from tlswatch.mtasts.hosting import init_policy  # noqa: E402


def wrk(url: str, seconds: int) -> dict[str, float]:
    done = subprocess.run(["wrk", "-t1", "-c20", f"-d{seconds}s", "--latency", "-H",
                           "Host: mta-sts.bench.example", f"{url}/.well-known/mta-sts.txt"],
                          capture_output=True, text=True, check=True)
    out = done.stdout

    def ms(pct: str) -> float:
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"requests": total, "per_second": total / seconds, "p50_ms": ms("50"),
            "p99_ms": ms("99")}


def run(recording: bool, seconds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init_policy(Settings(policy_dir=root / "policies"), "bench.example",
                    mx=["mx.bench.example"], mode="testing", max_age=86400)
        server = Serve(root, verbose=False, smtp="", policy_dir=str(root / "policies"),
                       policy_fetch_buffer=10_000 if recording else 0,
                       policy_fetch_ip_rate=0)  # one client: every fetch recorded
        with server:
            assert server.http_url
            figures = wrk(server.http_url, seconds)
            stored = 0
            deadline = time.monotonic() + 60
            while recording and time.monotonic() < deadline:
                try:
                    stored = server.query("SELECT count(*) FROM policy_fetches")[0][0]
                except Exception:  # no database yet
                    stored = 0
                if stored >= figures["requests"]:
                    break
                time.sleep(0.2)
            metrics = subprocess.run(["curl", "-s", f"{server.http_url}/metrics"],
                                     capture_output=True, text=True).stdout
        dropped = sum(float(m) for m in re.findall(
            r'tlswatch_policy_fetches_dropped_total\{[^}]*\} ([\d.e+]+)', metrics))
        return {**figures, "stored": stored, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for recording in (False, True):
        results = [run(recording, args.seconds) for _ in range(args.runs)]
        for r in results:
            print(f"recording {'on ' if recording else 'off'}: {r['per_second']:,.0f} req/s, "
                  f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, stored "
                  f"{r['stored']:,} of {r['requests']:,}, dropped {r['dropped']:,.0f}")
        print(f"recording {'on ' if recording else 'off'} median: "
              f"{statistics.median(r['per_second'] for r in results):,.0f} req/s, p50 "
              f"{statistics.median(r['p50_ms'] for r in results):.2f} ms, p99 "
              f"{statistics.median(r['p99_ms'] for r in results):.2f} ms")


if __name__ == "__main__":
    main()
