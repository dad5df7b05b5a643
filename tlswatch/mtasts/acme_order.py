"""One ACME order (RFC 8555) for one host name, with certbot's ``acme`` library: the
account (its key kept by the caller), the HTTP-01 challenge (RFC 8555 section 8.3) answered
through ``publish``, the finalisation, the full chain.

Nothing here touches the store: the caller publishes each challenge where every 'serve'
node can answer it, and keeps the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import josepy as jose
from acme import challenges, client, errors, messages
from acme import crypto_util as acme_crypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tlswatch import __version__

Publish = Callable[[str, str], None]  # (token, key authorization) -> None, before validation
ORDER_TIMEOUT = 90.0  # seconds for the server to validate and issue one certificate


class AcmeFailure(Exception):
    """An ACME order or account request failed; the message says which and why."""


@dataclass(frozen=True)
class Issued:
    cert_pem: str  # the full chain: the certificate, then the intermediates
    key_pem: str
    not_after: datetime  # naive UTC, as the store keeps times


def new_account_key() -> str:
    """A new account key (RSA 2048, the algorithm every ACME server accepts), as PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pem(key)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class AcmeClient:
    """A session with one ACME server, logged in with the account of ``account_key_pem``
    (registered on first use; an account that exists already is found by its key)."""

    def __init__(self, directory: str, account_key_pem: str, *, email: str = "",
                 ca_bundle: str = "", timeout: int = 30) -> None:
        key = serialization.load_pem_private_key(account_key_pem.encode(), password=None)
        self.key = jose.JWKRSA(key=cast(rsa.RSAPrivateKey, key))
        # requests takes a CA bundle's path where the library's hint says bool.
        verify = cast(bool, ca_bundle) if ca_bundle else True
        self.net = client.ClientNetwork(self.key, verify_ssl=verify, timeout=timeout,
                                        user_agent=f"tlswatch/{__version__}")
        self.directory_url = directory
        try:
            self.acme = client.ClientV2(client.ClientV2.get_directory(directory, self.net),
                                        net=self.net)
            self.account_uri = self._log_in(email)
        except (errors.Error, messages.Error, OSError) as exc:
            raise AcmeFailure(f"ACME server {directory}: {_say(exc)}") from None

    def _log_in(self, email: str) -> str:
        registration = messages.NewRegistration.from_data(
            email=email or None, terms_of_service_agreed=True)
        try:
            return str(self.acme.new_account(registration).uri)
        except errors.ConflictError as exc:  # this key's account exists: use it
            uri = str(exc.location)
            self.net.account = messages.RegistrationResource(uri=uri,
                                                             body=messages.Registration())
            return uri

    def order(self, name: str, publish: Publish) -> Issued:
        """Obtain a certificate for ``name`` (a new P-256 key) by HTTP-01."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = _pem(key)
        try:
            csr = acme_crypto.make_csr(key_pem.encode(), [name])
            order = self.acme.new_order(csr)
            for authorization in order.authorizations:
                self._answer(name, authorization, publish)
            deadline = datetime.now() + timedelta(seconds=ORDER_TIMEOUT)
            done = self.acme.poll_and_finalize(order, deadline=deadline)
        except errors.ValidationError as exc:
            raise AcmeFailure(f"{name}: validation failed: {_failed(exc)}") from None
        except (errors.Error, messages.Error, OSError) as exc:
            raise AcmeFailure(f"{name}: {_say(exc)}") from None
        chain = done.fullchain_pem
        leaf = x509.load_pem_x509_certificate(chain.encode())
        return Issued(chain, key_pem, leaf.not_valid_after_utc.astimezone(UTC)
                      .replace(tzinfo=None))

    def _answer(self, name: str, authorization: messages.AuthorizationResource,
                publish: Publish) -> None:
        if authorization.body.status == messages.STATUS_VALID:
            return  # validated before (the server reuses a recent authorisation)
        for challenge in authorization.body.challenges:
            if isinstance(challenge.chall, challenges.HTTP01):
                response, validation = challenge.response_and_validation(self.key)
                publish(challenge.chall.encode("token"), validation)
                self.acme.answer_challenge(challenge, response)
                return
        offered = ", ".join(str(c.chall.typ) for c in authorization.body.challenges)
        raise AcmeFailure(f"{name}: the ACME server offers no http-01 challenge (offered: "
                          f"{offered or 'none'})")


def _failed(exc: errors.ValidationError) -> str:
    """What the server said about each failed authorisation."""
    said = []
    for authorization in exc.failed_authzrs:
        for challenge in authorization.body.challenges:
            error: Any = challenge.error
            if error is not None:
                said.append(f"{challenge.chall.typ}: {error.detail or error.code}")
    return "; ".join(said) or "the server refused the authorisation"


def _say(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "..."
