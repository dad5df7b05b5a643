"""Receiver benchmark: 50 concurrent SMTP clients, then 50 concurrent HTTP posters, against
`tlswatch serve` and, in the same run, against do-nothing servers on the same stack.

Prints accepted/s, p50/p99 latency, reports lost (acknowledged but not in the database
once the spool is drained) and the server's peak RSS.  Asserts nothing.
Usage: python bench/receiver_bench.py [--seconds 30] [--clients 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serving import Serve  # noqa: E402


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def wrk(url: str, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """HTTP load with wrk (C): the client must not starve the server of the shared CPUs."""
    done = subprocess.run(["wrk", "-t2", f"-c{args.clients}", f"-d{int(args.seconds)}s",
                           "--latency", "-s", str(ROOT / "bench" / "wrk_post.lua"),
                           f"{url}/v1/reports", "--", prefix],
                          capture_output=True, text=True, check=True)
    out = done.stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors
                                                  else 0)

    def ms(pct: str) -> float:
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"accepted": total - failed, "errors": failed, "seconds": args.seconds,
            "p50_ms": ms("50"), "p99_ms": ms("99"), "prefix": prefix}


def children(pid: int) -> list[str]:
    tasks = Path(f"/proc/{pid}/task")
    return [c for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def load(kind: str, target: str, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    if kind == "http" and shutil.which("wrk"):
        return wrk(target, args, prefix)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load_client.py"), kind, target,
                           "--clients", str(args.clients), "--seconds", str(args.seconds),
                           "--prefix", prefix], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def bare(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_servers.py"), kind],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        target = proc.stdout.readline().split()[1]
        result = load(kind, target, args, f"bare-{kind}")
        result["rss"] = peak_rss_mib(proc.pid)
        return result
    finally:
        proc.kill()
        proc.wait()


def line(label: str, r: dict[str, Any]) -> str:
    rate = r["accepted"] / r["seconds"]
    lost = f", lost {r['lost']}" if "lost" in r else ""
    lost += f" (+{r['extra']} answered after the client stopped counting)" if r.get("extra") \
        else ""
    return (f"{label:<34} {rate:8.1f} accepted/s  p50 {r['p50_ms']:6.1f} ms  p99 "
            f"{r['p99_ms']:7.1f} ms  errors {r['errors']}{lost}  peak RSS {r['rss']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.clients} clients x {args.seconds:g} s each")
    results = {}
    for kind in ("smtp", "http"):
        results[f"bare {kind}"] = bare(kind, args)
    with tempfile.TemporaryDirectory() as tmp:
        server = Serve(Path(tmp), verbose=False, http_rate_limit=0).start()
        try:
            assert server.smtp_at and server.http_url
            for kind, target in (("smtp", server.smtp_at), ("http", server.http_url)):
                results[f"tlswatch {kind}"] = load(kind, target, args, f"tw-{kind}")
            started = time.monotonic()
            server.wait_loaded(timeout=600)
            drain_s = time.monotonic() - started
            rss = peak_rss_mib(server.proc.pid) if server.proc else 0.0
            loader_rss = [peak_rss_mib(int(child)) for child in children(server.proc.pid)] \
                if server.proc else []
            stored = {r[0] for r in server.query("SELECT report_id FROM reports")}
            failed = len(os.listdir(server.spool / "failed"))
        finally:
            server.stop()
    for kind in ("smtp", "http"):
        ours = results[f"tlswatch {kind}"]
        ours["rss"] = rss
        if "ids" in ours:
            ours["lost"] = len(set(ours["ids"]) - stored)
        else:  # wrk: every acknowledged POST carried a unique report-id with this prefix.
            # wrk stops counting with up to --clients requests in flight; the server still
            # answers and stores those, so more can be stored than wrk counted.
            kept = sum(1 for r in stored if r.startswith(ours["prefix"] + "-"))
            ours["lost"] = max(0, ours["accepted"] - kept)
            ours["extra"] = max(0, kept - ours["accepted"])
    for label, result in results.items():
        print(line(label, result))
    for kind in ("smtp", "http"):
        ratio = results[f"tlswatch {kind}"]["accepted"] / max(1, results[f"bare {kind}"]
                                                               ["accepted"])
        print(f"ratio tlswatch/bare {kind}: {ratio:.2f}")
    print(f"loader process peak RSS: {', '.join(f'{r:.0f} MiB' for r in loader_rss)}")
    print(f"spool drained {drain_s:.1f} s after the load ended; {len(stored):,} reports "
          f"stored; {failed} files in spool/failed")


if __name__ == "__main__":
    main()
