"""AuditStore: atomic single-round-trip writes on PostgreSQL, transactions on SQLite, errors."""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.pq import Trace
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from audit_middleware import (
    AuditError,
    AuditStore,
    DatabaseUnavailable,
    SchemaMissing,
    StoreError,
    StoreSchemaMissing,
    StoreUnavailable,
    migrate,
    new_event_id,
)
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_OUTBOX
from auditevt import ActionContext, Event, Timestamp
from conftest import app_role, as_app_role, libpq, make_event

# What the column tests read back: nanoseconds in a +02:00 offset, and nested changes.
EXACT_TIME = Timestamp.parse("2024-05-06T07:08:09.123456789+02:00")
CHANGES = {"status": {"from": "booked", "to": "cancelled"}, "n": 1.5}


# -- URLs and construction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///audit.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:////tmp/audit.db", "sqlite+aiosqlite"),
    ],
)
def test_store_from_url_runs_on_psycopg_or_aiosqlite(url: str, driver: str) -> None:
    store = AuditStore.from_url(url)
    assert store.engine.url.drivername == driver
    assert store.dialect_name == driver.split("+")[0]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://u@h/db", "'mysql'"),
        ("postgresql+asyncpg://u@h/db", "'postgresql+asyncpg'"),
        ("sqlite+pysqlcipher:///x.db", "'sqlite+pysqlcipher'"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("not a url", "'not a url'"),
    ],
)
def test_store_from_url_rejects_other_schemes(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        AuditStore.from_url(url)


def test_store_requires_an_async_engine() -> None:
    with pytest.raises(TypeError, match="AsyncEngine"):
        AuditStore("postgresql://u@h/db")  # type: ignore[arg-type]


def test_store_construction_does_not_connect(closed_port: int) -> None:
    store = AuditStore.from_url(f"postgresql://postgres@127.0.0.1:{closed_port}/nowhere")
    assert "nowhere" in repr(store)


def test_new_event_id_is_version_7_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == len(ids)
    millis = [i.int >> 80 for i in ids]
    assert millis == sorted(millis)
    # Built without UUID()'s own checks: the same object UUID() builds from its text.
    for made in ids[:50]:
        parsed = uuid.UUID(str(made))
        assert (made, hash(made), made.is_safe) == (parsed, hash(parsed), parsed.is_safe)
        assert pickle.loads(pickle.dumps(made)) == made


# -- PostgreSQL -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_store_write_postgresql_stores_log_and_outbox_rows(pg_url: str) -> None:
    await migrate(pg_url)
    event_ = make_event(
        entity_id=2**40,
        timestamp=EXACT_TIME,
        changes=CHANGES,
        action_context=ActionContext.BREAK_GLASS,
        break_glass_id=99,
    )
    async with AuditStore.from_url(as_app_role(pg_url)) as store:
        event_id = await store.write(event_)

    with psycopg.connect(libpq(pg_url)) as conn:  # superuser: bypasses RLS to inspect
        log = conn.execute(
            "SELECT id, event_id, action, entity_type, entity_id, user_id, organization_id,"
            " ip_address, user_agent, request_path, status_code, timestamp, changes,"
            " action_context, break_glass_id, impersonation_id, event_json FROM audit_log"
        ).fetchall()
        outbox = conn.execute(
            "SELECT event_id, audit_id, organization_id, payload, attempts, dead_lettered_at"
            " FROM audit_outbox"
        ).fetchall()
    assert len(log) == 1 and len(outbox) == 1
    row = log[0]
    assert row[1:11] == (
        event_id, "UPDATE", "appointment", 2**40, 42, 7,
        "203.0.113.9", "Mozilla/5.0 (X11; Linux x86_64)", "/api/v1/appointments/4711", 200,
    )  # fmt: skip
    assert row[11] == event_.timestamp.to_datetime()
    assert row[12] == {"status": {"from": "booked", "to": "cancelled"}, "n": 1.5}
    assert row[13:16] == ("break_glass", 99, None)
    assert row[16] == event_.to_json()
    assert outbox[0] == (event_id, row[0], 7, event_.to_json(), 0, None)


@pytest.mark.anyio
async def test_store_write_postgresql_is_one_statement_and_one_round_trip(
    pg_url: str, tmp_path: Any
) -> None:
    await migrate(pg_url)
    store = AuditStore.from_url(as_app_role(pg_url), pool_size=1, max_overflow=0)
    statements: list[tuple[str, bool]] = []

    @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append((statement, conn.connection.dbapi_connection.autocommit))

    await store.write(make_event())  # opens the pooled connection
    async with store.engine.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
    assert pg is not None
    trace_file = tmp_path / "libpq.trace"
    statements.clear()
    with trace_file.open("w") as sink:
        pg.pgconn.trace(sink.fileno())
        pg.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        for _ in range(10):
            await store.write(make_event())
        pg.pgconn.untrace()
    await store.aclose()

    # SQLAlchemy ran one statement per write, on an autocommit connection...
    assert len(statements) == 10
    assert all(sql.startswith("WITH v AS MATERIALIZED") and auto for sql, auto in statements)
    # ...and on the wire each write is one exchange ending in one Sync: no BEGIN, no COMMIT.
    # (Once, psycopg prepares the statement, a Parse of its own; later writes only Bind.)
    frontend = [line.split("\t") for line in trace_file.read_text().splitlines()]
    frontend = [f for f in frontend if len(f) > 2 and f[0] == "F"]
    syncs = [f for f in frontend if f[2] == "Sync"]
    executes = [f for f in frontend if f[2] == "Execute"]
    named_parses = [f for f in frontend if f[2] == "Parse" and not f[3].startswith(' ""')]
    assert len(executes) == 10
    assert len(syncs) == 10 + len(named_parses) and len(named_parses) <= 1
    assert not [f for f in frontend if f[2] == "Query"]  # simple-protocol BEGIN/COMMIT
    wire = trace_file.read_text().upper()
    assert "BEGIN" not in wire and "COMMIT" not in wire and "ROLLBACK" not in wire
    with psycopg.connect(libpq(pg_url)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_outbox").fetchone() == (11,)


@pytest.mark.anyio
async def test_store_write_postgresql_replaces_nul_in_column_copies(pg_url: str) -> None:
    await migrate(pg_url)
    event_ = make_event(
        request_path="/files/a\x00b", user_agent="x\x00", changes={"k\x00": "v\x00", "s": "\\u0000"}
    )
    async with AuditStore.from_url(pg_url) as store:
        await store.write(event_)
    with psycopg.connect(libpq(pg_url)) as conn:
        row = conn.execute("SELECT request_path, user_agent, changes, event_json FROM audit_log")
        path, agent, changes, event_json = row.fetchone() or ()
    assert (path, agent) == ("/files/a\ufffdb", "x\ufffd")
    assert changes == {"k\ufffd": "v\ufffd", "s": "\\u0000"}
    assert Event.model_validate_json(event_json) == event_  # the canonical copy is exact


@pytest.mark.anyio
async def test_store_write_postgresql_bad_value_raises_store_error(pg_url: str) -> None:
    await migrate(pg_url)
    async with AuditStore.from_url(pg_url) as store:
        with pytest.raises(StoreError, match="out of range for type integer") as caught:
            await store.write(make_event(status_code=2**40))
        assert not isinstance(caught.value, StoreUnavailable)
        assert isinstance(caught.value.__cause__, Exception)

        event_id = await store.write(make_event())
        with pytest.raises(StoreError, match=r"audit_(log|outbox)_event_id_key"):
            await store.write(make_event(), event_id=event_id)
        # Nothing half-written: one audit row, one outbox row.
        async with store.engine.connect() as conn:
            counts = await conn.execute(
                text("SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM audit_outbox)")
            )
            assert counts.one() == (1, 1)


@pytest.mark.anyio
async def test_store_write_to_a_closed_port_raises_store_unavailable(closed_port: int) -> None:
    store = AuditStore.from_url(f"postgresql://postgres@127.0.0.1:{closed_port}/audit")
    with pytest.raises(StoreUnavailable, match="could not write the audit row") as caught:
        await store.write(make_event())
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, AuditError)
    assert isinstance(caught.value, DatabaseUnavailable)
    assert not isinstance(caught.value, SchemaMissing)
    await store.aclose()


@pytest.mark.anyio
async def test_store_write_without_tables_raises_schema_missing(pg_url: str) -> None:
    async with AuditStore.from_url(pg_url) as store:
        with pytest.raises(StoreSchemaMissing, match="audit_log") as caught:
            await store.write(make_event())
        assert isinstance(caught.value, SchemaMissing) and isinstance(caught.value, StoreError)
        assert "auditevt migrate" in str(caught.value)
        assert not isinstance(caught.value, DatabaseUnavailable)


def _terminate_backends(url: str) -> int:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.anyio
async def test_store_write_survives_terminated_connections(pg_url: str) -> None:
    await migrate(pg_url)
    async with AuditStore.from_url(as_app_role(pg_url), pool_size=3) as store:
        written = [await store.write(make_event()) for _ in range(3)]
        for _ in range(5):
            assert _terminate_backends(pg_url) >= 1
            # The pooled connection is dead; the write notices, reconnects once, and succeeds.
            written.append(await store.write(make_event()))
    with psycopg.connect(libpq(pg_url)) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM audit_log")}
    assert stored == set(written)


@pytest.mark.anyio
async def test_store_write_terminated_mid_run_never_loses_a_write(pg_url: str) -> None:
    await migrate(pg_url)
    store = AuditStore.from_url(as_app_role(pg_url), pool_size=4, max_overflow=0)
    succeeded: list[uuid.UUID] = []
    failed: list[StoreError] = []

    async def writer() -> None:
        for _ in range(40):
            try:
                succeeded.append(await store.write(make_event()))
            except StoreError as exc:
                failed.append(exc)

    async def killer() -> None:
        for _ in range(6):
            await asyncio.sleep(0.02)
            await asyncio.to_thread(_terminate_backends, pg_url)

    await asyncio.gather(*(writer() for _ in range(4)), killer())
    await store.aclose()
    with psycopg.connect(libpq(pg_url)) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM audit_log")}
        outbox = {r[0] for r in conn.execute("SELECT event_id FROM audit_outbox")}
    # Every write that returned is stored with its outbox row; any that raised said so.
    assert set(succeeded) <= stored
    assert stored == outbox
    assert len(succeeded) + len(failed) == 160
    assert all(isinstance(exc, StoreUnavailable) for exc in failed)


@pytest.mark.anyio
async def test_store_check_warns_when_connected_as_superuser(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(pg_url)
    async with AuditStore.from_url(pg_url) as store:
        with caplog.at_level(logging.WARNING, logger="audit_middleware"):
            reasons = await store.check()
    assert reasons == ("role 'postgres' is a superuser",)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "superuser" in caplog.records[0].getMessage()


@pytest.mark.anyio
async def test_store_check_is_quiet_for_the_app_role(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(pg_url)
    async with AuditStore.from_url(as_app_role(pg_url)) as store:
        with caplog.at_level(logging.WARNING, logger="audit_middleware"):
            assert await store.check() == ()
    assert caplog.records == []


@pytest.mark.anyio
async def test_store_check_warns_for_owner_without_force(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(pg_url)
    owner = f"auditevt_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {owner} NOLOGIN IN ROLE {app_role(pg_url)}")
        conn.execute(f"ALTER TABLE audit_log OWNER TO {owner}")
    try:
        url = f"{pg_url}?options=-crole%3D{owner}"
        async with AuditStore.from_url(url) as store:
            assert await store.check() == ()  # FORCE holds the owner too
            with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
                conn.execute("ALTER TABLE audit_log NO FORCE ROW LEVEL SECURITY")
            with caplog.at_level(logging.WARNING, logger="audit_middleware"):
                reasons = await store.check()
        assert reasons == (f"role {owner!r} owns audit_log, which lacks FORCE ROW LEVEL SECURITY",)
        assert "FORCE" in caplog.text
    finally:
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {owner} TO postgres")
            conn.execute(f"DROP OWNED BY {owner}")
            conn.execute(f"DROP ROLE {owner}")


@pytest.mark.anyio
async def test_store_check_unmigrated_or_unreachable(pg_url: str, closed_port: int) -> None:
    async with AuditStore.from_url(pg_url) as store:
        with pytest.raises(StoreError, match="auditevt migrate"):
            await store.check()
    async with AuditStore.from_url(f"postgresql://postgres@127.0.0.1:{closed_port}/x") as store:
        with pytest.raises(StoreUnavailable):
            await store.check()


# -- SQLite -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_store_write_sqlite_rows_read_back_through_the_tables(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    event_ = make_event(
        timestamp=EXACT_TIME,
        changes=CHANGES,
        action_context=ActionContext.IMPERSONATION,
        impersonation_id=0,
    )
    async with AuditStore.from_url(sqlite_url) as store:
        assert await store.check() == ()
        event_id = await store.write(event_)
        async with store.engine.connect() as conn:
            log = (await conn.execute(select(AUDIT_LOG))).one()
            outbox = (await conn.execute(select(AUDIT_OUTBOX))).one()
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
    # SQLAlchemy's own types decode what the store wrote (the relay relies on it).
    assert log.event_id == event_id and outbox.event_id == event_id
    assert str(log.timestamp) == "2024-05-06 05:08:09.123456"  # UTC, microseconds
    assert log.changes == {"status": {"from": "booked", "to": "cancelled"}, "n": 1.5}
    assert (log.action_context, log.break_glass_id, log.impersonation_id) == (
        "impersonation", None, 0,
    )  # fmt: skip
    assert outbox.audit_id == log.id and outbox.payload == log.event_json == event_.to_json()
    assert mode == "wal"


@pytest.mark.anyio
async def test_store_write_sqlite_concurrent_writers_all_land(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    async with AuditStore.from_url(sqlite_url) as store:
        ids = await asyncio.gather(
            *(store.write(make_event(organization_id=i % 7)) for i in range(200))
        )
        async with store.engine.connect() as conn:
            counts = await conn.execute(
                text("SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM audit_outbox)")
            )
            assert counts.one() == (200, 200)
    assert len(set(ids)) == 200


@pytest.mark.anyio
async def test_store_write_sqlite_without_tables_raises_store_error(sqlite_url: str) -> None:
    async with AuditStore.from_url(sqlite_url) as store:
        with pytest.raises(StoreSchemaMissing, match="no such table"):
            await store.write(make_event())
        with pytest.raises(StoreSchemaMissing, match="auditevt migrate"):
            await store.check()


@pytest.mark.anyio
async def test_store_write_rejects_bad_arguments(sqlite_url: str) -> None:
    store = AuditStore.from_url(sqlite_url)
    with pytest.raises(TypeError, match=r"auditevt\.Event"):
        await store.write({"action": "CREATE"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event_id"):
        await store.write(make_event(), event_id="not-a-uuid")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_store_aclose_disposes_only_engines_it_created(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    engine = create_async_engine(sqlite_url)
    async with AuditStore(engine) as store:
        await store.write(make_event())
    # The caller's engine still works after the store closed.
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar() == 1
    await engine.dispose()
