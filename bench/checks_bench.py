"""Figures for the check history: 'tlswatch checks', a domain's last check and the due
decision of 'serve' over a year of daily runs (DOMAINS x 365, 8 findings each).

    .venv/bin/python bench/checks_bench.py [DOMAINS]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from tlswatch.analytics.checks import check_history, last_check
from tlswatch.store import Store
from tlswatch.store.checks import last_checked


def fill(store: Store, domains: int, days: int = 365, per_run: int = 8) -> None:
    start = datetime(2025, 11, 28, 6)
    runs = [(d * days + i + 1, f"d{d}.example", start + timedelta(days=i, minutes=d))
            for d in range(domains) for i in range(days)]
    cert = json.dumps([{"host": "mx.example", "role": "mx",
                        "not_after": start.isoformat(sep=" "), "sha256": "00" * 32}])
    store.insert("check_runs", pa.table({
        "run_pk": pa.array([r[0] for r in runs], pa.int64()),
        "domain": [r[1] for r in runs],
        "checked_at": pa.array([r[2] for r in runs], pa.timestamp("us")),
        "result": ["warnings"] * len(runs), "errors": pa.array([0] * len(runs), pa.int32()),
        "warnings": pa.array([1] * len(runs), pa.int32()),
        "sts_id": ["20261101"] * len(runs), "policy": ["version: STSv1"] * len(runs),
        "policy_sha256": ["ab" * 32] * len(runs), "hosted_id": pa.nulls(len(runs), pa.string()),
        "rua": [["mailto:a@example.net"]] * len(runs), "mx": [["mx.example"]] * len(runs),
        "certificates": [cert] * len(runs),
        "alerts": pa.array([[]] * len(runs), pa.list_(pa.string())),
    }))
    n = len(runs) * per_run
    store.insert("check_findings", pa.table({
        "run_pk": pa.array([r[0] for r in runs for _ in range(per_run)], pa.int64()),
        "domain": [r[1] for r in runs for _ in range(per_run)],
        "checked_at": pa.array([r[2] for r in runs for _ in range(per_run)],
                               pa.timestamp("us")),
        "finding_index": pa.array(list(range(per_run)) * len(runs), pa.int32()),
        "severity": (["warning"] + ["info"] * (per_run - 1)) * len(runs),
        "code": (["mx_cert_expiring"] + ["mx_tls"] * (per_run - 1)) * len(runs),
        "subject": ["mx.example"] * n, "message": ["a finding's message"] * n,
        "fix": [""] * n,
    }))


def median_ms(fn: Callable[[], object], rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    domains = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        with Store.open(db) as store:
            fill(store, domains)
        with Store.open(db, read_only=True) as store:
            print(f"{domains} domains x 365 daily runs x 8 findings; median of 7, ms")
            print(f"  checks (all, first 1000 rows): "
                  f"{median_ms(lambda: check_history(store)):8.1f}")
            print(f"  checks DOMAIN (365 runs):      "
                  f"{median_ms(lambda: check_history(store, domain='d1.example')):8.1f}")
            print(f"  domain page's last check:      "
                  f"{median_ms(lambda: last_check(store, 'd1.example')):8.1f}")
            print(f"  due decision (last per domain):"
                  f"{median_ms(lambda: last_checked(store)):8.1f}")


if __name__ == "__main__":
    main()
