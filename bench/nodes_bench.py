"""Several nodes benchmark: reports/s acknowledged and loaded by 1 and by 2 `tlswatch serve`
nodes sharing one PostgreSQL 15 (a throw-away cluster on a local unix socket).

Each run: a fresh database, N nodes started, REPORTS distinct gzipped reports POSTed by
CLIENTS concurrent clients spread evenly over the nodes.  "acked/s" counts 201 answers
over the time to the last one; "loaded/s" counts reports in the database over the time
from the first post until all are there.  Prints the median of RUNS runs; asserts nothing.
Usage: python bench/nodes_bench.py [--reports 2000] [--clients 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import GZIP_TYPE, gz_report  # noqa: E402
from tests.pg import Cluster  # noqa: E402
from tests.serving import Serve  # noqa: E402


def one_run(cluster: Cluster, nodes: int, reports: int, clients: int, tag: str
            ) -> tuple[float, float]:
    name = cluster.create()
    url = cluster.url(name)
    bodies = [gz_report(f"{tag}-{i}") for i in range(reports)]
    with tempfile.TemporaryDirectory(prefix="tlswatch-nodes-") as tmp:
        servers = []
        try:
            for n in range(nodes):
                root = Path(tmp) / f"node{n}"
                root.mkdir()
                servers.append(Serve(root, verbose=False, db=url, smtp="", http_rate_limit=0,
                                     node_name=f"node{n}").start())
            acked = 0
            lock = threading.Lock()

            def post(worker: int) -> None:
                nonlocal acked
                server = servers[worker % nodes]
                with httpx.Client(base_url=str(server.http_url), timeout=30) as client:
                    for i in range(worker, reports, clients):
                        reply = client.post("/v1/reports", content=bodies[i], headers=GZIP_TYPE)
                        if reply.status_code == 201:
                            with lock:
                                acked += 1

            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(post, range(clients)))
            acked_in = time.perf_counter() - started
            with psycopg.connect(url, autocommit=True) as con:
                deadline = time.monotonic() + 600
                while con.execute("SELECT count(*) FROM reports").fetchone() != (acked,):
                    if time.monotonic() > deadline:
                        raise SystemExit("the nodes did not load every report in 600 s")
                    time.sleep(0.02)
            loaded_in = time.perf_counter() - started
            for server in servers:
                server.stop()
        finally:
            for server in servers:
                server.kill()
            cluster.drop(name)
    return acked / acked_in, acked / loaded_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cluster = Cluster()
    cluster.start()
    try:
        print(f"{args.reports} reports, {args.clients} HTTP clients, median of {args.runs} runs")
        print(f"{'nodes':>5}  {'acked/s':>9}  {'loaded/s':>9}")
        for nodes in (1, 2):
            runs = [one_run(cluster, nodes, args.reports, args.clients, f"n{nodes}r{r}")
                    for r in range(args.runs)]
            acked = statistics.median(r[0] for r in runs)
            loaded = statistics.median(r[1] for r in runs)
            print(f"{nodes:>5}  {acked:>9.0f}  {loaded:>9.0f}", flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
