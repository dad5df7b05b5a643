"""The HTTP-01 answers on the main HTTP listener: any Host (the names being certified are
the customers', not this server's), no login, nothing but pending tokens."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import httpx

from tlswatch.config import Settings
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics
from tlswatch.mtasts.acme_records import save_challenge
from tlswatch.store import Store
from tlswatch.web import create_app


def test_challenges_are_answered_for_any_host_and_only_pending_ones(
        tmp_path: Path, db: Path | str) -> None:
    settings = Settings(db=db, spool=tmp_path / "spool", policy_dir=tmp_path / "policies",
                        allowed_hosts=("reports.example.net",), web_auth="always",
                        web_token="secret")
    with Store.open(db) as store:
        save_challenge(store, "tok-EN_1", "tok-EN_1.thumbprint", "mta-sts.customer.example",
                       datetime(2026, 11, 28, 10, 0))
    app = create_app(settings, Spool(settings.spool), Metrics())
    customer = {"Host": "mta-sts.customer.example"}

    async def ask() -> list[tuple[int, str]]:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
            answers = [await c.get("/.well-known/acme-challenge/tok-EN_1", headers=customer),
                       await c.get("/.well-known/acme-challenge/other", headers=customer),
                       await c.get("/.well-known/acme-challenge/a.b", headers=customer),
                       await c.get("/alerts", headers=customer)]
            return [(a.status_code, a.text) for a in answers]

    (ok, body), (unknown, _), (malformed, _), (elsewhere, _) = asyncio.run(ask())
    assert (ok, body) == (200, "tok-EN_1.thumbprint")
    assert (unknown, malformed) == (404, 404)
    assert elsewhere == 421  # the rest of the site stays behind allowed_hosts
