"""CSRF tokens issued by the server: ``<issued>.<HMAC(secret, session, issued)>``.

The session is a random cookie the server sets (HttpOnly, SameSite=Strict); the secret lives
in this process only, so no client can make a token, and a token is good for one session
for ``TOKEN_LIFETIME`` seconds.  The upload form carries its token in the URL it posts to
(or an ``X-CSRF-Token`` header), so it is checked before a byte of the body is read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "tlswatch_csrf"
HEADER = "x-csrf-token"
TOKEN_LIFETIME = 2 * 3600


class CsrfTokens:
    def __init__(self, *, lifetime: int = TOKEN_LIFETIME) -> None:
        self.secret = secrets.token_bytes(32)
        self.lifetime = lifetime

    @staticmethod
    def session(cookie: str | None) -> str:
        """The client's session, or a new one when its cookie is missing or not ours."""
        if cookie and len(cookie) == 32 and cookie.isalnum():
            return cookie
        return secrets.token_hex(16)

    def _mac(self, session: str, issued: int) -> str:
        return hmac.new(self.secret, f"{session}|{issued}".encode(), hashlib.sha256).hexdigest()

    def issue(self, session: str) -> str:
        issued = int(time.time())
        return f"{issued}.{self._mac(session, issued)}"

    def problem(self, token: str, cookie: str | None) -> str:
        """Why the token is refused for this session ("" when it is good)."""
        if not token:
            return "the form carries no CSRF token"
        if not cookie:
            return "no session cookie came with the form (cookies blocked?)"
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or len(issued_text) > 12:
            return "the CSRF token is malformed"
        issued = int(issued_text)
        if not hmac.compare_digest(mac, self._mac(cookie, issued)):
            return "the CSRF token was not issued to this session (or the server restarted)"
        if not 0 <= time.time() - issued <= self.lifetime:
            return f"the form is older than {self.lifetime // 3600} hours"
        return ""
