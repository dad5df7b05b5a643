"""Summaries and alerts as messages: mail (SMTP with STARTTLS and login) and a JSON webhook.

A message is rendered once, when it is put in the outbox, and sent (one attempt at a time)
by the delivery worker (``tlswatch.outbox``), which retries it with back-off.

Chat text (the webhook's ``text``, read by Slack and Mattermost) treats every character
as plain text: ``&``, ``<``, ``>`` become entities as Slack requires, so no ``<!channel>``,
``<@U123>`` or ``<url|text>`` can form; emphasis, code and heading marks are replaced by
look-alikes, ``@`` by a full-width at sign, and a zero-width space after ``.`` and ``:``
keeps domains and URLs from turning into links.  Report data (organisation names,
domains, reason codes) can then neither mention anyone nor link anywhere.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tlswatch.config import Settings
from tlswatch.deferred import deferred

if TYPE_CHECKING:
    import httpx
else:
    httpx = deferred("httpx")  # only a webhook delivery needs it (a twentieth of a second)

MAIL, WEBHOOK = "mail", "webhook"

_CHAT = str.maketrans({
    "&": "&amp;", "<": "&lt;", ">": "&gt;",  # Slack's control characters
    "*": "\u2217", "_": "\u02cd", "~": "\u02dc", "`": "\u02cb",  # emphasis, strike, code
    "#": "\uff03", "@": "\uff20", "[": "\uff3b", "]": "\uff3d",  # headings, mentions, links
    "|": "\u2223",
    ".": ".\u200b", ":": ":\u200b",  # domain.example and scheme:// never form a link
})


def chat_text(text: str) -> str:
    """``text`` as Slack/Mattermost plain text: no mention, link or markup can form."""
    return text.translate(_CHAT)


@dataclass(frozen=True)
class Message:
    """One delivery: a mail to a group of recipients, or one post to the webhook."""

    channel: str
    recipient: str  # the addresses, comma-separated, or "webhook"
    subject: str
    body: dict[str, Any]  # mail: text (and html); webhook: the JSON payload


def recipients(settings: Settings, domains: Sequence[str]) -> dict[tuple[str, ...], list[str]]:
    """Which recipient gets which domains: everyone in mail_to all, others their own."""
    wanted: dict[str, set[str]] = {r: set(domains) for r in settings.mail_to}
    for domain in domains:
        for person in settings.mail_to_domains.get(domain, ()):
            wanted.setdefault(person, set()).add(domain)
    groups: dict[tuple[str, ...], list[str]] = {}
    for person, theirs in wanted.items():
        groups.setdefault(tuple(sorted(theirs)), []).append(person)
    return groups


def messages(settings: Settings, *, subject: str, by_domain: dict[str, str],
             html: Callable[[list[str]], str] | None = None,
             payload: dict[str, Any] | None = None) -> list[Message]:
    """A mail per recipient group with the parts for their domains; everything to the webhook.

    ``by_domain`` holds the plain text for each domain.
    """
    out = []
    if settings.mail_smtp:
        for domains, people in recipients(settings, sorted(by_domain)).items():
            body = {"text": "\n\n".join(by_domain[d] for d in domains)}
            if html is not None:
                body["html"] = html(list(domains))
            out.append(Message(MAIL, ", ".join(people), subject, body))
    if settings.webhook_url:
        text = chat_text(f"{subject}\n\n" + "\n\n".join(by_domain.values()))
        out.append(Message(WEBHOOK, WEBHOOK, subject, {**(payload or {}), "text": text}))
    return out


def destination(settings: Settings, channel: str, recipient: str) -> str:
    """How a delivery is named in messages and logs (the webhook by host: its URL is a key)."""
    if channel == WEBHOOK:
        return f"webhook at {urlsplit(settings.webhook_url).hostname or '(not set)'}"
    return f"mail to {recipient}"


def send(settings: Settings, channel: str, recipient: str, subject: str,
         body: dict[str, Any]) -> None:
    """Make one attempt; raise whatever went wrong."""
    if channel == WEBHOOK:
        _post_webhook(settings, body)
    elif channel == MAIL:
        _send_mail(settings, [r.strip() for r in recipient.split(",")], subject, body)
    else:
        raise ValueError(f"unknown delivery channel {channel!r}")


def _send_mail(settings: Settings, to: list[str], subject: str, body: dict[str, Any]) -> None:
    if not settings.mail_smtp:
        raise RuntimeError("setting mail_smtp is empty: no server to send mail through")
    host, _, port = settings.mail_smtp.rpartition(":")
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(body["text"])
    if body.get("html") is not None:
        message.add_alternative(body["html"], subtype="html")
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.ehlo()
        if settings.mail_starttls:
            context = ssl.create_default_context(cafile=settings.mail_ca_bundle or None)
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.mail_username:
            smtp.login(settings.mail_username, os.environ.get(settings.mail_password_env, ""))
        smtp.send_message(message)


def _post_webhook(settings: Settings, payload: dict[str, Any]) -> None:
    if not settings.webhook_url:
        raise RuntimeError("setting webhook_url is empty: nowhere to post")
    reply = httpx.post(settings.webhook_url, json=payload, timeout=15)
    if reply.is_error:  # httpx's own message holds the URL, which is a secret
        raise RuntimeError(f"the webhook answered {reply.status_code} {reply.reason_phrase}")
