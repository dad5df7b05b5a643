"""Who is asking, and for which host: the client behind a trusted reverse proxy, and the
Host header held to this deployment's own names (a guard against DNS rebinding).

``X-Forwarded-For`` is anyone's text: it is read only when the peer is one of
``trusted_proxies``, and then from the right (the address the proxy itself saw) leftwards
past further trusted proxies.  From any other peer a forwarding header only takes away
the loopback exemption: it says a proxy stands in front, whose clients are unknown.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from starlette.datastructures import Headers
from starlette.types import Scope

from tlswatch.config import Settings
from tlswatch.web.policyhost import host_name

FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip",
                                b"x-forwarded-host"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForwardingError(ValueError):
    """A trusted proxy sent an X-Forwarded-For that does not hold addresses."""


@dataclass(frozen=True)
class Client:
    """The client's address, and whether it is known: a peer that sent no forwarding
    header, or the address a trusted proxy reported."""

    host: str
    known: bool

    @property
    def loopback(self) -> bool:
        address = _address(self.host)
        return self.known and address is not None and address.is_loopback


def _address(text: str) -> Address | None:
    """The IP address in ``text`` (``[v6]:port`` and ``v4:port`` too), or None."""
    text = text.strip()
    return None if len(text) > 64 else _parse_address(text)  # an address is short


@lru_cache(maxsize=4096)  # the same few peers and Host names, parsed once
def _parse_address(text: str) -> Address | None:
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


class ClientView:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(t, strict=False)
                                        for t in trusted_proxies]

    def trusted(self, host: str) -> bool:
        if not self.networks:
            return False
        address = _address(host)
        return address is not None and any(address in net for net in self.networks)

    def client(self, scope: Scope) -> Client:
        """The client as the proxy reports it (``ForwardingError`` if a trusted proxy sent
        something that is not an address), or the peer itself."""
        peer = scope["client"][0] if scope.get("client") else ""
        if not self.trusted(peer):  # (ASGI servers give header names in lower case)
            return Client(peer, known=not any(name in FORWARDING_HEADERS
                                              for name, _ in scope["headers"]))
        headers = Headers(scope=scope)
        hops = [hop.strip() for value in headers.getlist("x-forwarded-for")
                for hop in value.split(",")]
        if not hops:  # the proxy host itself, or a proxy that does not say who asked
            return Client(peer, known=False)
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                raise ForwardingError(f"X-Forwarded-For from trusted proxy {peer}: {hop[:60]!r} "
                                      "is not an IP address")
            if not self.trusted(str(address)):
                return Client(str(address), known=True)
        return Client(str(_address(hops[0])), known=True)

    def rewrite(self, scope: Scope, client: Client) -> Scope:
        """The scope as the app should see it: the real client (so per-IP limits apply to
        it) and, from a trusted proxy, the scheme the client used."""
        peer = scope["client"][0] if scope.get("client") else ""
        if not self.trusted(peer):
            return scope
        changed = {**scope, "client": (client.host, 0)}
        proto = Headers(scope=scope).get("x-forwarded-proto", "").rpartition(",")[2].strip()
        if proto.lower() in ("http", "https"):
            changed["scheme"] = proto.lower()
        return changed


class HostCheck:
    """Host headers this deployment answers to.  IP literals always pass: DNS rebinding
    needs a name the attacker controls, and an IP literal is no such name."""

    def __init__(self, settings: Settings) -> None:
        self.names = frozenset(n.lower().rstrip(".") for n in allowed_hosts(settings))
        self.any = "*" in self.names

    def allows(self, header: str | None) -> bool:
        if header is None or self.any:  # no Host: not a browser, so not a rebinding
            return True
        name = host_name(header.strip()).lower().rstrip(".")
        return name in self.names or _address(name) is not None


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """``allowed_hosts``, or by default the loopback names, the listening address and the
    names this deployment publishes (public_host, smtp_hostname, else this host's FQDN)."""
    if settings.allowed_hosts:
        return settings.allowed_hosts
    bind = host_name(settings.http) if settings.http else ""
    published = [n for n in (settings.public_host, settings.smtp_hostname) if n] or \
        [socket.getfqdn()]
    return tuple(n for n in (*LOOPBACK_NAMES, bind, *published) if n)
