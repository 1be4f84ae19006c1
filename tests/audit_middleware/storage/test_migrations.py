"""The packaged Alembic migrations: the schema of _tables.py, hardening, idempotence, errors."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from audit_middleware import (
    MigrationError,
    database_roles,
    migrate,
    migrate_command,
    migrate_sync,
)
from audit_middleware.storage._migrate import (
    MIGRATION_LOCK_KEY,
    VERSION_TABLE,
    _alembic_config,
    _engine,
    head_revision,
)
from audit_middleware.storage._tables import metadata
from audit_middleware.storage._urls import sync_url
from audit_middleware.storage.migrations.versions.v0001_audit_tables import _create_role
from audit_middleware.storage.migrations.versions.v0002_least_privilege import DELIVERY_COLUMNS
from conftest import database_name, libpq


def sync(url: str) -> str:
    return url.replace("sqlite+aiosqlite://", "sqlite://", 1)


# Tables the migrations make on PostgreSQL alone, beside those of _tables.py: audit_log's
# partitions (each a copy of the parent's shape) and retention's bookkeeping.
_POSTGRESQL_ONLY = re.compile(
    r"^(audit_log_(\d{4}_\d{2}|default)|audit_legal_hold|audit_retention_log)$"
)


def _compared(name: str | None, kind: str, _parent: Any) -> bool:
    if kind == "table" and name is not None and _POSTGRESQL_ONLY.match(name):
        return False
    return name != VERSION_TABLE


def schema_diff(url: str) -> list[Any]:
    """What autogenerate would change to make the database match _tables.py."""
    engine = create_engine(sync(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": _compared,
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["pg_url", "sqlite_url"])
def test_migrate_creates_exactly_the_tables_module_schema(
    database: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(database)
    migrate_sync(url)
    # Columns, types, nullability, server defaults, indexes (partial ones included), uniques.
    assert schema_diff(url) == []


def test_migrate_schema_diff_sees_a_difference(sqlite_url: str) -> None:
    # The comparison above can fail: an extra index is reported.
    migrate_sync(sqlite_url)
    with sqlite3.connect(sqlite_url.split("///", 1)[1]) as conn:
        conn.execute("CREATE INDEX ix_extra ON audit_log (user_id)")
    assert [d[0] for d in schema_diff(sqlite_url)] == ["remove_index"]


@pytest.mark.parametrize("database", ["pg_url", "sqlite_url"])
def test_migrate_command_is_idempotent(database: str, request: pytest.FixtureRequest) -> None:
    url: str = request.getfixturevalue(database)
    first = migrate_command(url)
    second = migrate_command(url)
    assert f"migrated from empty to revision {head_revision()} (head)" in first
    assert f"already at revision {head_revision()} (head), nothing to do" in second
    if database == "pg_url":
        roles = database_roles(database_name(url))
        assert first.endswith(f"; roles {roles.app} (application), {roles.relay} (relay)")
    assert "\n" not in first + second
    assert schema_diff(url) == []


@pytest.mark.anyio
async def test_migrate_async_runs_in_a_thread(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    await migrate(sqlite_url)
    assert head_revision() >= "0004"
    assert schema_diff(sqlite_url) == []


def test_migrate_leaves_the_applications_alembic_history_alone(pg_url: str) -> None:
    with psycopg.connect(libpq(pg_url)) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('app_rev_17')")
    migrate_sync(pg_url)
    with psycopg.connect(libpq(pg_url)) as conn:
        assert conn.execute("SELECT * FROM alembic_version").fetchall() == [("app_rev_17",)]
        assert conn.execute(f"SELECT * FROM {VERSION_TABLE}").fetchall() == [(head_revision(),)]


def test_migrate_concurrently_on_one_database(pg_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate_sync(pg_url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert schema_diff(pg_url) == []


def test_migrate_waits_for_another_process_holding_the_lock(pg_url: str) -> None:
    # Another process migrating the same database holds the advisory lock in its transaction.
    with psycopg.connect(libpq(pg_url)) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK_KEY])
        summary: list[str] = []
        thread = threading.Thread(target=lambda: summary.append(migrate_command(pg_url)))
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive() and summary == []  # queued behind the lock
        other.commit()  # releases it
        thread.join(timeout=60)
    assert len(summary) == 1 and "migrated from empty" in summary[0]


def test_migrate_role_creation_is_race_safe(pg_url: str) -> None:
    # Roles are cluster-wide: migrations of parallel databases race to create them. Four open
    # transactions create the same (fresh) role at once; all must commit.
    role = f"auditevt_race_{uuid.uuid4().hex[:10]}"
    conns = [psycopg.connect(libpq(pg_url)) for _ in range(4)]
    errors: list[BaseException] = []

    def create(conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute(_create_role(role))
            conn.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        conns[0].execute(_create_role(role))  # holds the new role uncommitted...
        threads = [threading.Thread(target=create, args=(c,)) for c in conns[1:]]
        for thread in threads:
            thread.start()  # ...while the others block on it
        conns[0].commit()
        for thread in threads:
            thread.join()
        assert errors == []
        with psycopg.connect(libpq(pg_url)) as conn:
            found = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [role])
            assert found.fetchall() == [(False,)]
    finally:
        for conn in conns:
            conn.close()
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_migrate_postgresql_hardening(pg_url: str) -> None:
    migrate_sync(pg_url)
    with psycopg.connect(libpq(pg_url)) as conn:
        rls = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'audit_log'"
        ).fetchone()
        assert rls == (True, True)
        policies = conn.execute(
            "SELECT policyname, cmd, qual, with_check FROM pg_policies"
            " WHERE tablename = 'audit_log' ORDER BY policyname"
        ).fetchall()
        assert [(p[0], p[1]) for p in policies] == [
            ("audit_log_insert", "INSERT"),
            ("audit_log_select_own_organization", "SELECT"),
            ("audit_log_select_sealer", "SELECT"),  # migration 0003: the sealer role only
        ]
        assert "current_setting('auditevt.organization_id'::text, true)" in policies[1][2]
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass"
            " AND NOT tgisinternal ORDER BY tgname"
        ).fetchall()
        assert triggers == [("audit_log_append_only_row",), ("audit_log_append_only_statement",)]
        roles = database_roles(database_name(pg_url))
        privileges = conn.execute(
            """SELECT r, t, p, has_table_privilege(r, t, p)
               FROM unnest(ARRAY[%s, %s, 'auditevt_app', 'auditevt_relay']) r,
                    unnest(ARRAY['public.audit_log', 'public.audit_outbox']) t,
                    unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p""",
            [roles.app, roles.relay],
        ).fetchall()
        granted = {(r, t.removeprefix("public."), p) for r, t, p, ok in privileges if ok}
        # UPDATE on audit_outbox is granted for the delivery columns only (see below).
        assert granted == {
            (roles.app, "audit_log", "SELECT"),
            (roles.app, "audit_log", "INSERT"),
            (roles.app, "audit_outbox", "SELECT"),
            (roles.app, "audit_outbox", "INSERT"),
            (roles.app, "audit_outbox", "DELETE"),
            (roles.relay, "audit_outbox", "SELECT"),
            (roles.relay, "audit_outbox", "DELETE"),
        }
        updatable = conn.execute(
            """SELECT r, c FROM unnest(ARRAY[%s, %s, 'auditevt_app', 'auditevt_relay']) r,
                    information_schema.columns c0, LATERAL (SELECT c0.column_name::text) AS x(c)
               WHERE c0.table_schema = 'public' AND c0.table_name = 'audit_outbox'
                 AND has_column_privilege(r, 'public.audit_outbox', c, 'UPDATE')""",
            [roles.app, roles.relay],
        ).fetchall()
        delivery = set(DELIVERY_COLUMNS)
        assert {c for r, c in updatable if r == roles.app} == delivery
        assert {c for r, c in updatable if r == roles.relay} == delivery
        assert delivery.isdisjoint({"payload", "event_id", "organization_id", "audit_id"})
        assert {r for r, _ in updatable} == {roles.app, roles.relay}  # the shared ones: nothing
        found = conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolinherit FROM pg_roles"
            " WHERE rolname IN (%s, %s) ORDER BY rolname",
            [roles.app, roles.relay],
        ).fetchall()
        assert found == [
            (roles.app, False, False, False, True),
            (roles.relay, False, False, False, True),
        ]
        connect = conn.execute(
            "SELECT r, has_database_privilege(r, current_database(), 'CONNECT')"
            " FROM unnest(ARRAY[%s, %s, 'auditevt_app', 'auditevt_relay']) r",
            [roles.app, roles.relay],
        ).fetchall()
        assert dict(connect) == {
            roles.app: True,
            roles.relay: True,
            "auditevt_app": False,
            "auditevt_relay": False,
        }


def test_migrate_sqlite_audit_log_is_append_only(sqlite_url: str) -> None:
    migrate_sync(sqlite_url)
    with sqlite3.connect(sqlite_url.split("///", 1)[1]) as conn:
        conn.execute(
            "INSERT INTO audit_log (event_id, action, entity_type, entity_id, user_id,"
            " organization_id, ip_address, user_agent, request_path, status_code, timestamp,"
            " event_json) VALUES ('0' , 'CREATE', 't', 1, 1, 1, '', '', '/', 200,"
            " '2024-01-01 00:00:00.000000', '{}')"
        )
        for statement in ("UPDATE audit_log SET user_id = 2", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT user_id FROM audit_log").fetchall() == [(1,)]


def test_migrate_command_unreachable_database_is_one_line(closed_port: int) -> None:
    port = closed_port
    with pytest.raises(MigrationError) as caught:
        migrate_command(f"postgresql://postgres:s3cret@127.0.0.1:{port}/audit")
    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "s3cret" not in message
    assert "refused" in message.lower() or "failed" in message.lower()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://u@h/db", "'mysql'"),
        ("not a url", "not a database URL"),
        ("sqlite://", "in-memory"),
    ],
)
def test_migrate_command_bad_url_raises_migration_error(url: str, named: str) -> None:
    with pytest.raises(MigrationError, match=named):
        migrate_command(url)
    with pytest.raises(ValueError, match=named):
        migrate_sync(url)


def test_migrate_missing_database_raises_migration_error(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/auditevt_does_not_exist"
    with pytest.raises(MigrationError, match="auditevt_does_not_exist"):
        migrate_sync(missing)


@pytest.mark.parametrize("database", ["pg_url", "sqlite_url"])
def test_migrate_downgrade_then_upgrade_again(
    database: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(database)
    migrate_sync(url)
    engine = _engine(sync_url(url))
    try:
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {VERSION_TABLE}
    finally:
        engine.dispose()
    assert f"migrated from empty to revision {head_revision()}" in migrate_command(url)
    assert schema_diff(url) == []
