"""DuckDB and PostgreSQL give byte-identical outputs for the same reports."""

from __future__ import annotations

import json
import random
from pathlib import Path

from bench.generate import synthetic_report
from tests.conftest import VALID, Cli, write_json

DAYS = ("2026-10-05", "2026-10-20", "2026-11-25")


def corpus(folder: Path) -> Path:
    """300 generated reports over 20 domains and 8 weeks (Microsoft's layout, the same
    sessions under sts and tlsa, among them) beside the real samples."""
    rng = random.Random(11)
    folder.mkdir()
    for i in range(300):
        write_json(folder / f"gen-{i}.json.gz", synthetic_report(rng, i, domains=20), gz=True)
    return folder


def outputs(cli: Cli, tmp_path: Path, name: str) -> dict[str, str]:
    found = {}
    for args in (("summary",), ("summary", "--since", "2026-10-15", "--until", "2026-11-01"),
                 ("summary", "--domain", "domain3.example"), ("failures",),
                 ("failures", "--org", "Microsoft Corporation", "--since", "2026-10-10"),
                 ("failures", "--domain", "domain7.example", "--limit", "5"),
                 ("alerts", "--check"), ("alerts",), ("reports", "--limit", "400")):
        found[" ".join(args)] = cli(*args, "--format", "json").stdout
    for day in DAYS:
        out = tmp_path / name / day
        cli("export", "daily", "--out", str(out), "--date", day, "--format", "json")
        found[f"export {day}"] = (out / f"tlswatch-summary-{day}.json").read_text()
    return found


def test_both_engines_give_the_same_json(tmp_path: Path, pg_url: str) -> None:
    inputs = corpus(tmp_path / "in")
    duck, pg = Cli(tmp_path / "parity.duckdb"), Cli(pg_url)  # type: ignore[arg-type]
    for cli in (duck, pg):
        cli("ingest", str(VALID), str(inputs), code=None)
    first, second = outputs(duck, tmp_path, "duckdb"), outputs(pg, tmp_path, "postgresql")
    assert '"domain3.example"' in first["summary"] and '"kind"' in first["alerts --check"]
    for key, text in first.items():
        if key.startswith("alerts"):  # when each alert was made: this run's clock
            text, second[key] = unclocked(text), unclocked(second[key])
        assert second[key] == text, key


def unclocked(text: str) -> str:
    return json.dumps([{k: v for k, v in alert.items() if k != "created_at"}
                       for alert in json.loads(text)], indent=2)
