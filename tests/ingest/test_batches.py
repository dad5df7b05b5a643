"""Reports written from Arrow chunks: every row keeps its own report, policies and details,
whatever chunk or batch it came in, however the batch is split, and whichever process
prepared it; values that Arrow or the store cannot hold lose only their own report."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import detail, make_report, policy, write_json
from tests.ingest.test_poison import keys, mail
from tlswatch.ingest.batch import keyed, tabulate
from tlswatch.ingest.draining import drain
from tlswatch.ingest.loader import CHUNK, Loader, load
from tlswatch.ingest.prepare import Options, Prepared, prepare
from tlswatch.ingest.sources import Input, iter_inputs
from tlswatch.ingest.spool import Spool
from tlswatch.store import Store
from tlswatch.store.copy import tables
from tlswatch.store.rollups import rebuild

OPTIONS = Options(dnsfunc=keys)
SIGNED_KEY = "dkim-key"


def shaped(i: int) -> dict[str, Any]:
    """Report ``i`` of the corpus: shapes from no failure details to many policies."""
    day = f"2026-11-{1 + i % 27:02d}"
    kind = i % 7
    if kind == 0:  # entries with no failure details at all (no key, an empty list)
        entries = [policy(f"a{i % 5}.example", 10, 0),
                   policy(f"b{i % 3}.example", 4, 0, details=[])]
    elif kind == 1:  # many policies, each with its own number of details
        entries = [policy(f"m{p}.example", p, p % 4,
                          [detail("certificate-expired", 1, sip=f"192.0.2.{p}")] * (p % 4))
                   for p in range(40)]
    elif kind == 2:  # Microsoft: the same sessions under sts and under tlsa
        entries = [policy("dual.example", 90, 10, [detail("certificate-expired", 10)]),
                   policy("dual.example", 88, 12, [detail("dane-required", 12),
                                                   detail("tlsa-invalid", 3)], ptype="tlsa")]
    elif kind == 3:  # Postfix: different sessions per policy type
        entries = [policy("post.example", 5, 2, [detail("starttls-not-supported", 2)]),
                   policy("post.example", 7, 1, [detail("tlsa-invalid", 1)], ptype="tlsa"),
                   policy("post.example", 3, 4, [detail("validation-failure", 4)],
                          ptype="no-policy-found")]
    else:
        entries = [policy(f"d{i % 11}.example", 100 + i, kind,
                          [detail("certificate-host-mismatch", kind, sip=f"198.51.100.{i % 200}")]
                          + [detail("sts-webpki-invalid", 1)] * (i % 3))]
    return make_report(org=f"Org {i % 4}", rid=f"r{i}", day=day, policies=entries)


def corpus(folder: Path, count: int) -> dict[str, Any]:
    """``count`` reports as files, with duplicates, conflicting duplicates and a DKIM-signed
    report displacing an unsigned one, placed in different chunks; what should be stored."""
    folder.mkdir()
    stored: dict[str, Any] = {}
    for i in range(count):
        doc = shaped(i)
        write_json(folder / f"{i:05d}.json", doc, gz=i % 2 == 0)
        stored[doc["report-id"]] = doc
    # The same report twice in the run (another batch), and a conflicting one (same chunk
    # of the batch as its first, then another chunk).
    write_json(folder / f"{count - 2:05d}-again.json", shaped(5))
    changed = shaped(20)
    changed["policies"][0]["summary"]["total-successful-session-count"] += 1
    write_json(folder / "00021-conflict.json", changed)
    write_json(folder / f"{CHUNK + 30:05d}-conflict.json", changed)
    # An unsigned report (chunk 0), a conflicting unsigned one (chunk 1), the signed one
    # (chunk 2, another batch) that displaces the stored first, then the first again (now
    # a conflict); and a signed report displacing an unsigned one of the same batch.
    for key, places in ((SIGNED_KEY, (40, CHUNK + 40, 2 * CHUNK + 10, 2 * CHUNK + 50)),
                        (SIGNED_KEY + "-2", (2 * CHUNK - 10, None, 2 * CHUNK + 20, None))):
        unsigned, real = shaped(3), shaped(3)
        for doc in (unsigned, real):
            doc["report-id"], doc["contact-info"] = key, "tlsrpt@reporter.example"
        real["policies"][0]["summary"]["total-failure-session-count"] += 7
        other = json.loads(json.dumps(unsigned))
        other["policies"][0]["summary"]["total-successful-session-count"] += 2
        for at, doc, signed in zip(places, (unsigned, other, real, unsigned),
                                   (False, False, True, False), strict=True):
            if at is not None:
                (folder / f"{at:05d}-dkim.eml").write_bytes(mail(doc, sign=signed))
        stored[key] = real
    return stored


def expected_rows(docs: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each report's policies and failure details, as the documents state them."""
    rows = []
    for rid, doc in docs.items():
        for p_index, entry in enumerate(doc["policies"]):
            pol, summary = entry["policy"], entry["summary"]
            head = (doc["organization-name"], rid, doc["date-range"]["start-datetime"][:10],
                    p_index, pol["policy-type"], pol["policy-domain"],
                    summary["total-successful-session-count"],
                    summary["total-failure-session-count"])
            rows.append((*head, None, None, None, None))
            for d_index, d in enumerate(entry.get("failure-details", [])):
                rows.append((*head, d_index, d["result-type"], d["failed-session-count"],
                             d.get("sending-mta-ip")))
    return sorted(rows, key=repr)


def stored_rows(store: Store) -> list[tuple[Any, ...]]:
    """The same, as stored: details found by their own keys (report_pk, policy_pk)."""
    policies = store.rows(
        "SELECT r.organization_name AS org, r.report_id, CAST(p.day AS VARCHAR) AS day, "
        "p.policy_index, p.policy_type, p.policy_domain, p.successful_sessions, "
        "p.failed_sessions, p.policy_pk, p.report_pk, p.organization_name AS p_org "
        "FROM reports r JOIN policies p ON p.report_pk = r.report_pk "
        "ORDER BY p.policy_pk")
    details = store.rows(
        "SELECT policy_pk, report_pk, detail_index, result_type, failed_session_count, "
        "sending_mta_ip, day, organization_name, policy_type, policy_domain "
        "FROM failure_details ORDER BY policy_pk, detail_index")
    by_policy = {p["policy_pk"]: p for p in policies}
    rows = []
    for p in policies:
        assert p["p_org"] == p["org"]
        rows.append((p["org"], p["report_id"], p["day"], p["policy_index"], p["policy_type"],
                     p["policy_domain"], p["successful_sessions"], p["failed_sessions"],
                     None, None, None, None))
    for d in details:
        p = by_policy[d["policy_pk"]]
        # a detail's copied columns agree with the policy row its keys point at
        assert (d["report_pk"], str(d["day"]), d["organization_name"], d["policy_type"],
                d["policy_domain"]) == (p["report_pk"], p["day"], p["org"], p["policy_type"],
                                        p["policy_domain"])
        rows.append((p["org"], p["report_id"], p["day"], p["policy_index"], p["policy_type"],
                     p["policy_domain"], p["successful_sessions"], p["failed_sessions"],
                     d["detail_index"], d["result_type"], d["failed_session_count"],
                     d["sending_mta_ip"]))
    return sorted(rows, key=repr)


_RUN_TIMES = {"received_at", "created_at", "started_at", "finished_at", "updated_at"}


def _comparable(value: Any) -> Any:
    """Bytes as bytes, gzip members by their contents (their header holds the time)."""
    if isinstance(value, memoryview | bytes):
        value = bytes(value)
        return gzip.decompress(value) if value.startswith(b"\x1f\x8b") else value
    return value


def whole_store(db: Path) -> dict[str, list[str]]:
    """Every table's rows but the times of the run, in a comparable form."""
    with Store.open(db, read_only=True) as store:
        return {t: sorted(repr(tuple(_comparable(v) for k, v in row.items()
                                     if k not in _RUN_TIMES))
                          for row in store.rows(f"SELECT * FROM {t}"))
                for t in tables(store)}


@pytest.mark.parametrize("batch_size", [2500, 300])
def test_workers_and_one_process_store_the_same_tables_row_for_row(
        tmp_path: Path, batch_size: int) -> None:
    count = 3 * CHUNK + 40
    docs = corpus(tmp_path / "in", count)
    stores = {}
    for workers in (1, 2):
        db = tmp_path / f"w{workers}.duckdb"
        with Store.open(db) as store:
            result = load(iter_inputs([str(tmp_path / "in")], max_bytes=1 << 22), store,
                          options=OPTIONS, workers=workers, batch_size=batch_size)
            # in batches of 300 the first unsigned report is stored (accepted), then displaced
            assert (result.accepted, result.duplicates, result.conflicts) == (
                count + (2 if batch_size > count else 3), 1, 6), workers
            assert stored_rows(store) == expected_rows(docs)
            kept = store.rows("SELECT dkim_result, source FROM reports WHERE report_id IN (?, ?) "
                              "ORDER BY report_id", [SIGNED_KEY, SIGNED_KEY + "-2"])
            assert [(k["dkim_result"], Path(k["source"]).name) for k in kept] == [
                ("pass", f"{2 * CHUNK + 10:05d}-dkim.eml [attachment 'r.json.gz']"),
                ("pass", f"{2 * CHUNK + 20:05d}-dkim.eml [attachment 'r.json.gz']")]
            quarantined = store.rows("SELECT source, raw_gzip FROM quarantine ORDER BY source")
            for row in quarantined:  # each with its own report's bytes
                raw = json.loads(gzip.decompress(bytes(row["raw_gzip"])))
                name = Path(row["source"]).name.split(" ")[0]
                assert raw["report-id"] == ("r20" if "conflict" in name else
                                            SIGNED_KEY + "-2" if name.startswith("00490")
                                            else SIGNED_KEY), name
            assert [Path(r["source"]).name.split(" ")[0] for r in quarantined] == [  # in order
                "00021-conflict.json", "00040-dkim.eml", f"{CHUNK + 30:05d}-conflict.json",
                f"{CHUNK + 40:05d}-dkim.eml", f"{2 * CHUNK - 10:05d}-dkim.eml",
                f"{2 * CHUNK + 50:05d}-dkim.eml"]
            incremental = {t: store.rows(f"SELECT * FROM {t} ORDER BY ALL")
                           for t in ("rollup_days", "rollup_policies", "rollup_failures",
                                     "rollup_results", "rollup_ips")}
            rebuild(store)
            assert {t: store.rows(f"SELECT * FROM {t} ORDER BY ALL")
                    for t in incremental} == incremental
        stores[workers] = whole_store(db)
    assert stores[1].keys() == stores[2].keys()
    for table in stores[1]:
        assert stores[1][table] == stores[2][table], table


def _prepared(docs: list[dict[str, Any]]) -> list[Prepared]:
    out = []
    for i, doc in enumerate(docs):
        good, bad = prepare(Input(f"p{i}.json", json.dumps(doc).encode()))
        assert not bad
        out += good
    return out


def _spoiled_policy_index(report: Prepared) -> Prepared:
    """A policy index the store's INTEGER column cannot hold (Arrow's int64 can)."""
    (row, details), *rest = report.policies
    return report._replace(policies=[(row._replace(policy_index=2**40), details), *rest])


def _spoiled_detail(report: Prepared) -> Prepared:
    """A failure detail without a result type (the store's NOT NULL refuses it)."""
    *rest, (row, details) = report.policies
    assert details
    return report._replace(policies=[*rest, (row, [details[0]._replace(result_type=None),
                                                   *details[1:]])])


@pytest.mark.parametrize("chunked", [False, True], ids=["prepared-here", "worker-chunks"])
def test_a_split_batch_of_several_chunks_keeps_every_other_reports_rows(
        tmp_path: Path, chunked: bool) -> None:
    docs = [shaped(i) for i in range(60)]
    changed = shaped(20)
    changed["policies"][0]["summary"]["total-successful-session-count"] += 1
    prepared = _prepared([*docs, shaped(5), changed])  # a duplicate, a conflicting one
    spoiled = {13: _spoiled_policy_index, 31: _spoiled_detail, 58: _spoiled_policy_index}
    for at, spoil in spoiled.items():
        prepared[at] = spoil(prepared[at])
    with Store.open(tmp_path / "t.duckdb") as store:
        loader = Loader(store, batch_size=1000)
        if chunked:  # as worker processes hand them over: tabled, in three chunks
            for part in (prepared[:7], prepared[7:40], prepared[40:]):
                loader.take_chunk(*tabulate(part))
        else:
            loader.take(prepared, [])
        loader.flush()
        result = loader.result
        assert (result.accepted, result.rejected, result.duplicates, result.conflicts) == \
            (57, 3, 1, 1)
        assert stored_rows(store) == expected_rows(
            {d["report-id"]: d for i, d in enumerate(docs) if i not in spoiled})
        kept = store.rows("SELECT source, reason, raw_gzip FROM quarantine ORDER BY source")
    assert [k["source"] for k in kept] == ["p13.json", "p31.json", "p58.json", "p61.json"]
    assert kept.pop()["reason"].startswith("conflicting duplicate")
    for k, at in zip(kept, spoiled, strict=True):
        assert k["reason"].startswith("could not be stored (")
        assert json.loads(gzip.decompress(bytes(k["raw_gzip"]))) == docs[at]


def _surrogate(report: Prepared) -> Prepared:
    """A value Arrow cannot encode (a lone surrogate), as a missed check would let through."""
    return report._replace(report=report.report._replace(organization_name="Org \ud800"))


def test_a_lone_report_arrow_cannot_hold_is_quarantined_not_fatal(tmp_path: Path) -> None:
    good, bad = _prepared([shaped(4), shaped(5)])
    with Store.open(tmp_path / "t.duckdb") as store:
        loader = Loader(store)
        loader.take([good], [])
        loader.flush()
        loader.take([_surrogate(bad)], [])  # the only report of the next batch
        loader.flush()
        assert (loader.result.accepted, loader.result.rejected) == (1, 1)
        (kept,) = store.rows("SELECT source, reason, raw_gzip FROM quarantine")
    assert kept["source"] == "p1.json" and "could not be stored" in kept["reason"]
    assert json.loads(gzip.decompress(bytes(kept["raw_gzip"])))["report-id"] == "r5"


def test_a_worker_chunk_whose_one_report_arrow_refuses_quarantines_it() -> None:
    chunk, bad = tabulate([_surrogate(_prepared([shaped(4)])[0])])
    assert chunk.reports.num_rows == 0
    assert [q.source for q in bad] == ["p0.json"]


def test_arrow_refusals_among_several_chunks_lose_only_their_reports(tmp_path: Path) -> None:
    docs = [shaped(i) for i in range(30)]
    prepared = _prepared(docs)
    for at in (2, 17):
        prepared[at] = _surrogate(prepared[at])
    (row, details), *rest = prepared[18].policies  # over Arrow's int64
    prepared[18] = prepared[18]._replace(policies=[(row._replace(successful_sessions=2**63),
                                                    details), *rest])
    with Store.open(tmp_path / "t.duckdb") as store:
        loader = Loader(store)
        for part in (prepared[:10], prepared[10:18], prepared[18:]):
            loader.take_chunk(*tabulate(part))
        loader.flush()
        assert (loader.result.accepted, loader.result.rejected) == (27, 3)
        assert stored_rows(store) == expected_rows(
            {d["report-id"]: d for i, d in enumerate(docs) if i not in (2, 17, 18)})
        kept = store.rows("SELECT source, raw_gzip FROM quarantine ORDER BY source")
    assert [k["source"] for k in kept] == ["p17.json", "p18.json", "p2.json"]
    assert [json.loads(gzip.decompress(bytes(k["raw_gzip"])))["report-id"] for k in kept] == \
        ["r17", "r18", "r2"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_name_that_is_not_utf8_is_loaded_and_named_readably(tmp_path: Path,
                                                                   workers: int) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(CHUNK + 5):
        write_json(folder / f"{i:05d}.json", shaped(i))
    bad = make_report(rid="odd-name")
    with open(os.fsencode(folder) + b"/odd\xff.json", "wb") as fh:  # no UTF-8 name
        fh.write(json.dumps(bad).encode())
    with Store.open(tmp_path / "t.duckdb") as store:
        result = load(iter_inputs([str(folder)], max_bytes=1 << 22), store, workers=workers)
        assert (result.accepted, result.rejected) == (CHUNK + 6, 0)
        (source,) = store.rows("SELECT source FROM reports WHERE report_id = 'odd-name'")
    assert source["source"] == f"{folder}/odd\\xff.json"


def test_a_drained_batch_files_each_entry_by_its_own_reports(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ids = {}
    for i in range(12):
        ids[f"r{i}"] = spool.put(json.dumps(shaped(i)).encode(), {"via": "http"})
    ids["again"] = spool.put(json.dumps(shaped(4)).encode(), {"via": "http"})
    changed = shaped(7)
    changed["policies"][0]["summary"]["total-successful-session-count"] += 1
    ids["conflict"] = spool.put(json.dumps(changed).encode(), {"via": "http"})
    ids["bad"] = spool.put(b"{oops", {"via": "http"})
    unsigned, real = shaped(3), shaped(3)
    for doc in (unsigned, real):
        doc["report-id"], doc["contact-info"] = SIGNED_KEY, "tlsrpt@reporter.example"
    real["policies"][0]["summary"]["total-failure-session-count"] += 7
    ids["unsigned"] = spool.put(mail(unsigned, sign=False), {"via": "smtp"})
    ids["signed"] = spool.put(mail(real, sign=True), {"via": "smtp"})
    result = drain(spool, tmp_path / "db.duckdb", options=OPTIONS)
    assert result is not None
    assert (result.accepted, result.duplicates, result.conflicts, result.rejected) == \
        (13, 1, 2, 1)
    assert spool.depth() == 0
    failed = {p.name.removesuffix(".reason"): p.read_text()
              for p in spool.failed.glob("*.reason")}
    assert sorted(failed) == sorted(ids[k] for k in ("conflict", "bad", "unsigned"))
    assert "conflicting duplicate" in failed[ids["conflict"]]
    assert "displaced by a DKIM-signed report" in failed[ids["unsigned"]]
    assert sorted(os.listdir(spool.done)) == sorted(
        v for k, v in ids.items() if k not in ("conflict", "bad", "unsigned"))
    with Store.open(tmp_path / "db.duckdb", read_only=True) as store:
        docs = {d["report-id"]: d for d in map(shaped, range(12))}
        assert stored_rows(store) == expected_rows({**docs, SIGNED_KEY: real})


def _named(docs: list[dict[str, Any]]) -> list[Prepared]:
    out = []
    for doc in docs:
        good, bad = prepare(Input(f"{doc['report-id']}.json", json.dumps(doc).encode()))
        assert not bad
        out += good
    return out


def test_keys_of_a_whole_chunk_match_those_of_the_same_reports_chosen_among_others() -> None:
    # A batch where every report is new takes its keys without selecting rows; one with a
    # duplicate selects the new ones.  Both must give the same rows and keys.
    docs = [shaped(i) for i in (0, 1, 2, 3, 4, 9)]  # no details, many policies, both types
    whole, _ = tabulate(_named(docs))
    among, _ = tabulate(_named([shaped(5), *docs[:3], shaped(6), *docs[3:]]))
    at = datetime(2026, 11, 28, 12, 0)
    chosen = keyed(among, [1, 2, 3, 5, 6, 7], 101, 2001, at)
    got = keyed(whole, list(range(len(docs))), 101, 2001, at)
    for table, want in zip(got, chosen, strict=True):
        assert table.to_pylist() == want.to_pylist()
    assert got.reports["report_pk"].to_pylist() == list(range(101, 107))
    assert got.reports["received_at"].to_pylist() == [at] * 6
    policies = got.policies.to_pylist()
    assert [p["policy_pk"] for p in policies] == list(range(2001, 2001 + len(policies)))
    details = got.details.to_pylist()
    assert details and all(d["report_pk"] in range(101, 107) for d in details)
