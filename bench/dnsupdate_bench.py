"""DNS update benchmark: publishing policy ids on a real BIND 9 (named) on loopback.

Prints, for ``--domains`` hosted policies: the first round of the worker's task (every id
published, ``PER_ROUND`` at a time), one change (write the policy file, sync, update,
record), and an idle round (nothing to publish: the policy folder and the record are
compared).  Medians of ``--runs`` runs.  Asserts nothing.
Usage: python bench/dnsupdate_bench.py [--domains 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.mtasts import bind
from tlswatch.config import load_settings
from tlswatch.mtasts import dnsupdate
from tlswatch.mtasts.hosting import HostedPolicy, PolicyStore, write_policy


def median_seconds(action: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ["BENCH_TSIG_SECRET"] = bind.SECRET
    with tempfile.TemporaryDirectory() as tmp, \
            bind.running(Path(tmp) / "named", {bind.PROVIDER_ZONE: ""}) as named:
        settings = load_settings(
            db=Path(tmp) / "bench.duckdb", policy_dir=Path(tmp) / "policies", http="",
            dns_update_zone=bind.PROVIDER_ZONE, dns_update_server=named.address,
            dns_update_tsig_name=bind.KEY_NAME, dns_update_tsig_secret_env="BENCH_TSIG_SECRET")
        store = PolicyStore(Path(settings.policy_dir))
        for i in range(args.domains):
            store.save(HostedPolicy(f"d{i}.example", "testing", [f"mx.d{i}.example"], 86400))
        started = time.perf_counter()
        rounds = 0
        while dnsupdate.publish_due(settings, datetime.now(UTC)):
            rounds += 1
        first = time.perf_counter() - started
        print(f"first publication of {args.domains} ids: {first:.2f} s in {rounds} rounds of "
              f"at most {dnsupdate.PER_ROUND} ({first / args.domains * 1000:.1f} ms per id)")
        modes = iter(["enforce", "testing"] * args.runs)
        one = median_seconds(lambda: write_policy(settings, HostedPolicy(
            "d0.example", next(modes), ["mx.d0.example"], 86400)), args.runs)
        print(f"one change (write, sync, update, record): {one * 1000:.1f} ms (median of "
              f"{args.runs})")
        idle = median_seconds(lambda: dnsupdate.publish_due(settings, datetime.now(UTC)),
                              args.runs)
        print(f"idle round over {args.domains} hosted policies: {idle * 1000:.1f} ms (median "
              f"of {args.runs})")


if __name__ == "__main__":
    main()
