"""The upload form's CSRF check happens before the body is read: in-process, with an httpx
client whose request body records whether the app ever asked for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from tests.conftest import VALID
from tlswatch.config import load_settings
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics
from tlswatch.web import create_app

BOUNDARY = "tlswatch-test-boundary"
FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"report\"; "
            f"filename=\"r.json\"\r\nContent-Type: application/json\r\n\r\n").encode() + \
        data + f"\r\n--{BOUNDARY}--\r\n".encode()


class Body:
    """A request body that notes when the server starts reading it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = False

    async def stream(self) -> AsyncIterator[bytes]:
        self.read = True
        yield self.data


@pytest.fixture
def app(tmp_path: Path) -> ASGIApp:
    settings = load_settings(None, environ={}, db=tmp_path / "t.duckdb", spool=tmp_path / "spool")
    return create_app(settings, Spool(settings.spool), Metrics())


def test_upload_without_a_server_issued_token_is_refused_before_the_body_is_read(
        app: ASGIApp) -> None:
    report = (VALID / "misc" / "with-bom.json").read_bytes()

    async def attempts() -> list[tuple[str, int, str, bool]]:
        transport = httpx.ASGITransport(app=app)
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            issued = (await c.get("/upload?format=json")).json()["csrf"]
            forged = f"{issued.partition('.')[0]}.{'0' * 64}"
            old = f"1000000000.{issued.partition('.')[2]}"
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1") as stranger:
                for name, client, params in (
                        ("no token", c, {}), ("guessed", c, {"csrf": "guess"}),
                        ("forged", c, {"csrf": forged}), ("old", c, {"csrf": old}),
                        ("no cookie", stranger, {"csrf": issued})):
                    body = Body(multipart(report))
                    reply = await client.post("/upload", params=params, headers=FORM,
                                              content=body.stream())
                    out.append((name, reply.status_code, reply.text, body.read))
                body = Body(multipart(report))
                good = await c.post("/upload", params={"csrf": issued, "format": "json"},
                                    headers=FORM, content=body.stream())
                out.append(("issued", good.status_code, good.text, body.read))
        return out

    results = asyncio.run(attempts())
    for name, status, text, read in results[:-1]:
        assert (status, read) == (403, False), (name, text)
        assert text.startswith("refused: upload: "), text
    _, status, text, read = results[-1]
    assert (status, read) == (200, True), text
    assert "accepted 1 report(s)" in text
