"""Send one new TLS report to a running 'tlswatch serve' (the example of 'make run').

The report covers yesterday (UTC) and its report-id carries the current time, so it is never
a duplicate of one already loaded: each run adds sessions you can see change.
Run: .venv/bin/python tools/send_report.py [--url URL] [--domain D] [--db PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


def report(domain: str, now: datetime, *, ok: int, failed: int) -> dict[str, Any]:
    day = (now - timedelta(days=1)).date()
    return {
        "organization-name": "tlswatch example sender",
        "date-range": {"start-datetime": f"{day}T00:00:00Z",
                       "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": "tlsrpt@sender.example",
        "report-id": f"example-{now:%Y-%m-%dT%H:%M:%S.%fZ}",
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain,
                       "policy-string": ["version: STSv1", "mode: testing",
                                         f"mx: mx.{domain}", "max_age: 86400"],
                       "mx-host": [f"mx.{domain}"]},
            "summary": {"total-successful-session-count": ok,
                        "total-failure-session-count": failed},
            "failure-details": [{"result-type": "certificate-expired",
                                 "sending-mta-ip": "192.0.2.10",
                                 "receiving-mx-hostname": f"mx.{domain}",
                                 "receiving-ip": "198.51.100.25",
                                 "failed-session-count": failed}],
        }],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="serve's HTTP address")
    parser.add_argument("--domain", default="example.com", help="policy domain reported on")
    parser.add_argument("--db", default="var/tlswatch.duckdb", help="serve's database (for "
                        "the commands printed)")
    args = parser.parse_args()
    doc = report(args.domain, datetime.now(UTC), ok=95, failed=5)
    day = doc["date-range"]["start-datetime"][:10]
    try:
        reply = httpx.post(f"{args.url}/v1/reports", timeout=30,
                           content=gzip.compress(json.dumps(doc).encode()),
                           headers={"Content-Type": "application/tlsrpt+gzip"})
    except httpx.HTTPError as exc:
        print(f"{args.url}/v1/reports: cannot send ({exc}); is 'make run' serving there?",
              file=sys.stderr)
        return 1
    if reply.status_code != 201:
        print(f"{args.url}/v1/reports: refused with {reply.status_code}: {reply.text}",
              file=sys.stderr)
        return 1
    print(f"sent report {doc['report-id']} for {args.domain}, day {day}: 100 sessions, "
          f"5 failed (certificate-expired); serve answered {reply.status_code}")
    print(f"""It is loaded within a second or two. Look at:
  {args.url}/domains/{args.domain}   (the {day} point of the charts)
  {args.url}/?since={day}&until={day}
  .venv/bin/tlswatch --db {args.db} summary --since {day} --until {day} --format text
  curl -s {args.url}/metrics | grep 'tlswatch_domain_sessions{{'   (the last complete day)""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
