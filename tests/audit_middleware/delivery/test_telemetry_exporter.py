"""TelemetryExporter's mapping of Telemetry's answers to outcomes, one status at a time.

The HTTP level is mocked with respx (these are the client's own status and error paths); the
batches are plain ``OutboxItem`` values, no database. The relay settling such results in a real
outbox is in test_relay.py and test_exporter.py.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
import respx

from audit_middleware import ExportResult, OutboxItem, TelemetryExporter
from audit_middleware.storage._outbox_types import ITEM_OVERHEAD_BYTES
from conftest import make_event
from telemetry_client import AsyncTelemetryClient, RetryPolicy

pytestmark = pytest.mark.anyio

BASE = "http://telemetry.test"
INGEST = f"{BASE}/v1/audit/ingest"


def make_item(number: int, *, padding: int = 0) -> OutboxItem:
    event = make_event(number + 1, padding=padding)
    return OutboxItem(id=number + 1, event_id=uuid.uuid4(), payload=event.to_json(), attempts=0)


def sent_ids(request: httpx.Request) -> list[str]:
    body = request.content
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return [item["event_id"] for item in json.loads(body)["events"]]


def answer(
    statuses: Callable[[str], str] = lambda _: "accepted",
) -> Callable[[httpx.Request], httpx.Response]:
    """A 200 answering each event with ``statuses(event_id)``."""

    def respond(request: httpx.Request) -> httpx.Response:
        results = []
        for event_id in sent_ids(request):
            status = statuses(event_id)
            result = {"event_id": event_id, "status": status}
            if status == "rejected":
                result["error"] = "organization_id: not served here"
            results.append(result)
        return httpx.Response(200, json={"results": results})

    return respond


@pytest.fixture
def telemetry() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def export(items: list[OutboxItem], **options: int) -> ExportResult:
    async with AsyncTelemetryClient(
        BASE, allow_insecure_http=True, retry=RetryPolicy.none()
    ) as client:
        return await TelemetryExporter(client, **options).export(items)


async def test_200_reports_each_event_as_delivered_duplicate_or_rejected(
    telemetry: respx.MockRouter,
) -> None:
    items = [make_item(number) for number in range(6)]
    verdicts = {str(items[1].event_id): "duplicate", str(items[4].event_id): "rejected"}
    telemetry.post(INGEST).mock(side_effect=answer(lambda e: verdicts.get(e, "accepted")))

    result = await export(items)

    assert list(result.delivered) == [1, 3, 4, 6]
    assert list(result.duplicates) == [2]
    assert dict(result.rejected) == {5: "rejected by Telemetry: organization_id: not served here"}
    assert result.failure is None
    assert telemetry.calls.call_count == 1


@pytest.mark.parametrize("status", [400, 422])
async def test_a_refused_batch_is_split_to_pin_the_refusal_on_one_event(
    telemetry: respx.MockRouter, status: int
) -> None:
    items = [make_item(number) for number in range(8)]
    broken = str(items[5].event_id)

    def respond(request: httpx.Request) -> httpx.Response:
        if broken in sent_ids(request):
            return httpx.Response(status, json={"error": "event 0: action: bad value"})
        return answer()(request)

    telemetry.post(INGEST).mock(side_effect=respond)
    result = await export(items)

    assert sorted(result.delivered) == [1, 2, 3, 4, 5, 7, 8]
    assert list(result.rejected) == [6]
    assert result.rejected[6].startswith(f"refused by Telemetry: {status} ")
    assert result.failure is None
    assert telemetry.calls.call_count == 1 + 2 + 2 + 2  # the batch, then halves down to one


async def test_413_splits_the_batch_until_each_request_fits(telemetry: respx.MockRouter) -> None:
    items = [make_item(number) for number in range(16)]

    def respond(request: httpx.Request) -> httpx.Response:
        if len(sent_ids(request)) > 4:
            return httpx.Response(413, text="request entity too large")
        return answer()(request)

    telemetry.post(INGEST).mock(side_effect=respond)
    result = await export(items)

    assert sorted(result.delivered) == list(range(1, 17))
    assert not result.rejected and result.failure is None
    assert telemetry.calls.call_count == 1 + 2 + 4  # 16, 2 x 8, 4 x 4


async def test_413_rejects_an_event_bigger_than_any_batch_may_be(
    telemetry: respx.MockRouter,
) -> None:
    (huge,) = [make_item(0, padding=3000)]
    assert huge.size > 2048 + ITEM_OVERHEAD_BYTES
    telemetry.post(INGEST).mock(return_value=httpx.Response(413, text="too large"))

    result = await export([huge], max_batch_bytes=2048)

    assert list(result.rejected) == [1] and "413" in result.rejected[1]
    assert result.failure is None


async def test_a_receiver_that_refuses_everything_dead_letters_nothing(
    telemetry: respx.MockRouter,
) -> None:
    items = [make_item(number) for number in range(64)]
    telemetry.post(INGEST).mock(return_value=httpx.Response(400, json={"error": "version 9?"}))

    result = await export(items, max_split_requests=6)

    assert not result.delivered and not result.rejected
    assert result.failure is not None and result.failure.kind == "retryable"
    assert result.failure.reason.startswith("refused by Telemetry: 400 ")
    assert telemetry.calls.call_count == 7


@pytest.mark.parametrize("status", [401, 403, 404, 405])
async def test_other_4xx_is_a_configuration_failure_and_rejects_nothing(
    telemetry: respx.MockRouter, status: int
) -> None:
    items = [make_item(number) for number in range(4)]
    telemetry.post(INGEST).mock(return_value=httpx.Response(status, json={"error": "bad key"}))

    result = await export(items)

    assert not result.delivered and not result.rejected
    assert result.failure is not None
    assert (result.failure.kind, result.failure.key) == ("configuration", f"HTTP {status}")
    assert telemetry.calls.call_count == 1  # never split: it is not about the events


async def test_429_is_retryable_with_the_retry_after_telemetry_sent(
    telemetry: respx.MockRouter,
) -> None:
    telemetry.post(INGEST).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow"})
    )

    result = await export([make_item(0), make_item(1)])

    assert not result.delivered and not result.rejected
    assert result.failure is not None
    failure = result.failure
    assert (failure.kind, failure.key, failure.retry_after) == ("retryable", "HTTP 429", 7.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 507])
async def test_5xx_is_retryable(telemetry: respx.MockRouter, status: int) -> None:
    telemetry.post(INGEST).mock(return_value=httpx.Response(status, text="down"))

    result = await export([make_item(0)])

    assert not result.delivered and not result.rejected
    assert result.failure is not None
    assert (result.failure.kind, result.failure.key) == ("retryable", f"HTTP {status}")
    assert result.failure.retry_after is None


@pytest.mark.parametrize(
    ("error", "key"),
    [
        (httpx.ConnectError("connection refused"), "ConnectError"),
        (httpx.ReadTimeout("timed out"), "ReadTimeout"),
        (httpx.RemoteProtocolError("peer closed"), "ProtocolError"),
    ],
)
async def test_transport_errors_are_retryable(
    telemetry: respx.MockRouter, error: Exception, key: str
) -> None:
    telemetry.post(INGEST).mock(side_effect=error)

    result = await export([make_item(0), make_item(1)])

    assert not result.delivered and not result.rejected
    assert result.failure is not None
    assert (result.failure.kind, result.failure.key) == ("retryable", key)


async def test_an_answer_that_does_not_parse_is_retryable(telemetry: respx.MockRouter) -> None:
    telemetry.post(INGEST).mock(return_value=httpx.Response(200, json={"results": []}))

    result = await export([make_item(0)])

    assert result.failure is not None
    assert (result.failure.kind, result.failure.key) == ("retryable", "ResponseDecodeError")
    assert not result.delivered and not result.rejected


async def test_a_row_no_envelope_can_hold_is_rejected_unsent(telemetry: respx.MockRouter) -> None:
    good = [make_item(number) for number in range(3)]
    null = OutboxItem(id=99, event_id=uuid.uuid4(), payload="null", attempts=0)
    route = telemetry.post(INGEST).mock(side_effect=answer())

    result = await export([good[0], null, good[1], good[2]])

    assert list(result.delivered) == [1, 2, 3]
    assert list(result.rejected) == [99] and "not a JSON object" in result.rejected[99]
    assert route.call_count == 1 and str(null.event_id) not in sent_ids(route.calls[0].request)


async def test_a_closed_client_is_raised_not_classified(telemetry: respx.MockRouter) -> None:
    client = AsyncTelemetryClient(BASE, allow_insecure_http=True)
    await client.aclose()
    with pytest.raises(RuntimeError, match="is closed"):
        await TelemetryExporter(client).export([make_item(0)])


async def test_the_exporter_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="client must be an AsyncTelemetryClient, got dict"):
        TelemetryExporter({})  # type: ignore[arg-type]
    async with AsyncTelemetryClient(BASE, allow_insecure_http=True) as client:
        with pytest.raises(ValueError, match="max_split_requests must be an int >= 0, got -1"):
            TelemetryExporter(client, max_split_requests=-1)
        assert repr(TelemetryExporter(client)) == f"TelemetryExporter(base_url='{BASE}')"
