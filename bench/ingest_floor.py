"""The floor under an ingest on this machine: how fast can reports be read at all, next to
parsedmarc and to ``tlswatch ingest``?  Prints figures; asserts nothing.

    python bench/ingest_floor.py [--reports 20000] [--runs 5] [--workers N]

Every line is a whole process, timed as ``bench/ingest_bench.py`` times them (wall clock,
start-up subtracted: the same process given an empty folder), medians of ``--runs``, all
sides taking turns run by run so that they see the same load:

- ``read + parse``: every file read, inflated (zlib) and parsed (jiter, the parser of
  tlswatch's decoder) in ``--workers`` forked processes (tlswatch's default: the cores, at
  most 4), the key fields returned as an Arrow table.  Nothing checked, nothing stored.
- ``+ validate``: the same, each report also validated by tlswatch's pydantic model.
- ``+ one table``: the same, the key fields and the gzipped bytes inserted into one DuckDB
  table, a commit every 5,000 reports.
- ``tlswatch ingest``: everything (the hostile-input checks, validation, de-duplication,
  four detail tables, the rollups in the same transaction as the rows, the quarantine).
- ``parsedmarc``: ``parse_report_file`` on every file, one process (as ingest_bench).

The first three do less than any ingest that keeps what it read: what they reach is the
most an ingest written on this stack (Python, process workers, DuckDB) can reach here.
CPU is all of a line's processes together (``wait4``: the process and its workers).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import write_reports
from bench.ingest_bench import PARSEDMARC_DRIVER, parsedmarc_python

STAGES = ("read + parse", "+ validate", "+ one table")
CHUNK = 250
BATCH = 5000


def _read_chunk(paths: list[str], validate: bool) -> Any:
    """In a worker: read, inflate and parse each file; its key fields as an Arrow table."""
    import jiter
    import pyarrow as pa

    if validate:
        from tlswatch.schemas import REPORT
    orgs, ids, raws, domains = [], [], [], []
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 24)
        finally:
            os.close(fd)
        doc = jiter.from_json(zlib.decompress(data, 16 + zlib.MAX_WBITS))
        if validate:
            doc = REPORT.validate_python(doc)
        orgs.append(doc["organization-name"])
        ids.append(doc["report-id"])
        raws.append(data)
        domains.append(doc["policies"][0]["policy"]["policy-domain"])
    return pa.table({"organization_name": orgs, "report_id": ids,
                     "raw_gzip": pa.array(raws, pa.binary()), "policy_domain": domains})


def run_stage(stage: str, folder: str, db: str, workers: int) -> None:
    """One floor line as its own process (``--stage``)."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect(db) if stage == "+ one table" else None
    if con is not None:
        con.execute("CREATE TABLE reports (organization_name VARCHAR, report_id VARCHAR, "
                    "raw_gzip BLOB, policy_domain VARCHAR)")
    paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    gc.disable()  # as tlswatch's loader: parsed reports hold no cycles
    pending: list[Any] = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for table in pool.map(_read_chunk, chunks, [stage != STAGES[0]] * len(chunks)):
            pending.append(table)
            if con is not None and sum(t.num_rows for t in pending) >= BATCH:
                _insert(con, pa.concat_tables(pending))
                pending = []
    if con is not None:
        if pending:
            _insert(con, pa.concat_tables(pending))
        con.close()


def _insert(con: Any, batch: Any) -> None:
    con.begin()
    con.execute("INSERT INTO reports SELECT * FROM batch")
    con.commit()


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the process and the workers it waited for)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.folder, args.db, args.workers)
        return
    python = parsedmarc_python()
    if python is None:
        raise SystemExit("parsedmarc could not be installed: no comparison")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}; "
          f"{args.reports} synthetic .json.gz reports, seed 8460; workers: {args.workers}")
    os.environ["TLSWATCH_WORKERS"] = str(args.workers)  # the setting, for tlswatch ingest
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder, empty = base / "reports", base / "empty"
        empty.mkdir()
        write_reports(folder, args.reports)
        driver = base / "parse_only.py"
        driver.write_text(PARSEDMARC_DRIVER)
        tlswatch = str(Path(sys.executable).with_name("tlswatch"))

        def command(line: str, where: Path) -> list[str]:
            db = base / "store.duckdb"
            for old in base.glob("store.duckdb*"):
                old.unlink()
            if line == "parsedmarc":
                return [str(python), str(driver), *([str(where)] if where != empty else [])]
            if line == "tlswatch ingest":
                return [tlswatch, "--db", str(db), "ingest", "--format", "json", str(where)]
            return [sys.executable, __file__, "--stage", line, "--folder", str(where),
                    "--db", str(db), "--workers", str(args.workers)]

        lines = ["parsedmarc", *STAGES, "tlswatch ingest"]
        samples: dict[tuple[str, Path], list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for line in lines:
                for where in (empty, folder):
                    samples.setdefault((line, where), []).append(timed(command(line, where)))
    report(lines, samples, empty, folder, args.reports)


def report(lines: list[str], samples: dict[tuple[str, Path], list[tuple[float, float]]],
           empty: Path, folder: Path, count: int) -> None:
    net: dict[str, tuple[float, float]] = {}
    for line in lines:
        start = statistics.median(w for w, _ in samples[line, empty])
        start_cpu = statistics.median(c for _, c in samples[line, empty])
        net[line] = (statistics.median(w for w, _ in samples[line, folder]) - start,
                     statistics.median(c for _, c in samples[line, folder]) - start_cpu)
    theirs = count / net["parsedmarc"][0]
    print(f"{'':<18} {'seconds':>8} {'reports/s':>10} {'vs parsedmarc':>14} "
          f"{'CPU µs a report':>16}")
    for line in lines:
        wall, cpu = net[line]
        print(f"{line:<18} {wall:8.2f} {count / wall:10,.0f} {count / wall / theirs:13.2f}x "
              f"{cpu / count * 1e6:16.0f}")
    print(f"(start-up subtracted; medians of {len(samples[lines[0], folder])} runs; "
          f"load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
