"""Client configuration: base URL, the HTTPS rule, timeouts, headers, compression, signing."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from auditevt import CONTRACT_VERSION, SigningKey, WebhookSigner, __version__
from telemetry_client._exceptions import ConfigurationError

# In the order of the module (the package's __init__ sorts them).
__all__ = [
    "ENV_URL",
    "ENV_SIGNING_KEY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_GZIP_THRESHOLD",
    "USER_AGENT",
    "CONTRACT_HEADER",
    "ClientConfig",
]

#: The environment variable read when no base URL is passed.
ENV_URL = "TELEMETRY_INTERNAL_URL"

#: The environment variable read when no signing key is passed: a ``whsec_`` secret, or several
#: separated by spaces during a rotation.
ENV_SIGNING_KEY = "TELEMETRY_SIGNING_KEY"

SigningKeys = SigningKey | str | Sequence[SigningKey | str]
"""One Standard Webhooks key (a ``SigningKey`` or its ``whsec_`` text), or several."""

#: Connect within 2 s; read, write and wait for a pooled connection up to 10 s.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)

#: Request bodies longer than this many bytes are sent gzip-compressed.
DEFAULT_GZIP_THRESHOLD = 1024

USER_AGENT = f"auditevt-telemetry-client/{__version__}"

#: The header that tells Telemetry which contract version the client speaks.
CONTRACT_HEADER = "X-Auditevt-Contract"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a client needs besides its transport and retry policy, checked once."""

    base_url: httpx.URL
    """Where Telemetry listens; endpoint paths are appended to its path."""
    timeout: httpx.Timeout
    """Per-attempt timeouts."""
    headers: httpx.Headers
    """Sent with every request: User-Agent, contract version, authorization, extras."""
    gzip_threshold: int | None
    """Bodies longer than this many bytes are gzip-compressed; None never compresses."""
    signer: WebhookSigner | None
    """Signs every request (Standard Webhooks headers); None sends them unsigned."""

    @classmethod
    def build(
        cls,
        base_url: str | httpx.URL | None,
        *,
        allow_insecure_http: bool,
        timeout: float | httpx.Timeout,
        bearer_token: str | None,
        headers: Mapping[str, str] | None,
        gzip_threshold: int | None,
        signing_key: SigningKeys | WebhookSigner | None,
    ) -> ClientConfig:
        """Check and assemble a configuration; ``ConfigurationError`` names what is wrong."""
        return cls(
            base_url=_resolve_base_url(base_url, allow_insecure_http=allow_insecure_http),
            timeout=_resolve_timeout(timeout),
            headers=_build_headers(bearer_token, headers),
            gzip_threshold=_check_gzip_threshold(gzip_threshold),
            signer=_resolve_signer(signing_key),
        )


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost``, 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_base_url(base_url: str | httpx.URL | None, *, allow_insecure_http: bool) -> httpx.URL:
    source = "base_url"
    if base_url is None or base_url == "":
        base_url = os.environ.get(ENV_URL, "").strip()
        source = ENV_URL
        if not base_url:
            raise ConfigurationError(
                f"no Telemetry URL: pass base_url=... or set the {ENV_URL} environment variable "
                "(for example https://telemetry.internal)"
            )
    if not isinstance(base_url, str | httpx.URL):
        raise ConfigurationError(f"base_url must be a str or httpx.URL, got {base_url!r}")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"{source} {str(base_url)!r} is not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"{source} {str(base_url)!r} must be an absolute http(s) URL such as "
            "https://telemetry.internal"
        )
    if url.query or url.fragment:
        raise ConfigurationError(
            f"{source} {str(base_url)!r} must not carry a query or fragment: endpoint paths "
            "are appended to it"
        )
    if url.scheme == "http" and not allow_insecure_http and not is_loopback_host(url.host):
        raise ConfigurationError(
            f"{source} {str(base_url)!r} uses plain HTTP to a host that is not loopback: "
            "audit events must travel over HTTPS; use https:// or pass allow_insecure_http=True "
            "if the network is otherwise protected"
        )
    return url


def _resolve_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(f"timeout must be seconds or an httpx.Timeout, got {timeout!r}")
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
    return httpx.Timeout(float(timeout))


def _build_headers(bearer_token: str | None, extra: Mapping[str, str] | None) -> httpx.Headers:
    headers = httpx.Headers(
        {
            "User-Agent": USER_AGENT,
            CONTRACT_HEADER: CONTRACT_VERSION,
            "Accept": "application/json",
        }
    )
    extra = dict(extra or {})
    for name, value in extra.items():
        # h11 would only notice at send time; an early, named error is kinder.
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError(f"headers must map str to str, got {name!r}: {value!r}")
        if any(c in name + value for c in "\r\n\0"):
            raise ConfigurationError(f"header {name!r} has a line break or NUL in it")
    extra_headers = httpx.Headers(extra)
    if bearer_token is not None:
        if not isinstance(bearer_token, str) or not bearer_token.strip():
            raise ConfigurationError(f"bearer_token must be a non-empty str, got {bearer_token!r}")
        if any(c in bearer_token for c in "\r\n\0"):
            raise ConfigurationError("bearer_token has a line break or NUL in it")
        if "authorization" in extra_headers:
            raise ConfigurationError(
                "pass bearer_token or an Authorization header in headers, not both"
            )
        headers["Authorization"] = f"Bearer {bearer_token}"
    headers.update(extra_headers)
    return headers


def _check_gzip_threshold(threshold: int | None) -> int | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ConfigurationError(f"gzip_threshold must be an int >= 0 or None, got {threshold!r}")
    return threshold


def _resolve_signer(signing_key: SigningKeys | WebhookSigner | None) -> WebhookSigner | None:
    if isinstance(signing_key, WebhookSigner):
        return signing_key
    source = "signing_key"
    keys: SigningKeys | None = signing_key
    if keys is None:
        text = os.environ.get(ENV_SIGNING_KEY, "").strip()
        if not text:
            return None
        keys, source = text.split(), ENV_SIGNING_KEY
    try:
        return WebhookSigner(keys)
    except (TypeError, ValueError) as exc:
        # The message describes the value without showing it: it is a secret.
        raise ConfigurationError(f"{source}: {exc}") from None
