"""The relay across processes: real PostgreSQL, the Telemetry stand-in under uvicorn on
loopback, and relay processes that are killed, terminated and run side by side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread
import pytest
import sqlalchemy as sa

from audit_middleware import (
    AuditStore,
    Outbox,
    OutboxBackoff,
    OutboxItem,
    OutboxRelay,
    RelayConfig,
)
from audit_middleware.storage._tables import AUDIT_OUTBOX
from conftest import eventually, make_event, write_events
from telemetry_client import AsyncTelemetryClient, RetryPolicy
from telemetry_client.testing import Fault, FaultInjection, TelemetryStandIn

pytestmark = pytest.mark.anyio

INGEST = "/v1/audit/ingest"
QUICK_BACKOFF = OutboxBackoff(base=0.005, cap=0.02)
# The client's own retries, made quick: a Retry-After is honoured but capped at 10 ms.
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_wait=0.002, max_wait=0.01, max_retry_after=0.01)
SRC = str(Path(__file__).resolve().parents[3] / "src")

# A relay process: relay_command with quick settings (argv: db url, telemetry url, mode,
# batch size, lease seconds).
RELAY_PROCESS = """
import sys
from audit_middleware import OutboxBackoff, RelayConfig, relay_command
from telemetry_client import RetryPolicy

sys.exit(relay_command(
    sys.argv[1], sys.argv[2], sys.argv[3] == "until-empty",
    config=RelayConfig(
        batch_size=int(sys.argv[4]), lease_seconds=float(sys.argv[5]), sweep_interval=0.1,
        backoff=OutboxBackoff(base=0.01, cap=0.05), metrics=False,
    ),
    retry=RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02),
))
"""


async def outbox_rows(store: AuditStore) -> list[sa.Row[tuple[object, ...]]]:
    async with store.engine.connect() as conn:
        query = sa.select(AUDIT_OUTBOX).order_by(AUDIT_OUTBOX.c.id)
        return list((await conn.execute(query)).all())


def start_relay(
    database_url: str, telemetry_url: str, mode: str, batch_size: int, lease: float
) -> subprocess.Popen[str]:
    numbers = [str(batch_size), str(lease)]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", RELAY_PROCESS, database_url, telemetry_url, mode, *numbers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def test_relay_delivers_exactly_n_events_through_a_receiver_failing_30_percent(
    pg_store: AuditStore,
) -> None:
    faults = FaultInjection(
        failure_rate=0.3,
        retry_after=1,  # 429 and 503 say "Retry-After: 1"; the relay's pause is injected
        slow_latency=0.05,
        seed=42,  # its first 9 requests draw every kind of fault; there are 60 or more
    )
    standin = TelemetryStandIn(faults)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0.001)

    # Two attempts: with this seed, requests 2 and 3 (one batch) get a 500, then a 429.
    retry = dataclasses.replace(QUICK_RETRY, max_attempts=2)
    with standin.serve() as url:
        async with AsyncTelemetryClient(url, retry=retry) as client:
            relay = OutboxRelay(
                pg_store,
                client,
                config=RelayConfig(batch_size=10, backoff=QUICK_BACKOFF, metrics=False),
                sleep=sleep,
            )
            sink = relay.notifying(pg_store)
            async with relay:  # audits happen while the relay runs, as in the app

                async def audit(numbers: Sequence[int]) -> list[uuid.UUID]:
                    return [await sink.write(make_event(number)) for number in numbers]

                chunks = [range(start, 600, 4) for start in range(4)]
                written = [i for ids in await asyncio.gather(*map(audit, chunks)) for i in ids]
                await anyio.to_thread.run_sync(standin.wait_for_events, 600, 60.0)
            stats = await relay.stats()

    assert len(written) == len(set(written)) == 600
    assert standin.event_ids() == set(written)  # exactly these N, none lost, none invented
    assert await outbox_rows(pg_store) == []
    assert (stats.pending, stats.dead_letters, stats.delivered) == (0, 0, 600)
    faults_seen = standin.fault_counts()
    assert set(faults_seen) == set(Fault), faults_seen  # every kind of failure happened
    # The batches stored before the connection broke came back as duplicates, still once.
    assert any(standin.deliveries(event_id) > 1 for event_id in written)
    assert 1.0 in pauses  # the relay paused as long as Retry-After said


async def test_relay_killed_mid_batch_loses_nothing(pg_store: AuditStore, pg_url: str) -> None:
    event_ids = await write_events(pg_store, 60)
    standin = TelemetryStandIn(FaultInjection(latency=2.0))
    with standin.serve() as url:
        relay = start_relay(pg_url, url, "forever", batch_size=20, lease=2.0)
        try:
            await eventually(lambda: standin.request_counts().get(INGEST, 0) >= 1, within=30.0)
            await asyncio.sleep(0.2)
        finally:
            relay.send_signal(signal.SIGKILL)
            relay.communicate(timeout=30)
        assert relay.returncode == -signal.SIGKILL
        leased = [row for row in await outbox_rows(pg_store) if row.lease_owner is not None]
        assert len(leased) == 20  # the batch in flight: claimed, never acknowledged
        assert len(await outbox_rows(pg_store)) == 60

        standin.faults = FaultInjection()
        restarted = start_relay(pg_url, url, "until-empty", batch_size=20, lease=2.0)
        _, err = restarted.communicate(timeout=60)

    assert restarted.returncode == 0, err
    assert standin.event_ids() == set(event_ids)
    assert await outbox_rows(pg_store) == []
    assert "Traceback" not in err


async def test_relay_sigterm_stops_after_the_batch_in_flight(
    pg_store: AuditStore, pg_url: str
) -> None:
    event_ids = await write_events(pg_store, 30)
    standin = TelemetryStandIn(FaultInjection(latency=1.0))
    with standin.serve() as url:
        relay = start_relay(pg_url, url, "forever", batch_size=10, lease=60.0)
        try:
            await eventually(lambda: standin.request_counts().get(INGEST, 0) >= 1, within=30.0)
            relay.send_signal(signal.SIGTERM)
            _, err = relay.communicate(timeout=30)
        finally:
            if relay.poll() is None:
                relay.kill()

    assert relay.returncode == 0, err
    assert "SIGTERM received, stopping after the batch in flight" in err
    assert "Traceback" not in err
    assert standin.event_ids() == set(event_ids[:10])  # the batch in flight was finished
    rows = await outbox_rows(pg_store)
    assert [row.event_id for row in rows] == event_ids[10:]
    assert all(row.lease_owner is None and row.attempts == 0 for row in rows)


class RecordingOutbox(Outbox):
    """An outbox that remembers every claim: who claimed which rows, and when."""

    def __init__(self, *args: object, log: list[tuple[str, list[int], float]], **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.log = log

    async def claim(
        self, batch_size: int, max_bytes: int, lease_seconds: float, owner: str
    ) -> list[OutboxItem]:
        items = await super().claim(batch_size, max_bytes, lease_seconds, owner)
        if items:
            self.log.append((owner, [item.id for item in items], time.monotonic()))
        return items


async def test_two_relays_share_one_outbox_without_claiming_the_same_rows(
    pg_store: AuditStore, pg_url: str
) -> None:
    event_ids = [uuid.uuid4() for _ in range(800)]
    async with pg_store.engine.begin() as conn:  # the outbox rows alone, in one go
        await conn.execute(
            sa.insert(AUDIT_OUTBOX),
            [
                {
                    "event_id": event_id,
                    "audit_id": number,
                    "organization_id": 3,
                    "payload": make_event(number).to_json(),
                }
                for number, event_id in enumerate(event_ids)
            ],
        )
    standin = TelemetryStandIn(FaultInjection(latency=0.01))
    claims: list[tuple[str, list[int], float]] = []
    with standin.serve() as url:
        async with (
            AuditStore.from_url(pg_url) as other_store,  # its own engine and pool
            AsyncTelemetryClient(url, retry=QUICK_RETRY) as client_a,
            AsyncTelemetryClient(url, retry=QUICK_RETRY) as client_b,
        ):
            relays = [
                OutboxRelay(
                    RecordingOutbox(source.engine, log=claims),
                    client,
                    config=RelayConfig(batch_size=25, owner=owner, metrics=False),
                )
                for source, client, owner in (
                    (pg_store, client_a, "relay-a"),
                    (other_store, client_b, "relay-b"),
                )
            ]
            results = await asyncio.gather(*(relay.run_until_empty() for relay in relays))

    claimed = [row_id for _, ids, _ in claims for row_id in ids]
    assert len(claimed) == len(set(claimed)) == 800  # disjoint: no row claimed twice
    owners = {owner for owner, _, _ in claims}
    assert owners == {"relay-a", "relay-b"}  # both really worked, side by side
    assert sum(result.delivered for result in results) == 800
    # No batch was sent twice: every event arrived once, in one request per claim.
    assert standin.event_ids() == set(event_ids)
    assert all(standin.deliveries(event_id) == 1 for event_id in event_ids)
    assert standin.request_counts()[INGEST] == len(claims)


async def test_one_relay_drains_a_sqlite_outbox_over_http(sqlite_store: AuditStore) -> None:
    standin = TelemetryStandIn(FaultInjection(failure_rate=0.2, retry_after=0, seed=5))
    event_ids = await write_events(sqlite_store, 150)
    with standin.serve() as url:
        async with AsyncTelemetryClient(url, retry=QUICK_RETRY) as client:
            relay = OutboxRelay(
                sqlite_store,
                client,
                config=RelayConfig(batch_size=15, backoff=QUICK_BACKOFF, metrics=False),
            )
            stats = await relay.run_until_empty()
    async with sqlite_store.engine.connect() as conn:
        remaining = (
            await conn.execute(sa.select(sa.func.count()).select_from(AUDIT_OUTBOX))
        ).scalar()

    assert standin.event_ids() == set(event_ids)
    assert (stats.delivered, stats.pending, remaining) == (150, 0, 0)


@pytest.mark.slow
def test_relay_outage_keeps_memory_bounded_and_delivers_everything_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The benchmark's app process (AuditMiddleware + in-app relay, Telemetry down), with fewer
    # events: the backlog must wait in PostgreSQL, not in the process.
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_relay.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as run.py runs it: beside its helpers
    spec = importlib.util.spec_from_file_location("bench_relay", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    entry = bench.outage(3_000)

    detail = entry["detail"]
    assert entry["name"] == "relay.outage_rss_mib"
    assert entry["value"] <= 20, detail
    assert detail["pending_when_telemetry_came_back"] == 4_000  # 1,000 warm-up + 3,000
    assert detail["all_delivered"] and detail["pending_after_recovery"] == 0, detail
