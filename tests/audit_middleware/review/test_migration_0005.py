"""Migration 0005 (audit_review) upgrades a populated database (at 0004) without touching a row."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import inspect

pytest.register_assert_rewrite("review_support")

from review_support import as_app_role, seed_event  # noqa: E402

from audit_middleware import AuditStore, migrate_sync  # noqa: E402
from audit_middleware.storage._migrate import _engine  # noqa: E402
from audit_middleware.storage._urls import sync_url  # noqa: E402
from conftest import app_role, libpq, upgrade_to  # noqa: E402


async def populate(url: str, count: int) -> None:
    async with AuditStore.from_url(url) as store:
        for n in range(count):
            await store.write(seed_event(7 + n % 3, n))


def snapshot(conn: psycopg.Connection[object]) -> tuple[list[object], list[object]]:
    log = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
    outbox = conn.execute("SELECT * FROM audit_outbox ORDER BY id").fetchall()
    return log, outbox


def test_migration_0005_on_a_populated_postgresql_database_keeps_every_row(pg_url: str) -> None:
    upgrade_to(pg_url, "0004")
    asyncio.run(populate(as_app_role(pg_url), 90))
    with psycopg.connect(libpq(pg_url)) as conn:
        before = snapshot(conn)
    assert len(before[0]) == len(before[1]) == 90
    migrate_sync(pg_url)
    with psycopg.connect(libpq(pg_url)) as conn:
        assert snapshot(conn) == before
        assert conn.execute("SELECT count(*) FROM audit_review").fetchone() == (0,)
        forced = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relname = 'audit_review'"
        ).fetchone()
        assert forced == (True, True)
        grants = conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = 'audit_review' AND grantee = %s ORDER BY 1",
            (app_role(pg_url),),
        ).fetchall()
        assert grants == [("INSERT",), ("SELECT",)]
        version = conn.execute("SELECT version_num FROM auditevt_alembic_version").fetchall()
        assert version == [("0005",)]


def test_migration_0005_on_a_populated_sqlite_database_keeps_every_row(sqlite_url: str) -> None:
    upgrade_to(sqlite_url, "0004")
    asyncio.run(populate(sqlite_url, 30))
    engine = _engine(sync_url(sqlite_url))
    try:
        with engine.connect() as conn:
            before = conn.exec_driver_sql("SELECT * FROM audit_log ORDER BY id").fetchall()
            assert "audit_review" not in inspect(conn).get_table_names()
        migrate_sync(sqlite_url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT * FROM audit_log ORDER BY id").fetchall() == before
            assert len(before) == 30
            assert "audit_review" in inspect(conn).get_table_names()
    finally:
        engine.dispose()
