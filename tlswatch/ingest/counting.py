"""How many sessions a report describes: the counting rule, decided once per report at load.

A report lists one entry per policy applied, and senders lay them out differently:

* Microsoft (and libtlsrpt when a session had both policies) lists the *same* sessions
  under ``sts`` and under ``tlsa``;
* Postfix sites (sys4 tlsrpt-reporter) list each session under the one policy it used, so
  ``no-policy-found``, ``sts`` and ``tlsa`` entries are *different* sessions.

Per report and policy domain: ``no-policy-found`` entries always add to the rest.  ``sts``
and ``tlsa`` (each summed within its type) are the same sessions when their session totals
(successful + failed) are equal; then the type with more failures counts (``sts`` on a
tie), which gives sessions = that total, failed = the larger failed count, and its failure
details.  Otherwise they are different sessions and are added.  Whole policy rows count or
not, so successful, failed and per-result-type figures come from one consistent choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ADDED = "added"
SAME_SESSIONS = "same-sessions"


@dataclass(frozen=True, slots=True)
class Entry:
    """What the rule needs of one policy entry."""

    policy_domain: str
    policy_type: str
    successful: int
    failed: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Per entry, in the report's order: whether its sessions count, and under which rule."""

    counted: list[bool]
    counting: list[str]


def decide(entries: Sequence[Entry]) -> Decision:
    """Apply the rule to one report's policy entries."""
    totals: dict[tuple[str, str], list[int]] = {}
    for e in entries:
        total = totals.setdefault((e.policy_domain, e.policy_type), [0, 0])
        total[0] += e.successful + e.failed
        total[1] += e.failed
    left_out: dict[str, str] = {}  # domain -> the policy type not counted
    for (domain, ptype), (sessions, failed) in totals.items():
        if ptype != "sts" or (domain, "tlsa") not in totals:
            continue
        tlsa_sessions, tlsa_failed = totals[domain, "tlsa"]
        if sessions == tlsa_sessions:
            left_out[domain] = "sts" if tlsa_failed > failed else "tlsa"
    return Decision(
        counted=[left_out.get(e.policy_domain) != e.policy_type for e in entries],
        counting=[SAME_SESSIONS if e.policy_domain in left_out else ADDED for e in entries])


# What ``decide`` gives for a report of one policy entry (most reports): nothing to compare
# it with, so it counts and its sessions are added.
ALONE = Decision(counted=[True], counting=[ADDED])
