"""An alert storm: a sender makes N domains fail on one day; how long alert evaluation runs
(read-only) and how long recording holds the write lock, and how many alerts it keeps.

    python bench/alerts_bench.py [--domains 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from tlswatch import jobs
from tlswatch.analytics.alerts import evaluate
from tlswatch.config import load_settings
from tlswatch.ingest.loader import load
from tlswatch.ingest.sources import iter_inputs
from tlswatch.store import Store

DAY = date(2026, 11, 20)


def storm(folder: Path, domains: int) -> None:
    """Reports of 100 domains each, every session failed with an expired certificate."""
    for first in range(0, domains, 100):
        policies = [{
            "policy": {"policy-type": "sts", "policy-domain": f"d{n}.storm.example"},
            "summary": {"total-successful-session-count": 0, "total-failure-session-count": 5},
            "failure-details": [{"result-type": "certificate-expired",
                                 "failed-session-count": 5}],
        } for n in range(first, min(first + 100, domains))]
        doc = {"organization-name": f"Storm {first}", "report-id": f"s{first}",
               "contact-info": "storm@example.net", "policies": policies,
               "date-range": {"start-datetime": f"{DAY}T00:00:00Z",
                              "end-datetime": f"{DAY}T23:59:59Z"}}
        (folder / f"s{first}.json").write_text(json.dumps(doc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        storm(root / "in", args.domains)
        db = root / "storm.duckdb"
        with Store.open(db) as store:
            load(iter_inputs([str(root / "in")], max_bytes=10 << 20), store)
        settings = load_settings(None, environ={}, db=db, webhook_url="http://127.0.0.1:9/")
        evaluating, recording = [], []
        for _ in range(args.runs):
            with Store.open(db) as store:
                store.con.execute("DELETE FROM alerts; DELETE FROM outbox").fetchall()
            with Store.open(db, read_only=True) as store:
                start = time.perf_counter()
                found = evaluate(store, [DAY], today=DAY)
                evaluating.append(time.perf_counter() - start)
            with Store.open(db) as store:
                start = time.perf_counter()
                kept = jobs.record(store, settings, found).alerts
                recording.append(time.perf_counter() - start)
    print(f"{args.domains:,} failing domains: {len(found):,} candidate alerts, "
          f"{len(kept)} recorded (max_alerts_per_day {settings.max_alerts_per_day} + 1)")
    print(f"evaluate, read-only connection: median {statistics.median(evaluating):.3f} s")
    print(f"record + outbox, write transaction: median {statistics.median(recording):.3f} s")


if __name__ == "__main__":
    main()
