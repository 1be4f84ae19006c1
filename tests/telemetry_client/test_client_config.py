"""Client configuration: base URL and TELEMETRY_INTERNAL_URL, the HTTPS rule, timeouts, headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from auditevt import CONTRACT_VERSION, __version__
from telemetry_client import (
    DEFAULT_TIMEOUT,
    ENV_URL,
    USER_AGENT,
    AsyncTelemetryClient,
    ConfigurationError,
    RetryPolicy,
    TelemetryClient,
    TelemetryError,
)

# Without a transport httpx would load the system's CA certificates for every client built.
OFFLINE = httpx.MockTransport(lambda request: httpx.Response(500))


def make(base_url: Any = None, **options: Any) -> TelemetryClient:
    """A client built (and closed) like any other, but with no network behind it."""
    client = TelemetryClient(base_url, transport=OFFLINE, **options)
    client.close()
    return client


@pytest.fixture(autouse=True)
def no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)


def seen_request(client_options: dict[str, Any], base_url: str | None = None) -> httpx.Request:
    """The request a client sends for ``health()``, captured by a mock transport."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    transport = httpx.MockTransport(handler)
    with TelemetryClient(base_url, transport=transport, **client_options) as client:
        client.health()
    return seen[0]


# Base URL -----------------------------------------------------------------------------------


def test_config_base_url_from_argument() -> None:
    request = seen_request({}, "https://telemetry.internal:8443")
    assert str(request.url) == "https://telemetry.internal:8443/health"


def test_config_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, "  https://from-env.internal  ")
    assert str(seen_request({}).url) == "https://from-env.internal/health"
    assert make().base_url == httpx.URL("https://from-env.internal")


def test_config_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, "https://from-env.internal")
    assert make("https://argument.internal").base_url.host == "argument.internal"


@pytest.mark.parametrize("client_class", [TelemetryClient, AsyncTelemetryClient])
@pytest.mark.parametrize("env_value", [None, "", "   "])
def test_config_without_any_url_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, client_class: type[Any], env_value: str | None
) -> None:
    if env_value is not None:
        monkeypatch.setenv(ENV_URL, env_value)
    with pytest.raises(ConfigurationError, match=f"base_url=.*{ENV_URL}"):
        client_class()


def test_config_base_url_path_prefix_is_kept() -> None:
    request = seen_request({}, "https://gateway.internal/telemetry")
    assert request.url.path == "/telemetry/health"
    request = seen_request({}, "https://gateway.internal/telemetry/")
    assert request.url.path == "/telemetry/health"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("telemetry.internal", "absolute http"),
        ("ftp://telemetry.internal", "absolute http"),
        ("https://", "absolute http"),
        ("https://telemetry.internal/?x=1", "query or fragment"),
        ("https://telemetry.internal/#top", "query or fragment"),
        ("https://telemetry.internal:port/", "not a valid URL"),
    ],
)
def test_config_rejects_unusable_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make(url)


def test_config_bad_url_in_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URL, "http://telemetry.internal")
    with pytest.raises(ConfigurationError, match=ENV_URL):
        make()


def test_config_rejects_a_non_string_url() -> None:
    with pytest.raises(TypeError, match="base_url"):
        make(8080)


# The HTTPS rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.254.3.9",
        "http://[::1]:8000",
        "http://localhost:8000",
        "http://LOCALHOST",
        "http://localhost.",
    ],
)
def test_config_plain_http_allowed_to_loopback(url: str) -> None:
    assert make(url).base_url.scheme == "http"


@pytest.mark.parametrize(
    "url",
    [
        "http://telemetry.internal",
        "http://10.0.0.7:8000",
        "http://128.0.0.1",
        "http://[::2]",
        "http://localhost.example.com",
        "http://0.0.0.0:8000",
    ],
)
def test_config_plain_http_refused_elsewhere(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"HTTPS.*allow_insecure_http=True"):
        make(url)
    with pytest.raises(ConfigurationError):
        AsyncTelemetryClient(url)


def test_config_plain_http_allowed_when_opted_out() -> None:
    client = make("http://telemetry.internal", allow_insecure_http=True)
    assert client.base_url == httpx.URL("http://telemetry.internal")


def test_config_https_anywhere() -> None:
    assert make("https://10.0.0.7").base_url.scheme == "https"


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, TelemetryError)
    assert issubclass(ConfigurationError, ValueError)


# Timeouts ------------------------------------------------------------------------------------


def test_config_default_timeouts() -> None:
    assert httpx.Timeout(connect=2.0, read=10.0, write=10.0, pool=10.0) == DEFAULT_TIMEOUT
    request = seen_request({}, "https://telemetry.internal")
    assert request.extensions["timeout"] == {
        "connect": 2.0,
        "read": 10.0,
        "write": 10.0,
        "pool": 10.0,
    }


def test_config_custom_timeouts() -> None:
    request = seen_request({"timeout": 3}, "https://telemetry.internal")
    assert request.extensions["timeout"]["read"] == 3.0
    timeout = httpx.Timeout(5.0, connect=0.5)
    request = seen_request({"timeout": timeout}, "https://telemetry.internal")
    assert request.extensions["timeout"]["connect"] == 0.5


@pytest.mark.parametrize(
    ("timeout", "error"), [(0, ValueError), (-1, ValueError), ("5", TypeError)]
)
def test_config_rejects_bad_timeouts(timeout: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        make("https://telemetry.internal", timeout=timeout)


# Headers -------------------------------------------------------------------------------------


def test_config_identity_headers() -> None:
    headers = seen_request({}, "https://telemetry.internal").headers
    assert headers["User-Agent"] == USER_AGENT == f"auditevt-telemetry-client/{__version__}"
    assert headers["X-Auditevt-Contract"] == CONTRACT_VERSION
    assert "Authorization" not in headers


def test_config_bearer_token_and_extra_headers() -> None:
    headers = seen_request(
        {"bearer_token": "abc", "headers": {"X-Tenant-Hint": "42"}}, "https://t.internal"
    ).headers
    assert headers["Authorization"] == "Bearer abc"
    assert headers["X-Tenant-Hint"] == "42"


def test_config_extra_authorization_header() -> None:
    headers = seen_request({"headers": {"Authorization": "Basic eDp5"}}, "https://t.internal")
    assert headers.headers["Authorization"] == "Basic eDp5"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bearer_token": "a", "headers": {"authorization": "b"}}, "not both"),
        ({"bearer_token": ""}, "bearer_token"),
        ({"bearer_token": "a\r\nX-Evil: 1"}, "bearer_token"),
        ({"headers": {"X-Note": "line\nbreak"}}, "X-Note"),
    ],
)
def test_config_rejects_bad_headers(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make("https://telemetry.internal", **options)


# Other options -------------------------------------------------------------------------------


def test_config_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="retires"):
        make("https://telemetry.internal", retires=RetryPolicy())


def test_config_retry_must_be_a_policy() -> None:
    with pytest.raises(TypeError, match="RetryPolicy"):
        make("https://telemetry.internal", retry=3)


@pytest.mark.parametrize("threshold", [-1, 1.5, True])
def test_config_rejects_bad_gzip_threshold(threshold: Any) -> None:
    with pytest.raises(ValueError, match="gzip_threshold"):
        make("https://telemetry.internal", gzip_threshold=threshold)


def test_config_default_retry_policy() -> None:
    assert make("https://telemetry.internal").retry == RetryPolicy()


# Every bad argument is a ConfigurationError (a TelemetryError), still a ValueError/TypeError --


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make("https://telemetry.internal", timeout=0), "timeout"),
        (lambda: make("https://telemetry.internal", timeout="5"), "timeout"),
        (lambda: make("https://telemetry.internal", gzip_threshold=-1), "gzip_threshold"),
        (lambda: make("https://telemetry.internal", retry="3"), "RetryPolicy"),
        (lambda: make("https://telemetry.internal", headers={"x": 1}), "headers"),
        (lambda: make(42), "base_url"),
        (lambda: RetryPolicy(max_attempts=0), "max_attempts"),
        (lambda: RetryPolicy(deadline=-1.0), "deadline"),
        (lambda: RetryPolicy(max_wait=float("nan")), "max_wait"),
        (lambda: RetryPolicy(retryable_statuses=frozenset({200})), "success status"),
    ],
)
def test_config_every_bad_argument_is_a_configuration_error(
    build: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        build()
    assert isinstance(caught.value, TelemetryError)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)
