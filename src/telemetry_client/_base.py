"""Everything the two clients share that does no I/O.

Each endpoint method turns its arguments into a :class:`Call` (what to send, which model the
answer must match, and how to check that it answers the request); :class:`BaseClient` builds the
``httpx.Request`` from a call and turns an ``httpx.Response`` into the model or an exception.
The sync and async clients only add the sending.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from typing import Any, TypedDict, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from auditevt import SigningKey, WebhookSigner
from telemetry_client._calls import Call
from telemetry_client._config import (
    DEFAULT_GZIP_THRESHOLD,
    DEFAULT_TIMEOUT,
    ClientConfig,
    SigningKeys,
)
from telemetry_client._exceptions import (
    ConfigurationError,
    HTTPStatusError,
    ResponseDecodeError,
    map_httpx_errors,
    status_error_class,
    truncate_body,
)
from telemetry_client._retry import RetryPolicy, parse_http_date, parse_retry_after
from telemetry_client._signing import AttemptSigner

__all__ = ["BaseClient", "ClientOptions"]

R = TypeVar("R", bound=BaseModel)

#: gzip level 1: on repetitive JSON it saves most of what level 6 saves in half the CPU, and
#: the sender (a relay sharing cores with the app) is short of CPU, not of bandwidth.
_GZIP_LEVEL = 1


class ClientOptions(TypedDict, total=False):
    """Keyword options shared by ``TelemetryClient`` and ``AsyncTelemetryClient``."""

    allow_insecure_http: bool
    """Allow ``http://`` to a host that is not loopback (default False: HTTPS required)."""
    timeout: float | httpx.Timeout
    """Per-attempt timeouts (default: connect 2 s; read, write and pool 10 s)."""
    bearer_token: str | None
    """Sent as ``Authorization: Bearer <token>`` when given."""
    headers: Mapping[str, str] | None
    """Extra headers sent with every request."""
    gzip_threshold: int | None
    """Compress bodies longer than this many bytes (default 1024); None never compresses."""
    retry: RetryPolicy
    """The retry policy (default ``RetryPolicy()``; ``RetryPolicy.none()`` tries once)."""
    signing_key: SigningKeys | WebhookSigner | None
    """Sign each request with this key, these keys or signer (default $TELEMETRY_SIGNING_KEY)."""


class BaseClient:
    """Configuration, request building and answer reading shared by both clients."""

    def __init__(self, base_url: str | httpx.URL | None, options: ClientOptions) -> None:
        unknown = sorted(set(options) - set(ClientOptions.__annotations__))
        if unknown:
            raise ConfigurationError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        retry = options.get("retry", RetryPolicy())
        if not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._config = ClientConfig.build(
            base_url,
            allow_insecure_http=options.get("allow_insecure_http", False),
            timeout=options.get("timeout", DEFAULT_TIMEOUT),
            bearer_token=options.get("bearer_token"),
            headers=options.get("headers"),
            gzip_threshold=options.get("gzip_threshold", DEFAULT_GZIP_THRESHOLD),
            signing_key=options.get("signing_key"),
        )
        self._retry = retry

    @property
    def base_url(self) -> httpx.URL:
        """Where Telemetry listens."""
        return self._config.base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy every call follows."""
        return self._retry

    @property
    def signing_keys(self) -> tuple[SigningKey, ...]:
        """The keys every request is signed with; empty when requests go unsigned."""
        signer = self._config.signer
        return () if signer is None else signer.keys

    def __repr__(self) -> str:
        signed = ""
        if self.signing_keys:
            signed = f", signing_keys={[key.fingerprint for key in self.signing_keys]!r}"
        return f"{type(self).__name__}(base_url={str(self.base_url)!r}{signed})"

    def _check_open(self, is_closed: bool) -> None:
        if is_closed:
            raise RuntimeError(f"this {type(self).__name__} is closed; create a new one")

    def _httpx_arguments(self) -> dict[str, Any]:
        return {
            "base_url": self._config.base_url,
            "timeout": self._config.timeout,
            "headers": self._config.headers,
            # A redirect would resend audit events somewhere the caller did not configure.
            "follow_redirects": False,
        }

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]
    ) -> httpx.Request:
        headers: dict[str, str] = {}
        content: bytes | None = None
        if call.body is not None:
            content = call.body.encode()
            headers["Content-Type"] = "application/json"
            threshold = self._config.gzip_threshold
            if threshold is not None and len(content) > threshold:
                content = gzip.compress(content, compresslevel=_GZIP_LEVEL, mtime=0)
                headers["Content-Encoding"] = "gzip"
        with map_httpx_errors():
            return http.build_request(
                call.method, call.path, content=content, params=call.params, headers=headers
            )

    def _attempt_signer(self, request: httpx.Request) -> AttemptSigner | None:
        """What signs each attempt of ``request`` (None: unsigned); one message id for all."""
        signer = self._config.signer
        return None if signer is None else AttemptSigner(signer, request)

    @staticmethod
    def _read_response(call: Call[R], response: httpx.Response) -> R:
        if not response.is_success:
            if response.status_code in call.answer_statuses:
                try:
                    return call.response_model.model_validate_json(response.content)
                except ValidationError:
                    pass  # not the answer after all: the status speaks
            raise _status_error(response)
        try:
            result = call.response_model.model_validate_json(response.content)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in error["loc"]) or None
            raise ResponseDecodeError(
                f"the {response.status_code} answer to {call.method} {call.path} is not a valid "
                f"{call.response_model.__name__}: {field or '(body)'}: {error['msg']} "
                f"({exc.error_count()} error(s))",
                status_code=response.status_code,
                field=field,
                body=truncate_body(response.text),
            ) from exc
        if call.check is not None:
            try:
                call.check(result)
            except ValueError as exc:
                raise ResponseDecodeError(
                    f"the {response.status_code} answer to {call.method} {call.path} does not "
                    f"answer the request: {exc}",
                    status_code=response.status_code,
                    field="results",
                    body=truncate_body(response.text),
                ) from exc
        return result


def _status_error(response: httpx.Response) -> HTTPStatusError:
    request = response.request
    body = truncate_body(response.text)
    # An HTTP-date Retry-After is measured against the server's clock when it sent its own.
    retry_after = parse_retry_after(
        response.headers.get("Retry-After"), now=parse_http_date(response.headers.get("Date"))
    )
    message = f"{response.status_code} {response.reason_phrase} from {request.method} {request.url}"
    if retry_after is not None:
        message += f" (Retry-After: {retry_after:g} s)"
    if body:
        message += f": {truncate_body(body, 200)}"
    return status_error_class(response.status_code)(
        message,
        status_code=response.status_code,
        body=body,
        retry_after=retry_after,
        method=request.method,
        url=str(request.url),
    )
