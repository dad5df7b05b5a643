"""The DNS records a tenant publishes for a domain it hosts here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlswatch.config import Settings
from tlswatch.mtasts.hosting import HostedPolicy, PolicyStore, init_policy, records
from tlswatch.store import Store
from tlswatch.tenants.registry import add_domain


def onboard(store: Store, settings: Settings, domain: str, *, tenant: str,
            mx: list[str] | None = None, mode: str = "testing", max_age: int = 86400
            ) -> dict[str, Any]:
    """Record that ``tenant`` owns ``domain`` (and host its policy when ``mx`` is given);
    return what to publish (see ``domain_records``)."""
    domain = add_domain(store, domain, tenant)
    if mx:
        init_policy(settings, domain, mx=mx, mode=mode, max_age=max_age)
    return {"domain": domain, "tenant": tenant, **domain_records(settings, domain)}


def domain_records(settings: Settings, domain: str) -> dict[str, Any]:
    """The records for ``domain``, from the builder 'policy init' uses: CNAME of
    mta-sts.DOMAIN to this deployment, the ``_mta-sts`` TXT with the hosted policy's id,
    the ``_smtp._tls`` TXT naming this deployment first; and the policy's URL and id (none
    hosted yet: no ``_mta-sts`` record, and a note saying how to host one)."""
    policy = PolicyStore(Path(settings.policy_dir)).find(domain)
    notes = []
    if policy is None:
        dns = [r for r in records(settings, HostedPolicy(domain, "testing", [], 86400))
               if not (r["name"].startswith("_mta-sts.") and r["type"] == "TXT")]
        notes.append(f"no policy is hosted for {domain} yet: 'tlswatch policy init {domain} "
                     "--mx HOST' writes one and prints its _mta-sts TXT record")
    else:
        dns = records(settings, policy)
        dns = [r for r in dns if r["type"] == "CNAME"] + [r for r in dns if r["type"] != "CNAME"]
    return {"policy_url": f"https://mta-sts.{domain}/.well-known/mta-sts.txt",
            "policy_id": policy.id if policy else None, "records": dns, "notes": notes}
