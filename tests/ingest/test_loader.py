from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import detail, make_report, policy, write_json
from tlswatch.errors import ReportError
from tlswatch.ingest.loader import CHUNK, load
from tlswatch.ingest.sources import Input, iter_inputs
from tlswatch.store import Store


def numbered(i: int) -> dict[str, Any]:
    return make_report(org=f"Org {i % 7}", rid=f"r{i}", day=f"2026-11-{1 + i % 28:02d}",
                       policies=[policy(f"d{i % 5}.example", 100, 2,
                                        [detail("certificate-expired", 2)])])


def corpus(folder: Path, count: int) -> list[str]:
    folder.mkdir()
    for i in range(count):
        write_json(folder / f"{i:05d}.json", numbered(i), gz=i % 2 == 0)
    (folder / "bad.json").write_text("{oops")
    write_json(folder / "dup.json", numbered(0))  # the same report again, uncompressed
    return [str(folder)]


def table_dump(db: Path) -> list[tuple[object, ...]]:
    with Store.open(db, read_only=True) as store:
        return store.con.execute(
            "SELECT r.organization_name, r.report_id, p.policy_domain, f.result_type, "
            "f.failed_session_count, f.counted, n.value FROM reports r "
            "JOIN policies p USING (report_pk) JOIN failure_details f USING (policy_pk) "
            "JOIN names n ON n.name_id = f.domain_id ORDER BY r.report_id").fetchall()


def test_worker_processes_load_exactly_what_one_process_loads(tmp_path: Path) -> None:
    paths = corpus(tmp_path / "in", 3 * CHUNK + 17)
    results = {}
    for workers in (1, 2):
        db = tmp_path / f"w{workers}.duckdb"
        seen: list[int] = []
        with Store.open(db) as store:
            threads = store.value("SELECT current_setting('threads')")
            result = load(iter_inputs(paths, max_bytes=1 << 20), store, workers=workers,
                          batch_size=300, progress=seen.append)
            # the writer works on one thread while the workers run, then as before
            assert store.value("SELECT current_setting('threads')") == threads
        assert (result.accepted, result.duplicates, result.rejected) == (3 * CHUNK + 17, 1, 1)
        assert sum(seen) == 3 * CHUNK + 19  # every input reported to the progress bar
        results[workers] = table_dump(db)
    assert results[1] == results[2]
    assert len(results[1]) == 3 * CHUNK + 17


def test_unreadable_inputs_are_rejected_not_fatal(tmp_path: Path) -> None:
    items: list[Input | ReportError] = [ReportError("gone.json", "cannot read: Permission denied"),
                                        Input("ok.json", write_json(tmp_path / "ok.json",
                                                                    make_report()).read_bytes())]
    with Store.open(tmp_path / "x.duckdb") as store:
        result = load(items, store)
    assert (result.accepted, result.rejected) == (1, 1)
    assert result.rejections[0].reason == "cannot read: Permission denied"


def test_each_row_of_a_batch_keeps_its_own_report_and_policy(tmp_path: Path) -> None:
    # Reports of 1 to 3 entries with 0 to 3 details each, loaded as one batch: every detail
    # row must point at its own entry, and every entry at its own report.
    shapes = [[0], [3, 1], [], [2, 0, 1], [1]]
    items = []
    for r_index, counts in enumerate(shapes):
        entries = [policy(f"e{r_index}-{p_index}.example", 10, count,
                          [detail("certificate-expired", 1)] * count)
                   for p_index, count in enumerate(counts)] or [policy("none.example", 1, 0)]
        data = write_json(tmp_path / f"{r_index}.json",
                          make_report(rid=f"shape{r_index}", policies=entries)).read_bytes()
        items.append(Input(f"{r_index}.json", data))
    with Store.open(tmp_path / "x.duckdb") as store:
        assert load(items, store).accepted == len(shapes)
        details = store.rows(
            "SELECT r.report_id, p.policy_index, p.policy_domain, f.detail_index, "
            "f.policy_domain AS detail_domain FROM failure_details f "
            "JOIN policies p ON p.policy_pk = f.policy_pk AND p.report_pk = f.report_pk "
            "JOIN reports r ON r.report_pk = p.report_pk "
            "ORDER BY r.report_id, p.policy_index, f.detail_index")
        entries = store.rows(
            "SELECT r.report_id, p.policy_domain FROM policies p "
            "JOIN reports r ON r.report_pk = p.report_pk ORDER BY r.report_id, p.policy_index")
    expected = [(f"shape{r}", p, f"e{r}-{p}.example", d)
                for r, counts in enumerate(shapes) for p, count in enumerate(counts)
                for d in range(count)]
    assert [(row["report_id"], row["policy_index"], row["policy_domain"], row["detail_index"])
            for row in details] == expected
    assert all(row["policy_domain"] == row["detail_domain"] for row in details)
    assert [(row["report_id"], row["policy_domain"]) for row in entries] == [
        (f"shape{r}", f"e{r}-{p}.example" if counts else "none.example")
        for r, counts in enumerate(shapes) for p in range(max(1, len(counts)))]
