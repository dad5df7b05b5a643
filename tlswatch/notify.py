"""Sending summaries and alerts: mail (SMTP with STARTTLS and login) and a JSON webhook.

A failed delivery is retried, then logged and reported back; it never raises, so a broken
mail server cannot stop the service.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from typing import Any

import httpx

from tlswatch.config import Settings

log = logging.getLogger(__name__)


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


def _retry(what: str, attempts: int, action: Callable[[], None]) -> str | None:
    error = None
    for attempt in range(1, max(1, attempts) + 1):
        try:
            action()
            return None
        except Exception as exc:  # any failure is reported, none is fatal
            error = f"{type(exc).__name__}: {exc}"
            log.warning("%s failed (attempt %d of %d): %s", what, attempt, attempts, error)
            if attempt < attempts:
                time.sleep(min(30.0, 0.5 * 4 ** (attempt - 1)))
    return error


def send_mail(settings: Settings, to: Sequence[str], subject: str, text: str,
              html: str | None = None) -> str | None:
    """Send one message; return None, or the error after the last attempt."""
    if not settings.mail_smtp or not to:
        return None
    host, _, port = settings.mail_smtp.rpartition(":")
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")

    def action() -> None:
        with smtplib.SMTP(host, int(port), timeout=30) as smtp:
            smtp.ehlo()
            if settings.mail_starttls:
                context = ssl.create_default_context(cafile=settings.mail_ca_bundle or None)
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.mail_username:
                smtp.login(settings.mail_username,
                           os.environ.get(settings.mail_password_env, ""))
            smtp.send_message(message)

    return _retry(f"mail to {', '.join(to)}", settings.delivery_attempts, action)


def post_webhook(settings: Settings, payload: dict[str, Any]) -> str | None:
    if not settings.webhook_url:
        return None

    def action() -> None:
        reply = httpx.post(settings.webhook_url, json=payload, timeout=15)
        reply.raise_for_status()

    return _retry(f"webhook {settings.webhook_url}", settings.delivery_attempts, action)


def deliver(settings: Settings, *, subject: str, by_domain: dict[str, str],
            html: Callable[[list[str]], str] | None = None,
            payload: dict[str, Any] | None = None) -> list[str]:
    """Mail each recipient the parts for their domains; post everything to the webhook.

    ``by_domain`` holds the text for each domain.  Returns the errors (empty: delivered).
    """
    errors = []
    for domains, people in recipients(settings, sorted(by_domain)).items():
        text = "\n\n".join(by_domain[d] for d in domains)
        error = send_mail(settings, people, subject, text,
                          html(list(domains)) if html is not None else None)
        if error:
            errors.append(error)
    if settings.webhook_url:
        body = {"text": f"{subject}\n\n" + "\n\n".join(by_domain.values()), **(payload or {})}
        error = post_webhook(settings, body)
        if error:
            errors.append(error)
    return errors
