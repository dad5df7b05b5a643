"""The MTA-STS policy file (RFC 8461 section 3.2) and the MX pattern rule (section 4.1)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 section 3.2: at most one year
ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,32}$")
_LINE = re.compile(r"^([A-Za-z0-9_.-]+):[ \t]*(.*?)[ \t]*$")
_HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}\.?$", re.I)


@dataclass(frozen=True)
class Problem:
    severity: str  # error | warning | info
    code: str
    message: str


@dataclass
class Policy:
    version: str | None = None
    mode: str | None = None
    max_age: int | None = None
    mx: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def parse_policy(text: str) -> Policy:
    """Parse by the RFC 8461 grammar: CRLF (LF accepted), first value of a key wins (but mx
    may repeat), unknown keys are noted and ignored."""
    policy = Policy()
    seen: set[str] = set()
    if "\n" in text and "\r\n" not in text:
        policy.problems.append(Problem("info", "policy_lf_line_endings",
                                       "lines end in LF, not CRLF (accepted by senders)"))
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not raw.strip():
            continue
        match = _LINE.match(raw)
        if not match:
            policy.problems.append(Problem("error", "policy_syntax",
                                           f"line {number} is not 'key: value': {raw[:60]!r}"))
            continue
        key, value = match.group(1).lower(), match.group(2)
        if key == "mx":
            policy.mx.append(value)
            continue
        if key in seen:
            policy.problems.append(Problem("warning", "policy_repeated_key",
                                           f"{key} is given again on line {number}; the first "
                                           "value counts"))
            continue
        seen.add(key)
        if key == "version":
            policy.version = value
        elif key == "mode":
            policy.mode = value
        elif key == "max_age":
            if value.isdigit() and len(value) <= 10:
                policy.max_age = int(value)
            else:
                policy.problems.append(Problem("error", "policy_max_age_invalid",
                                               f"max_age must be whole seconds, got {value!r}"))
        else:
            policy.problems.append(Problem("info", "policy_unknown_key",
                                           f"unknown key {key!r} ignored"))
    _check_fields(policy)
    return policy


def _check_fields(policy: Policy) -> None:
    add = policy.problems.append
    if policy.version != "STSv1":
        add(Problem("error", "policy_version", f"version must be STSv1, got "
                    f"{policy.version!r}"))
    if policy.mode not in ("enforce", "testing", "none"):
        add(Problem("error", "policy_mode", f"mode must be enforce, testing or none, got "
                    f"{policy.mode!r}"))
    if policy.max_age is None and not any(p.code == "policy_max_age_invalid"
                                          for p in policy.problems):
        add(Problem("error", "policy_max_age_missing", "max_age is missing"))
    elif policy.max_age is not None and policy.max_age > MAX_AGE_LIMIT:
        add(Problem("error", "policy_max_age_too_large",
                    f"max_age {policy.max_age} is over the limit of {MAX_AGE_LIMIT}"))
    if not policy.mx and policy.mode != "none":
        add(Problem("error", "policy_mx_missing", "no mx line; one or more are required "
                    "unless mode is none"))
    for pattern in policy.mx:
        if not _HOST.match(pattern):
            add(Problem("error", "policy_mx_invalid", f"mx {pattern!r} is not a host name or "
                        "*.-pattern"))


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 section 4.1: '*' stands for exactly the whole left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def covered_by(host: str, patterns: list[str]) -> bool:
    return any(mx_matches(p, host) for p in patterns)


def render_policy(mode: str, mx: list[str], max_age: int) -> str:
    """The policy file, CRLF lines (RFC 8461 section 3.2)."""
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def policy_id(text: str, revision: int = 0) -> str:
    """An id that changes whenever the policy's content changes (1-32 letters/digits).

    ``revision`` counts the changes of a hosted policy, so a change that keeps (or goes
    back to) a content already served still gets an id never used before; revision 0 is
    the content alone, the id every policy had before revisions were counted."""
    salt = f"\nrevision: {revision}" if revision else ""
    return hashlib.sha256((text + salt).encode()).hexdigest()[:20]
