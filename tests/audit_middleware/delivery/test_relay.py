"""OutboxRelay against the Telemetry stand-in in-process (its real Starlette app over
``httpx.ASGITransport``) and a real database: settling, splitting, pausing, stopping, metrics.

Cross-process behaviour (real uvicorn, SIGKILL, two relays) is in test_relay_integration.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import statistics
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit_middleware import AuditMiddleware, AuditStore, migrate
from audit_middleware.delivery._command import RELAY_RETRY
from audit_middleware.delivery._relay import OutboxRelay, RelayConfig, RelayStats
from audit_middleware.storage._outbox import OutboxBackoff
from audit_middleware.storage._tables import AUDIT_OUTBOX
from auditevt import Event
from conftest import eventually, make_event, write_events
from telemetry_client import AsyncTelemetryClient, RetryPolicy
from telemetry_client.testing import Fault, FaultInjection, TelemetryStandIn

pytestmark = pytest.mark.anyio

INGEST = "/v1/audit/ingest"
FAST_RETRY = RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.005, max_retry_after=0.01)
QUICK_BACKOFF = OutboxBackoff(base=0.005, cap=0.02)
#: Organization whose events the test Telemetry rejects.
REJECTED_ORG = 13


def reject_org_13(event: Event) -> str | None:
    if event.organization_id == REJECTED_ORG:
        return f"organization_id={REJECTED_ORG} is not served here"
    return None


def config(**overrides: object) -> RelayConfig:
    values: dict[str, object] = {
        "batch_size": 50,
        "backoff": QUICK_BACKOFF,
        "sweep_interval": 0.05,
        "metrics": False,
    }
    values.update(overrides)
    return RelayConfig(**values)  # type: ignore[arg-type]


def client_for(app: Starlette, retry: RetryPolicy = FAST_RETRY) -> AsyncTelemetryClient:
    return AsyncTelemetryClient(
        "http://telemetry.test",
        transport=httpx.ASGITransport(app=app),
        allow_insecure_http=True,
        retry=retry,
    )


async def outbox_rows(store: AuditStore) -> list[sa.Row[tuple[object, ...]]]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(sa.select(AUDIT_OUTBOX).order_by(AUDIT_OUTBOX.c.id))).all())


async def test_relay_delivers_every_event_and_empties_the_outbox(store: AuditStore) -> None:
    event_ids = await write_events(store, 120)
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config())
        stats = await relay.run_until_empty()

    assert standin.event_ids() == set(event_ids)
    assert all(standin.deliveries(event_id) == 1 for event_id in event_ids)
    assert standin.request_counts()[INGEST] == 3  # 120 events in batches of 50
    assert stats == RelayStats(
        pending=0,
        leased=0,
        oldest_pending_age_s=0.0,
        dead_letters=0,
        delivered=120,
        retried=0,
        dead_lettered=0,
        batches=3,
    )
    assert await outbox_rows(store) == []


async def test_relay_sends_event_json_verbatim(pg_store: AuditStore) -> None:
    event = make_event(1, changes={"note": "<b>&</b>", "n": 1.5})
    event_id = await pg_store.write(event)
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        await OutboxRelay(pg_store, client, config=config()).run_until_empty()

    assert standin.events()[event_id].to_json() == event.to_json()


async def test_relay_dead_letters_rejected_events_with_reason_and_keeps_them(
    store: AuditStore,
) -> None:
    good = await write_events(store, 6)
    bad = await store.write(make_event(99, organization_id=REJECTED_ORG))
    standin = TelemetryStandIn(event_check=reject_org_13)
    async with client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config())
        stats = await relay.run_until_empty()

    assert standin.event_ids() == set(good)
    assert (stats.delivered, stats.dead_lettered, stats.dead_letters, stats.pending) == (6, 1, 1, 0)
    (letter,) = await relay.outbox.dead_letters()
    assert letter.event_id == bad
    assert letter.reason == (
        f"rejected by Telemetry: event: organization_id={REJECTED_ORG} is not served here"
    )
    (row,) = await outbox_rows(store)
    assert row.event_id == bad and row.dead_lettered_at is not None


async def test_relay_redriven_dead_letters_are_delivered(pg_store: AuditStore) -> None:
    bad = await pg_store.write(make_event(1, organization_id=REJECTED_ORG))
    standin = TelemetryStandIn(event_check=reject_org_13)
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config())
        await relay.run_until_empty()
        standin_fixed = TelemetryStandIn()  # Telemetry now serves that organization
        async with client_for(standin_fixed.app) as fixed_client:
            assert await relay.outbox.redrive() == 1
            stats = await OutboxRelay(pg_store, fixed_client, config=config()).run_until_empty()

    assert standin_fixed.event_ids() == {bad}
    assert (stats.pending, stats.dead_letters) == (0, 0)


async def test_relay_splits_a_refused_batch_and_dead_letters_only_the_broken_event(
    store: AuditStore,
) -> None:
    good = await write_events(store, 9)
    broken_id = uuid.uuid4()
    async with store.engine.begin() as conn:  # a row whose JSON is damaged: the envelope is 400
        await conn.execute(
            sa.insert(AUDIT_OUTBOX).values(
                event_id=broken_id, audit_id=0, organization_id=7, payload='{"action": CREATE}'
            )
        )
    good += await write_events(store, 6)
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config())
        stats = await relay.run_until_empty()

    assert standin.event_ids() == set(good)
    assert (stats.delivered, stats.dead_lettered, stats.retried) == (15, 1, 0)
    (letter,) = await relay.outbox.dead_letters()
    assert letter.event_id == broken_id
    assert letter.reason.startswith("refused by Telemetry: 400 Bad Request")
    # 16 events: the whole batch, then halves down to the broken one, never more than needed.
    assert standin.request_counts()[INGEST] <= 2 * 4 + 1


async def test_relay_sets_aside_a_row_that_cannot_even_be_sent(store: AuditStore) -> None:
    good = await write_events(store, 5)
    async with store.engine.begin() as conn:  # not a JSON object: no envelope can hold it
        await conn.execute(
            sa.insert(AUDIT_OUTBOX).values(
                event_id=uuid.uuid4(), audit_id=0, organization_id=7, payload="null"
            )
        )
    good += await write_events(store, 2)
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config())
        stats = await relay.run_until_empty()

    assert standin.event_ids() == set(good)
    assert (stats.delivered, stats.dead_lettered, stats.pending) == (7, 1, 0)
    (letter,) = await relay.outbox.dead_letters()
    assert letter.reason.startswith("cannot be sent: ") and "not a JSON object" in letter.reason


async def test_relay_survives_an_unexpected_error_and_says_so(
    pg_store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    await write_events(pg_store, 2)
    standin = TelemetryStandIn()
    client = client_for(standin.app)
    await client.aclose()  # a misuse: the relay's client was closed under it
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            relay.request_stop()

    caplog.set_level(logging.ERROR, "audit_middleware.relay")
    relay = OutboxRelay(pg_store, client, config=config(lease_seconds=0.05), sleep=sleep)
    await relay.run_forever()

    assert len(pauses) == 3
    (message,) = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert "is closed" in message.getMessage() and message.exc_info is not None
    assert (await relay.stats()).pending == 2  # nothing lost


async def test_relay_splits_a_batch_that_is_too_large_for_telemetry(store: AuditStore) -> None:
    event_ids = await write_events(store, 40, padding=200)
    standin = TelemetryStandIn(max_body_bytes=8 * 1024)  # ~16 of these events fit in a request
    async with client_for(standin.app) as client:
        stats = await OutboxRelay(store, client, config=config()).run_until_empty()

    assert standin.event_ids() == set(event_ids)
    assert (stats.delivered, stats.dead_letters, stats.retried) == (40, 0, 0)


async def test_relay_dead_letters_an_event_larger_than_any_batch_may_be(
    store: AuditStore,
) -> None:
    huge = await store.write(make_event(0, padding=3000))
    standin = TelemetryStandIn(max_body_bytes=2048)
    async with client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config(max_batch_bytes=2048))
        stats = await relay.run_until_empty()

    assert (stats.dead_letters, stats.pending) == (1, 0)
    (letter,) = await relay.outbox.dead_letters()
    assert letter.event_id == huge and "413" in letter.reason


def refusing_app(status: int, requests: list[int]) -> Starlette:
    async def ingest(request: Request) -> Response:
        requests.append(len(await request.body()))
        return JSONResponse({"error": "contract version 9 is not supported"}, status)

    return Starlette(routes=[Route(INGEST, ingest, methods=["POST"])])


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_relay_never_dead_letters_when_telemetry_refuses_everything(
    pg_store: AuditStore, status: int
) -> None:
    await write_events(pg_store, 64)
    requests: list[int] = []
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        relay.request_stop()

    async with client_for(refusing_app(status, requests)) as client:
        relay = OutboxRelay(
            pg_store, client, config=config(batch_size=64, max_split_requests=6), sleep=sleep
        )
        await relay.run_forever()  # until the pause after the first failure stops it

    stats = await relay.stats()
    assert (stats.pending, stats.dead_letters, stats.retried) == (64, 0, 64)
    assert len(pauses) == 1
    # A 400 is split a few times to look for a broken event, then given up on; others never.
    assert len(requests) == (7 if status == 400 else 1)
    # A configuration failure (401, 404) says nothing about the events: no attempt is counted,
    # so no attempt limit could ever dead-letter them.
    attempts = 1 if status == 400 else 0
    rows = await outbox_rows(pg_store)
    assert all(row.attempts == attempts and row.lease_owner is None for row in rows)


async def test_relay_pauses_as_long_as_retry_after_says(pg_store: AuditStore) -> None:
    event_ids = await write_events(pg_store, 5)
    standin = TelemetryStandIn(
        FaultInjection(failure_rate=1.0, failures=(Fault.RATE_LIMITED,), retry_after=7)
    )
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        standin.faults = FaultInjection()  # Telemetry recovers while we wait

    async with client_for(standin.app, RetryPolicy.none()) as client:
        relay = OutboxRelay(pg_store, client, config=config(), sleep=sleep)
        stats = await relay.run_until_empty()

    assert pauses == [7.0]
    assert standin.event_ids() == set(event_ids)
    assert (stats.delivered, stats.retried) == (5, 5)


async def test_relay_caps_a_retry_after_pause(pg_store: AuditStore) -> None:
    await write_events(pg_store, 1)
    standin = TelemetryStandIn(
        FaultInjection(failure_rate=1.0, failures=(Fault.UNAVAILABLE,), retry_after=3600)
    )
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        standin.faults = FaultInjection()

    async with client_for(standin.app, RetryPolicy.none()) as client:
        await OutboxRelay(
            pg_store, client, config=config(max_pause=30.0), sleep=sleep
        ).run_until_empty()

    assert pauses == [30.0]


async def test_relay_logs_a_persistent_failure_once_a_minute(
    pg_store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    await write_events(pg_store, 3)
    standin = TelemetryStandIn(
        FaultInjection(failure_rate=1.0, failures=(Fault.SERVER_ERROR,), retry_after=None)
    )
    now = [0.0]
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:  # every pause lasts 20 s on the injected clock
        pauses.append(seconds)
        now[0] += 20.0
        if len(pauses) == 30:
            relay.request_stop()
        await asyncio.sleep(0.01)  # let the rows' tiny database backoff pass

    caplog.set_level(logging.WARNING, "audit_middleware.relay")
    async with client_for(standin.app, RetryPolicy.none()) as client:
        relay = OutboxRelay(pg_store, client, config=config(), sleep=sleep, clock=lambda: now[0])
        await relay.run_forever()  # until the 30th pause stops it

    warnings = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(pauses) == 30
    assert len(warnings) == 10  # 30 failures over 600 s: one message a minute
    assert "suppressed" in warnings[1]
    # Without Retry-After the relay's own pause grows with each failure, up to the cap.
    assert pauses[-1] >= QUICK_BACKOFF.cap * (1 - QUICK_BACKOFF.jitter)


async def test_relay_survives_an_unreachable_database(caplog: pytest.LogCaptureFixture) -> None:
    standin = TelemetryStandIn()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            relay.request_stop()

    caplog.set_level(logging.ERROR, "audit_middleware.relay")
    store = AuditStore.from_url("postgresql://postgres@127.0.0.1:1/nowhere")
    async with store, client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config(), sleep=sleep)
        await relay.run_forever()  # until the third pause stops it

    assert len(pauses) == 3
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and "cannot use the outbox" in errors[0]


async def test_relay_notify_sends_a_new_event_within_milliseconds(pg_store: AuditStore) -> None:
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config(sweep_interval=60.0))
        sink = relay.notifying(pg_store)
        latencies = []
        async with relay:
            await asyncio.sleep(0.05)  # the relay is idle, and will sleep a minute unless woken
            for number in range(15):
                started = time.monotonic()
                event_id = await sink.write(make_event(number))
                await eventually(lambda e=event_id: e in standin.event_ids(), within=2.0)
                latencies.append(time.monotonic() - started)

    assert statistics.median(latencies) < 0.25
    assert sink.engine is pg_store.engine  # the wrapper is otherwise the store


async def test_relay_notify_works_from_another_thread(pg_store: AuditStore) -> None:
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config(sweep_interval=60.0))
        relay.notify()  # not running: nothing to wake, and no error
        async with relay:
            await asyncio.sleep(0.05)
            (event_id,) = await write_events(pg_store, 1)
            await asyncio.to_thread(relay.notify)
            await eventually(lambda: event_id in standin.event_ids(), within=2.0)


async def test_relay_stop_drains_what_is_due_before_stopping(store: AuditStore) -> None:
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config(sweep_interval=60.0, batch_size=10))
        await relay.start()
        await asyncio.sleep(0.05)
        event_ids = await write_events(store, 35)  # no notify: the relay sleeps on
        await relay.stop(timeout=10)

    assert standin.event_ids() == set(event_ids)
    assert not relay.running


async def test_relay_stop_without_drain_stops_after_the_batch_in_flight(
    pg_store: AuditStore,
) -> None:
    event_ids = await write_events(pg_store, 20)
    standin = TelemetryStandIn(FaultInjection(latency=0.3))
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config(batch_size=5))
        await relay.start()
        await eventually(lambda: standin.request_counts().get(INGEST, 0) >= 1)
        await relay.stop(timeout=10, drain=False)

    assert standin.event_ids() == set(event_ids[:5])
    rows = await outbox_rows(pg_store)
    assert [row.event_id for row in rows] == event_ids[5:]
    assert all(row.lease_owner is None and row.attempts == 0 for row in rows)


async def test_relay_stop_never_hangs_and_gives_back_the_batch_in_flight(
    pg_store: AuditStore,
) -> None:
    await write_events(pg_store, 4)
    standin = TelemetryStandIn(FaultInjection(latency=30.0))
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config(lease_seconds=120.0))
        await relay.start()
        await eventually(lambda: standin.request_counts().get(INGEST, 0) >= 1)
        started = time.monotonic()
        await relay.stop(timeout=0.2)
        elapsed = time.monotonic() - started

    assert elapsed < 3.0
    # Given back, not left leased for two minutes: the next relay can take them at once.
    taken = await relay.outbox.claim(10, 1 << 20, 30, "next-relay")
    assert len(taken) == 4 and all(item.attempts == 0 for item in taken)


async def test_relay_cannot_run_twice_at_once(pg_store: AuditStore) -> None:
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config())
        async with relay:
            with pytest.raises(RuntimeError, match="already running"):
                await relay.start()
            with pytest.raises(RuntimeError, match="already running"):
                await relay.run_until_empty()
        await relay.stop()  # idempotent


async def test_relay_metrics_are_created_lazily_and_count(pg_store: AuditStore) -> None:
    await write_events(pg_store, 8)
    await pg_store.write(make_event(9, organization_id=REJECTED_ORG))
    registry = CollectorRegistry()
    standin = TelemetryStandIn(event_check=reject_org_13)
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config(metrics=True), registry=registry)
        assert registry.get_sample_value("auditevt_relay_delivered_total") is None
        await relay.run_until_empty()
        await write_events(pg_store, 2)
        await relay.stats()

    assert registry.get_sample_value("auditevt_relay_delivered_total") == 8
    assert registry.get_sample_value("auditevt_relay_dead_lettered_total") == 1
    assert registry.get_sample_value("auditevt_relay_retried_total") == 0
    assert registry.get_sample_value("auditevt_outbox_pending") == 2
    assert registry.get_sample_value("auditevt_outbox_dead_letters") == 1
    age = registry.get_sample_value("auditevt_outbox_oldest_pending_age_seconds")
    assert age is not None and 0 <= age < 60
    # A second relay in the same registry shares the metrics instead of failing.
    async with client_for(standin.app) as client:
        other = OutboxRelay(pg_store, client, config=config(metrics=True), registry=registry)
        await other.run_until_empty()
    assert registry.get_sample_value("auditevt_relay_delivered_total") == 10


async def test_a_dropped_relay_is_garbage_collected_metrics_and_all(pg_store: AuditStore) -> None:
    await write_events(pg_store, 3)
    registry = CollectorRegistry()
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        relay = OutboxRelay(pg_store, client, config=config(metrics=True), registry=registry)
        async with relay:  # runs in the background, gauges refreshing
            await eventually(lambda: len(standin.event_ids()) == 3)
        reference = weakref.ref(relay)
        del relay
        gc.collect()
        assert reference() is None
    # The registry keeps the numbers, not the relay.
    assert registry.get_sample_value("auditevt_relay_delivered_total") == 3


def test_relay_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="batch_size must be from 1 to 500, got 501"):
        RelayConfig(batch_size=501)
    with pytest.raises(ValueError, match="max_batch_bytes must be an int >= 1024, got 10"):
        RelayConfig(max_batch_bytes=10)
    with pytest.raises(ValueError, match="lease_seconds must be finite and > 0, got 0"):
        RelayConfig(lease_seconds=0)
    with pytest.raises(ValueError, match="sweep_interval must be finite and > 0, got inf"):
        RelayConfig(sweep_interval=float("inf"))
    with pytest.raises(ValueError, match="owner must be a non-empty string or None, got ' '"):
        RelayConfig(owner=" ")
    with pytest.raises(TypeError, match="backoff must be an OutboxBackoff"):
        RelayConfig(backoff=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy must be a DeliveryPolicy"):
        RelayConfig(policy=1)  # type: ignore[arg-type]


async def test_relay_constructor_checks_its_arguments_and_starts_nothing(
    pg_store: AuditStore,
) -> None:
    standin = TelemetryStandIn()
    async with client_for(standin.app) as client:
        with pytest.raises(TypeError, match="source must be an AuditStore, an AsyncEngine or an"):
            OutboxRelay("postgresql://x", client)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="client must be an AsyncTelemetryClient, got dict"):
            OutboxRelay(pg_store, {})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="sink=1 has no write"):
            OutboxRelay(pg_store, client).notifying(1)  # type: ignore[arg-type]
        relay = OutboxRelay(pg_store.engine, client)
        other = OutboxRelay(relay.outbox, client)
        assert relay.owner != other.owner
        assert not relay.running
        assert OutboxRelay(pg_store, client, config=RelayConfig(owner="me")).owner == "me"
    assert standin.request_counts() == {}


# --- in the app: the ASGI lifespan ----------------------------------------------------------


@asynccontextmanager
async def lifespan_of(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``app`` the way uvicorn does (the ASGI lifespan protocol), yield a client for it."""
    to_app: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, to_app.get, from_app.put))  # type: ignore[arg-type]
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
            yield http
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await task


async def create_thing(request: Request) -> Response:
    request.state.audit_user_id = 3
    request.state.audit_organization_id = 11
    return JSONResponse({"ok": True}, status_code=201)


async def test_relay_runs_with_the_starlette_lifespan(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    standin = TelemetryStandIn()
    async with AuditStore.from_url(sqlite_url) as store, client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config(sweep_interval=60.0))
        app = Starlette(
            routes=[Route("/things", create_thing, methods=["POST"])],
            middleware=[Middleware(AuditMiddleware, sink=relay.notifying(store))],
            lifespan=relay.lifespan,
        )
        assert not relay.running
        async with lifespan_of(app) as http:
            assert relay.running
            for _ in range(5):
                assert (await http.post("/things")).status_code == 201
            await eventually(lambda: len(standin.event_ids()) == 5)
            await store.write(make_event(1, organization_id=11))  # no notify: the drain sends it

        assert not relay.running
    assert len(standin.event_ids()) == 6
    assert {event.organization_id for event in standin.events().values()} == {11}


async def test_relay_runs_within_a_fastapi_lifespan(pg_url: str) -> None:
    await migrate(pg_url)
    standin = TelemetryStandIn()
    async with AuditStore.from_url(pg_url) as store, client_for(standin.app) as client:
        relay = OutboxRelay(store, client, config=config(sweep_interval=60.0))
        started: list[bool] = []

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with relay.lifespan(app):  # the app's own start-up and shutdown around it
                started.append(True)
                yield

        app = FastAPI(lifespan=lifespan)
        app.add_middleware(AuditMiddleware, sink=relay.notifying(store))

        @app.post("/things/{thing_id}", status_code=201)
        async def create(thing_id: int, request: Request) -> dict[str, bool]:
            request.state.audit_user_id = 3
            request.state.audit_organization_id = 12
            return {"ok": True}

        async with lifespan_of(app) as http:  # type: ignore[arg-type]
            assert started == [True] and relay.running
            for thing_id in range(1, 4):
                assert (await http.post(f"/things/{thing_id}")).status_code == 201
            await eventually(lambda: len(standin.event_ids()) == 3)

        assert not relay.running
    assert sorted(event.entity_id for event in standin.events().values()) == [1, 2, 3]


async def test_relay_warns_of_a_client_that_retries_longer_than_a_batch_may_take(
    pg_store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "audit_middleware.relay")
    standin = TelemetryStandIn()
    async with client_for(standin.app, RetryPolicy(deadline=60.0)) as patient:
        OutboxRelay(pg_store, patient, config=config(lease_seconds=60.0))  # 45 s per batch
    async with client_for(standin.app, RELAY_RETRY) as brief:
        OutboxRelay(pg_store, brief, config=config(lease_seconds=60.0))

    (warning,) = [r.getMessage() for r in caplog.records]
    assert "may retry for 60 s, longer than the 45 s a batch may take" in warning
