"""Rollups kept batch by batch into a store that already holds data (worker processes,
small batches, displaced and conflicting reports on other days) equal a rebuild."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Cli, detail, make_report, policy
from tests.ingest.test_batches import (
    _prepared,
    _spoiled_detail,
    _spoiled_policy_index,
    expected_rows,
    shaped,
    stored_rows,
)
from tests.ingest.test_poison import keys, mail
from tests.store.test_rollups import assert_rollups_equal_a_rebuild
from tlswatch.ingest.batch import tabulate
from tlswatch.ingest.loader import CHUNK, Loader, load
from tlswatch.ingest.prepare import Options
from tlswatch.ingest.sources import Input
from tlswatch.store import Store

OPTIONS = Options(dnsfunc=keys)


def report(i: int, *, rid: str | None = None, day: int | None = None) -> dict[str, Any]:
    """Reports over 30 days, 6 domains and some sending IPs, Microsoft and Postfix style."""
    domain = f"d{i % 6}.example"
    when = f"2026-10-{1 + (i * 7 if day is None else day) % 30:02d}"
    sip = f"198.51.100.{i % 9}"
    if i % 3 == 0:  # the same sessions under sts and tlsa
        entries = [policy(domain, 50, 5, [detail("certificate-expired", 5, sip=sip)]),
                   policy(domain, 45, 10, [detail("dane-required", 10, sip=sip),
                                           detail("tlsa-invalid", 2)], ptype="tlsa")]
    elif i % 3 == 1:
        entries = [policy(domain, 20, 3, [detail("starttls-not-supported", 3, sip=sip)]),
                   policy(domain, 1, 1, [detail("validation-failure", 1)],
                          ptype="no-policy-found")]
    else:
        entries = [policy(domain, 9, 0), policy(f"x{i % 4}.example", 3, 2,
                                                [detail("certificate-host-mismatch", 2)])]
    # a report-id given: the organization too (another report under a known key)
    doc = make_report(org="Org 2" if rid else f"Org {i % 3}", rid=rid or f"r{i}", day=when,
                      policies=entries)
    doc["contact-info"] = "tlsrpt@reporter.example"
    return doc


def _items(docs: list[tuple[str, dict[str, Any], bool | None]]) -> list[Input]:
    """(name, document, signed: None for a plain JSON file) as inputs."""
    return [Input(name, json.dumps(doc).encode() if signed is None else mail(doc, sign=signed))
            for name, doc, signed in docs]


def test_rollups_of_loads_into_a_store_with_data_equal_a_rebuild(db: Path | str,
                                                                 cli: Cli) -> None:
    first = [(f"f{i}.json", report(i), None) for i in range(CHUNK + 20)]
    first += [("u1.eml", report(1, rid="signed-1", day=3), False),
              ("u2.eml", report(2, rid="signed-2", day=28), False)]
    with Store.open(db) as store:
        result = load(_items(first), store, options=OPTIONS, workers=2, batch_size=100)
    assert result.accepted == CHUNK + 22
    assert_rollups_equal_a_rebuild(db, cli)
    # Into the store with data, in batches of 7: the same reports again, new ones on the
    # same days and domains, conflicting ones, and signed reports (on other days) that
    # displace stored unsigned ones and one unsigned one of the same batch.
    second: list[tuple[str, dict[str, Any], bool | None]] = [
        ("again.json", report(5), None),
        ("conflict.json", report(6, rid="r5"), None),
        ("s1.eml", report(4, rid="signed-1", day=17), True),
        ("n0.json", report(1000), None),
        ("u3.eml", report(7, rid="signed-3", day=9), False),
        ("s3.eml", report(8, rid="signed-3", day=29), True),
        ("s2.eml", report(3, rid="signed-2", day=0), True),
    ]
    second += [(f"n{i}.json", report(i), None) for i in range(1001, 1030)]
    with Store.open(db) as store:
        result = load(_items(second), store, options=OPTIONS, batch_size=7)
    assert (result.accepted, result.duplicates, result.conflicts) == (33, 1, 4)
    assert_rollups_equal_a_rebuild(db, cli)


def test_a_batch_split_after_refusals_keeps_rows_and_rollups_on_either_engine(
        db: Path | str, cli: Cli) -> None:
    docs = [shaped(i) for i in range(40)]
    prepared = _prepared(docs)
    spoiled = {3: _spoiled_policy_index, 22: _spoiled_detail, 39: _spoiled_policy_index}
    for at, spoil in spoiled.items():
        prepared[at] = spoil(prepared[at])
    with Store.open(db) as store:
        load([Input(f"f{i}.json", json.dumps(report(i)).encode()) for i in range(100, 130)], store)
        loader = Loader(store, batch_size=1000)
        for part in (prepared[:5], prepared[5:30], prepared[30:]):
            loader.take_chunk(*tabulate(part))
        loader.flush()
        assert (loader.result.accepted, loader.result.rejected) == (37, 3)
        kept = store.rows("SELECT source FROM quarantine ORDER BY source")
        assert [k["source"] for k in kept] == ["p22.json", "p3.json", "p39.json"]
        rows = stored_rows(store)
    expected = expected_rows({d["report-id"]: d for i, d in enumerate(docs) if i not in spoiled}
                             | {f"r{i}": report(i) for i in range(100, 130)})
    assert rows == expected
    assert_rollups_equal_a_rebuild(db, cli)
