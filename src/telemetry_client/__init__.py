"""telemetry_client: typed, retrying HTTP clients for the Telemetry service.

Needs the ``client`` extra (httpx and tenacity): ``pip install 'auditevt[client]'``.
"""

import importlib.util as _importlib_util

_missing = [name for name in ("httpx", "tenacity") if _importlib_util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f"telemetry_client needs {' and '.join(_missing)}, which are not installed: "
        "pip install 'auditevt[client]'",
        name=_missing[0],
    )

from auditevt._public import report_public_module as _report_public_module  # noqa: E402
from telemetry_client._async_client import AsyncTelemetryClient  # noqa: E402
from telemetry_client._base import ClientOptions  # noqa: E402
from telemetry_client._client import TelemetryClient  # noqa: E402
from telemetry_client._config import (  # noqa: E402
    CONTRACT_HEADER,
    DEFAULT_GZIP_THRESHOLD,
    DEFAULT_TIMEOUT,
    ENV_SIGNING_KEY,
    ENV_URL,
    USER_AGENT,
)
from telemetry_client._exceptions import (  # noqa: E402
    ClientError,
    ConfigurationError,
    ConnectError,
    ConnectTimeout,
    DeadlineExceeded,
    HTTPStatusError,
    PoolTimeout,
    ProtocolError,
    RateLimitedError,
    ReadError,
    ReadTimeout,
    ResponseDecodeError,
    RetriesExhausted,
    ServerError,
    ServiceUnavailableError,
    TelemetryError,
    TransportError,
    TransportTimeout,
    WriteError,
    WriteTimeout,
)
from telemetry_client._retry import (  # noqa: E402
    RETRYABLE_STATUSES,
    RetryPolicy,
    parse_http_date,
    parse_retry_after,
)

__all__ = [
    "CONTRACT_HEADER",
    "DEFAULT_GZIP_THRESHOLD",
    "DEFAULT_TIMEOUT",
    "ENV_SIGNING_KEY",
    "ENV_URL",
    "RETRYABLE_STATUSES",
    "USER_AGENT",
    "AsyncTelemetryClient",
    "ClientError",
    "ClientOptions",
    "ConfigurationError",
    "ConnectError",
    "ConnectTimeout",
    "DeadlineExceeded",
    "HTTPStatusError",
    "PoolTimeout",
    "ProtocolError",
    "RateLimitedError",
    "ReadError",
    "ReadTimeout",
    "ResponseDecodeError",
    "RetriesExhausted",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "TelemetryClient",
    "TelemetryError",
    "TransportError",
    "TransportTimeout",
    "WriteError",
    "WriteTimeout",
    "parse_http_date",
    "parse_retry_after",
]

_report_public_module(__name__, globals(), __all__)
del _report_public_module, _missing, _importlib_util
