"""The outbox queue on a real PostgreSQL and on SQLite: claims, leases, backoff, dead letters."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware import AuditStore, OutboxSchemaMissing, OutboxUnavailable
from audit_middleware.storage._outbox import (
    ITEM_OVERHEAD_BYTES,
    Outbox,
    OutboxBackoff,
    OutboxError,
    OutboxStats,
)
from audit_middleware.storage._tables import AUDIT_OUTBOX
from conftest import make_event, write_events

pytestmark = pytest.mark.anyio


async def db_seconds_until(engine: AsyncEngine, column: str, row_id: int) -> float:
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = f"SELECT (julianday({column}) - julianday('now')) * 86400.0 FROM audit_outbox"
        else:
            sql = f"SELECT extract(epoch FROM {column} - now()) FROM audit_outbox"
        value = (await conn.execute(sa.text(sql + " WHERE id = :id"), {"id": row_id})).scalar()
    return float(value)


async def test_claim_leases_oldest_first_and_never_twice(store: AuditStore) -> None:
    event_ids = await write_events(store, 7)
    outbox = Outbox(store.engine)

    first = await outbox.claim(4, 1 << 20, 30, "relay-a")
    second = await outbox.claim(4, 1 << 20, 30, "relay-b")
    third = await outbox.claim(4, 1 << 20, 30, "relay-c")

    assert [item.event_id for item in first] == event_ids[:4]
    assert [item.event_id for item in second] == event_ids[4:]
    assert third == []
    assert all(item.attempts == 0 for item in first + second)
    assert first[0].payload == make_event(1).to_json()  # the event's JSON, as written
    stats = await outbox.stats()
    assert (stats.pending, stats.leased, stats.dead_letters) == (7, 7, 0)


async def test_claim_stops_at_max_bytes_but_takes_one_oversized_row_alone(
    store: AuditStore,
) -> None:
    await store.write(make_event(padding=5000))
    await write_events(store, 5)
    outbox = Outbox(store.engine)

    alone = await outbox.claim(500, 2048, 30, "me")
    assert len(alone) == 1 and alone[0].size > 2048

    size = (await outbox.claim(1, 1 << 20, 30, "probe"))[0].size
    assert size >= ITEM_OVERHEAD_BYTES
    # Room for exactly two more rows of this size.
    fitting = await outbox.claim(500, 2 * size + size // 2, 30, "me")
    assert len(fitting) == 2
    assert sum(item.size for item in fitting) <= 2 * size + size // 2


async def test_claim_takes_over_rows_whose_lease_expired(store: AuditStore) -> None:
    await write_events(store, 3)
    outbox = Outbox(store.engine)
    crashed = await outbox.claim(10, 1 << 20, 0.2, "crashed-relay")
    assert len(crashed) == 3
    assert await outbox.claim(10, 1 << 20, 30, "other") == []

    await asyncio.sleep(0.3)
    taken = await outbox.claim(10, 1 << 20, 30, "other")

    assert [item.id for item in taken] == [item.id for item in crashed]
    # The relay that lost its lease can no longer settle those rows.
    ids = [item.id for item in crashed]
    assert await outbox.ack(ids, owner="crashed-relay") == 0
    assert await outbox.retry_later(ids, "late", owner="crashed-relay") == 0
    assert await outbox.dead_letter(ids[0], "late", owner="crashed-relay") == 0
    assert await outbox.ack(ids, owner="other") == 3
    assert (await outbox.stats()).pending == 0


async def test_ack_deletes_only_rows_the_owner_holds(store: AuditStore) -> None:
    await write_events(store, 4)
    outbox = Outbox(store.engine)
    mine = await outbox.claim(2, 1 << 20, 30, "me")
    theirs = await outbox.claim(2, 1 << 20, 30, "them")

    deleted = await outbox.ack([item.id for item in mine + theirs], owner="me")

    assert deleted == 2
    assert (await outbox.stats()).pending == 2
    assert await outbox.ack([], owner="me") == 0


async def test_retry_later_backs_off_in_database_time(store: AuditStore) -> None:
    await write_events(store, 1)
    outbox = Outbox(store.engine, backoff=OutboxBackoff(base=10.0, cap=25.0, jitter=0.5))
    (item,) = await outbox.claim(1, 1 << 20, 30, "me")

    assert await outbox.retry_later([item.id], "HTTP 503: down", owner="me") == 1

    wait = await db_seconds_until(store.engine, "next_attempt_at", item.id)
    assert 4.0 <= wait <= 10.5  # 10 s less up to half of it, measured by the database
    assert await outbox.claim(1, 1 << 20, 30, "me") == []
    assert await outbox.next_due_in() == pytest.approx(wait, abs=1.5)
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(
                    AUDIT_OUTBOX.c.attempts,
                    AUDIT_OUTBOX.c.lease_owner,
                    AUDIT_OUTBOX.c.lease_expires_at,
                    AUDIT_OUTBOX.c.last_error,
                )
            )
        ).one()
    assert tuple(row) == (1, None, None, "HTTP 503: down")

    # Later failures double the wait, up to the cap.
    async with store.engine.begin() as conn:
        await conn.execute(sa.update(AUDIT_OUTBOX).values(attempts=5, lease_owner="me"))
    await outbox.retry_later([item.id], "again", owner="me")
    wait = await db_seconds_until(store.engine, "next_attempt_at", item.id)
    assert 11.5 <= wait <= 25.5


async def test_retry_later_waits_at_least_min_delay(store: AuditStore) -> None:
    await write_events(store, 1)
    outbox = Outbox(store.engine, backoff=OutboxBackoff(base=0.01, cap=0.02))
    (item,) = await outbox.claim(1, 1 << 20, 30, "me")

    await outbox.retry_later([item.id], "HTTP 429", owner="me", min_delay=20.0)

    wait = await db_seconds_until(store.engine, "next_attempt_at", item.id)
    assert 19.0 <= wait <= 20.5


async def test_retried_rows_come_due_again(store: AuditStore) -> None:
    await write_events(store, 2)
    outbox = Outbox(store.engine, backoff=OutboxBackoff(base=0.05, cap=0.05, jitter=0.0))
    items = await outbox.claim(2, 1 << 20, 30, "me")
    await outbox.retry_later([item.id for item in items], "boom", owner="me")
    assert await outbox.claim(2, 1 << 20, 30, "me") == []

    await asyncio.sleep(0.1)
    again = await outbox.claim(2, 1 << 20, 30, "me")

    assert [item.id for item in again] == [item.id for item in items]
    assert [item.attempts for item in again] == [1, 1]


async def test_dead_letter_keeps_the_row_with_its_reason_until_redriven(
    store: AuditStore,
) -> None:
    event_ids = await write_events(store, 3)
    outbox = Outbox(store.engine)
    items = await outbox.claim(3, 1 << 20, 30, "me")

    count = await outbox.dead_letter_many(
        {items[0].id: "rejected: no organization", items[2].id: "rejected: bad action"},
        owner="me",
    )

    assert count == 2
    stats = await outbox.stats()
    assert (stats.pending, stats.dead_letters) == (1, 2)
    letters = await outbox.dead_letters()
    assert [(d.event_id, d.reason, d.attempts) for d in letters] == [
        (event_ids[0], "rejected: no organization", 1),
        (event_ids[2], "rejected: bad action", 1),
    ]
    assert letters[0].payload == items[0].payload
    assert [d.id for d in await outbox.dead_letters(after_id=letters[0].id)] == [letters[1].id]
    await outbox.ack([items[1].id], owner="me")
    assert await outbox.claim(10, 1 << 20, 30, "me") == []  # dead letters are never claimed
    assert await outbox.next_due_in() is None

    assert await outbox.redrive([letters[0].id]) == 1
    (redriven,) = await outbox.claim(10, 1 << 20, 30, "me")
    assert (redriven.event_id, redriven.attempts) == (event_ids[0], 0)
    assert await outbox.redrive() == 1
    assert (await outbox.stats()).dead_letters == 0


async def test_release_gives_rows_back_without_counting_an_attempt(store: AuditStore) -> None:
    await write_events(store, 2)
    outbox = Outbox(store.engine)
    items = await outbox.claim(2, 1 << 20, 300, "me")

    assert await outbox.release([item.id for item in items], owner="someone-else") == 0
    assert await outbox.release([item.id for item in items], owner="me") == 2

    again = await outbox.claim(2, 1 << 20, 30, "next")
    assert [(item.id, item.attempts) for item in again] == [(item.id, 0) for item in items]


async def test_stats_reports_pending_leased_age_and_dead_letters(store: AuditStore) -> None:
    outbox = Outbox(store.engine)
    assert await outbox.stats() == OutboxStats(
        pending=0, leased=0, oldest_pending_age_s=0.0, dead_letters=0
    )
    await write_events(store, 3)
    async with store.engine.begin() as conn:  # the oldest row was written 90 s ago
        if store.dialect_name == "sqlite":
            old = sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", "-90 seconds")
        else:
            old = sa.func.now() - sa.text("interval '90 seconds'")
        first_id = sa.select(sa.func.min(AUDIT_OUTBOX.c.id)).scalar_subquery()
        await conn.execute(
            sa.update(AUDIT_OUTBOX).where(AUDIT_OUTBOX.c.id == first_id).values(created_at=old)
        )
    (item,) = await outbox.claim(1, 1 << 20, 30, "me")
    await outbox.dead_letter(item.id, "rejected", owner="me")
    await outbox.claim(1, 1 << 20, 30, "me")

    stats = await outbox.stats()

    assert (stats.pending, stats.leased, stats.dead_letters) == (2, 1, 1)
    assert stats.oldest_pending_age_s < 60  # the 90 s old row is dead-lettered, not pending
    await outbox.redrive()
    assert 89 <= (await outbox.stats()).oldest_pending_age_s <= 95


async def test_concurrent_claims_on_postgresql_are_disjoint_and_complete(
    pg_store: AuditStore,
) -> None:
    await write_events(pg_store, 120)
    outbox = Outbox(pg_store.engine)

    async def drain(owner: str) -> list[int]:
        claimed: list[int] = []
        while batch := await outbox.claim(7, 1 << 20, 30, owner):
            claimed.extend(item.id for item in batch)
            await asyncio.sleep(0)
        return claimed

    results = await asyncio.gather(*(drain(f"relay-{n}") for n in range(6)))

    every = [row_id for claimed in results for row_id in claimed]
    assert len(every) == len(set(every)) == 120
    assert sum(1 for claimed in results if claimed) >= 2


async def test_exclusive_serializes_relays_on_sqlite_only(
    store: AuditStore,
) -> None:
    outbox = Outbox(store.engine)
    other = Outbox(store.engine)
    order: list[str] = []

    async def hold(name: str, box: Outbox) -> None:
        async with box.exclusive():
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    await asyncio.gather(hold("a", outbox), hold("b", other))

    if store.dialect_name == "sqlite":
        assert order == ["a in", "a out", "b in", "b out"]
    else:
        assert order == ["a in", "b in", "a out", "b out"]


async def test_outbox_errors_name_the_operation_when_the_database_is_down(
    tmp_path: object,
) -> None:
    store = AuditStore.from_url("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    outbox = Outbox(store.engine)
    with pytest.raises(OutboxError, match="could not claim outbox rows"):
        await outbox.claim(10, 1 << 20, 30, "me")
    with pytest.raises(OutboxError, match="could not read outbox statistics"):
        await outbox.stats()
    await store.aclose()


async def test_outbox_arguments_are_checked(store: AuditStore) -> None:
    outbox = Outbox(store.engine)
    with pytest.raises(ValueError, match="batch_size must be from 1 to 500, got 501"):
        await outbox.claim(501, 1 << 20, 30, "me")
    with pytest.raises(TypeError, match="batch_size must be an int, got True"):
        await outbox.claim(True, 1 << 20, 30, "me")
    with pytest.raises(ValueError, match="lease_seconds must be a finite number of seconds > 0"):
        await outbox.claim(1, 1 << 20, 0, "me")
    with pytest.raises(ValueError, match="owner must be a non-empty string, got ''"):
        await outbox.claim(1, 1 << 20, 30, "")
    with pytest.raises(TypeError, match="an outbox row id must be an int, got '3'"):
        await outbox.ack(["3"], owner="me")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="min_delay must be a finite number of seconds >= 0"):
        await outbox.retry_later([1], "x", owner="me", min_delay=-1)
    with pytest.raises(TypeError, match="engine must be a sqlalchemy AsyncEngine, got str"):
        Outbox("sqlite:///x")  # type: ignore[arg-type]


def test_backoff_bounds_double_up_to_the_cap() -> None:
    backoff = OutboxBackoff(base=1.0, cap=10.0, jitter=0.5)
    assert backoff.bounds(1) == (0.5, 1.0)
    assert backoff.bounds(3) == (2.0, 4.0)
    assert backoff.bounds(50) == (5.0, 10.0)
    with pytest.raises(ValueError, match=r"OutboxBackoff.cap \(1.0\) must be >= base \(2.0\)"):
        OutboxBackoff(base=2.0, cap=1.0)
    with pytest.raises(ValueError, match=r"OutboxBackoff.jitter must be from 0 to 1, got 1\.5"):
        OutboxBackoff(jitter=1.5)
    with pytest.raises(ValueError, match=r"OutboxBackoff.base must be finite and >= 0, got nan"):
        OutboxBackoff(base=float("nan"))


def test_outbox_stats_dead_lettered_is_a_deprecated_alias_of_dead_letters() -> None:
    stats = OutboxStats(pending=1, leased=0, oldest_pending_age_s=0.5, dead_letters=3)
    with pytest.warns(DeprecationWarning, match="use OutboxStats.dead_letters"):
        assert stats.dead_lettered == 3


async def test_outbox_says_its_table_is_missing_with_a_class_of_its_own(
    sqlite_url: str, pg_url: str
) -> None:
    for url in (sqlite_url, pg_url):  # neither is migrated
        async with AuditStore.from_url(url) as store:
            with pytest.raises(OutboxSchemaMissing, match="could not read outbox statistics"):
                await Outbox(store.engine).stats()


async def test_outbox_says_its_database_is_unreachable_with_a_class_of_its_own() -> None:
    async with AuditStore.from_url("postgresql://postgres@127.0.0.1:1/nowhere") as store:
        with pytest.raises(OutboxUnavailable) as caught:
            await Outbox(store.engine).claim(10, 1 << 20, 30, "me")
    assert not isinstance(caught.value, OutboxSchemaMissing)
    assert isinstance(caught.value, OutboxError)
