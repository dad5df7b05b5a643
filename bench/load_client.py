"""Load generator for bench/receiver_bench.py (its own process, so it has its own core).

python bench/load_client.py smtp|http HOST:PORT|URL --clients 50 --seconds 30 --prefix P
Prints one JSON line: sent, accepted, errors, latencies (p50, p99 in ms), accepted ids.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import statistics
import sys
import time
from email.message import EmailMessage
from typing import Any


def report(rid: str) -> bytes:
    doc = {"organization-name": "Load Tester", "report-id": rid,
           "date-range": {"start-datetime": "2026-11-26T00:00:00Z",
                          "end-datetime": "2026-11-26T23:59:59Z"},
           "contact-info": "load@example.net",
           "policies": [{"policy": {"policy-type": "sts", "policy-domain": "load.example",
                                    "policy-string": ["version: STSv1", "mode: enforce",
                                                      "mx: mx.load.example", "max_age: 86400"]},
                         "summary": {"total-successful-session-count": 100,
                                     "total-failure-session-count": 1},
                         "failure-details": [{"result-type": "certificate-expired",
                                              "receiving-mx-hostname": "mx.load.example",
                                              "failed-session-count": 1}]}]}
    return gzip.compress(json.dumps(doc).encode())


def mail(rid: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "load@example.net"
    msg["To"] = "tlsrpt@load.example"
    msg["Subject"] = f"Report Domain: load.example Submitter: example.net Report-ID: <{rid}>"
    msg["TLS-Report-Domain"] = "load.example"
    msg["TLS-Report-Submitter"] = "example.net"
    msg.set_content("This is a TLS report.")
    msg.add_attachment(report(rid), maintype="application", subtype="tlsrpt+gzip",
                       filename=f"example.net!load.example!1!2!{rid}.json.gz")
    return msg.as_bytes()


async def run(kind: str, target: str, clients: int, seconds: float, prefix: str
              ) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    accepted: list[str] = []
    errors = 0
    counter = 0

    async def smtp_worker(worker: int) -> None:
        import aiosmtplib

        nonlocal errors, counter
        host, port = target.rsplit(":", 1)
        while time.monotonic() < deadline:
            counter += 1
            rid = f"{prefix}-{worker}-{counter}"
            started = time.perf_counter()
            try:
                await aiosmtplib.send(mail(rid), sender="load@example.net",
                                      recipients=["tlsrpt@load.example"], hostname=host,
                                      port=int(port), timeout=30, start_tls=False)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            accepted.append(rid)

    async def http_worker(worker: int, client: Any) -> None:
        nonlocal errors, counter
        while time.monotonic() < deadline:
            counter += 1
            rid = f"{prefix}-{worker}-{counter}"
            started = time.perf_counter()
            try:
                reply = await client.post(f"{target}/v1/reports", content=report(rid),
                                          headers={"Content-Type": "application/tlsrpt+gzip"})
            except Exception:
                errors += 1
                continue
            if reply.status_code in (200, 201):
                latencies.append(time.perf_counter() - started)
                accepted.append(rid)
            else:
                errors += 1

    if kind == "smtp":
        await asyncio.gather(*(smtp_worker(i) for i in range(clients)))
    else:
        import httpx

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            await asyncio.gather(*(http_worker(i, client) for i in range(clients)))
    latencies.sort()
    return {"accepted": len(accepted), "errors": errors, "seconds": seconds,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else None,
            "ids": accepted}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["smtp", "http"])
    parser.add_argument("target")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--prefix", default="load")
    args = parser.parse_args()
    result = asyncio.run(run(args.kind, args.target, args.clients, args.seconds, args.prefix))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
