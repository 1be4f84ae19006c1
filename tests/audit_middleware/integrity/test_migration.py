"""Migration 0003 on a populated database: every row kept, given the hash the writer computes."""

from __future__ import annotations

import sqlite3
import uuid

import psycopg
import pytest
from sqlalchemy import insert

from audit_middleware import SigningKey, migrate_sync, row_hash, verify_database
from audit_middleware.integrity._columns import _expected
from audit_middleware.integrity._sealer import Sealer, create_engine
from audit_middleware.storage._migrate import _engine, head_revision
from audit_middleware.storage._tables import AUDIT_LOG
from audit_middleware.storage._urls import sync_url
from auditevt import Event
from conftest import libpq, make_event, upgrade_to

EVENTS = [
    make_event(
        1,
        organization_id=7,
        timestamp="2026-12-01T07:08:09.123456789Z",
        changes={"status": {"from": "booked", "to": "cancelled"}, "n": 1},
    ),
    make_event(2, organization_id=8, request_path="/a%00b\x00c", user_agent="Zoë ☃"),
    make_event(3, organization_id=7, changes=None),
    make_event(4, organization_id=9, changes={"note": "nul \x00 inside", "emoji": "🦀"}),
]


def populate_at_0001(url: str) -> list[uuid.UUID]:
    """Rows as a writer of revision 0001 wrote them: no row_hash column at all."""
    engine = _engine(sync_url(url))
    postgresql = engine.dialect.name == "postgresql"
    ids = []
    try:
        with engine.begin() as conn:
            for event in EVENTS:
                event_id = uuid.uuid4()
                ids.append(event_id)
                values = _expected(event, postgresql)
                values.update(event_id=event_id, event_json=event.to_json())
                # Only the columns given: the INSERT names no row_hash, which 0001 lacks.
                conn.execute(insert(AUDIT_LOG).values(**values))
    finally:
        engine.dispose()
    return ids


@pytest.mark.parametrize("database", ["pg_url", "sqlite_url"])
@pytest.mark.anyio
async def test_migration_0003_hashes_existing_rows_and_keeps_them(
    database: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(database)
    upgrade_to(url, "0001")
    event_ids = populate_at_0001(url)
    migrate_sync(url)
    assert head_revision() >= "0003"
    expected = [row_hash(i, e.to_json()) for i, e in zip(event_ids, EVENTS, strict=True)]
    if database == "pg_url":
        with psycopg.connect(libpq(url)) as conn:
            rows = conn.execute("SELECT event_id, row_hash FROM audit_log ORDER BY id").fetchall()
            forced = conn.execute(
                "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'audit_log'"
            ).fetchone()
            assert forced == (True,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute("UPDATE audit_log SET user_id = 1")
    else:
        with sqlite3.connect(url.split("///", 1)[1]) as conn:
            rows = conn.execute("SELECT event_id, row_hash FROM audit_log ORDER BY id").fetchall()
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute("UPDATE audit_log SET user_id = 1")
    assert [uuid.UUID(str(r[0])) for r in rows] == event_ids
    assert [bytes(r[1]) for r in rows] == expected
    # The upgraded rows seal and verify like new ones (columns with U+0000 included).
    key = SigningKey.generate()
    engine = create_engine(url)
    try:
        async with Sealer(engine, key) as sealer:
            seal = await sealer.run_once()
        assert seal is not None and seal.count == len(EVENTS)
        report = await verify_database(engine, {key.key_id: key.public_key})
        assert report.ok, report.problems
    finally:
        await engine.dispose()
    assert all(isinstance(e, Event) for e in EVENTS)
