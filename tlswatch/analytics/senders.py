"""The big senders, recognised by the address they fetch policies from and by the
organisation name in their reports.

An address is a sender's when it is in one of the sender's ranges: the built-in ones
below (the outbound mail networks each publishes in its SPF records; Apple owns
17.0.0.0/8) plus the operator's ``sender_ranges``.  Otherwise, with ``sender_ptr``, its
reverse DNS name decides, when a forward lookup of that name gives the address back
(forward-confirmed: anyone can put any name in the reverse zone of their own addresses).
Lookups are kept an hour and limited to ``sender_ptr_time`` seconds per page or command.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.resolver
import dns.reversename

from tlswatch.config import Settings
from tlswatch.resolver import resolver_for

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Sender:
    name: str
    organizations: tuple[str, ...]  # words found in its reports' organization-name
    names: tuple[str, ...]  # DNS suffixes of its hosts (PTR)
    ranges: tuple[str, ...]  # published address ranges


BIG_SENDERS = (
    Sender("Google", ("google",), ("google.com", "1e100.net", "googlemail.com"),
           ("35.190.247.0/24", "64.233.160.0/19", "66.102.0.0/20", "66.249.80.0/20",
            "72.14.192.0/18", "74.125.0.0/16", "108.177.8.0/21", "173.194.0.0/16",
            "209.85.128.0/17", "216.58.192.0/19", "216.239.32.0/19", "2001:4860:4000::/36",
            "2404:6800:4000::/36", "2607:f8b0:4000::/36", "2800:3f0:4000::/36",
            "2a00:1450:4000::/36", "2c0f:fb50:4000::/36")),
    Sender("Microsoft", ("microsoft", "outlook", "hotmail"),
           ("outlook.com", "microsoft.com", "hotmail.com"),
           ("40.92.0.0/15", "40.107.0.0/16", "52.100.0.0/14", "104.47.0.0/17",
            "2a01:111:f400::/48", "2a01:111:f403::/48")),
    Sender("Yahoo", ("yahoo", "oath", "aol"), ("yahoo.com", "yahoo.net", "yahoodns.net",
                                               "aol.com"),
           ("98.136.0.0/14", "74.6.0.0/16", "67.195.0.0/16")),
    Sender("Apple iCloud", ("apple", "icloud"), ("apple.com", "icloud.com"), ("17.0.0.0/8",)),
    Sender("Comcast", ("comcast",), ("comcast.net",), ()),
    Sender("Mail.ru", ("mail.ru",), ("mail.ru",), ()),
    Sender("Yandex", ("yandex",), ("yandex.net", "yandex.ru"), ()),
)


def sender_of_organization(name: str) -> str | None:
    """The big sender a report's organization-name names, or None."""
    lowered = name.lower()
    return next((s.name for s in BIG_SENDERS if any(w in lowered for w in s.organizations)),
                None)


class _Cache:
    """Reverse lookups, kept an hour (at most 10,000 addresses)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    def get(self, ip: str) -> tuple[bool, str | None]:
        with self.lock:
            found = self.answers.get(ip)
        if found is None or found[0] < time.monotonic():
            return False, None
        return True, found[1]

    def put(self, ip: str, name: str | None) -> None:
        with self.lock:
            self.answers[ip] = (time.monotonic() + 3600, name)
            self.answers.move_to_end(ip)
            while len(self.answers) > 10_000:
                self.answers.popitem(last=False)


_CACHE = _Cache()


class SenderMap:
    """Address -> big sender (or None), for one page or command."""

    def __init__(self, settings: Settings, *, nameserver: str | None = None) -> None:
        self.ranges: list[tuple[Network, str]] = [
            (ipaddress.ip_network(r, strict=False), s.name)
            for s in BIG_SENDERS for r in s.ranges]
        self.ranges += [(ipaddress.ip_network(r, strict=False), name)
                        for name, ranges in settings.sender_ranges.items() for r in ranges]
        self.ptr = settings.sender_ptr
        self.budget = settings.sender_ptr_time
        self.resolver = resolver_for(nameserver or settings.check_nameserver or None)
        self.deadline: float | None = None

    def by_range(self, ip: str) -> str | None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        # The operator's ranges come last and are more specific: the longest match wins.
        found = [(net.prefixlen, name) for net, name in self.ranges if address in net]
        return max(found)[1] if found else None

    def classify(self, ips: Iterable[str]) -> dict[str, str | None]:
        """Each address's sender; by range first, then (time allowing) by reverse DNS."""
        out = {ip: self.by_range(ip) for ip in ips}
        if self.ptr:
            self.deadline = time.monotonic() + self.budget
            for ip in sorted(ip for ip, name in out.items() if name is None):
                out[ip] = self.by_name(ip)
        return out

    def by_name(self, ip: str) -> str | None:
        host = self.reverse_name(ip)
        if host is None:
            return None
        return next((s.name for s in BIG_SENDERS for suffix in s.names
                     if host == suffix or host.endswith("." + suffix)), None)

    def reverse_name(self, ip: str) -> str | None:
        """The forward-confirmed PTR name of ``ip`` (cached), or None."""
        known, name = _CACHE.get(ip)
        if known:
            return name
        left = (self.deadline or time.monotonic() + self.budget) - time.monotonic()
        if left <= 0:
            return None  # out of time: not cached, looked up next time
        self.resolver.lifetime = left
        name = None
        try:
            answer = self.resolver.resolve(dns.reversename.from_address(ip), "PTR")
            for record in answer:
                candidate = record.to_text().rstrip(".").lower()
                if self._confirms(candidate, ip):
                    name = candidate
                    break
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            pass
        except (dns.exception.Timeout, dns.exception.DNSException, ValueError):
            return None  # not cached: a later page may get an answer
        _CACHE.put(ip, name)
        return name

    def _confirms(self, host: str, ip: str) -> bool:
        kind = "AAAA" if ":" in ip else "A"
        try:
            answer = self.resolver.resolve(host, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return False
        wanted = ipaddress.ip_address(ip)
        return any(ipaddress.ip_address(r.to_text()) == wanted for r in answer)
