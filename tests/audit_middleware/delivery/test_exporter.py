"""OutboxRelay with exporters that are not the Telemetry client, and the delivery policy.

A real outbox (PostgreSQL or SQLite) and plain Python exporters: one that delivers to a list,
one with a bug, one that fails in each classified way. A bug never dead-letters an event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from audit_middleware import (
    AuditStore,
    DeliveryPolicy,
    Exporter,
    ExportFailure,
    ExportResult,
    OutboxBackoff,
    OutboxItem,
    OutboxRelay,
    RelayConfig,
)
from audit_middleware.storage._tables import AUDIT_OUTBOX
from conftest import write_events

pytestmark = pytest.mark.anyio

QUICK = OutboxBackoff(base=0.001, cap=0.002)


def config(**policy: object) -> RelayConfig:
    return RelayConfig(
        batch_size=10,
        sweep_interval=0.05,
        metrics=False,
        policy=DeliveryPolicy(backoff=QUICK, **policy),  # type: ignore[arg-type]
    )


class ListExporter:
    """Delivers to a list (a stand-in for a queue, a file, another service)."""

    def __init__(self) -> None:
        self.received: list[uuid.UUID] = []
        self.batches = 0

    async def export(self, batch: Sequence[OutboxItem]) -> ExportResult:
        self.batches += 1
        self.received.extend(item.event_id for item in batch)
        return ExportResult.success(batch)


class BuggyExporter(ListExporter):
    """Raises TypeError (a bug in our code) until it is fixed."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed = False
        self.calls = 0

    async def export(self, batch: Sequence[OutboxItem]) -> ExportResult:
        self.calls += 1
        if not self.fixed:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        return await super().export(batch)


class FailingExporter:
    """Fails every batch with ``failure``."""

    def __init__(self, failure: ExportFailure) -> None:
        self.failure = failure
        self.calls = 0

    async def export(self, batch: Sequence[OutboxItem]) -> ExportResult:
        self.calls += 1
        return ExportResult(failure=self.failure)


async def rows(store: AuditStore) -> list[sa.Row[tuple[object, ...]]]:
    async with store.engine.connect() as conn:
        query = sa.select(AUDIT_OUTBOX).order_by(AUDIT_OUTBOX.c.id)
        return list((await conn.execute(query)).all())


class Pauses:
    """A relay's injected sleep: records each pause, stops the relay after ``stop_after``."""

    def __init__(self, stop_after: int) -> None:
        self.stop_after = stop_after
        self.seen: list[float] = []
        self.relay: OutboxRelay | None = None

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        if len(self.seen) >= self.stop_after and self.relay is not None:
            self.relay.request_stop()


async def run_for(
    store: AuditStore, exporter: object, relay_config: RelayConfig, pauses: int
) -> tuple[OutboxRelay, list[float]]:
    """A relay run until it has paused ``pauses`` times (nobody really sleeps)."""
    sleep = Pauses(pauses)
    relay = OutboxRelay(store, exporter=exporter, config=relay_config, sleep=sleep)  # type: ignore[arg-type]
    sleep.relay = relay
    await relay.run_forever()
    return relay, sleep.seen


async def test_relay_delivers_to_a_custom_exporter(store: AuditStore) -> None:
    event_ids = await write_events(store, 25)
    exporter = ListExporter()
    assert isinstance(exporter, Exporter)  # the protocol, structurally

    relay = OutboxRelay(store, exporter=exporter, config=config())
    stats = await relay.run_until_empty()

    assert exporter.received == event_ids  # oldest first, each once
    assert exporter.batches == 3
    assert (stats.delivered, stats.pending, stats.dead_letters, stats.batches) == (25, 0, 0, 3)
    assert await rows(store) == []
    assert relay.exporter is exporter
    assert "ListExporter" in repr(relay)


async def test_a_typeerror_in_the_exporter_dead_letters_nothing(
    store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    event_ids = await write_events(store, 12)
    exporter = BuggyExporter()
    caplog.set_level(logging.ERROR, "audit_middleware.relay")

    relay, _ = await run_for(store, exporter, config(max_attempts=1), pauses=3)

    stats = await relay.stats()
    assert exporter.calls >= 3
    assert (stats.pending, stats.dead_letters, stats.dead_lettered) == (12, 0, 0)
    assert stats.errors == exporter.calls and stats.retried == 0
    # Given back (no lease), no attempt counted: even max_attempts=1 cannot give them up.
    assert all(row.lease_owner is None and row.attempts == 0 for row in await rows(store))
    (logged, *_) = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert "TypeError" in logged.getMessage() and logged.exc_info is not None

    exporter.fixed = True
    stats = await relay.run_until_empty()
    assert sorted(exporter.received) == sorted(event_ids)
    assert len(exporter.received) == 12  # each event delivered exactly once
    assert (stats.pending, stats.dead_letters, stats.delivered) == (0, 0, 12)


class WrongResultExporter:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    async def export(self, batch: Sequence[OutboxItem]) -> ExportResult:
        return self.answer  # type: ignore[return-value]


@pytest.mark.parametrize(
    "answer",
    [
        None,
        ExportResult(delivered=[10_000]),  # a row not in the batch
        ExportResult(delivered=[1], rejected={1: "twice"}),
        ExportResult(delivered=[1]),  # the rest left unsettled, with no failure
    ],
    ids=["not-a-result", "foreign-row", "named-twice", "unsettled"],
)
async def test_a_result_that_does_not_fit_the_batch_is_a_bug(
    pg_store: AuditStore, answer: object
) -> None:
    await write_events(pg_store, 3)

    relay, _ = await run_for(pg_store, WrongResultExporter(answer), config(), pauses=1)

    stats = await relay.stats()
    assert (stats.pending, stats.dead_letters, stats.delivered, stats.errors) == (3, 0, 0, 1)


async def test_max_attempts_dead_letters_after_that_many_retryable_failures(
    pg_store: AuditStore,
) -> None:
    await write_events(pg_store, 2)
    exporter = FailingExporter(ExportFailure("HTTP 503: down", key="HTTP 503"))
    relay = OutboxRelay(pg_store, exporter=exporter, config=config(max_attempts=3))

    stats = await relay.run_until_empty()  # ends once both are given up

    assert exporter.calls == 3
    assert (stats.pending, stats.dead_letters, stats.dead_lettered, stats.retried) == (0, 2, 2, 4)
    letters = await relay.outbox.dead_letters()
    assert [letter.reason for letter in letters] == ["gave up after 3 attempts: HTTP 503: down"] * 2


async def test_a_configuration_failure_never_dead_letters_and_logs_an_error(
    pg_store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    await write_events(pg_store, 2)
    failure = ExportFailure("refused by Telemetry: 401 Unauthorized", kind="configuration")
    caplog.set_level(logging.WARNING, "audit_middleware.relay")

    relay, _ = await run_for(pg_store, FailingExporter(failure), config(max_attempts=1), pauses=3)

    stats = await relay.stats()
    assert (stats.pending, stats.dead_letters) == (2, 0)
    assert all(row.attempts == 0 and row.lease_owner is None for row in await rows(pg_store))
    assert all("401 Unauthorized" in (row.last_error or "") for row in await rows(pg_store))
    (record,) = [r for r in caplog.records if "not delivered" in r.getMessage()]  # once a minute
    assert record.levelno == logging.ERROR and "configuration problem" in record.getMessage()


class RejectingExporter:
    def __init__(self) -> None:
        self.calls = 0

    async def export(self, batch: Sequence[OutboxItem]) -> ExportResult:
        self.calls += 1
        if self.calls == 1:
            return ExportResult(rejected={item.id: "not today" for item in batch})
        return ExportResult.success(batch)


async def test_a_policy_may_retry_rejected_events_instead_of_dead_lettering_them(
    pg_store: AuditStore,
) -> None:
    await write_events(pg_store, 4)
    exporter = RejectingExporter()
    relay = OutboxRelay(pg_store, exporter=exporter, config=config(dead_letter_rejected=False))

    stats = await relay.run_until_empty()

    assert exporter.calls == 2
    assert (stats.delivered, stats.dead_letters, stats.retried) == (4, 0, 4)


async def test_retry_after_delays_the_rows_in_the_database_too(pg_store: AuditStore) -> None:
    await write_events(pg_store, 1)
    exporter = FailingExporter(ExportFailure("HTTP 429", retry_after=120.0, key="HTTP 429"))

    relay, pauses = await run_for(pg_store, exporter, config(), pauses=1)

    assert pauses == [120.0]
    due_in = await relay.outbox.next_due_in()
    assert due_in is not None and 100 < due_in <= 120  # no relay sharing the outbox sends sooner


async def test_relay_takes_a_client_or_an_exporter(pg_store: AuditStore) -> None:
    with pytest.raises(TypeError, match="either client= or exporter=, not both nor neither"):
        OutboxRelay(pg_store)
    with pytest.raises(TypeError, match="has no export"):
        OutboxRelay(pg_store, exporter=object())  # type: ignore[arg-type]


def test_delivery_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_attempts must be an int >= 1 or None, got 0"):
        DeliveryPolicy(max_attempts=0)
    with pytest.raises(
        ValueError, match="max_pause must be a finite number of seconds >= 0, got -1"
    ):
        DeliveryPolicy(max_pause=-1)
    with pytest.raises(TypeError, match="backoff must be an OutboxBackoff, got 2"):
        DeliveryPolicy(backoff=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be 'retryable' or 'configuration'"):
        ExportFailure("x", kind="fatal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_after must be a finite number of seconds >= 0"):
        ExportFailure("x", retry_after=float("nan"))


def test_relay_config_shorthands_fold_into_the_one_policy() -> None:
    backoff = OutboxBackoff(base=2.0, cap=4.0)
    config = RelayConfig(backoff=backoff, max_pause=9.0)
    assert config.policy == DeliveryPolicy(backoff=backoff, max_pause=9.0)
    assert RelayConfig().policy == DeliveryPolicy()
