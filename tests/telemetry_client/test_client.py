"""TelemetryClient: endpoints, retries, error mapping, gzip, and a real loopback round trip.

The retry and error paths run against ``httpx.MockTransport`` with an injected sleep; one test
crosses a real socket to a uvicorn server. The sample requests and the scripted server below
are shared with ``test_async_client.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from auditevt import (
    CONTRACT_VERSION,
    AnalyticsTrackRequest,
    AnalyticsTrackResponse,
    BandwidthStatsQuery,
    BandwidthStatsResponse,
    DeviceContext,
    ErrorCategory,
    ErrorReportRequest,
    ErrorReportResponse,
    HealthResponse,
    HealthStatus,
    HeartbeatEvent,
    IngestItem,
    IngestRequest,
    IngestResponse,
    IngestResult,
    IngestStatus,
    MediaEventRequest,
    MediaEventResponse,
    MediaSessionKind,
    MediaTransport,
    PageViewEvent,
    Platform,
    PoseFrame,
    PoseFramesRequest,
    PoseFramesResponse,
    PoseLandmark,
    SessionStartEvent,
    Timestamp,
    __version__,
    ingest_envelope_json,
    parse_ingest_request,
)
from conftest import make_event
from telemetry_client import (
    AsyncTelemetryClient,
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
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
    TelemetryClient,
    TelemetryError,
    TransportError,
    TransportTimeout,
    WriteError,
    WriteTimeout,
)

BASE_URL = "https://telemetry.test"
ORG = 42
ACTOR = "k1:" + "ab" * 32
WHEN = Timestamp.parse("2026-11-27T10:00:00.123456789Z")

# Samples --------------------------------------------------------------------------------------


def ingest_request(count: int = 1) -> IngestRequest:
    return IngestRequest(
        events=[IngestItem(event_id=uuid.uuid4(), event=make_event(n)) for n in range(count)]
    )


def answer_ingest(request: httpx.Request) -> httpx.Response:
    """What a healthy receiver answers: every event accepted, in order."""
    body = request.content
    if request.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    items = parse_ingest_request(body)
    results = [
        IngestResult(event_id=item.event_id, status=IngestStatus.ACCEPTED).model_dump(mode="json")
        for item in items
    ]
    return httpx.Response(200, json={"results": results})


def device() -> DeviceContext:
    return DeviceContext(platform=Platform.WEB, app_version="2026.11.3")


def track_request() -> AnalyticsTrackRequest:
    return AnalyticsTrackRequest(
        organization_id=ORG,
        actor=ACTOR,
        session_id=uuid.uuid4(),
        sent_at=WHEN,
        events=[PageViewEvent(event_id=uuid.uuid4(), occurred_at=WHEN, path="/exercises")],
    )


def media_request() -> MediaEventRequest:
    return MediaEventRequest(
        organization_id=ORG,
        actor=ACTOR,
        session_id=uuid.uuid4(),
        events=[
            SessionStartEvent(
                event_id=uuid.uuid4(),
                occurred_at=WHEN,
                kind=MediaSessionKind.LIVE,
                transport=MediaTransport.WEBRTC,
                device=device(),
            ),
            HeartbeatEvent(
                event_id=uuid.uuid4(),
                occurred_at=WHEN,
                sequence=0,
                interval_ms=5000,
                inbound_bitrate_kbps=1200.0,
                bytes_received=750_000,
            ),
        ],
    )


def pose_request() -> PoseFramesRequest:
    landmarks = [PoseLandmark(x=0.5, y=0.25, z=-0.1, visibility=0.9) for _ in range(33)]
    return PoseFramesRequest(
        organization_id=ORG,
        actor=ACTOR,
        session_id=uuid.uuid4(),
        frames=[PoseFrame(frame_index=i, captured_at=WHEN, landmarks=landmarks) for i in range(2)],
    )


def error_request() -> ErrorReportRequest:
    return ErrorReportRequest(
        organization_id=ORG,
        report_id=uuid.uuid4(),
        occurred_at=WHEN,
        category=ErrorCategory.VIDEO,
        code="MEDIA_ERR_DECODE",
        message="decoder failed",
        device=device(),
    )


def bandwidth_query() -> BandwidthStatsQuery:
    return BandwidthStatsQuery(
        organization_id=ORG,
        kind=MediaSessionKind.LIVE,
        since=WHEN,
        until=Timestamp.parse("2026-11-28T10:00:00Z"),
    )


@dataclass
class Endpoint:
    """One client method, a sample argument, and how Telemetry answers it."""

    method_name: str
    http_method: str
    path: str
    make_argument: Callable[[], Any]
    answer: dict[str, Any]
    response_model: type[BaseModel]
    request_model: type[BaseModel] | None = None


ENDPOINTS = [
    Endpoint(
        "track",
        "POST",
        "/v1/analytics/track",
        track_request,
        {"accepted": 1, "duplicates": 0},
        AnalyticsTrackResponse,
        AnalyticsTrackRequest,
    ),
    Endpoint(
        "media_event",
        "POST",
        "/v1/media/events",
        media_request,
        {"accepted": 1, "duplicates": 1},
        MediaEventResponse,
        MediaEventRequest,
    ),
    Endpoint(
        "pose_frames",
        "POST",
        "/v1/pose/frames",
        pose_request,
        {"accepted": 2, "duplicates": 0},
        PoseFramesResponse,
        PoseFramesRequest,
    ),
    Endpoint(
        "report_error",
        "POST",
        "/v1/errors/report",
        error_request,
        {"report_id": str(uuid.UUID(int=5)), "duplicate": False},
        ErrorReportResponse,
        ErrorReportRequest,
    ),
    Endpoint(
        "bandwidth_stats",
        "GET",
        "/v1/media/bandwidth/stats",
        bandwidth_query,
        {
            "since": "2026-11-27T10:00:00.123456789Z",
            "until": "2026-11-28T10:00:00Z",
            "sessions": 3,
            "heartbeats": 120,
            "rtt_ms": {"min": 10.0, "mean": 20.0, "p50": 18.0, "p95": 40.0, "max": 55.0},
        },
        BandwidthStatsResponse,
    ),
]
ENDPOINT_IDS = [endpoint.method_name for endpoint in ENDPOINTS]

RETRYABLE = [408, 425, 429, 500, 502, 503, 504]
PERMANENT_4XX = [400, 401, 403, 404, 409, 413, 422]

# httpx exception -> the TelemetryError it becomes; all of them are retried.
RETRIED_HTTPX_ERRORS: list[tuple[type[httpx.HTTPError], type[TransportError]]] = [
    (httpx.ConnectError, ConnectError),
    (httpx.ConnectTimeout, ConnectTimeout),
    (httpx.ReadTimeout, ReadTimeout),
    (httpx.WriteTimeout, WriteTimeout),
    (httpx.PoolTimeout, PoolTimeout),
    (httpx.TimeoutException, TransportTimeout),
    (httpx.ReadError, ReadError),
    (httpx.WriteError, WriteError),
    (httpx.CloseError, TransportError),
    (httpx.NetworkError, TransportError),
    (httpx.ProxyError, ConnectError),
    (httpx.RemoteProtocolError, ProtocolError),
    (httpx.ProtocolError, ProtocolError),
    (httpx.TransportError, TransportError),
    (httpx.TooManyRedirects, TransportError),
    (httpx.RequestError, TransportError),
]
# httpx exceptions that no second attempt can cure.
PERMANENT_HTTPX_ERRORS: list[tuple[type[Exception], type[TelemetryError]]] = [
    (httpx.LocalProtocolError, ConfigurationError),
    (httpx.UnsupportedProtocol, ConfigurationError),
    (httpx.InvalidURL, ConfigurationError),
    (httpx.DecodingError, ResponseDecodeError),
    (httpx.StreamClosed, TelemetryError),
]


# A scripted Telemetry --------------------------------------------------------------------------

Answer = Callable[[httpx.Request], httpx.Response] | Exception


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(code, text=body, headers=headers)
        return httpx.Response(code, json=body if body is not None else {}, headers=headers)

    return answer


def json_answer(body: Any) -> Answer:
    return status(200, body)


@dataclass
class ScriptedServer:
    """Answers requests in the order given (the last answer repeats) and records them."""

    answers: list[Answer]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@dataclass
class Sleeps:
    """An injected sleep: records each wait and advances a fake clock, never really sleeping."""

    waits: list[float] = field(default_factory=list)
    now: float = 0.0

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def clock(self) -> float:
        return self.now

    def policy(self, **changes: Any) -> RetryPolicy:
        values: dict[str, Any] = {
            "sleep": self.sleep,
            "async_sleep": self.async_sleep,
            "clock": self.clock,
            "random": lambda: 0.5,
            **changes,
        }
        return RetryPolicy(**values)


def make_client(
    server: ScriptedServer, sleeps: Sleeps | None = None, **options: Any
) -> TelemetryClient:
    sleeps = sleeps or Sleeps()
    options.setdefault("retry", sleeps.policy())
    return TelemetryClient(BASE_URL, transport=server.transport, **options)


def body_of(request: httpx.Request) -> bytes:
    if request.headers.get("Content-Encoding") == "gzip":
        return gzip.decompress(request.content)
    return request.content


# Endpoints -----------------------------------------------------------------------------------


def test_client_audit_ingest_sends_the_envelope_and_returns_results() -> None:
    request = ingest_request(2)
    server = ScriptedServer([answer_ingest])
    with make_client(server) as client:
        response = client.audit_ingest(request)
    assert isinstance(response, IngestResponse)
    assert [r.event_id for r in response.results] == [i.event_id for i in request.events]
    assert all(r.delivered for r in response.results)
    (sent,) = server.requests
    assert (sent.method, sent.url.path) == ("POST", "/v1/audit/ingest")
    assert sent.headers["Content-Type"] == "application/json"
    assert body_of(sent).decode() == request.to_json()


def test_client_audit_ingest_raw_embeds_the_event_text_verbatim() -> None:
    items = [(uuid.uuid4(), make_event(n).to_json()) for n in range(3)]
    server = ScriptedServer([answer_ingest])
    with make_client(server) as client:
        response = client.audit_ingest_raw(items)
    assert [r.event_id for r in response.results] == [event_id for event_id, _ in items]
    assert body_of(server.requests[0]).decode() == ingest_envelope_json(items)


def test_client_audit_ingest_raw_rejects_a_bad_item_before_sending() -> None:
    server = ScriptedServer([answer_ingest])
    with make_client(server) as client, pytest.raises(ValueError, match="not a JSON object"):
        client.audit_ingest_raw([(uuid.uuid4(), "[]")])
    assert server.requests == []


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_client_endpoint_round_trip(endpoint: Endpoint) -> None:
    argument = endpoint.make_argument()
    server = ScriptedServer([json_answer(endpoint.answer)])
    with make_client(server) as client:
        response = getattr(client, endpoint.method_name)(argument)
    assert response == endpoint.response_model.model_validate(endpoint.answer)
    (sent,) = server.requests
    assert (sent.method, sent.url.path) == (endpoint.http_method, endpoint.path)
    if endpoint.request_model is not None:
        assert endpoint.request_model.model_validate_json(body_of(sent)) == argument
    else:
        assert sent.content == b""
        # The server reads the query back from its parameters.
        assert type(argument).model_validate(dict(sent.url.params)) == argument


def test_client_bandwidth_stats_sends_flat_query_parameters() -> None:
    endpoint = ENDPOINTS[ENDPOINT_IDS.index("bandwidth_stats")]
    server = ScriptedServer([json_answer(endpoint.answer)])
    with make_client(server) as client:
        client.bandwidth_stats(BandwidthStatsQuery(organization_id=ORG))
    assert dict(server.requests[0].url.params) == {"organization_id": "42"}


def test_client_health_returns_ok_and_down_answers() -> None:
    server = ScriptedServer(
        [json_answer({"status": "ok"}), status(503, {"status": "down", "checks": {"db": "down"}})]
    )
    with make_client(server) as client:
        assert client.health().status is HealthStatus.OK
        down = client.health()
    assert down.status is HealthStatus.DOWN
    assert down.checks == {"db": HealthStatus.DOWN}
    assert [(r.method, r.url.path) for r in server.requests] == [("GET", "/health")] * 2


def test_client_health_503_without_health_body_is_retried() -> None:
    server = ScriptedServer([status(503, "<html>proxy</html>"), json_answer({"status": "ok"})])
    sleeps = Sleeps()
    with make_client(server, sleeps) as client:
        assert client.health().status is HealthStatus.OK
    assert len(server.requests) == 2
    assert len(sleeps.waits) == 1


@pytest.mark.parametrize(
    ("method_name", "argument"),
    [
        ("audit_ingest", {"events": []}),
        ("track", media_request()),
        ("bandwidth_stats", {"organization_id": 1}),
    ],
)
def test_client_rejects_the_wrong_argument_type(method_name: str, argument: Any) -> None:
    server = ScriptedServer([json_answer({})])
    with make_client(server) as client, pytest.raises(TypeError, match="must be a"):
        getattr(client, method_name)(argument)
    assert server.requests == []


# Headers and compression -----------------------------------------------------------------------


def test_client_sends_identity_and_contract_headers() -> None:
    server = ScriptedServer([json_answer({"status": "ok"})])
    with make_client(server, bearer_token="s3cret", headers={"X-Request-Source": "relay"}) as c:
        c.health()
    headers = server.requests[0].headers
    assert headers["User-Agent"] == f"auditevt-telemetry-client/{__version__}"
    assert headers["X-Auditevt-Contract"] == CONTRACT_VERSION
    assert headers["Accept"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Request-Source"] == "relay"


def test_client_gzips_bodies_over_1_kib() -> None:
    request = ingest_request(10)
    raw = request.to_json().encode()
    assert len(raw) > 1024
    server = ScriptedServer([answer_ingest])
    with make_client(server) as client:
        client.audit_ingest(request)
    sent = server.requests[0]
    assert sent.headers["Content-Encoding"] == "gzip"
    assert len(sent.content) < len(raw)
    assert gzip.decompress(sent.content) == raw
    assert int(sent.headers["Content-Length"]) == len(sent.content)


def test_client_leaves_small_bodies_uncompressed() -> None:
    request = ingest_request(1)
    assert len(request.to_json()) <= 1024
    server = ScriptedServer([answer_ingest])
    with make_client(server) as client:
        client.audit_ingest(request)
    sent = server.requests[0]
    assert "Content-Encoding" not in sent.headers
    assert sent.content == request.to_json().encode()


def test_client_gzip_applies_strictly_over_the_threshold() -> None:
    event_id = uuid.uuid4()
    envelope_overhead = len(ingest_envelope_json([(event_id, '{"p":""}')]))
    for size, compressed in [(1024, False), (1025, True)]:
        text = '{"p":"' + "x" * (size - envelope_overhead) + '"}'
        assert len(ingest_envelope_json([(event_id, text)])) == size
        server = ScriptedServer(
            [status(200, {"results": [{"event_id": str(event_id), "status": "accepted"}]})]
        )
        with make_client(server) as client:
            client.audit_ingest_raw([(event_id, text)])
        assert ("Content-Encoding" in server.requests[0].headers) is compressed, size


@pytest.mark.parametrize(("threshold", "compressed"), [(None, False), (0, True), (100_000, False)])
def test_client_gzip_threshold_is_configurable(threshold: int | None, compressed: bool) -> None:
    request = ingest_request(10)
    server = ScriptedServer([answer_ingest])
    with make_client(server, gzip_threshold=threshold) as client:
        client.audit_ingest(request)
    sent = server.requests[0]
    assert ("Content-Encoding" in sent.headers) is compressed
    assert body_of(sent) == request.to_json().encode()


# Retries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", RETRYABLE)
def test_client_retries_retryable_status_then_succeeds(code: int) -> None:
    server = ScriptedServer([status(code, {"error": "not now"}), status(code), answer_ingest])
    sleeps = Sleeps()
    request = ingest_request()
    with make_client(server, sleeps) as client:
        response = client.audit_ingest(request)
    assert response.results[0].event_id == request.events[0].event_id
    assert len(server.requests) == 3
    # random() is 0.5: half the doubling ceiling (initial 0.5 s).
    assert sleeps.waits == [0.25, 0.5]
    # The same request (body included) is sent each time.
    assert len({body_of(r) for r in server.requests}) == 1


@pytest.mark.parametrize("code", PERMANENT_4XX)
def test_client_raises_other_4xx_at_once(code: int) -> None:
    server = ScriptedServer([status(code, {"detail": f"refused {code}"})])
    sleeps = Sleeps()
    with make_client(server, sleeps) as client, pytest.raises(ClientError) as caught:
        client.audit_ingest(ingest_request())
    assert len(server.requests) == 1
    assert sleeps.waits == []
    error = caught.value
    assert type(error) is ClientError
    assert error.status_code == code
    assert json.loads(error.body) == {"detail": f"refused {code}"}
    assert (error.method, error.url) == ("POST", f"{BASE_URL}/v1/audit/ingest")
    assert str(code) in str(error)
    assert error.__cause__ is None


@pytest.mark.parametrize("code", [501, 505, 511])
def test_client_raises_non_retryable_5xx_at_once(code: int) -> None:
    server = ScriptedServer([status(code, "nope")])
    with make_client(server) as client, pytest.raises(ServerError) as caught:
        client.health()
    assert len(server.requests) == 1
    assert caught.value.status_code == code


def test_client_does_not_follow_redirects() -> None:
    server = ScriptedServer([status(307, "", {"Location": "https://elsewhere.test/"})])
    with make_client(server) as client, pytest.raises(HTTPStatusError) as caught:
        client.audit_ingest(ingest_request())
    assert type(caught.value) is HTTPStatusError
    assert caught.value.status_code == 307
    assert len(server.requests) == 1


def test_client_error_body_is_truncated() -> None:
    server = ScriptedServer([status(400, "x" * 100_000)])
    with make_client(server) as client, pytest.raises(ClientError) as caught:
        client.health()
    assert len(caught.value.body) < 2200
    assert caught.value.body.endswith("[97952 more characters]")
    assert len(str(caught.value)) < 400


def test_client_retries_exhausted_carries_status_and_retry_after() -> None:
    server = ScriptedServer([status(503, "busy", {"Retry-After": "12"})])
    sleeps = Sleeps()
    policy = sleeps.policy(max_attempts=3, deadline=None)
    with make_client(server, retry=policy) as client, pytest.raises(RetriesExhausted) as caught:
        client.audit_ingest(ingest_request())
    exhausted = caught.value
    assert len(server.requests) == 3
    assert sleeps.waits == [12.0, 12.0]
    assert exhausted.attempts == 3
    assert exhausted.retry_after == 12.0
    assert exhausted.status_code == 503
    assert isinstance(exhausted.last_error, ServiceUnavailableError)
    assert exhausted.last_error.body == "busy"
    assert exhausted.__cause__ is exhausted.last_error


def test_client_429_becomes_rate_limited_error() -> None:
    server = ScriptedServer([status(429, "slow down", {"Retry-After": "2"})])
    client = make_client(server, retry=RetryPolicy.none())
    with client, pytest.raises(RetriesExhausted) as caught:
        client.track(track_request())
    assert isinstance(caught.value.last_error, RateLimitedError)
    assert caught.value.retry_after == 2.0


def test_client_retry_after_seconds_is_a_minimum() -> None:
    server = ScriptedServer([status(429, "", {"Retry-After": "7"}), answer_ingest])
    sleeps = Sleeps()
    with make_client(server, sleeps) as client:
        client.audit_ingest(ingest_request())
    assert sleeps.waits == [7.0]


def test_client_retry_after_http_date_is_measured_from_the_server_date() -> None:
    headers = {
        "Date": "Fri, 27 Nov 2026 10:00:00 GMT",
        "Retry-After": "Fri, 27 Nov 2026 10:00:09 GMT",
    }
    server = ScriptedServer([status(503, "", headers), answer_ingest])
    sleeps = Sleeps()
    with make_client(server, sleeps) as client:
        client.audit_ingest(ingest_request())
    assert sleeps.waits == [9.0]


def test_client_retry_after_is_capped() -> None:
    server = ScriptedServer([status(503, "", {"Retry-After": "86400"}), answer_ingest])
    sleeps = Sleeps()
    policy = sleeps.policy(max_retry_after=20.0, deadline=None)
    with make_client(server, retry=policy) as client:
        client.audit_ingest(ingest_request())
    assert sleeps.waits == [20.0]


def test_client_backoff_wait_is_kept_when_longer_than_retry_after() -> None:
    server = ScriptedServer([status(503, "", {"Retry-After": "1"})] * 4 + [answer_ingest])
    sleeps = Sleeps()
    with make_client(server, sleeps, retry=sleeps.policy(random=lambda: 1.0)) as client:
        client.audit_ingest(ingest_request())
    assert sleeps.waits == [1.0, 1.0, 2.0, 4.0]


def test_client_deadline_stops_before_max_attempts() -> None:
    server = ScriptedServer([status(502)])
    sleeps = Sleeps()
    policy = sleeps.policy(max_attempts=20, deadline=5.0, random=lambda: 1.0)
    with make_client(server, retry=policy) as client, pytest.raises(DeadlineExceeded) as caught:
        client.audit_ingest(ingest_request())
    # Waits 0.5 + 1 + 2 = 3.5 s; the next (4 s) would end past the 5 s deadline.
    assert sleeps.waits == [0.5, 1.0, 2.0]
    assert len(server.requests) == 4
    assert caught.value.attempts == 4
    assert caught.value.status_code == 502


def test_client_none_policy_makes_one_attempt() -> None:
    server = ScriptedServer([status(500)])
    client = make_client(server, retry=RetryPolicy.none())
    with client, pytest.raises(RetriesExhausted) as caught:
        client.health()
    assert len(server.requests) == 1
    assert caught.value.attempts == 1


@pytest.mark.parametrize(("theirs", "ours"), RETRIED_HTTPX_ERRORS)
def test_client_maps_and_retries_httpx_error(
    theirs: type[httpx.HTTPError], ours: type[TransportError]
) -> None:
    server = ScriptedServer([theirs("boom"), theirs("boom again"), answer_ingest])
    sleeps = Sleeps()
    with make_client(server, sleeps) as client:
        client.audit_ingest(ingest_request())
    assert len(server.requests) == 3
    assert len(sleeps.waits) == 2

    server = ScriptedServer([theirs("down")])
    client = make_client(server, retry=sleeps.policy(max_attempts=2))
    with client, pytest.raises(RetriesExhausted) as caught:
        client.audit_ingest(ingest_request())
    last = caught.value.last_error
    assert type(last) is ours
    assert isinstance(last.__cause__, theirs)
    assert last.method == "POST"
    assert last.url == f"{BASE_URL}/v1/audit/ingest"
    assert "down" in str(last)


@pytest.mark.parametrize(("theirs", "ours"), PERMANENT_HTTPX_ERRORS)
def test_client_maps_permanent_httpx_error_without_retrying(
    theirs: type[Exception], ours: type[TelemetryError]
) -> None:
    error = theirs() if issubclass(theirs, httpx.StreamError) else theirs("broken")
    server = ScriptedServer([error])
    with make_client(server) as client, pytest.raises(TelemetryError) as caught:
        client.health()
    assert type(caught.value) is ours
    assert isinstance(caught.value.__cause__, theirs)
    assert len(server.requests) == 1


def test_client_maps_a_body_that_fails_to_decompress() -> None:
    def bad_gzip(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})

    server = ScriptedServer([bad_gzip])
    with make_client(server) as client, pytest.raises(ResponseDecodeError) as caught:
        client.health()
    assert isinstance(caught.value.__cause__, httpx.DecodingError)


def test_client_no_httpx_error_escapes_raw() -> None:
    # Every transport-level httpx exception class, whatever its place in the tree.
    classes = [
        value
        for value in vars(httpx).values()
        if isinstance(value, type) and issubclass(value, httpx.RequestError)
    ]
    assert len(classes) >= 16
    for cls in classes:
        server = ScriptedServer([cls("x")])
        client = make_client(server, retry=RetryPolicy.none())
        with client, pytest.raises(TelemetryError) as caught:
            client.health()
        error = caught.value
        if isinstance(error, RetriesExhausted):
            error = error.last_error
        assert isinstance(error.__cause__, cls), cls


# Decoding answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", None),
        ({"results": "many"}, "results"),
        ({"results": [{"event_id": "nope", "status": "accepted"}]}, "results.0.event_id"),
        ({"results": [{"event_id": str(uuid.UUID(int=1)), "status": "lost"}]}, "results.0.status"),
    ],
)
def test_client_malformed_200_raises_response_decode_error(body: Any, field: str | None) -> None:
    server = ScriptedServer([status(200, body)])
    with make_client(server) as client, pytest.raises(ResponseDecodeError) as caught:
        client.audit_ingest(ingest_request())
    error = caught.value
    assert error.status_code == 200
    assert error.field == field
    assert "IngestResponse" in str(error)
    assert len(server.requests) == 1  # a malformed answer is not retried


def mismatched(change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        results = json.loads(answer_ingest(request).content)["results"]
        return httpx.Response(200, json={"results": change(results)})

    return answer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda results: results[:-1], "2 results for 3 events"),
        (lambda results: results[::-1], "result 0 is for event"),
        (
            lambda results: [{**results[0], "event_id": str(uuid.UUID(int=9))}, *results[1:]],
            "result 0 is for event 00000000-0000-0000-0000-000000000009",
        ),
    ],
)
def test_client_ingest_answer_must_answer_the_request(
    change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], message: str
) -> None:
    server = ScriptedServer([mismatched(change)])
    with make_client(server) as client, pytest.raises(ResponseDecodeError, match=message):
        client.audit_ingest(ingest_request(3))

    items = [(uuid.uuid4(), make_event(n).to_json()) for n in range(3)]
    server = ScriptedServer([mismatched(change)])
    with make_client(server) as client, pytest.raises(ResponseDecodeError, match=message):
        client.audit_ingest_raw(items)


def test_client_rejected_results_are_returned_not_raised() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        (item,) = parse_ingest_request(body_of(request))
        result = {"event_id": str(item.event_id), "status": "rejected", "error": "bad actor"}
        return httpx.Response(200, json={"results": [result]})

    server = ScriptedServer([reject])
    with make_client(server) as client:
        response = client.audit_ingest(ingest_request())
    assert response.results[0].status is IngestStatus.REJECTED
    assert response.results[0].error == "bad actor"


# Lifecycle -------------------------------------------------------------------------------------


class ClosingTransport(httpx.MockTransport):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_client_context_manager_closes_pool_and_transport() -> None:
    transport = ClosingTransport(ScriptedServer([json_answer({"status": "ok"})]))
    with TelemetryClient(BASE_URL, transport=transport) as client:
        client.health()
        assert not client.is_closed
    assert client.is_closed
    assert transport.closed
    with pytest.raises(RuntimeError, match="TelemetryClient is closed"):
        client.health()
    client.close()  # idempotent


def test_client_repr_and_properties() -> None:
    policy = RetryPolicy(max_attempts=2)
    client = TelemetryClient("https://telemetry.test/base", retry=policy)
    assert repr(client) == "TelemetryClient(base_url='https://telemetry.test/base')"
    assert client.retry is policy
    assert client.base_url == httpx.URL("https://telemetry.test/base")
    client.close()


# A real round trip ----------------------------------------------------------------------------


def receiver_app(received: list[tuple[str, dict[str, str], bytes]]) -> Starlette:
    """A tiny Telemetry: parses every ingest body with the contract models."""

    async def health(request: Request) -> JSONResponse:
        received.append(("health", dict(request.headers), b""))
        return JSONResponse(HealthResponse(status=HealthStatus.OK).model_dump(mode="json"))

    async def ingest(request: Request) -> JSONResponse:
        body = await request.body()
        received.append(("ingest", dict(request.headers), body))
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        results = [
            {"event_id": str(item.event_id), "status": "accepted"}
            for item in parse_ingest_request(body)
        ]
        return JSONResponse({"results": results})

    return Starlette(
        routes=[Route("/health", health), Route("/v1/audit/ingest", ingest, methods=["POST"])]
    )


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(receiver_app(received), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_client_real_round_trip_through_uvicorn_on_loopback(
    loopback_server: tuple[str, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    url, received = loopback_server
    small, large = ingest_request(1), ingest_request(50)

    with TelemetryClient(url) as client:
        assert client.health().status is HealthStatus.OK
        answer = client.audit_ingest(large)
    assert [r.event_id for r in answer.results] == [i.event_id for i in large.events]

    async def use_async_client() -> IngestResponse:
        async with AsyncTelemetryClient(url) as client:
            assert (await client.health()).status is HealthStatus.OK
            return await client.audit_ingest(small)

    answer = asyncio.run(use_async_client())
    assert answer.results[0].event_id == small.events[0].event_id
    assert answer.results[0].status is IngestStatus.ACCEPTED

    assert [kind for kind, _, _ in received] == ["health", "ingest", "health", "ingest"]
    _, headers, body = received[1]
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == large.to_json().encode()
    assert headers["x-auditevt-contract"] == CONTRACT_VERSION
    assert headers["user-agent"].startswith("auditevt-telemetry-client/")
    assert "content-encoding" not in received[3][1]
