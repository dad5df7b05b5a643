"""``GET /.well-known/mta-sts.txt`` by ``Host: mta-sts.<domain>`` (RFC 8461 section 3.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tlswatch.mtasts.hosting import PolicyStore


class PolicyHost:
    def __init__(self, folder: Path) -> None:
        self.store = PolicyStore(folder)

    def routes(self) -> list[Route]:
        return [Route("/.well-known/mta-sts.txt", self.policy, methods=["GET"])]

    async def policy(self, request: Request) -> Response:
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower().rstrip(".")
        if not host.startswith("mta-sts."):
            return PlainTextResponse("not an mta-sts.<domain> host\n", status_code=404)
        hosted = await asyncio.to_thread(self.store.find, host.removeprefix("mta-sts."))
        if hosted is None:
            return PlainTextResponse(f"no policy for {host}\n", status_code=404)
        # The policy's lines end in CRLF; text/plain as RFC 8461 section 3.2 asks.
        return Response(hosted.text, media_type="text/plain")
