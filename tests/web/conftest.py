"""Shared by the dashboard tests: a real `serve` loaded with the samples and a hostile report."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VALID, detail, make_report, policy, write_json
from tests.serving import CLI, Serve

HOSTILE = "Evil <script>alert('org')</script> Ltd"


def loaded_serve(root: Path, **settings: object) -> Serve:
    server = Serve(root, smtp="", **settings)
    evil = make_report(org=HOSTILE, rid="<script>rid</script>", day="2026-11-26", policies=[
        policy("evil.example", 10, 3, [{**detail("certificate-expired", 3),
                                        "failure-reason-code": "<script>alert('code')</script>"}])])
    write_json(root / "evil.json", evil)
    subprocess.run([*CLI, "--db", str(server.db), "ingest", str(VALID), str(root / "evil.json")],
                   check=True, capture_output=True)
    return server.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    running = loaded_serve(tmp_path_factory.mktemp("serve"))
    try:
        yield running
    finally:
        running.kill()
