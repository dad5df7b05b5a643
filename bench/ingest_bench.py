"""Ingest benchmark: whole-process ``tlswatch ingest`` vs. parsedmarc's parse-only, start-up
subtracted from both.  Prints figures; asserts nothing.

    python bench/ingest_bench.py [--reports 20000] [--runs 3] [--into STORE] [--src DIR ...]

Each side is timed as a whole process (wall clock), ``--runs`` times; the median is used.
What is subtracted, also measured as a whole process, median of the same number of runs:
- tlswatch: ``tlswatch --db NEW.duckdb ingest --format json EMPTY_DIR`` (imports, settings,
  creating and migrating a new store, the empty report), so what remains is reading,
  decoding, validating, de-duplicating and loading the reports.
- parsedmarc: the same driver script given no files (imports parsedmarc only), so what
  remains is ``parse_report_file(path, offline=True)`` on every file.
parsedmarc is not a dependency of tlswatch: it is installed into its own venv under
``~/.cache/tlswatch-bench/parsedmarc`` on first use (``pip install parsedmarc``).
Peak RSS is the largest single process of the run (``wait4``'s ``ru_maxrss``: the loader
process or, if larger, one of its workers).

``--into STORE`` also times the ingest into a copy of an existing store (such as the 10M-row
store ``bench/rollup_bench.py --keep`` leaves), where what a batch costs besides its own
rows shows (copying is not timed; start-up here is opening and closing the big store).
``--src DIR`` (repeatable) times another source tree of tlswatch the same way, run by run
beside this one, so an older release and this one see the same load on a shared machine.
``--busy N`` keeps N other processes spinning at normal priority while every side is timed:
how an ingest fares on a machine that has other work (each takes a core if it can).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import write_reports

PARSEDMARC_VENV = Path.home() / ".cache" / "tlswatch-bench" / "parsedmarc"
# Runs the tlswatch CLI of another source tree (``--src``) in this venv.
RUN_SRC = "import sys; sys.path.insert(0, sys.argv.pop(1)); from tlswatch.cli import main; " \
          "sys.argv[0] = 'tlswatch'; main()"
PARSEDMARC_DRIVER = """
import os, sys
from parsedmarc import parse_report_file
if len(sys.argv) > 1:
    for entry in sorted(os.scandir(sys.argv[1]), key=lambda e: e.name):
        parse_report_file(entry.path, offline=True)
"""

def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return elapsed, usage.ru_maxrss / 1024


def median_of(runs: int, make_cmd: object) -> tuple[float, float, list[float]]:
    times, peaks = [], []
    for run in range(runs):
        seconds, peak = timed(make_cmd(run))  # type: ignore[operator]
        times.append(seconds)
        peaks.append(peak)
    return statistics.median(times), max(peaks), times


def parsedmarc_python() -> Path | None:
    python = PARSEDMARC_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing parsedmarc into {PARSEDMARC_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PARSEDMARC_VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "parsedmarc"])
        if done.returncode != 0:
            shutil.rmtree(PARSEDMARC_VENV, ignore_errors=True)
            return None
    return python


def show(label: str, total: float, startup: float, count: int, times: list[float]) -> float:
    net = total - startup
    print(f"{label}\n{'':<26} whole {total:6.2f} s - start-up {startup:5.2f} s = {net:6.2f} s  "
          f"{count / net:8,.0f} reports/s  (runs: {', '.join(f'{t:.2f}' for t in times)} s)")
    return count / net


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--into", type=Path, help="also ingest into a copy of this store")
    parser.add_argument("--src", type=Path, action="append", default=[],
                        help="also time the tlswatch of this source tree")
    parser.add_argument("--busy", type=int, default=0,
                        help="other processes to keep spinning while timing")
    args = parser.parse_args()
    with spinning(args.busy):
        run(args)


@contextlib.contextmanager
def spinning(count: int) -> Iterator[None]:
    """``count`` processes burning CPU at normal priority until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> None:
    trees = {"this tree": [str(Path(sys.executable).with_name("tlswatch"))],
             **{src.name: [sys.executable, "-c", RUN_SRC, str(src)] for src in args.src}}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}; "
          f"{args.reports} synthetic .json.gz reports, seed 8460"
          + (f"; {args.busy} other processes spinning" if args.busy else ""))
    with tempfile.TemporaryDirectory() as tmp:
        folder, empty = Path(tmp) / "reports", Path(tmp) / "empty"
        empty.mkdir()
        write_reports(folder, args.reports)
        kinds = {"new store": lambda run: tmp_store(Path(tmp), None)}
        if args.into:
            kinds[f"into {args.into.name}"] = lambda run: tmp_store(Path(tmp), args.into)
        # Run by run, every tree and kind in turn: all see the same load.
        samples: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        for _run in range(args.runs):
            for tree, command in trees.items():
                for kind, make_store in kinds.items():
                    for where in (empty, folder):
                        cmd = [*command, "--db", str(make_store(_run)), "ingest", "--format",
                               "json", str(where)]
                        samples.setdefault((tree, kind, where.name), []).append(timed(cmd))
        mine = 0.0
        for tree in trees:
            for kind in kinds:
                rate = _show_ours(f"{tree}, {kind}", samples[tree, kind, "empty"],
                                  samples[tree, kind, "reports"], args.reports)
                mine = mine or rate
        python = parsedmarc_python()
        if python is None:
            print("parsedmarc could not be installed: no comparison")
            return
        driver = Path(tmp) / "parse_only.py"
        driver.write_text(PARSEDMARC_DRIVER)
        pm_start, _, _ = median_of(args.runs, lambda run: [str(python), str(driver)])
        pm_total, pm_peak, pm_times = median_of(
            args.runs, lambda run: [str(python), str(driver), str(folder)])
        theirs = show("parsedmarc parse-only", pm_total, pm_start, args.reports, pm_times)
        print(f"{'':<26} peak RSS {pm_peak:.0f} MiB")
        print(f"tlswatch end to end ({next(iter(trees))}, new store) / parsedmarc parse-only "
              f"= {mine / theirs:.2f}x (load average now {os.getloadavg()[0]:.1f})")


def tmp_store(tmp: Path, original: Path | None) -> Path:
    """A store path for one run: new, or a fresh copy of ``original`` (copied untimed)."""
    target = tmp / "store.duckdb"
    for old in tmp.glob("store.duckdb*"):
        old.unlink()
    if original is not None:
        shutil.copyfile(original, target)
    return target


def _show_ours(label: str, start: list[tuple[float, float]],
               full: list[tuple[float, float]], count: int) -> float:
    rate = show(f"tlswatch ingest: {label}", statistics.median(s for s, _ in full),
                statistics.median(s for s, _ in start), count, [s for s, _ in full])
    print(f"{'':<26} peak RSS {max(p for _, p in full):.0f} MiB (start-up alone "
          f"{max(p for _, p in start):.0f} MiB)")
    return rate


if __name__ == "__main__":
    main()
