"""What a reader may see: every domain, or the domains one tenant owns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """``domains`` None: everything (the operator, the single-tenant logins); otherwise
    only these policy domains, an empty set meaning none."""

    tenant: str | None = None
    domains: frozenset[str] | None = None
    role: str = "admin"
    who: str = ""  # the login, as a change history names it ("user:NAME", "token:NAME")

    @property
    def everything(self) -> bool:
        return self.domains is None

    def allows(self, domain: str) -> bool:
        return self.domains is None or domain.lower().rstrip(".") in self.domains

    def clause(self, column: str) -> tuple[str | None, list[str]]:
        """A SQL condition keeping ``column`` (a policy domain) in scope, and its
        parameters; None when nothing is left out."""
        if self.domains is None:
            return None, []
        if not self.domains:
            return "1 = 0", []
        names = sorted(self.domains)
        return f"{column} IN ({', '.join('?' for _ in names)})", names


EVERYTHING = Scope()
