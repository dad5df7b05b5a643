"""Every file of the team's corpus and of the shared reference reports behaves as recorded."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.conftest import EXPECTED, INVALID, REFERENCE, VALID, Cli
from tlswatch.store import Store


def test_every_invalid_sample_is_listed_with_its_error() -> None:
    assert sorted(p.name for p in INVALID.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_sample_is_rejected_with_its_reason(cli: Cli, name: str) -> None:
    out = cli.json("ingest", str(INVALID / name), code=1)
    assert out["accepted"] == 0 and out["rejected"] == 1
    (rejection,) = out["rejections"]
    assert rejection["source"].startswith(str(INVALID / name))
    assert EXPECTED[name] in rejection["reason"]


def test_rejected_bytes_are_kept_in_quarantine(cli: Cli, db: Path) -> None:
    cli.json("ingest", str(INVALID), code=1)
    cli.json("ingest", str(INVALID), code=1)  # the same rejects again are kept once
    with Store.open(db) as store:
        rows = store.rows("SELECT source, reason, size, raw_gzip FROM quarantine")
    assert len(rows) == len(EXPECTED)
    by_name = {Path(r["source"]).name: r for r in rows}
    truncated = by_name["truncated.json.gz"]
    assert gzip.decompress(truncated["raw_gzip"]) == (INVALID / "truncated.json.gz").read_bytes()
    assert "truncated gzip data" in truncated["reason"]


def test_valid_corpus_loads_whole_and_clean(cli: Cli) -> None:
    out = cli.json("ingest", str(VALID))
    assert {k: out[k] for k in ("accepted", "duplicates", "rejected", "rejections")} == {
        "accepted": 22, "duplicates": 0, "rejected": 0, "rejections": []}


def test_valid_corpus_covers_every_result_type(cli: Cli) -> None:
    from tlswatch.schemas import RFC8460_RESULT_TYPES

    cli.json("ingest", str(VALID))
    seen = {r["result_type"] for r in cli.json("failures", "--limit", "1000")}
    assert seen >= RFC8460_RESULT_TYPES
    assert "tls-version-too-old" in seen  # outside the registry, kept as sent


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference/reports not present")
def test_shared_reference_reports_all_load(cli: Cli) -> None:
    files = sorted(p for p in REFERENCE.iterdir() if p.is_file())
    out = cli.json("ingest", *map(str, files))
    assert out["rejected"] == 0, out["rejections"]
    assert out["accepted"] == len(files)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference/reports not present")
def test_big_senders_real_reports_carry_no_warnings(cli: Cli) -> None:
    # A warning on every Google or Microsoft report would hide the real deviations.
    files = sorted(p for p in REFERENCE.iterdir() if "google" in p.name or "microsoft" in p.name)
    assert len(files) >= 3
    cli.json("ingest", *map(str, files))
    assert [r["warnings"] for r in cli.json("reports")] == [0] * len(files)
