"""One huge report makes a small page: failure details a page at a time, the raw JSON cut
short with a link to the whole of it (real `serve`, real httpx)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import make_report, policy, write_json
from tests.serving import CLI, Serve

DETAILS = 200_000
PAGE_LIMIT = 1024 * 1024  # bytes: a page of 500 rows is far below this


def details(n: int) -> list[dict[str, object]]:
    return [{"result-type": "certificate-expired",
             "sending-mta-ip": f"198.51.{i // 256 % 256}.{i % 256}",
             "receiving-mx-hostname": f"mx{i}.big.example", "receiving-ip": "192.0.2.1",
             "failed-session-count": 1 + i % 7} for i in range(n)]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, int]]:
    root = tmp_path_factory.mktemp("big")
    doc = make_report(rid="huge", policies=[policy("big.example", 5, 4 * DETAILS,
                                                   details(DETAILS))])
    write_json(root / "huge.json.gz", doc, gz=True)  # under max_input_bytes
    # Over the default cap of failure details per report: a deployment that raised it.
    server = Serve(root, smtp="", max_failure_details=DETAILS)
    subprocess.run([*CLI, "--config", str(server.config), "ingest", str(root / "huge.json.gz")],
                   check=True, capture_output=True)
    with server:
        listed = httpx.get(f"{server.http_url}/reports?format=json").json()["reports"]
        yield server, listed[0]["id"]


def test_a_report_with_200000_failure_details_makes_a_bounded_page(big: tuple[Serve, int]
                                                                   ) -> None:
    server, ident = big
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        page = client.get(f"/reports/{ident}")
        assert page.status_code == 200
        assert len(page.content) < PAGE_LIMIT
        assert page.text.count("<td class=\"reason\">") == 500
        assert "Failure details 1&ndash;500 of 200,000 (page 1 of 400)" in page.text
        assert 'id="raw-truncated"' in page.text and f"/reports/{ident}/raw.json" in page.text

        second = client.get(f"/reports/{ident}?format=json&page=2")
        assert len(second.content) < PAGE_LIMIT
        data = second.json()
        assert data["report"]["failure_details_page"] == {
            "page": 2, "pages": 400, "per_page": 500, "total": DETAILS, "first": 501,
            "last": 1000}
        rows = data["report"]["policies"][0]["failure_details"]
        assert len(rows) == 500
        assert len(data["report"]["raw_report"]) <= 64 * 1024 and data["report"]["raw_truncated"]
        first = client.get(f"/reports/{ident}?format=json&page=1").json()
        seen = {r["receiving_mx_hostname"] for r in first["report"]["policies"][0]
                ["failure_details"]}
        assert seen.isdisjoint(r["receiving_mx_hostname"] for r in rows)

        last = client.get(f"/reports/{ident}?format=json&page=999999").json()
        assert last["report"]["failure_details_page"]["page"] == 400

        whole = client.get(f"/reports/{ident}/raw.json")
        assert whole.status_code == 200
        assert re.search(r'filename="report-\d+\.json"', whole.headers["content-disposition"])
        assert len(json.loads(whole.content)["policies"][0]["failure-details"]) == DETAILS


def test_small_reports_still_show_their_raw_json_whole(server: Serve) -> None:
    reports = httpx.get(f"{server.http_url}/reports?format=json&org=Mail.ru").json()["reports"]
    one = httpx.get(f"{server.http_url}/reports/{reports[0]['id']}?format=json").json()
    assert one["report"]["raw_truncated"] is False
    assert json.loads(one["report"]["raw_report"])["organization-name"] == "Mail.ru"
    page = httpx.get(f"{server.http_url}/reports/{reports[0]['id']}").text
    assert "raw-truncated" not in page and "&#34;organization-name&#34;: &#34;Mail.ru&#34;" in page
