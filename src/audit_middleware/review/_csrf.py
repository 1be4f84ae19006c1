"""Cross-site request forgery protection for the review app's POSTs.

The app is mounted inside the Core API, whose session cookie the browser sends with any
request to it, also one another site's page makes. Two checks, both required:

- **same origin**: a POST whose ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site``, or whose
  ``Origin`` names another host or port than the request's ``Host``, is refused;
- **a token**: the HTML form carries a token bound to the admin (organization and user) and to
  the hour it was issued, an HMAC under the app's secret; it is valid for ``CSRF_TOKEN_TTL``.
  The JSON API instead requires ``Content-Type: application/json``, which a page of another
  site cannot send without a CORS preflight the Core API does not grant.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["CSRF_TOKEN_TTL", "CsrfTokens", "cross_origin_reason"]

CSRF_TOKEN_TTL = 12 * 3600
"""How long a form token stays valid, in seconds."""


class CsrfTokens:
    """Issues and checks form tokens under ``secret`` (share it across processes)."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("csrf_secret must be at least 16 bytes")
        self._secret = secret

    def issue(self, organization_id: int, user_id: int, *, now: float | None = None) -> str:
        """A token for this admin, valid for ``CSRF_TOKEN_TTL`` seconds from ``now``."""
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._mac(organization_id, user_id, issued)}"

    def valid(
        self, token: str, organization_id: int, user_id: int, *, now: float | None = None
    ) -> bool:
        """Whether ``token`` was issued to this admin and has not expired."""
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit() or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        age = (time.time() if now is None else now) - issued
        if not 0 <= age <= CSRF_TOKEN_TTL:
            return False
        return hmac.compare_digest(mac, self._mac(organization_id, user_id, issued))

    def _mac(self, organization_id: int, user_id: int, issued: int) -> str:
        message = f"auditevt-review:{organization_id}:{user_id}:{issued}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def cross_origin_reason(request: Request) -> str | None:
    """Why this request looks cross-origin, or ``None`` when it does not."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = request.headers.get("origin")
    if origin is not None:
        # Host and port only: behind a TLS-terminating proxy the app may see http.
        own = request.headers.get("host", "")
        if urlsplit(origin).netloc != own:
            return f"Origin {origin!r} is not this host {own!r}"
    return None
