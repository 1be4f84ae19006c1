"""audit_log's monthly partitions: the conversion of a populated table, security on every
partition, routing, partitions made ahead, and the default partition watched."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from audit_middleware import AuditStore, migrate
from audit_middleware.storage._partitions import Partitions, month_of_event_id
from audit_middleware.storage._store import create_engine
from conftest import eventually, libpq, make_event, upgrade_to


def uuid7_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 minted at ``moment``, as the store mints them."""
    value = int(moment.timestamp() * 1000) << 80 | int.from_bytes(os.urandom(10))
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return uuid.UUID(int=value)


def rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute(
            "SELECT id, event_id, event_json, row_hash FROM public.audit_log ORDER BY id"
        ).fetchall()


def partitions_of(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'audit_log'::regclass ORDER BY 1"
        )
    ]


@pytest.mark.anyio
async def test_partitions_migration_keeps_every_row_of_a_populated_table(pg_url: str) -> None:
    upgrade_to(pg_url, "0003")  # the revision before partitions
    async with AuditStore.from_url(pg_url) as store:
        # Changes that vary and need escaping: the conversion must keep the JSON exact.
        for n in range(60):
            changes = {"n": n, "note": "<kept>"}
            await store.write(make_event(n, organization_id=1 + n % 4, changes=changes))
        # Ids the store did not mint (UUIDv4) still find a home: the default partition.
        for n in range(100, 103):
            changes = {"n": n, "note": "<kept>"}
            await store.write(make_event(n, changes=changes), event_id=uuid.uuid4())
    before = rows(pg_url)
    await migrate(pg_url)
    after = rows(pg_url)
    assert len(after) == len(before) == 63
    assert after == before  # same ids, event ids and exact event JSON, row for row
    with psycopg.connect(libpq(pg_url)) as conn:
        assert conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = 'audit_log'::regclass"
        ).fetchone() == ("p",)
        where = dict(
            conn.execute(
                "SELECT tableoid::regclass::text, count(*) FROM audit_log GROUP BY 1"
            ).fetchall()
        )
        this_month = datetime.now(UTC).strftime("audit_log_%Y_%m")
        assert where == {this_month: 60, "audit_log_default": 3}
    # New writes keep working, and the retry guard still finds its constraint.
    async with AuditStore.from_url(pg_url) as store:
        await store.write(make_event(200))
    assert len(rows(pg_url)) == 64


@pytest.mark.anyio
async def test_partitions_every_partition_has_rls_guards_and_no_grants(pg_url: str) -> None:
    await migrate(pg_url)
    engine = create_engine(pg_url)
    try:
        await Partitions(engine).ensure(2, since=datetime.now(UTC) - timedelta(days=70))
    finally:
        await engine.dispose()
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        names = partitions_of(conn)
        assert "audit_log_default" in names and len(names) >= 6
        # Name, command, roles (a policy for one role must not become one for everybody),
        # and expressions, exactly as on the parent.
        shape = (
            "SELECT polname, polcmd, polpermissive, polroles::regrole[]::text,"
            " pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)"
            " FROM pg_policy WHERE polrelid = %s::regclass ORDER BY polname"
        )
        parent_policies = conn.execute(shape, ("public.audit_log",)).fetchall()
        assert parent_policies
        grantees = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT a.grantee::regrole::text FROM pg_class c, aclexplode(c.relacl) a"
                " WHERE c.oid = 'audit_log'::regclass AND a.grantee <> c.relowner"
            )
        ]
        assert grantees  # the app role, at least
        for name in names:
            rls, forced, acl = conn.execute(
                "SELECT relrowsecurity, relforcerowsecurity, relacl FROM pg_class"
                " WHERE oid = %s::regclass",
                (name,),
            ).fetchone() or (None, None, None)
            assert (rls, forced, acl) == (True, True, None), name
            assert conn.execute(shape, (name,)).fetchall() == parent_policies, name
            for grantee in grantees:
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                    allowed = conn.execute(
                        "SELECT has_table_privilege(%s, %s, %s)", (grantee, name, privilege)
                    ).fetchone()
                    assert allowed == (False,), (grantee, name, privilege)
            # Even the owner (here a superuser) cannot change or empty a partition.
            for statement in (
                f'UPDATE "{name}" SET status_code = 1',
                f'DELETE FROM "{name}"',
                f'TRUNCATE "{name}"',
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    conn.execute(statement)


@pytest.mark.anyio
async def test_partitions_writes_land_in_their_month_and_foreign_ids_in_default(
    pg_url: str,
) -> None:
    await migrate(pg_url)
    async with AuditStore.from_url(pg_url) as store:
        partitions = Partitions(store.engine)
        last_month = datetime.now(UTC).replace(day=1) - timedelta(days=1)
        await partitions.ensure(1, since=last_month)
        written = await store.write(make_event(1))
        old = await store.write(make_event(2), event_id=uuid7_at(last_month))
        foreign = await store.write(make_event(3), event_id=uuid.uuid4())
        with psycopg.connect(libpq(pg_url)) as conn:
            placed = dict(
                conn.execute(
                    "SELECT event_id, tableoid::regclass::text FROM audit_log"
                ).fetchall()
            )
        assert placed[written] == datetime.now(UTC).strftime("audit_log_%Y_%m")
        assert placed[old] == last_month.strftime("audit_log_%Y_%m")
        assert placed[foreign] == "audit_log_default"
        assert month_of_event_id(foreign) is None
        assert month_of_event_id(old) == last_month.replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        # The default partition's rows show in the stats (from PostgreSQL's statistics, which
        # arrive within a second or so of the commit).
        async def default_row_counted() -> bool:
            with psycopg.connect(libpq(pg_url)) as conn:
                conn.execute("SELECT pg_stat_force_next_flush()")
            return (await partitions.stats()).default_rows >= 1

        await eventually(default_row_counted, within=15)
        stats = await partitions.stats()
        assert stats.default_rows == 1
        assert stats.months_ahead == 3  # what the migration made ahead


@pytest.mark.anyio
async def test_partitions_ensure_is_idempotent_and_callable_by_the_app_role(pg_url: str) -> None:
    await migrate(pg_url)
    engine = create_engine(pg_url)
    try:
        partitions = Partitions(engine)
        first = await partitions.ensure(3)
        again = await partitions.ensure(3)
        assert first == again and len(first) == 4
    finally:
        await engine.dispose()
    with psycopg.connect(libpq(pg_url)) as conn:
        grantee = conn.execute(
            "SELECT a.grantee::regrole::text FROM pg_class c, aclexplode(c.relacl) a"
            " WHERE c.oid = 'audit_log'::regclass AND a.grantee <> c.relowner"
            " AND a.privilege_type = 'INSERT' LIMIT 1"
        ).fetchone()
        assert grantee is not None
        conn.execute(f"SET ROLE {grantee[0]}")
        made = conn.execute("SELECT auditevt_ensure_partitions(now(), 5)").fetchall()
        assert len(made) == 6
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE audit_log_1999_01 PARTITION OF audit_log"
                         " FOR VALUES FROM ('00000000-0000-7000-8000-000000000000')"
                         " TO ('00000000-0001-7000-8000-000000000000')")


def test_partitions_refuse_sqlite(sqlite_url: str) -> None:
    from audit_middleware import ConfigurationError

    engine = create_engine(sqlite_url)
    with pytest.raises(ConfigurationError, match="partitions need PostgreSQL"):
        Partitions(engine)


@pytest.mark.anyio
async def test_partitions_month_bounds_agree_with_the_database(pg_url: str) -> None:
    from audit_middleware.storage._partitions import month_bounds, partition_month

    await migrate(pg_url)
    with psycopg.connect(libpq(pg_url)) as conn:
        for month in (datetime(1999, 12, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)):
            database = conn.execute(
                "SELECT auditevt_month_uuid(%s), auditevt_month_uuid(%s + interval '1 month')",
                (month, month),
            ).fetchone()
            assert database == month_bounds(month)
    assert partition_month("audit_log_2026_02") == datetime(2026, 2, 1, tzinfo=UTC)
    assert partition_month("audit_log_default") is None


@pytest.mark.anyio
async def test_partitions_maintenance_keeps_them_ahead_until_cancelled(pg_url: str) -> None:
    import asyncio

    from audit_middleware.storage._partitions import maintain_partitions

    await migrate(pg_url)
    engine = create_engine(pg_url)
    try:
        task = asyncio.create_task(maintain_partitions(engine, months_ahead=7, interval=3600))
        partitions = Partitions(engine)

        async def seven_ahead() -> bool:
            return (await partitions.stats()).months_ahead == 7

        await eventually(seven_ahead, within=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await engine.dispose()
