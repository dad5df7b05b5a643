"""Summary benchmark: `summarize()` over 1M and 10M failure-detail rows.

The store is filled directly by SQL (seeded, shaped like bench/generate.py: 10 failure
details per report, Microsoft-style sts+tlsa duplicates for a tenth of the reports).
Prints figures; asserts nothing.  Usage: python bench/summary_bench.py [--rows 1000000 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tlswatch.analytics.queries import Filters
from tlswatch.analytics.summary import summarize
from tlswatch.store import Store

FILL = """
INSERT INTO reports (report_pk, organization_name, report_id, contact_info, start_datetime,
                     end_datetime, day, source, filename, message_id, header_report_domain,
                     header_submitter, subject_report_id, warnings, received_at)
SELECT i, 'Org ' || (i % 20), 'rid-' || i, NULL,
       DATE '2026-09-01' + INTERVAL (i % 90) DAY, DATE '2026-09-01' + INTERVAL (i % 90) DAY,
       DATE '2026-09-01' + (i % 90)::INTEGER, 'bench', NULL, NULL, NULL, NULL, NULL, [],
       now()::TIMESTAMP
FROM range(1, $reports + 1) t(i);
INSERT INTO policies
SELECT i * 2 + k, i, k, DATE '2026-09-01' + (i % 90)::INTEGER, 'Org ' || (i % 20),
       CASE k WHEN 0 THEN 'sts' ELSE 'tlsa' END, 'domain' || (hash(i) % 1000) || '.example',
       NULL, NULL, 1000 + i % 5000, 10, k = 0, k = 0
FROM range(1, $reports + 1) t(i), range(0, 2) s(k)
WHERE k = 0 OR i % 10 = 0;
CREATE TEMP TABLE fd_stage AS
SELECT p.report_pk, p.policy_pk, p.day, p.organization_name, p.policy_type, p.policy_domain,
       (['starttls-not-supported', 'certificate-host-mismatch', 'certificate-expired',
         'certificate-not-trusted', 'validation-failure', 'tlsa-invalid', 'dnssec-invalid',
         'dane-required', 'sts-policy-fetch-error', 'sts-policy-invalid'])[1 + (j % 10)]
           AS result_type,
       '198.51.' || (hash(p.report_pk + j) % 100) || '.' || (j * 7 % 256) AS sending_mta_ip,
       'mx' || (j % 3) || '.' || p.policy_domain AS receiving_mx_hostname,
       NULL::VARCHAR AS receiving_mx_helo, '203.0.113.' || (j % 3) AS receiving_ip,
       1 + (p.report_pk + j) % 5 AS failed_session_count,
       NULL::VARCHAR AS additional_information,
       CASE WHEN p.report_pk % 10 = 3 THEN 'bad https response code: ' || (400 + j) END
           AS failure_reason_code,
       p.policy_type = 'sts' AS counted, j AS detail_index
FROM policies p, range(0, 10) d(j);
INSERT INTO names
SELECT row_number() OVER (ORDER BY v)::INTEGER, v
FROM (SELECT DISTINCT unnest([policy_domain, organization_name, result_type,
                              receiving_mx_hostname, receiving_ip, sending_mta_ip]) AS v
      FROM fd_stage) WHERE v IS NOT NULL;
INSERT INTO failure_details
SELECT s.* EXCLUDE (detail_index), d.name_id, o.name_id, t.name_id, m.name_id, r.name_id,
       i.name_id, s.detail_index
FROM fd_stage s
JOIN names d ON d.value = s.policy_domain JOIN names o ON o.value = s.organization_name
JOIN names t ON t.value = s.result_type
LEFT JOIN names m ON m.value = s.receiving_mx_hostname
LEFT JOIN names r ON r.value = s.receiving_ip LEFT JOIN names i ON i.value = s.sending_mta_ip;
DROP TABLE fd_stage;
"""


def build(path: Path, detail_rows: int) -> int:
    reports = int(detail_rows / 11)  # 10 rows a report, plus a tlsa copy for 1 report in 10
    with Store.open(path) as store:
        store.con.execute(FILL.replace("$reports", str(reports))).fetchall()
        store.con.execute("CHECKPOINT").fetchall()
        rows = store.con.execute("SELECT count(*) FROM failure_details").fetchall()[0][0]
    return int(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.rows:
            path = Path(tmp) / f"s{target}.duckdb"
            started = time.perf_counter()
            rows = build(path, target)
            print(f"{rows:,} failure-detail rows built in {time.perf_counter() - started:.1f} s")
            with Store.open(path, read_only=True) as store:
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    store.rows("SELECT policy_domain, sum(failed_session_count) FROM "
                               "failure_details GROUP BY policy_domain")
                    times.append(time.perf_counter() - t0)
                print(f"  {'baseline: one GROUP BY domain scan':<36} median "
                      f"{statistics.median(times) * 1000:7.0f} ms")
                for label, filters in (
                    ("summary, all days", Filters()),
                    ("summary, 30 days (+ previous 30)", Filters(since=date(2026, 10, 1),
                                                                 until=date(2026, 10, 30))),
                    ("summary, one domain, all days", Filters(domains=("domain7.example",))),
                ):
                    times = []
                    for _ in range(args.runs):
                        t0 = time.perf_counter()
                        result = summarize(store, filters)
                        times.append(time.perf_counter() - t0)
                    print(f"  {label:<36} median {statistics.median(times) * 1000:7.0f} ms "
                          f"({len(result.domains)} domains; runs "
                          f"{', '.join(f'{t * 1000:.0f}' for t in times)} ms)")
            path.unlink()


if __name__ == "__main__":
    main()
