"""AsyncTelemetryClient: the same endpoints, retries and errors as the sync client, awaited.

The samples and the scripted server come from ``test_client.py``; the real loopback round trip
of both clients is ``test_client_real_round_trip_through_uvicorn_on_loopback`` there.
"""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import anyio
import httpx
import pytest
from test_client import (
    BASE_URL,
    ENDPOINT_IDS,
    ENDPOINTS,
    PERMANENT_4XX,
    PERMANENT_HTTPX_ERRORS,
    RETRIED_HTTPX_ERRORS,
    RETRYABLE,
    Endpoint,
    ScriptedServer,
    Sleeps,
    answer_ingest,
    body_of,
    ingest_request,
    json_answer,
    status,
)

from auditevt import CONTRACT_VERSION, HealthStatus, IngestResponse, ingest_envelope_json
from conftest import make_event
from telemetry_client import (
    AsyncTelemetryClient,
    ClientError,
    DeadlineExceeded,
    ResponseDecodeError,
    RetriesExhausted,
    RetryPolicy,
    ServiceUnavailableError,
    TelemetryError,
    TransportError,
)

pytestmark = pytest.mark.anyio


class AsyncSleeps(Sleeps):
    """Records async waits; a blocking sleep would stall the event loop, so it fails the test."""

    def sleep(self, seconds: float) -> None:
        raise AssertionError("the async client used the blocking sleep")

    async def async_sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def make_client(
    server: ScriptedServer, sleeps: Sleeps | None = None, **options: Any
) -> AsyncTelemetryClient:
    sleeps = sleeps or AsyncSleeps()
    options.setdefault("retry", sleeps.policy())
    return AsyncTelemetryClient(BASE_URL, transport=server.transport, **options)


async def test_async_client_audit_ingest_round_trip() -> None:
    request = ingest_request(2)
    server = ScriptedServer([answer_ingest])
    async with make_client(server) as client:
        response = await client.audit_ingest(request)
    assert isinstance(response, IngestResponse)
    assert [r.event_id for r in response.results] == [i.event_id for i in request.events]
    (sent,) = server.requests
    assert (sent.method, sent.url.path) == ("POST", "/v1/audit/ingest")
    assert body_of(sent).decode() == request.to_json()


async def test_async_client_audit_ingest_raw_round_trip() -> None:
    items = [(uuid.uuid4(), make_event(n).to_json()) for n in range(3)]
    server = ScriptedServer([answer_ingest])
    async with make_client(server) as client:
        response = await client.audit_ingest_raw(items)
    assert [r.event_id for r in response.results] == [event_id for event_id, _ in items]
    assert body_of(server.requests[0]).decode() == ingest_envelope_json(items)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_async_client_endpoint_round_trip(endpoint: Endpoint) -> None:
    argument = endpoint.make_argument()
    server = ScriptedServer([json_answer(endpoint.answer)])
    async with make_client(server) as client:
        response = await getattr(client, endpoint.method_name)(argument)
    assert response == endpoint.response_model.model_validate(endpoint.answer)
    (sent,) = server.requests
    assert (sent.method, sent.url.path) == (endpoint.http_method, endpoint.path)
    if endpoint.request_model is not None:
        assert endpoint.request_model.model_validate_json(body_of(sent)) == argument
    else:
        assert type(argument).model_validate(dict(sent.url.params)) == argument


async def test_async_client_health_returns_a_down_answer() -> None:
    server = ScriptedServer([status(503, {"status": "down"})])
    async with make_client(server) as client:
        assert (await client.health()).status is HealthStatus.DOWN
    assert len(server.requests) == 1


async def test_async_client_headers_and_gzip() -> None:
    request = ingest_request(10)
    server = ScriptedServer([answer_ingest])
    async with make_client(server, bearer_token="t0ken") as client:
        await client.audit_ingest(request)
    sent = server.requests[0]
    assert sent.headers["X-Auditevt-Contract"] == CONTRACT_VERSION
    assert sent.headers["Authorization"] == "Bearer t0ken"
    assert sent.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(sent.content) == request.to_json().encode()


@pytest.mark.parametrize("code", RETRYABLE)
async def test_async_client_retries_retryable_status_then_succeeds(code: int) -> None:
    server = ScriptedServer([status(code), status(code), answer_ingest])
    sleeps = AsyncSleeps()
    async with make_client(server, sleeps) as client:
        await client.audit_ingest(ingest_request())
    assert len(server.requests) == 3
    assert sleeps.waits == [0.25, 0.5]


@pytest.mark.parametrize("code", PERMANENT_4XX)
async def test_async_client_raises_other_4xx_at_once(code: int) -> None:
    server = ScriptedServer([status(code, {"detail": "no"})])
    sleeps = AsyncSleeps()
    client = make_client(server, sleeps)
    async with client:
        with pytest.raises(ClientError) as caught:
            await client.audit_ingest(ingest_request())
    assert len(server.requests) == 1
    assert sleeps.waits == []
    assert caught.value.status_code == code
    assert json.loads(caught.value.body) == {"detail": "no"}


@pytest.mark.parametrize(("theirs", "ours"), RETRIED_HTTPX_ERRORS)
async def test_async_client_maps_and_retries_httpx_error(
    theirs: type[httpx.HTTPError], ours: type[TransportError]
) -> None:
    server = ScriptedServer([theirs("boom"), answer_ingest])
    sleeps = AsyncSleeps()
    async with make_client(server, sleeps) as client:
        await client.audit_ingest(ingest_request())
    assert len(server.requests) == 2

    server = ScriptedServer([theirs("down")])
    client = make_client(server, retry=sleeps.policy(max_attempts=2))
    async with client:
        with pytest.raises(RetriesExhausted) as caught:
            await client.health()
    assert type(caught.value.last_error) is ours
    assert isinstance(caught.value.last_error.__cause__, theirs)


@pytest.mark.parametrize(("theirs", "ours"), PERMANENT_HTTPX_ERRORS)
async def test_async_client_maps_permanent_httpx_error_without_retrying(
    theirs: type[Exception], ours: type[TelemetryError]
) -> None:
    error = theirs() if issubclass(theirs, httpx.StreamError) else theirs("broken")
    server = ScriptedServer([error])
    client = make_client(server)
    async with client:
        with pytest.raises(TelemetryError) as caught:
            await client.health()
    assert type(caught.value) is ours
    assert len(server.requests) == 1


async def test_async_client_retries_exhausted_carries_retry_after() -> None:
    server = ScriptedServer([status(503, "busy", {"Retry-After": "3"})])
    sleeps = AsyncSleeps()
    client = make_client(server, retry=sleeps.policy(max_attempts=2, deadline=None))
    async with client:
        with pytest.raises(RetriesExhausted) as caught:
            await client.audit_ingest(ingest_request())
    assert sleeps.waits == [3.0]
    assert caught.value.retry_after == 3.0
    assert isinstance(caught.value.last_error, ServiceUnavailableError)


async def test_async_client_deadline_stops_before_max_attempts() -> None:
    server = ScriptedServer([status(504)])
    sleeps = AsyncSleeps()
    client = make_client(server, retry=sleeps.policy(deadline=5.0, random=lambda: 1.0))
    async with client:
        with pytest.raises(DeadlineExceeded):
            await client.health()
    assert sleeps.waits == [0.5, 1.0, 2.0]
    assert len(server.requests) == 4


async def test_async_client_ingest_answer_must_answer_the_request() -> None:
    other = {"results": [{"event_id": str(uuid.UUID(int=3)), "status": "accepted"}]}
    server = ScriptedServer([json_answer(other)])
    client = make_client(server)
    async with client:
        with pytest.raises(ResponseDecodeError, match="result 0 is for event") as caught:
            await client.audit_ingest(ingest_request())
    assert caught.value.status_code == 200


async def test_async_client_malformed_200_raises_response_decode_error() -> None:
    server = ScriptedServer([status(200, {"status": "splendid"})])
    client = make_client(server)
    async with client:
        with pytest.raises(ResponseDecodeError) as caught:
            await client.health()
    assert caught.value.field == "status"


async def test_async_client_shares_one_pool_between_tasks() -> None:
    server = ScriptedServer([answer_ingest])
    requests = [ingest_request() for _ in range(20)]
    answers: dict[uuid.UUID, uuid.UUID] = {}

    async with make_client(server) as client:

        async def send(request: Any) -> None:
            response = await client.audit_ingest(request)
            answers[request.events[0].event_id] = response.results[0].event_id

        async with anyio.create_task_group() as group:
            for request in requests:
                group.start_soon(send, request)
    assert len(server.requests) == 20
    assert all(sent == answered for sent, answered in answers.items())
    assert len(answers) == 20


class ClosingTransport(httpx.MockTransport):
    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_async_client_context_manager_closes_pool_and_transport() -> None:
    transport = ClosingTransport(ScriptedServer([json_answer({"status": "ok"})]))
    async with AsyncTelemetryClient(BASE_URL, transport=transport) as client:
        await client.health()
        assert not client.is_closed
    assert client.is_closed
    assert transport.closed
    with pytest.raises(RuntimeError, match="AsyncTelemetryClient is closed"):
        await client.health()
    await client.aclose()


async def test_async_client_constructor_opens_nothing() -> None:
    # No connection is attempted until a call: an unreachable URL is fine to construct.
    client = AsyncTelemetryClient("https://unreachable.invalid", retry=RetryPolicy.none())
    assert not client.is_closed
    await client.aclose()
