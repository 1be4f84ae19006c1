"""The exceptions of ``telemetry_client``: one tree, one root.

```
TelemetryError
├── ConfigurationError              (also ValueError, TypeError) bad URL, headers, arguments
├── TransportError                  no usable answer: the request may or may not have arrived
│   ├── ConnectError
│   ├── ReadError
│   ├── WriteError
│   ├── ProtocolError               the server broke HTTP (e.g. closed mid-answer)
│   └── TransportTimeout
│       ├── ConnectTimeout
│       ├── ReadTimeout
│       ├── WriteTimeout
│       └── PoolTimeout
├── HTTPStatusError                 an answer outside 2xx: status_code, body, retry_after
│   ├── ClientError                 4xx
│   │   └── RateLimitedError        429
│   └── ServerError                 5xx
│       └── ServiceUnavailableError 503
├── ResponseDecodeError             a 2xx whose body does not match the contract model
└── RetriesExhausted                a retryable failure outlived the retry policy: last_error
    └── DeadlineExceeded            ... because the policy's deadline came first
```

Whether a failure is retried is the policy's decision (``RetryPolicy.retryable_statuses``), so
the classes above sort failures by what happened, not by what to do. What the caller sees tells
it anyway: a failure the policy retries always ends as ``RetriesExhausted`` (its ``last_error``
says what went wrong last, its ``retry_after`` what the server asked for), and anything raised
as itself was not worth retrying.

``map_httpx_errors()`` is the one place where httpx exceptions become these ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

# In the order of the module, which is the tree's (the package's __init__ sorts them).
__all__ = [
    "truncate_body",
    "TelemetryError",
    "ConfigurationError",
    "TransportError",
    "ConnectError",
    "ReadError",
    "WriteError",
    "ProtocolError",
    "TransportTimeout",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "HTTPStatusError",
    "ClientError",
    "RateLimitedError",
    "ServerError",
    "ServiceUnavailableError",
    "status_error_class",
    "ResponseDecodeError",
    "RetriesExhausted",
    "DeadlineExceeded",
    "map_httpx_errors",
]

#: How much of a response body an exception keeps: enough to read the server's complaint,
#: bounded so that a huge error page does not end up in logs whole.
BODY_LIMIT = 2048


def truncate_body(text: str, limit: int = BODY_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class TelemetryError(Exception):
    """The root of every exception ``telemetry_client`` raises."""


class ConfigurationError(TelemetryError, ValueError, TypeError):
    """The client cannot be used as configured: no or bad base URL, plain HTTP, bad headers,
    timeouts, retry policy values or call arguments.

    Also a ``ValueError`` and a ``TypeError``, so ``except ValueError`` written for either kind
    of bad argument still catches it.
    """


class _FailedRequest(Exception):
    """An error about one request, naming it by method and URL (``""`` when unknown).

    The second base of ``TransportError`` and ``HTTPStatusError``: the first is the tree's.
    """

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        #: The HTTP method of the request.
        self.method = method
        #: The URL of the request.
        self.url = url


class TransportError(TelemetryError, _FailedRequest):
    """No usable answer arrived: connecting, sending or receiving failed, or timed out.

    The request may have reached Telemetry before the failure, so only idempotent requests
    (audit ingest deduplicates by ``event_id``) are safe to repeat blindly.
    """


class ConnectError(TransportError):
    """No connection to Telemetry could be made (refused, unreachable, DNS, TLS)."""


class ReadError(TransportError):
    """Receiving the answer failed."""


class WriteError(TransportError):
    """Sending the request failed."""


class ProtocolError(TransportError):
    """The server broke the HTTP protocol, for instance by closing the connection mid-answer."""


class TransportTimeout(TransportError):
    """An operation ran past its timeout (``httpx.Timeout`` given to the client)."""


class ConnectTimeout(TransportTimeout):
    """Connecting took longer than the connect timeout."""


class ReadTimeout(TransportTimeout):
    """The answer took longer than the read timeout."""


class WriteTimeout(TransportTimeout):
    """Sending the request took longer than the write timeout."""


class PoolTimeout(TransportTimeout):
    """No pooled connection became free within the pool timeout."""


class HTTPStatusError(TelemetryError, _FailedRequest):
    """Telemetry answered with a status outside 2xx."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str,
        retry_after: float | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(message, method=method, url=url)
        #: The HTTP status code of the answer.
        self.status_code = status_code
        #: The answer's body as text, cut to ``BODY_LIMIT`` characters.
        self.body = body
        #: Seconds the server asked to wait (``Retry-After``, seconds or HTTP date), if it did.
        self.retry_after = retry_after


class ClientError(HTTPStatusError):
    """A 4xx answer: the request was refused as sent (408, 425 and 429 are retried)."""


class RateLimitedError(ClientError):
    """A 429 answer: too many requests; ``retry_after`` says how long to back off."""


class ServerError(HTTPStatusError):
    """A 5xx answer: Telemetry failed (500, 502, 503 and 504 are retried)."""


class ServiceUnavailableError(ServerError):
    """A 503 answer: Telemetry is down or shedding load; ``retry_after`` may say for how long."""


def status_error_class(status_code: int) -> type[HTTPStatusError]:
    """The most specific ``HTTPStatusError`` class for ``status_code``."""
    if status_code == 429:
        return RateLimitedError
    if status_code == 503:
        return ServiceUnavailableError
    if 400 <= status_code < 500:
        return ClientError
    if 500 <= status_code < 600:
        return ServerError
    return HTTPStatusError


class ResponseDecodeError(TelemetryError):
    """A 2xx answer whose body is not what the contract says it must be.

    Raised when the body is not valid JSON for the endpoint's response model, and when an
    ingest answer does not answer the request (another count, other ids, another order).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None,
        field: str | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message)
        #: The HTTP status of the answer (None when the body could not even be decompressed).
        self.status_code = status_code
        #: Where in the body the problem is, as a dotted path (``results.3.event_id``).
        self.field = field
        #: The answer's body as text, cut to ``BODY_LIMIT`` characters.
        self.body = body


class RetriesExhausted(TelemetryError):
    """A retryable failure persisted until the retry policy stopped trying.

    ``last_error`` is the failure of the last attempt (also the ``__cause__``);
    ``retry_after`` is the wait the server asked for in that attempt's answer, if any, so a
    caller such as the relay can pause that long before it tries again.
    """

    def __init__(self, message: str, *, last_error: TelemetryError, attempts: int) -> None:
        super().__init__(message)
        #: The failure of the last attempt.
        self.last_error = last_error
        #: How many attempts were made.
        self.attempts = attempts

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait in its last answer (429/503), or None."""
        if isinstance(self.last_error, HTTPStatusError):
            return self.last_error.retry_after
        return None

    @property
    def status_code(self) -> int | None:
        """The status of the last answer, or None when the last attempt got no answer."""
        if isinstance(self.last_error, HTTPStatusError):
            return self.last_error.status_code
        return None


class DeadlineExceeded(RetriesExhausted):
    """The policy's deadline would have passed before the next attempt could start."""


# Most specific first: the first match wins.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[TelemetryError]], ...] = (
    (httpx.ConnectTimeout, ConnectTimeout),
    (httpx.ReadTimeout, ReadTimeout),
    (httpx.WriteTimeout, WriteTimeout),
    (httpx.PoolTimeout, PoolTimeout),
    (httpx.TimeoutException, TransportTimeout),
    (httpx.ConnectError, ConnectError),
    (httpx.ProxyError, ConnectError),
    (httpx.ReadError, ReadError),
    (httpx.WriteError, WriteError),
    (httpx.RemoteProtocolError, ProtocolError),
    # What the client itself could not express as HTTP comes from its configuration (a header
    # value with a newline, a base URL httpx cannot use): repeating the request cannot help.
    (httpx.LocalProtocolError, ConfigurationError),
    (httpx.UnsupportedProtocol, ConfigurationError),
    (httpx.InvalidURL, ConfigurationError),
    (httpx.ProtocolError, ProtocolError),
    (httpx.DecodingError, ResponseDecodeError),
    (httpx.TransportError, TransportError),
    (httpx.HTTPError, TransportError),
    # Misuse of a response stream: a bug, not a condition worth another attempt.
    (httpx.StreamError, TelemetryError),
)


@contextlib.contextmanager
def map_httpx_errors(request: httpx.Request | None = None) -> Iterator[None]:
    """Turn any httpx exception raised inside the block into its ``TelemetryError``."""
    try:
        yield
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        method = request.method if request is not None else ""
        url = str(request.url) if request is not None else ""
        where = f" ({method} {url})" if request is not None else ""
        mapped = next(ours for theirs, ours in _HTTPX_ERRORS if isinstance(exc, theirs))
        message = f"{type(exc).__name__}: {str(exc) or 'no detail'}{where}"
        if issubclass(mapped, TransportError):
            raise mapped(message, method=method, url=url) from exc
        if issubclass(mapped, ResponseDecodeError):
            raise ResponseDecodeError(
                f"the answer's body could not be decoded: {message}", status_code=None
            ) from exc
        raise mapped(message) from exc
