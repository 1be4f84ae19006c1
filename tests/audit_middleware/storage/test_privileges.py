"""Least privilege per database (revision 0002), against a real PostgreSQL cluster.

Roles belong to the cluster, so these tests use two databases of it: what database A's roles
may do must stop at A. Login roles are created per test and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from psycopg import errors
from sqlalchemy.engine import make_url

from audit_middleware import AuditStore, database_roles, migrate_sync
from conftest import (
    PG_ADMIN_DSN,
    app_role,
    as_app_role,
    as_role,
    database_name,
    fresh_pg_database,
    libpq,
    make_event,
    relay_role,
    upgrade_to,
)


def connect(url: str, role: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    options = {} if role is None else {"options": f"-c role={role}"}
    return psycopg.connect(libpq(url), **options, **kwargs)


async def write(url: str, count: int, organization_id: int = 1) -> None:
    async with AuditStore.from_url(url) as store:
        for n in range(count):
            await store.write(make_event(n, organization_id=organization_id))


@pytest.fixture
def two_databases() -> Iterator[tuple[str, str]]:
    """Two migrated databases of one cluster, each holding two outbox rows."""
    with fresh_pg_database("auditevt_priv_a") as a, fresh_pg_database("auditevt_priv_b") as b:
        for url in (a, b):
            migrate_sync(url)
        yield a, b


@contextlib.contextmanager
def login_role(member_of: str) -> Iterator[str]:
    """A LOGIN role (trust authentication on loopback) in ``member_of``; dropped afterwards."""
    name = f"auditevt_login_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE {name} LOGIN IN ROLE "{member_of}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def login_url(url: str, user: str) -> str:
    return libpq(url).replace("postgres@", f"{user}@", 1)


@pytest.mark.anyio
async def test_privileges_app_role_of_one_database_cannot_connect_to_another(
    two_databases: tuple[str, str],
) -> None:
    a, b = two_databases
    with login_role(app_role(a)) as core_a:
        # Its own database: connect, write and read its outbox.
        await write(a.replace("postgres@", f"{core_a}@", 1), 1)
        with psycopg.connect(login_url(a, core_a)) as conn:
            assert conn.execute("SELECT count(*) FROM public.audit_outbox").fetchone() == (1,)
        # The other database refuses the connection itself.
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(login_url(b, core_a)).close()


@pytest.mark.parametrize("role_of", [app_role, relay_role], ids=["app", "relay"])
def test_privileges_roles_of_one_database_cannot_read_or_delete_another_outbox(
    two_databases: tuple[str, str], role_of: Any
) -> None:
    a, b = two_databases

    asyncio.run(write(b, 2))
    # Even over a connection someone else opened to B (CONNECT aside), A's roles hold nothing
    # there: no table, no sequence.
    for statement in (
        "SELECT * FROM public.audit_outbox",
        "DELETE FROM public.audit_outbox",
        "UPDATE public.audit_outbox SET lease_owner = 'a'",
        "SELECT * FROM public.audit_log",
        "SELECT nextval('public.audit_outbox_id_seq')",
    ):
        with connect(b, role_of(a)) as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement)
    with connect(b) as conn:
        assert conn.execute("SELECT count(*) FROM public.audit_outbox").fetchone() == (2,)


def test_privileges_shared_roles_of_revision_0001_hold_nothing(
    two_databases: tuple[str, str],
) -> None:
    a, _ = two_databases
    for role in ("auditevt_app", "auditevt_relay"):
        for statement in ("SELECT * FROM public.audit_outbox", "SELECT * FROM public.audit_log"):
            with connect(a, role) as conn, pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


@pytest.mark.parametrize("role_of", [app_role, relay_role], ids=["app", "relay"])
@pytest.mark.parametrize(
    "assignment",
    [
        "payload = '{\"forged\":true}'",
        "event_id = gen_random_uuid()",
        "organization_id = 666",
        "audit_id = 0",
        "created_at = now()",
    ],
)
def test_privileges_neither_role_may_change_what_telemetry_receives(
    pg_url: str, role_of: Any, assignment: str
) -> None:
    migrate_sync(pg_url)

    asyncio.run(write(pg_url, 1))
    with (
        connect(pg_url, role_of(pg_url)) as conn,
        pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
    ):
        conn.execute(f"UPDATE public.audit_outbox SET {assignment}")
    with connect(pg_url) as conn:
        payload = conn.execute("SELECT payload FROM public.audit_outbox").fetchone()
    assert payload is not None and '"forged"' not in payload[0]


def test_privileges_relay_role_leases_reschedules_and_deletes(pg_url: str) -> None:
    migrate_sync(pg_url)

    asyncio.run(write(pg_url, 3))
    with connect(pg_url, relay_role(pg_url)) as conn:
        conn.execute(
            "UPDATE public.audit_outbox SET lease_owner = 'r', lease_expires_at = now(),"
            " attempts = attempts + 1, next_attempt_at = now(), last_error = 'x'"
            " WHERE id = (SELECT min(id) FROM public.audit_outbox)"
        )
        conn.execute(
            "UPDATE public.audit_outbox SET dead_lettered_at = now()"
            " WHERE id = (SELECT max(id) FROM public.audit_outbox)"
        )
        deleted = conn.execute("DELETE FROM public.audit_outbox WHERE lease_owner = 'r'")
        assert deleted.rowcount == 1
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO public.audit_outbox (event_id, audit_id, organization_id,"
                         " payload) VALUES (gen_random_uuid(), 1, 1, '{}')")  # fmt: skip


@pytest.mark.parametrize("as_app", [True, False], ids=["app role", "superuser"])
@pytest.mark.anyio
async def test_privileges_temp_table_on_a_pooled_connection_swallows_no_write(
    pg_url: str, as_app: bool
) -> None:
    migrate_sync(pg_url)
    url = as_app_role(pg_url) if as_app else pg_url
    async with AuditStore.from_url(url, pool_size=1, max_overflow=0) as store:
        # Plant look-alike tables on the one pooled connection, as a compromised or careless
        # piece of the application could; bare names would now resolve to them (pg_temp first).
        async with store.engine.connect() as conn:
            for table in ("audit_log", "audit_outbox"):
                await conn.exec_driver_sql(
                    f"CREATE TEMP TABLE {table} (LIKE public.{table} INCLUDING ALL)"
                )
            await conn.exec_driver_sql("CREATE TEMP SEQUENCE audit_log_id_seq START 1000000")
            await conn.commit()
        await store.write(make_event(1))
        async with store.engine.connect() as conn:
            # The same connection still has its TEMP tables, and they stayed empty.
            temp = await conn.exec_driver_sql("SELECT count(*) FROM pg_temp.audit_log")
            assert temp.scalar() == 0
            temp = await conn.exec_driver_sql("SELECT count(*) FROM pg_temp.audit_outbox")
            assert temp.scalar() == 0
    with connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM public.audit_log").fetchone() == (1, 1)
        assert conn.execute("SELECT count(*) FROM public.audit_outbox").fetchone() == (1,)


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with connect(url) as conn:
        return {
            table: conn.execute(f"SELECT * FROM public.{table} ORDER BY id").fetchall()
            for table in ("audit_log", "audit_outbox")
        }


def test_privileges_upgrade_from_0001_keeps_every_row(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit_middleware.storage import _statements

    # A writer of the 0001 era: no row_hash column yet (revision 0003 adds it).
    old_write = _statements.FROM_JSON_BOUND.replace(", row_hash)", ")").replace(
        ", %(row_hash)s::bytea", ""
    )
    assert old_write != _statements.FROM_JSON_BOUND
    monkeypatch.setattr(_statements, "FROM_JSON_BOUND", old_write)
    upgrade_to(pg_url, "0001")

    # A populated 0001 database, written as its shared app role; outbox rows in every state.
    asyncio.run(write(as_role(pg_url, "auditevt_app"), 40, organization_id=3))
    asyncio.run(write(as_role(pg_url, "auditevt_app"), 20, organization_id=4))
    with connect(pg_url) as conn:
        conn.execute(
            "UPDATE audit_outbox SET lease_owner = 'relay-1', lease_expires_at = now(),"
            " attempts = 2, last_error = 'HTTP 503' WHERE id <= 10"
        )
        conn.execute("UPDATE audit_outbox SET dead_lettered_at = now() WHERE id > 55")
        conn.execute("DELETE FROM audit_outbox WHERE id BETWEEN 20 AND 29")
    before = _snapshot(pg_url)
    assert len(before["audit_log"]) == 60 and len(before["audit_outbox"]) == 50

    monkeypatch.undo()
    migrate_sync(pg_url)

    after = _snapshot(pg_url)
    # Revision 0003 appends row_hash, computed for every row; everything else is unchanged.
    assert [row[:-1] for row in after["audit_log"]] == before["audit_log"]
    assert all(len(row[-1]) == 32 for row in after["audit_log"])
    assert after["audit_outbox"] == before["audit_outbox"]
    roles = database_roles(database_name(pg_url))
    with connect(pg_url) as conn:
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            " AND tablename = 'audit_log' ORDER BY 1"
        ).fetchall()
        assert ("ix_audit_log_org_ts_event",) in indexes
        assert ("ix_audit_log_org_ts_id",) not in indexes
        for role, table, allowed in [
            (roles.app, "audit_log", True),
            (roles.relay, "audit_log", False),
            ("auditevt_app", "audit_log", False),
            ("auditevt_relay", "audit_outbox", False),
        ]:
            privilege = conn.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT')", [role, f"public.{table}"]
            ).fetchone()
            assert privilege == (allowed,), (role, table)


def test_privileges_migrations_of_many_databases_at_once(two_databases: tuple[str, str]) -> None:
    # Each database gets its own roles, created while other databases' migrations run.
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(fresh_pg_database("auditevt_priv_c")) for _ in range(4)]
        failures: list[BaseException] = []

        def run(url: str) -> None:
            try:
                migrate_sync(url)
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(url,)) for url in urls * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        with connect(urls[0]) as conn:
            names = [r for url in urls for r in (app_role(url), relay_role(url))]
            found = conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", [names]
            ).fetchone()
            assert found == (len(names),)


def test_privileges_roles_created_beforehand_are_used_as_they_are(pg_url: str) -> None:
    roles = database_roles(database_name(pg_url))
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{roles.app}" NOLOGIN')
    migrate_sync(pg_url)
    migrate_sync(pg_url)  # and again: nothing to do
    with connect(pg_url, roles.app) as conn:
        assert conn.execute("SELECT count(*) FROM public.audit_log").fetchone() == (0,)


def test_privileges_database_with_an_awkward_long_name() -> None:
    # 63 bytes with upper case, a quote, a hyphen and a non-ASCII letter: the role names are
    # shortened (digest) and quoted, and still work.
    name = ('Audit-"Ü"' + uuid.uuid4().hex)[:40]
    name += "x" * (63 - len(name.encode()))
    assert len(name.encode()) == 63
    roles = database_roles(name)
    assert len(roles.app.encode()) == len(roles.relay.encode()) == 63

    def quoted(identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {quoted(name)}")
    try:
        migrate_sync(make_url(PG_ADMIN_DSN).set(drivername="postgresql+psycopg", database=name))
        dsn = psycopg.conninfo.make_conninfo(PG_ADMIN_DSN, dbname=name)
        with psycopg.connect(dsn) as conn:
            conn.execute(f"SET ROLE {quoted(roles.app)}")
            assert conn.execute("SELECT count(*) FROM public.audit_log").fetchone() == (0,)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
            admin.execute(
                f"DROP ROLE IF EXISTS {quoted(roles.app)}, {quoted(roles.relay)}, "
                f"{quoted(roles.sealer)}"
            )


def test_database_roles_names() -> None:
    assert database_roles("core") == database_roles("core")
    assert database_roles("core").app == "auditevt_app_core"
    assert database_roles("core").relay == "auditevt_relay_core"
    assert database_roles("core").sealer == "auditevt_sealer_core"
    plain = "d" * 47  # auditevt_relay_ + 47 = 62 bytes: kept as it is
    assert database_roles(plain).relay == "auditevt_relay_" + plain
    long = "d" * 48
    assert len(database_roles(long).relay) == 63 and database_roles(long).relay != (
        "auditevt_relay_" + long
    )
    # Two long names that share a prefix get different roles.
    assert database_roles("x" * 60 + "a").app != database_roles("x" * 60 + "b").app
    # Multi-byte letters are never cut in half; the name is exactly 63 bytes.
    name = "ü" * 31
    assert len(database_roles(name).app.encode()) == 63
    for bad in ("", "a\x00b", "x" * 64, 7):
        with pytest.raises(ValueError, match="database="):
            database_roles(bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_privileges_sqlite_temp_table_swallows_no_write(sqlite_url: str) -> None:
    migrate_sync(sqlite_url)
    async with AuditStore.from_url(sqlite_url, pool_size=1, max_overflow=0) as store:
        async with store.engine.connect() as conn:
            for table in ("audit_log", "audit_outbox"):
                await conn.exec_driver_sql(
                    f"CREATE TEMP TABLE {table} AS SELECT * FROM main.{table} WHERE 0"
                )
            await conn.commit()
        await store.write(make_event(1))
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT count(*) FROM temp.audit_log")).scalar() == 0
            assert (await conn.exec_driver_sql("SELECT count(*) FROM main.audit_log")).scalar() == 1
            outbox = await conn.exec_driver_sql("SELECT count(*) FROM main.audit_outbox")
            assert outbox.scalar() == 1


@pytest.mark.anyio
async def test_privileges_reader_and_outbox_ignore_temp_look_alikes(pg_url: str) -> None:
    from audit_middleware import AuditReader, Outbox

    migrate_sync(pg_url)
    url = as_app_role(pg_url)
    await write(url, 2)
    async with AuditStore.from_url(url, pool_size=1, max_overflow=0) as store:
        async with store.engine.connect() as conn:
            for table in ("audit_log", "audit_outbox"):
                await conn.exec_driver_sql(
                    f"CREATE TEMP TABLE {table} AS SELECT * FROM public.{table} WITH NO DATA"
                )
            # A planted row the admin of organization 1 must never be shown, and a forged
            # payload the relay must never send.
            planted = make_event(50, organization_id=1, request_path="/planted")
            await conn.exec_driver_sql(
                "INSERT INTO audit_log (id, event_id, action, entity_type, entity_id, user_id,"
                " organization_id, ip_address, user_agent, request_path, status_code,"
                ' "timestamp", event_json, inserted_at) VALUES (999, gen_random_uuid(),'
                " 'UPDATE', 'patient', 50, 7, 1, '', '', '/planted', 200, now(),"
                " %(event_json)s, now())",
                {"event_json": planted.to_json()},
            )
            await conn.exec_driver_sql(
                "INSERT INTO audit_outbox (id, event_id, audit_id, organization_id, payload,"
                " created_at, attempts, next_attempt_at) VALUES (999, gen_random_uuid(), 1, 1,"
                " '{\"forged\":true}', now(), 0, now())"
            )
            await conn.commit()
        page = await AuditReader(store.engine).list_events(1)
        assert len(page.items) == 2
        assert all(r.event.request_path != "/planted" for r in page.items)
        claimed = await Outbox(store.engine).claim(10, 1 << 20, 30, "relay-1")
        assert len(claimed) == 2 and all('"forged"' not in item.payload for item in claimed)


def test_privileges_migrating_role_that_does_not_own_the_database(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A DBA-made role with CREATEROLE and CREATE on public, but not the database's owner: the
    # roles and grants are made, CONNECT stays as it was, and the log says what to run.
    migrator = f"auditevt_migrator_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {migrator} LOGIN CREATEROLE")
    try:
        with connect(pg_url) as conn:
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {migrator}")
        with caplog.at_level("WARNING", logger="audit_middleware"):
            migrate_sync(pg_url.replace("postgres@", f"{migrator}@", 1))
        assert f"CONNECT on database {database_name(pg_url)} is unchanged" in caplog.text
        assert "REVOKE CONNECT ON DATABASE" in caplog.text
        with connect(pg_url) as conn:
            public_connect = conn.execute(
                "SELECT has_database_privilege('public', current_database(), 'CONNECT')"
            ).fetchone()
            assert public_connect == (True,)
        with connect(pg_url, app_role(pg_url)) as conn:
            assert conn.execute("SELECT count(*) FROM public.audit_log").fetchone() == (0,)
    finally:
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {migrator} TO postgres")
            conn.execute(f"DROP OWNED BY {migrator}")
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {migrator}")


def test_privileges_upgrade_keeps_an_index_built_beforehand(pg_url: str) -> None:
    # A DBA builds the new index CONCURRENTLY on a large 0001 table; 0002 then keeps it.
    upgrade_to(pg_url, "0001")
    with connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE INDEX CONCURRENTLY ix_audit_log_org_ts_event"
            ' ON public.audit_log (organization_id, "timestamp", event_id)'
        )
    migrate_sync(pg_url)
    with connect(pg_url) as conn:
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_log' ORDER BY 1"
        ).fetchall()
    assert [name for (name,) in indexes if name.startswith("ix_")] == ["ix_audit_log_org_ts_event"]


def test_database_roles_names_every_role_the_migrations_create(pg_url: str) -> None:
    # What a user drops with the database (docs/security.md), and what the tests drop.
    migrate_sync(pg_url)
    name = database_name(pg_url)
    roles = database_roles(name)
    with psycopg.connect(PG_ADMIN_DSN) as conn:
        created = {
            row[0]
            for row in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'auditevt%%' "
                "AND right(rolname, %s) = %s",
                [len(name) + 1, "_" + name],
            )
        }
    assert created == {roles.app, roles.relay, roles.sealer}
