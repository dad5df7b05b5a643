"""Domain names from untrusted text: checked as DNS host names before any use.

A name from a report, a URL, a Host header or a command line may become part of a file
path, a URL or a DNS query, so it is held to the host-name grammar (RFC 1123 labels of
letters, digits and hyphens; internationalised names as their A-labels; the last label not
all digits, RFC 1123 s2.1, so no IPv4 address literal passes) and nothing else.
"""

from __future__ import annotations

import functools
import re

MAX_NAME = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class BadDomain(ValueError):
    """Text that is not a DNS host name."""


@functools.lru_cache(maxsize=4096)  # the same few domains, in every report
def parse_domain(text: str) -> str:
    """The name in canonical form (lower case, A-labels, no final dot), or ``BadDomain``."""
    name = text.strip().rstrip(".").lower()
    if not name:
        raise BadDomain("empty domain name")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise BadDomain(f"not a valid internationalised domain name: {text[:80]!r}") from None
    if len(name) > MAX_NAME:
        raise BadDomain(f"domain name longer than {MAX_NAME} characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise BadDomain(f"not a DNS host name: {text[:80]!r} (labels are letters, digits "
                            "and inner hyphens, 1 to 63 long)")
    if name.rpartition(".")[2].isdigit():  # 1.2.3.4, 127.1: no top-level label is numeric
        raise BadDomain(f"not a DNS host name: {text[:80]!r} is an IP address literal (a "
                        "host name's last label is not all digits)")
    return name


def is_domain(text: str) -> bool:
    """Whether ``text`` is a DNS host name (see ``parse_domain``)."""
    try:
        parse_domain(text)
    except BadDomain:
        return False
    return True
