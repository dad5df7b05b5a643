"""Seeded synthetic TLS-RPT reports shaped like real ones (Google, Microsoft, Mail.ru)."""

from __future__ import annotations

import gzip
import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

RESULT_TYPES = ["starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid",
                "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
                "sts-policy-invalid", "sts-webpki-invalid"]
ORGS = ["Google Inc.", "Microsoft Corporation", "Mail.ru", "Yahoo", "Comcast", "Proton AG",
        "Fastmail", "GMX", "Zoho", "Apple Inc."]


def synthetic_report(rng: random.Random, index: int, *, domains: int = 200,
                     first_day: date = date(2026, 10, 1)) -> dict[str, Any]:
    org = rng.choice(ORGS)
    domain = f"domain{rng.randrange(domains)}.example"
    day = first_day + timedelta(days=rng.randrange(56))
    mx = [f"mx{i}.{domain}" for i in range(1, rng.randint(2, 3))]
    details = [{
        "result-type": rng.choice(RESULT_TYPES),
        "sending-mta-ip": f"198.51.{rng.randrange(100)}.{rng.randrange(256)}",
        "receiving-mx-hostname": rng.choice(mx),
        "receiving-ip": f"203.0.113.{rng.randrange(256)}",
        "failed-session-count": rng.randint(1, 50),
    } for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3, 5]))]
    failed = sum(d["failed-session-count"] for d in details)
    entry = {
        "policy": {"policy-type": "sts", "policy-domain": domain, "mx-host": mx,
                   "policy-string": ["version: STSv1", "mode: enforce",
                                     *[f"mx: {m}" for m in mx], "max_age: 604800"]},
        "summary": {"total-successful-session-count": rng.randint(0, 20000),
                    "total-failure-session-count": failed},
        "failure-details": details,
    }
    policies = [entry]
    if org.startswith("Microsoft"):  # the same sessions again under tlsa
        policies.append({**entry, "policy": {**entry["policy"], "policy-type": "tlsa",
                                             "policy-string": ["3 1 1 abcdef"]}})
    return {
        "organization-name": org,
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": "tlsrpt@example.net",
        "report-id": f"{day}T00:00:00Z_{domain}_{index}",
        "policies": policies,
    }


def write_reports(folder: Path, count: int, *, seed: int = 8460) -> list[Path]:
    """Write ``count`` .json.gz reports named by the RFC 8460 convention."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        doc = synthetic_report(rng, i)
        domain = doc["policies"][0]["policy"]["policy-domain"]
        path = folder / f"bench.example!{domain}!{1790000000 + i}!{1790086399 + i}!{i}.json.gz"
        path.write_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))
        paths.append(path)
    return paths
