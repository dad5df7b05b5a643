"""``GET /.well-known/mta-sts.txt`` by ``Host: mta-sts.<domain>`` (RFC 8461 section 3.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tlswatch.dnsname import BadDomain, parse_domain
from tlswatch.mtasts.hosting import PolicyStore
from tlswatch.web.fetchlog import FetchLog

PREFIX = "mta-sts."


def host_name(header: str) -> str:
    """The name in a Host header, without the port (``[v6]:port`` included)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, colon, port = header.rpartition(":")
    return name if colon and port.isdigit() else header


def policy_host_domain(header: str) -> str | None:
    """The hosted domain a ``Host: mta-sts.<domain>`` names, or None when the header is not
    such a host name (checked before the name comes near the policy folder)."""
    try:
        name = parse_domain(host_name(header))
    except BadDomain:
        return None
    if not name.startswith(PREFIX):
        return None
    return name.removeprefix(PREFIX) or None


class PolicyHost:
    def __init__(self, folder: Path, fetch_log: FetchLog | None = None) -> None:
        self.store = PolicyStore(folder)
        self.fetch_log = fetch_log  # every answer for a hosted name's policy is recorded

    def routes(self) -> list[Route]:
        return [Route("/.well-known/mta-sts.txt", self.policy, methods=["GET"])]

    async def policy(self, request: Request) -> Response:
        header = request.headers.get("host", "")
        domain = policy_host_domain(header)
        if domain is None:
            return PlainTextResponse(f"no policy here: Host {header[:80]!r} is not "
                                     "mta-sts.<a domain name>\n", status_code=404)
        hosted = await asyncio.to_thread(self.store.hosted, domain)
        if self.fetch_log is not None:  # the client behind a trusted proxy (see Guard)
            self.fetch_log.record(domain, request.client.host if request.client else "",
                                  hosted.id if hosted else None, 200 if hosted else 404)
        if hosted is None:
            return PlainTextResponse(f"no policy for {PREFIX}{domain}\n", status_code=404)
        # The policy's lines end in CRLF; text/plain as RFC 8461 section 3.2 asks.
        # The ETag is the policy's id: what the _mta-sts TXT record must name.
        return Response(hosted.text, media_type="text/plain",
                        headers={"ETag": f'"{hosted.id}"'})
