"""The DNS resolver the checks and lookups use: the system's, or one named server."""

from __future__ import annotations

import dns.resolver


def resolver_for(nameserver: str | None, *, lifetime: float | None = None
                 ) -> dns.resolver.Resolver:
    """A resolver asking ``nameserver`` (``IP``, ``IP:PORT`` or an IPv6 address; port 53
    by default), or the system's resolvers when it is None."""
    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        host, _, port = nameserver.rpartition(":") if nameserver.count(":") == 1 \
            else (nameserver, "", "")
        resolver.nameservers = [host or nameserver]
        resolver.port = int(port) if port else 53
    if lifetime is not None:
        resolver.lifetime = lifetime
    return resolver
