"""The write statements give a row the same columns: ``FULL`` (named values), ``FROM_JSON``
(columns read out of the event JSON) and the bound, prepared one of the request's transaction;
the prepared one is prepared once per connection."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from audit_middleware import AuditStore, StoreError
from audit_middleware.delivery._notify import NotifyingSink
from audit_middleware.integrity import row_hash
from audit_middleware.storage import _statements
from audit_middleware.storage._store import _from_json_params, new_event_id
from auditevt import ActionContext, Event, Timestamp
from conftest import libpq, make_event

pytestmark = pytest.mark.anyio

_COLUMNS = (
    "action, entity_type, entity_id, user_id, organization_id, ip_address, user_agent, "
    'request_path, status_code, "timestamp", changes, action_context, break_glass_id, '
    "impersonation_id, event_json"
)

EVENTS = {
    "typical": make_event(changes={"before": {"room": "B-12"}, "after": {"room": "C-4"}}),
    "numbers": make_event(
        changes={"n": [0, -0.0, 1e21, 1e-7, 2**63, 10**300, 0.1, -12.5, 1e17, True, None]}
    ),
    "text": make_event(
        entity_type="pat<i>ent&co",
        user_agent='Mozilla \u2028 \u00e9 \U0001f600 "quoted" back\\slash',
        request_path="/ä/<script>",
        changes={"html": "<b>&amp;</b>", "emoji": "\U0001f600", "esc": "tab\tnl\n"},
    ),
    "zero_entity_and_context": make_event(
        entity_id=0,
        action_context=ActionContext.BREAK_GLASS,
        break_glass_id=0,
        timestamp=Timestamp.from_unix_ns(1_795_000_000_123_456_789, -28_800),
    ),
    "impersonation_nanoseconds": make_event(
        action_context=ActionContext.IMPERSONATION,
        impersonation_id=2**62,
        timestamp=Timestamp.parse("2026-11-27T10:11:12.999999999+05:45"),
        changes=[{"deep": [[[{"x": 1}]]]}, "s", 3],
    ),
    # PostgreSQL reads offsets up to 15:59 in text; Go writes up to 23:59.
    "far_offset": make_event(timestamp=Timestamp.parse("2026-11-27T10:11:12.000001999-23:59")),
    "utc_nanoseconds": make_event(timestamp=Timestamp.parse("2026-11-27T23:59:59.999999999Z")),
}


def _rows(url: str, ids: list[Any]) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(url)) as conn:
        return [
            conn.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE event_id = %s", [i]).fetchone()
            or ()
            for i in ids
        ]


async def _commit_alone(store: AuditStore, event: Event, event_id: Any) -> None:
    conn = await store.connect()
    try:
        await store.commit_with(conn, event, event_id=event_id)
    finally:
        await store.release(conn)


@pytest.mark.parametrize("name", sorted(EVENTS))
async def test_every_statement_writes_the_same_columns(
    pg_store: AuditStore, pg_url: str, name: str
) -> None:
    event = EVENTS[name]
    full_id, from_json_id, bound_id = new_event_id(), new_event_id(), new_event_id()
    await pg_store._write_postgresql(_statements.FULL, pg_store._checked_params(event, full_id))
    from_json = _from_json_params(event, from_json_id)
    if from_json is None:  # the offset: FROM_JSON is not used for it (see the test below)
        assert name == "far_offset"
        await pg_store.write(event, event_id=from_json_id)
    else:
        await pg_store._write_postgresql(_statements.FROM_JSON_BOUND, from_json)
    await _commit_alone(pg_store, event, bound_id)
    full, derived, bound = _rows(pg_url, [full_id, from_json_id, bound_id])
    # changes compare as Python values: jsonb keeps numbers as numeric (-0.0 reads as 0.0 or 0).
    assert full == derived == bound
    assert Event.model_validate_json(derived[-1]) == event
    assert full[9] == event.timestamp.to_datetime()


async def test_the_request_write_stores_the_writers_row_hash(
    pg_store: AuditStore, pg_url: str
) -> None:
    # What the sealer and the verifier recompute from the stored row, for every kind of event.
    events = [*EVENTS.values(), make_event(request_path="/a\x00b")]
    ids = [new_event_id() for _ in events]
    for event, event_id in zip(events, ids, strict=True):
        await _commit_alone(pg_store, event, event_id)
    with psycopg.connect(libpq(pg_url)) as conn:
        stored = [
            conn.execute(
                "SELECT row_hash, event_json FROM audit_log WHERE event_id = %s", [i]
            ).fetchone()
            for i in ids
        ]
    for event_id, (digest, event_json) in zip(ids, stored, strict=True):
        assert digest == row_hash(event_id, event_json)


async def test_the_bound_write_takes_nul_as_the_full_statement_does(
    pg_store: AuditStore, pg_url: str
) -> None:
    event = make_event(request_path="/a\x00b", changes={"k\x00": "v\x00", "\\u0000": 1})
    full_id, bound_id = new_event_id(), new_event_id()
    await pg_store.write(event, event_id=full_id)
    await _commit_alone(pg_store, event, bound_id)
    full, bound = _rows(pg_url, [full_id, bound_id])
    assert full == bound
    assert bound[7] == "/a\ufffdb"
    assert bound[10] == {"k\ufffd": "v\ufffd", "\\u0000": 1}
    assert Event.model_validate_json(bound[-1]) == event


async def test_a_timestamp_postgresql_cannot_hold_is_refused_naming_it(
    pg_store: AuditStore, pg_url: str
) -> None:
    event = make_event(timestamp=Timestamp.parse("0000-01-01T00:00:00Z"))  # Go's zero year
    with pytest.raises(StoreError, match="0000-01-01T00:00:00Z"):
        await _commit_alone(pg_store, event, new_event_id())
    with psycopg.connect(libpq(pg_url)) as check:
        assert check.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


async def test_an_event_escaping_nul_takes_the_full_statement(pg_store: AuditStore) -> None:
    event = make_event(request_path="/a\x00b")
    assert _from_json_params(event, new_event_id()) is None
    await pg_store.write(event)  # and is written (columns with U+FFFD: test_store.py)


@pytest.mark.parametrize(
    ("text", "from_json"),
    [("10:11:12+15:59", True), ("10:11:12-15:59", True), ("10:11:12+16:00", False),
     ("10:11:12-23:59", False), ("10:11:12Z", True)],
)  # fmt: skip
async def test_an_offset_postgresql_cannot_read_takes_the_full_statement(
    pg_store: AuditStore, pg_url: str, text: str, from_json: bool
) -> None:
    event = make_event(timestamp=Timestamp.parse(f"2026-11-27T{text}"))
    assert (_from_json_params(event, new_event_id()) is not None) is from_json
    event_id = await pg_store.write(event)
    with psycopg.connect(libpq(pg_url)) as check:
        row = check.execute(
            'SELECT "timestamp" FROM audit_log WHERE event_id = %s', [event_id]
        ).fetchone()
    assert row == (event.timestamp.to_datetime(),)


async def _prepared_names(conn: Any) -> list[str]:
    driver = conn.sync_connection.connection.driver_connection
    cursor = await driver.execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE 'auditevt_write_%'"
    )
    return [row[0] for row in await cursor.fetchall()]


async def test_commit_with_prepares_once_per_connection(pg_store: AuditStore) -> None:
    seen: set[tuple[str, ...]] = set()
    for number in range(8):
        conn = await pg_store.connect()
        try:
            await pg_store.commit_with(conn, make_event(number))
            names = tuple(await _prepared_names(conn))
            await conn.rollback()
        finally:
            await pg_store.release(conn)
        assert len(names) == 1, names
        seen.add(names)
    # The pool hands the same connection back (one at a time here): one PREPARE for eight writes.
    assert len(seen) == 1


async def test_a_refused_write_keeps_the_statement_prepared(pg_store: AuditStore) -> None:
    event_id = new_event_id()
    await _commit_alone(pg_store, make_event(1), event_id)
    with pytest.raises(StoreError, match="duplicate key"):  # the same event id again
        await _commit_alone(pg_store, make_event(2), event_id)
    await _commit_alone(pg_store, make_event(3), new_event_id())
    conn = await pg_store.connect()  # the pool's one connection, used for all three
    try:
        names = await _prepared_names(conn)
    finally:
        await pg_store.release(conn)
    assert len(names) == 1, names


async def test_a_deallocated_statement_fails_one_write_then_prepares_again(
    pg_store: AuditStore, pg_url: str
) -> None:
    conn = await pg_store.connect()
    try:
        await pg_store.commit_with(conn, make_event(1))
    finally:
        await pg_store.release(conn)
    conn = await pg_store.connect()
    try:
        driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        await driver.execute("DEALLOCATE ALL")  # e.g. a pooler's reset between requests
        with pytest.raises(StoreError, match="auditevt_write_"):
            await pg_store.commit_with(conn, make_event(2))
        await conn.rollback()  # what the middleware does: nothing of the request is committed
        await pg_store.commit_with(conn, make_event(3))
    finally:
        await pg_store.release(conn)
    with psycopg.connect(libpq(pg_url)) as check:
        ids = [row[0] for row in check.execute("SELECT entity_id FROM audit_log ORDER BY id")]
    assert ids == [1, 3]


async def test_prepared_statements_off_sends_the_statement_inline(pg_url: str) -> None:
    from audit_middleware import migrate

    await migrate(pg_url)
    # As behind PgBouncer in transaction mode: psycopg told not to prepare.
    store = AuditStore.from_url(pg_url, connect_args={"prepare_threshold": None})
    async with store:
        for number in range(3):
            conn = await store.connect()
            try:
                await store.commit_with(conn, make_event(number))
                assert await _prepared_names(conn) == []
            finally:
                await store.release(conn)
    with psycopg.connect(libpq(pg_url)) as check:
        assert check.execute("SELECT count(*) FROM audit_outbox").fetchone() == (3,)


@pytest.mark.parametrize("notifying", [False, True], ids=["store", "relay.notifying(store)"])
async def test_commit_and_release_commits_then_closes_the_session_and_the_connection(
    store: AuditStore, notifying: bool
) -> None:
    woken: list[bool] = []
    target: Any = NotifyingSink(store, lambda: woken.append(True)) if notifying else store
    ended: list[str] = []
    for outcome in ("commit", "rollback"):
        sa.event.listen(store.engine.sync_engine, outcome, lambda _, o=outcome: ended.append(o))
    conn = await store.connect()
    session = AsyncSession(bind=conn, join_transaction_mode="rollback_only")
    await session.execute(sa.text("SELECT 1"))
    event_id = await target.commit_and_release(conn, make_event(7), session=session)
    # SQLAlchemy's transaction ended as the commit it was (listeners see no rollback).
    assert ended and set(ended) == {"commit"} and store.engine.pool.checkedout() == 0
    assert conn.closed and session.sync_session.get_transaction() is None
    assert woken == ([True] if notifying else [])
    async with store.engine.connect() as check:
        found = await check.execute(sa.text("SELECT entity_id, event_id FROM audit_log"))
        assert [(row[0], uuid.UUID(str(row[1]))) for row in found] == [(7, event_id)]
