"""What ``serve`` does on SIGHUP: load the TLS certificate again and take the settings that
are safe to change while it runs.

The certificate chain and key are loaded into the listeners' own ``SSLContext`` objects:
every handshake after that uses them, connections already open keep theirs, and no
listener is closed.  The files are read once into memory and tried in a scratch context
first, so a broken or mismatched pair (or one half-written by a renewal) leaves the
running certificate in place.

Settings: the ones read only by the loader and the worker process (alert rules, daily
files, mail and webhook, deliveries, keeping of spool files) are reloaded by restarting
those processes after their current batch or message.  The rest shape the listeners, the
receivers' checks or the web app, which are built once: a change to them is logged as
needing a restart and the running value is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

from tlswatch.config import Settings
from tlswatch.errors import ConfigError, TlsWatchError

log = logging.getLogger(__name__)

# Settings taken on SIGHUP: read only by the loader and the worker process (restarted with
# them), the certificate's paths (loaded into the running listeners) and the keeping of
# spool/failed (set on the running spool).
RELOADABLE = frozenset({
    "tls_cert", "tls_key",
    "alert_success_threshold", "alert_spike_factor", "alert_silent_days", "max_alerts_per_day",
    "export_dir", "export_time", "export_formats",
    "mail_smtp", "mail_starttls", "mail_username", "mail_password_env", "mail_ca_bundle",
    "mail_from", "mail_to", "mail_to_domains", "webhook_url",
    "delivery_attempts", "delivery_backoff", "delivery_interval",
    "loader_interval", "loader_restart_max", "batch_size", "max_batch_bytes",
    "spool_keep_days", "failed_keep_days", "failed_max_bytes",
    "acme_directory", "acme_email", "acme_ca_bundle", "acme_addresses", "acme_renew_days",
    "acme_alert_days", "acme_retry_min", "acme_retry_max", "acme_refresh",
})


@dataclasses.dataclass(frozen=True)
class Reload:
    """The settings to run with after a reload, and what changed."""

    settings: Settings
    reloaded: tuple[str, ...]  # changed and taken
    needs_restart: tuple[str, ...]  # changed, running value kept


def plan_reload(running: Settings, new: Settings) -> Reload:
    """Take the changed settings of RELOADABLE; keep the running value of every other one.

    TLS cannot be switched on or off without a restart (the listeners are built with or
    without it); with TLS on, new certificate paths are fine.
    """
    changed = [f.name for f in dataclasses.fields(Settings)
               if getattr(running, f.name) != getattr(new, f.name)]
    tls_switch = bool(running.tls_cert) != bool(new.tls_cert)
    taken = [n for n in changed if n in RELOADABLE and not (tls_switch and n.startswith("tls_"))]
    kept = [n for n in changed if n not in taken]
    settings = running.replace(**{n: getattr(new, n) for n in taken})
    return Reload(settings, tuple(taken), tuple(kept))


class CertificateError(ConfigError):
    """The new certificate or key cannot be used; the running one stays."""


def _no_password() -> str:
    # An encrypted key would make OpenSSL prompt on the terminal: refuse it instead.
    raise CertificateError("the key is encrypted (tlswatch takes an unencrypted key)")


@contextlib.contextmanager
def _in_memory(data: bytes, name: str) -> Iterator[str]:
    """A path to ``data`` held in memory only (the key never touches a disk)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def load_certificate(contexts: list[ssl.SSLContext], cert: str, key: str) -> str:
    """Load the chain in ``cert`` and the key in ``key`` (or in ``cert``) into every context;
    return the certificate's name and end of validity.

    Raises CertificateError naming the file and the reason; then no context changed.
    """
    try:
        cert_pem = Path(cert).read_bytes()
        key_pem = Path(key).read_bytes() if key else cert_pem
    except OSError as exc:
        raise CertificateError(f"{exc.filename}: cannot read: {exc.strerror}") from exc
    with _in_memory(cert_pem, "tls-cert") as cert_path, \
            _in_memory(key_pem, "tls-key") as key_path:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                cert_path, key_path, password=_no_password)
        except ssl.SSLError as exc:
            raise CertificateError(_why(cert_pem, key_pem, cert, key or cert)) from exc
        for context in contexts:  # the same bytes, tried above: this cannot fail halfway
            context.load_cert_chain(cert_path, key_path, password=_no_password)
    return describe(cert_pem)


def _why(cert_pem: bytes, key_pem: bytes, cert: str, key: str) -> str:
    """Which file is wrong, in words (OpenSSL only says 'PEM lib')."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        return f"{cert}: no PEM certificate in it"
    try:
        private = load_pem_private_key(key_pem, password=None)
    except TypeError:
        return f"{key}: the key is encrypted (tlswatch takes an unencrypted key)"
    except ValueError:
        return f"{key}: no PEM private key in it"
    if private.public_key() != leaf.public_key():
        return f"{key}: this key does not belong to the certificate in {cert}"
    return f"{cert}, {key}: OpenSSL cannot use them"


def describe(cert_pem: bytes) -> str:
    """'reports.example.com, valid until 2027-02-26' for the log."""
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    try:
        names = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    name = names[0] if names else leaf.subject.rfc4514_string()
    return f"{name}, valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


def reload_settings(running: Settings, reread: Callable[[], Settings] | None,
                    contexts: list[ssl.SSLContext]) -> Reload:
    """SIGHUP: read the settings again, load the certificate into ``contexts``; log what
    was taken, what needs a restart and what failed (the running value stays)."""
    every = {"every_time": True}  # each SIGHUP is an operator's act: log every outcome
    log.info("SIGHUP: reloading the settings and the TLS certificate", extra=every)
    new = running
    if reread is not None:
        try:
            new = reread()
        except TlsWatchError as exc:
            log.error("reload: %s; the running settings stay", exc, extra=every)
    plan = plan_reload(running, new)
    if plan.needs_restart:
        log.warning("reload: changed, but taken only by a restart (the running values "
                    "stay): %s", ", ".join(plan.needs_restart), extra=every)
    if not contexts:
        return plan
    try:
        loaded = load_certificate(contexts, plan.settings.tls_cert, plan.settings.tls_key)
    except TlsWatchError as exc:
        log.error("reload: %s; the running certificate stays", exc, extra=every)
        return plan_reload(running, plan.settings.replace(tls_cert=running.tls_cert,
                                                          tls_key=running.tls_key))
    log.info("reload: TLS certificate loaded from %s (%s)", plan.settings.tls_cert, loaded,
             extra=every)
    return plan
