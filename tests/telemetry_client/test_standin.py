from __future__ import annotations

import gzip
import io
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from auditevt import (
    Action,
    Event,
    HealthStatus,
    IngestItem,
    IngestRequest,
    IngestStatus,
    Pseudonymizer,
)
from conftest import make_event
from telemetry_client import (
    AsyncTelemetryClient,
    ProtocolError,
    RetriesExhausted,
    RetryPolicy,
    ServiceUnavailableError,
    TelemetryClient,
)
from telemetry_client.testing import (
    Fault,
    FaultInjection,
    InjectedDisconnect,
    TelemetryStandIn,
    serve_asgi,
    standard_event_check,
    telemetry_command,
)

INGEST = "/v1/audit/ingest"
ACTOR = Pseudonymizer(bytes(32), key_id="k1").pseudonymize(42)
AT = "2026-11-27T10:11:12.25Z"
ID = uuid.UUID(int=1)


def envelope(*events: Event | dict[str, Any], ids: list[uuid.UUID] | None = None) -> str:
    ids = ids or [uuid.uuid4() for _ in events]
    items = [
        {
            "event_id": str(event_id),
            "event": json.loads(e.to_json()) if isinstance(e, Event) else e,
        }
        for event_id, e in zip(ids, events, strict=True)
    ]
    return json.dumps({"events": items})


@pytest.fixture
async def client() -> AsyncIterator[tuple[TelemetryStandIn, httpx.AsyncClient]]:
    standin = TelemetryStandIn()
    transport = httpx.ASGITransport(app=standin.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://telemetry") as http:
        yield standin, http


# -- audit ingest ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_standin_ingest_answers_each_item_and_deduplicates(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    standin, http = client
    ids = [uuid.uuid4() for _ in range(4)]
    bad = json.loads(make_event(3).to_json()) | {"user_id": "7"}
    body = envelope(make_event(1), make_event(2), bad, make_event(4, organization_id=-3), ids=ids)

    first = await http.post(INGEST, content=body)
    again = await http.post(INGEST, content=body)

    assert first.status_code == 200
    results = first.json()["results"]
    assert [r["event_id"] for r in results] == [str(i) for i in ids]
    assert [r["status"] for r in results] == ["accepted", "accepted", "rejected", "rejected"]
    assert results[2]["error"].startswith("event.user_id: Input should be a valid integer")
    assert "organization_id=-3 is negative" in results[3]["error"]
    assert [r["status"] for r in again.json()["results"]] == [
        "duplicate",
        "duplicate",
        "rejected",
        "rejected",
    ]
    assert standin.event_ids() == {ids[0], ids[1]}
    assert standin.events()[ids[1]] == make_event(2)
    assert standin.deliveries(ids[0]) == 2
    assert standin.deliveries(ids[2]) == 0
    assert set(standin.rejected()) == {ids[2], ids[3]}
    assert standin.request_counts() == {INGEST: 2}
    assert ids[0] in standin.received_at()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{", "(body)"),
        ("[]", "(body)"),
        ("{}", "events"),
        ('{"events": []}', "events"),
        ('{"events": [{"event_id": "nope", "event": {}}]}', "events[0].event_id"),
        (json.dumps({"events": [{"event_id": str(ID), "event": 5}]}), "events[0].event"),
        (json.dumps({"events": [{"event_id": str(ID), "event": {}}] * 2}), "events"),
    ],
)
async def test_standin_ingest_malformed_envelope_is_400(
    client: tuple[TelemetryStandIn, httpx.AsyncClient], body: str, field: str
) -> None:
    standin, http = client

    response = await http.post(INGEST, content=body)

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert standin.event_ids() == frozenset()


@pytest.mark.anyio
async def test_standin_ingest_refuses_more_than_500_items(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    _, http = client
    events = [make_event(n) for n in range(501)]

    response = await http.post(INGEST, content=envelope(*events))

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "events"


@pytest.mark.anyio
async def test_standin_event_check_is_replaceable() -> None:
    def no_deletes(event: Event) -> str | None:
        return "deletes are refused here" if event.action is Action.DELETE else None

    standin = TelemetryStandIn(event_check=no_deletes)
    transport = httpx.ASGITransport(app=standin.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post(
            INGEST, content=envelope(make_event(1, action=Action.DELETE), make_event(2))
        )

    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == ["rejected", "accepted"]
    assert response.json()["results"][0]["error"] == "event: deletes are refused here"


def test_standin_standard_event_check_rejects_negative_tenant_and_missing_action() -> None:
    assert standard_event_check(make_event()) is None
    assert standard_event_check(make_event(organization_id=0)) is None  # anonymous: kept
    assert "organization_id=-1" in (standard_event_check(make_event(organization_id=-1)) or "")
    empty_action = Event.model_validate_json(make_event().to_json().replace("UPDATE", ""))
    assert "action=''" in (standard_event_check(empty_action) or "")


# -- bodies: gzip, limits, types ------------------------------------------------------------


@pytest.mark.anyio
async def test_standin_accepts_gzip_bodies(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    standin, http = client
    event_id = uuid.uuid4()
    body = gzip.compress(envelope(make_event(), ids=[event_id]).encode())

    response = await http.post(INGEST, content=body, headers={"Content-Encoding": "gzip"})

    assert response.json()["results"][0]["status"] == "accepted"
    assert standin.event_ids() == {event_id}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Encoding": "gzip"}, b"not gzip at all", 400),
        ({"Content-Encoding": "gzip"}, gzip.compress(b" " * 5000), 413),
        ({}, b" " * 5000, 413),
        ({"Content-Encoding": "br"}, b"{}", 415),
        ({"Content-Type": "text/plain"}, b"{}", 415),
    ],
)
async def test_standin_refuses_bad_bodies(
    headers: dict[str, str], body: bytes, status: int
) -> None:
    standin = TelemetryStandIn(max_body_bytes=4096)
    transport = httpx.ASGITransport(app=standin.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post(INGEST, content=body, headers=headers)

    assert response.status_code == status
    assert response.json()["error"]


@pytest.mark.anyio
async def test_standin_requires_the_bearer_token_when_configured() -> None:
    standin = TelemetryStandIn(bearer_token="s3cret")
    transport = httpx.ASGITransport(app=standin.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        missing = await http.post(INGEST, content=envelope(make_event()))
        wrong = await http.post(
            INGEST, content=envelope(make_event()), headers={"Authorization": "Bearer nope"}
        )
        right = await http.post(
            INGEST, content=envelope(make_event()), headers={"Authorization": "Bearer s3cret"}
        )
        health = await http.get("/health")

    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert health.status_code == 200


@pytest.mark.anyio
async def test_standin_refuses_another_contract_major_version(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    _, http = client

    newer = await http.post(
        INGEST, content=envelope(make_event()), headers={"X-Auditevt-Contract": "2.0"}
    )
    same = await http.post(
        INGEST, content=envelope(make_event()), headers={"X-Auditevt-Contract": "1.7"}
    )

    assert newer.status_code == 400
    assert "2.0" in newer.json()["error"]
    assert same.status_code == 200


# -- frontend endpoints ---------------------------------------------------------------------


def heartbeat(sequence: int, at: str, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "event_id": str(uuid.uuid4()),
        "occurred_at": at,
        "sequence": sequence,
        "interval_ms": 10_000,
        "inbound_bitrate_kbps": 1000.0 * (sequence + 1),
        "bytes_received": 1_000_000 * (sequence + 1),
        "rtt_ms": 40 + sequence,
        "buffering_ms": 1000,
        "buffering_events": 1,
        **overrides,
    }


def media_body(organization_id: int, session_id: uuid.UUID, events: list[Any]) -> dict[str, Any]:
    return {
        "organization_id": organization_id,
        "actor": ACTOR,
        "session_id": str(session_id),
        "events": events,
    }


def session_start(kind: str = "live") -> dict[str, Any]:
    return {
        "type": "session_start",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-27T10:00:00Z",
        "kind": kind,
        "transport": "webrtc",
        "device": {"platform": "web", "app_version": "2026.11.3"},
    }


@pytest.mark.anyio
async def test_standin_422_names_the_field_path(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    standin, http = client
    body = media_body(1, uuid.uuid4(), [heartbeat(0, AT, rtt_ms=-1)])

    response = await http.post("/v1/media/events", json=body)

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors[0]["field"] == "events[0].heartbeat.rtt_ms"
    assert "greater than or equal to 0" in errors[0]["message"]
    assert standin.media_requests() == []


@pytest.mark.anyio
async def test_standin_computes_bandwidth_stats_from_heartbeats(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    _, http = client
    live, other_org = uuid.uuid4(), uuid.uuid4()
    beats = [heartbeat(n, f"2026-11-27T10:00:{10 * (n + 1)}Z") for n in range(4)]
    first = media_body(5, live, [session_start(), *beats[:2]])
    await http.post("/v1/media/events", json=first)
    await http.post("/v1/media/events", json=media_body(5, live, beats[2:]))
    repeated = await http.post("/v1/media/events", json=media_body(5, live, beats[2:]))
    await http.post("/v1/media/events", json=media_body(6, other_org, [heartbeat(0, AT)]))
    window = {"since": "2026-11-27T10:00:15Z", "until": "2026-11-27T11:00:00Z"}

    stats = await http.get("/v1/media/bandwidth/stats", params={"organization_id": 5, **window})
    live_only = await http.get(
        "/v1/media/bandwidth/stats", params={"organization_id": 5, "kind": "playback", **window}
    )
    foreign = await http.get(
        "/v1/media/bandwidth/stats",
        params={"organization_id": 5, "session_id": str(other_org), **window},
    )

    assert repeated.json() == {"accepted": 0, "duplicates": 2}
    body = stats.json()
    # Heartbeats 1 to 3 fall in the window; heartbeat 0 (1 MB cumulative) came before it.
    assert (body["sessions"], body["heartbeats"]) == (1, 3)
    assert body["bytes_received"] == 4_000_000 - 1_000_000
    assert body["inbound_bitrate_kbps"] == {
        "min": 2000.0,
        "mean": 3000.0,
        "p50": 3000.0,
        "p95": 4000.0,
        "max": 4000.0,
    }
    assert body["rtt_ms"]["max"] == 43.0
    assert body["stall_count"] == 3
    assert body["buffering_ratio"] == pytest.approx(0.1)
    assert "outbound_bitrate_kbps" not in body
    assert live_only.json()["heartbeats"] == 0
    assert foreign.json()["heartbeats"] == 0


@pytest.mark.anyio
async def test_standin_refuses_a_session_of_another_organization(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    _, http = client
    session = uuid.uuid4()
    await http.post("/v1/media/events", json=media_body(1, session, [session_start()]))

    response = await http.post("/v1/media/events", json=media_body(2, session, [heartbeat(0, AT)]))

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "session_id"


@pytest.mark.anyio
async def test_standin_bandwidth_query_errors_name_the_parameter(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    _, http = client

    response = await http.get("/v1/media/bandwidth/stats", params={"organization_id": "zero"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "organization_id"


@pytest.mark.anyio
async def test_standin_deduplicates_analytics_pose_and_error_reports(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    standin, http = client
    track = {
        "organization_id": 1,
        "session_id": str(uuid.uuid4()),
        "sent_at": AT,
        "events": [
            {"type": "page_view", "event_id": str(uuid.uuid4()), "occurred_at": AT, "path": "/"},
            {
                "type": "click",
                "event_id": str(uuid.uuid4()),
                "occurred_at": AT,
                "path": "/exercises",
                "target": "start-exercise",
            },
        ],
    }
    landmark = {"x": 0.5, "y": 0.5, "z": 0.0, "visibility": 0.9}
    pose = {
        "organization_id": 1,
        "actor": ACTOR,
        "session_id": str(uuid.uuid4()),
        "frames": [
            {"frame_index": i, "captured_at": AT, "landmarks": [landmark] * 33} for i in range(3)
        ],
    }
    report = {
        "organization_id": 1,
        "report_id": str(uuid.uuid4()),
        "occurred_at": AT,
        "category": "network",
        "code": "FETCH_FAILED",
        "message": "GET /api/exercises failed",
        "http_status": 502,
        "device": {"platform": "ios", "app_version": "2026.11.3"},
    }

    tracked = [(await http.post("/v1/analytics/track", json=track)).json() for _ in range(2)]
    posed = [(await http.post("/v1/pose/frames", json=pose)).json() for _ in range(2)]
    reported = [(await http.post("/v1/errors/report", json=report)).json() for _ in range(2)]

    assert tracked == [{"accepted": 2, "duplicates": 0}, {"accepted": 0, "duplicates": 2}]
    assert posed == [{"accepted": 3, "duplicates": 0}, {"accepted": 0, "duplicates": 3}]
    assert [r["duplicate"] for r in reported] == [False, True]
    assert len(standin.analytics()) == 2
    assert len(standin.pose_requests()) == 2
    assert [r.code for r in standin.error_reports()] == ["FETCH_FAILED"]


@pytest.mark.anyio
async def test_standin_health_reports_its_status(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    standin, http = client

    ok = await http.get("/health")
    standin.health_status = HealthStatus.DOWN
    down = await http.get("/health")

    assert (ok.status_code, ok.json()["status"]) == (200, "ok")
    assert (down.status_code, down.json()["status"]) == (503, "down")


@pytest.mark.anyio
async def test_standin_unknown_path_and_method_answer_json(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    _, http = client

    assert (await http.get("/v2/nothing")).status_code == 404
    assert (await http.get(INGEST)).status_code == 405


# -- faults ---------------------------------------------------------------------------------


def test_fault_injection_validates_its_values() -> None:
    with pytest.raises(ValueError, match=r"failure_rate=1\.5"):
        FaultInjection(failure_rate=1.5)
    with pytest.raises(ValueError, match="failure_rate=nan"):
        FaultInjection(failure_rate=float("nan"))
    with pytest.raises(ValueError, match="'boom'"):
        FaultInjection(failures=("boom",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        FaultInjection(failures=())
    with pytest.raises(ValueError, match="latency=-1"):
        FaultInjection(latency=-1)
    with pytest.raises(ValueError, match=r"retry_after=1\.5"):
        FaultInjection(retry_after=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'health'"):
        FaultInjection(paths=frozenset({"health"}))
    assert FaultInjection(failures=("slow",)).failures == (Fault.SLOW,)  # type: ignore[arg-type]


def test_fault_injection_describes_itself_in_one_line() -> None:
    assert FaultInjection().describe() == "no injected failures"
    described = FaultInjection(
        failure_rate=0.33, failures=(Fault.UNAVAILABLE, Fault.SLOW), latency=0.5
    ).describe()
    assert described == (
        "failing 33% of requests (unavailable, slow), slow answers after 1 s, "
        "Retry-After 1 s, 0.5 s latency on every answer"
    )


async def _outcomes(standin: TelemetryStandIn, n: int) -> list[str]:
    transport = httpx.ASGITransport(app=standin.app)
    outcomes: list[str] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for i in range(n):
            try:
                response = await http.post(INGEST, content=envelope(make_event(i)))
            except InjectedDisconnect:
                outcomes.append("closed")
            else:
                outcomes.append(str(response.status_code))
    return outcomes


@pytest.mark.anyio
async def test_standin_fault_rate_follows_the_configuration_and_seed() -> None:
    faults = FaultInjection(failure_rate=0.3, slow_latency=0.0, seed=42)
    standin = TelemetryStandIn(faults)

    outcomes = await _outcomes(standin, 300)
    repeat = await _outcomes(TelemetryStandIn(faults), 100)

    counts = standin.fault_counts()
    assert 300 * 0.3 * 0.75 < sum(counts.values()) < 300 * 0.3 * 1.25
    assert set(counts) == set(Fault)  # every kind drawn
    assert min(counts.values()) >= 5
    assert outcomes.count("503") == counts[Fault.UNAVAILABLE]
    assert outcomes.count("429") == counts[Fault.RATE_LIMITED]
    assert outcomes.count("500") == counts[Fault.SERVER_ERROR]
    assert outcomes.count("closed") == counts[Fault.STORED_THEN_CLOSED]
    # Served (slow or not) and stored-then-closed requests are stored; the others are not.
    stored = outcomes.count("200") + outcomes.count("closed")
    assert len(standin.event_ids()) == stored
    assert outcomes[:100] == repeat  # the same seed fails the same requests


@pytest.mark.anyio
async def test_standin_faults_change_at_run_time_and_spare_health(
    client: tuple[TelemetryStandIn, httpx.AsyncClient],
) -> None:
    standin, http = client
    standin.faults = FaultInjection(failure_rate=1.0, failures=(Fault.RATE_LIMITED,), retry_after=7)

    limited = await http.post(INGEST, content=envelope(make_event()))
    health = await http.get("/health")
    standin.faults = FaultInjection()
    served = await http.post(INGEST, content=envelope(make_event()))

    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
    assert health.status_code == 200
    assert served.status_code == 200
    assert standin.fault_counts() == {Fault.RATE_LIMITED: 1}


@pytest.mark.anyio
async def test_standin_latency_delays_every_answer() -> None:
    standin = TelemetryStandIn(FaultInjection(latency=0.2))
    transport = httpx.ASGITransport(app=standin.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        started = time.monotonic()
        await http.post(INGEST, content=envelope(make_event()))
        elapsed = time.monotonic() - started
        started = time.monotonic()
        await http.get("/health")
        health_elapsed = time.monotonic() - started

    assert elapsed >= 0.2
    assert health_elapsed < 0.2


# -- over real HTTP -------------------------------------------------------------------------


def test_standin_serves_real_http_to_the_client() -> None:
    standin = TelemetryStandIn()
    events = [make_event(n) for n in range(3)]
    ids = [uuid.uuid4() for _ in events]
    request = IngestRequest(
        events=[IngestItem(event_id=i, event=e) for i, e in zip(ids, events, strict=True)]
    )

    with standin.serve() as url, TelemetryClient(url, gzip_threshold=0) as telemetry:
        assert url.startswith("http://127.0.0.1:")
        first = telemetry.audit_ingest(request)
        second = telemetry.audit_ingest(request)
        health = telemetry.health()

    assert [r.status for r in first.results] == [IngestStatus.ACCEPTED] * 3
    assert [r.status for r in second.results] == [IngestStatus.DUPLICATE] * 3
    assert standin.events() == dict(zip(ids, events, strict=True))
    assert health.status is HealthStatus.OK
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")  # stopped


def test_standin_closes_the_connection_after_storing_over_real_http(
    caplog: pytest.LogCaptureFixture,
) -> None:
    standin = TelemetryStandIn(
        FaultInjection(failure_rate=1.0, failures=(Fault.STORED_THEN_CLOSED,))
    )
    event_id = uuid.uuid4()
    request = IngestRequest(events=[IngestItem(event_id=event_id, event=make_event())])

    with standin.serve() as url, TelemetryClient(url, retry=RetryPolicy.none()) as telemetry:
        with pytest.raises(RetriesExhausted) as caught:
            telemetry.audit_ingest(request)
        assert isinstance(caught.value.last_error, ProtocolError)
        standin.faults = FaultInjection()
        again = telemetry.audit_ingest(request)

    assert standin.event_ids() == {event_id}
    assert again.results[0].status is IngestStatus.DUPLICATE
    # The break is deliberate: uvicorn's "Exception in ASGI application" is filtered out.
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]


@pytest.mark.anyio
async def test_standin_flaky_over_real_http_still_stores_every_event_once() -> None:
    faults = FaultInjection(failure_rate=0.3, slow_latency=0.05, retry_after=0, seed=7)
    standin = TelemetryStandIn(faults)
    ids = [uuid.uuid4() for _ in range(60)]

    with standin.serve() as url:
        async with AsyncTelemetryClient(url, retry=_async_policy()) as telemetry:
            for start in range(0, 60, 10):
                chunk = ids[start : start + 10]
                items = [IngestItem(event_id=i, event=make_event(n)) for n, i in enumerate(chunk)]
                response = await telemetry.audit_ingest(IngestRequest(events=items))
                assert all(r.delivered for r in response.results)

    assert standin.event_ids() == set(ids)
    assert sum(standin.fault_counts().values()) > 0


def _async_policy() -> RetryPolicy:
    async def no_sleep(_: float) -> None:
        return None

    return RetryPolicy(max_attempts=50, deadline=None, async_sleep=no_sleep)


def test_standin_wait_for_events_blocks_until_they_arrive() -> None:
    standin = TelemetryStandIn()
    with pytest.raises(TimeoutError, match="0 distinct audit events arrived"):
        standin.wait_for_events(1, timeout=0.05)

    with standin.serve() as url:

        def send() -> None:
            time.sleep(0.05)
            httpx.post(f"{url}{INGEST}", content=envelope(make_event()))

        sender = threading.Thread(target=send)
        sender.start()
        arrived = standin.wait_for_events(1, timeout=5)
        sender.join()

    assert len(arrived) == 1
    standin.reset()
    assert standin.event_ids() == frozenset()


def test_standin_unavailable_answer_carries_retry_after_to_the_client() -> None:
    standin = TelemetryStandIn(
        FaultInjection(failure_rate=1.0, failures=(Fault.UNAVAILABLE,), retry_after=3)
    )
    request = IngestRequest(events=[IngestItem(event_id=uuid.uuid4(), event=make_event())])
    with standin.serve() as url, TelemetryClient(url, retry=RetryPolicy.none()) as telemetry:
        assert telemetry.health().status is HealthStatus.OK  # /health is spared
        with pytest.raises(RetriesExhausted) as caught:
            telemetry.audit_ingest(request)

    assert isinstance(caught.value.last_error, ServiceUnavailableError)
    assert caught.value.retry_after == 3


def test_serve_asgi_reports_a_port_in_use() -> None:
    standin = TelemetryStandIn()
    with standin.serve() as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(OSError), serve_asgi(standin.app, port=port):
            pass


def test_telemetry_command_reports_user_errors_in_one_line() -> None:
    standin = TelemetryStandIn()
    err = io.StringIO()
    assert telemetry_command(failure_rate=2.0, err=err) == 2
    assert err.getvalue().count("\n") == 1
    assert "failure_rate=2.0" in err.getvalue()

    with standin.serve() as url:
        err = io.StringIO()
        port = int(url.rsplit(":", 1)[1])
        assert telemetry_command(port=port, err=err) == 1
    assert err.getvalue().startswith(
        f"auditevt telemetry: error: cannot listen on 127.0.0.1:{port}"
    )
    assert err.getvalue().count("\n") == 1


def test_telemetry_command_serves_as_a_process_until_sigterm() -> None:
    code = (
        "from telemetry_client.testing import telemetry_command; "
        "raise SystemExit(telemetry_command(port=0, failure_rate=0.5, seed=1))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.split()[3].rstrip(":")
        health = httpx.get(f"{url}/health", timeout=10)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert first.startswith("Telemetry stand-in on http://127.0.0.1:")
    assert "failing 50% of requests" in first
    assert health.json()["status"] == "ok"
    assert status == 0


def test_standin_exports_a_sorted_all_of_its_public_names() -> None:
    import telemetry_client.testing as testing

    public = {name for name in vars(testing) if not name.startswith("_")}
    assert set(testing.__all__) == public
    kinds = [(0 if n.isupper() else 1 if n[0].isupper() else 2, n) for n in testing.__all__]
    assert kinds == sorted(kinds)


def test_standin_import_names_the_extra_when_uvicorn_is_missing() -> None:
    code = "import sys; sys.modules['uvicorn'] = None; import telemetry_client.testing"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert result.returncode != 0
    assert "ImportError: telemetry_client.testing needs starlette and uvicorn" in result.stderr
    assert "pip install 'auditevt[demo]'" in result.stderr
