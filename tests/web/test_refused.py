"""The dashboard's "Refused" pages on a real `tlswatch serve`: listed, shown escaped, JSON."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx

from tests.conftest import GZIP_TYPE, make_report, policy
from tests.serving import Serve

HOSTILE = "<script>alert(1)</script>\u202eCorp\x1b[2J"


def test_refused_page_lists_and_shows_escaped(tmp_path: Path) -> None:
    with Serve(tmp_path, domains=["example.com"]) as server:
        base = server.http_url
        empty = httpx.get(f"{base}/refused")
        assert empty.status_code == 200 and "No refused inputs." in empty.text
        assert '<a href="/refused">Refused</a>' in httpx.get(f"{base}/").text
        body = gzip.compress(json.dumps(make_report(
            org=HOSTILE, rid="r-hostile", policies=[policy("other.example", 1, 0)]),
            ensure_ascii=False).encode())  # the bidi override raw (JSON escapes ESC)
        assert httpx.post(f"{base}/v1/reports", content=body,
                          headers=GZIP_TYPE).status_code == 400
        listing = httpx.get(f"{base}/refused?format=json").json()["entries"]
        [entry] = listing
        page = httpx.get(f"{base}/refused").text
        shown = httpx.get(f"{base}/refused/{entry['id']}")
        twin = httpx.get(f"{base}/refused/{entry['id']}?format=json").json()
        missing = httpx.get(f"{base}/refused/q77")
        filtered = httpx.get(f"{base}/refused?format=json&reason=nothing-like-this").json()
    assert entry["via"] == "http" and entry["source"] == "127.0.0.1"
    assert "not one of our domains: other.example" in entry["reason"]
    assert f'<a href="/refused/{entry["id"]}">{entry["id"]}</a>' in page
    assert shown.status_code == 200 and "<script>" not in shown.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\u202eCorp\\u001b[2J" in shown.text
    assert "\u202e" not in shown.text and "\x1b" not in shown.text
    assert twin["entry"]["inflated"] is True
    assert json.loads(twin["entry"]["content"])["organization-name"] == HOSTILE
    assert missing.status_code == 404 and "no refused input with this id" in missing.text
    assert filtered == {"entries": [], "total": 0}


def test_refused_page_refuses_a_date_that_is_not_one(tmp_path: Path) -> None:
    """As on the Domains pages: 400 naming the parameter, never an empty list."""
    with Serve(tmp_path) as server:
        base = server.http_url
        bad = httpx.get(f"{base}/refused?since=2026-13-01&format=json")
        page = httpx.get(f"{base}/refused?until=yesterday")
        swapped = httpx.get(f"{base}/refused?since=2026-11-27&until=2026-11-20&format=json")
        good = httpx.get(f"{base}/refused?since=2026-11-20&until=2026-11-27&format=json")
    assert bad.status_code == 400
    assert bad.json() == {"error": "since: '2026-13-01' is not a date; use YYYY-MM-DD, "
                                   "e.g. 2026-11-01"}
    assert page.status_code == 400 and "until: &#39;yesterday&#39; is not a date" in page.text
    assert swapped.status_code == 400 and "is after until" in swapped.json()["error"]
    assert good.status_code == 200 and good.json() == {"entries": [], "total": 0}


def test_serve_counts_a_conflicting_duplicate_in_its_batch_line(tmp_path: Path) -> None:
    """The loader's batch line names the conflict it quarantined (it said 'rejected 0')."""
    first = make_report(rid="same-id", policies=[policy("example.com", 10, 0)])
    other = make_report(rid="same-id", policies=[policy("example.com", 11, 0)])
    with Serve(tmp_path, verbose=False) as server:
        for doc in (first, other):
            reply = httpx.post(f"{server.http_url}/v1/reports",
                               content=gzip.compress(json.dumps(doc).encode()),
                               headers=GZIP_TYPE)
            assert reply.status_code == 201
            server.wait_loaded()
        deadline = time.monotonic() + 60
        while not any("conflicts 1" in x for x in server.output):
            assert time.monotonic() < deadline, "".join(server.output)
            time.sleep(0.05)
        assert server.stop() == 0
    [line] = [x for x in server.output if "conflicts 1" in x]
    assert " tlswatch.service: loaded 0, duplicates 0, rejected 0, conflicts 1" in line
