"""Apply the packaged Alembic migrations: ``migrate()``, ``migrate_sync()``, ``migrate_command()``.

The migrations live inside the package (``audit_middleware/storage/migrations``) and keep their own
version table, ``auditevt_alembic_version``, beside any Alembic history the application has.
Running them again is a no-op; concurrent runs against one PostgreSQL database queue on an
advisory lock, and SQLite runs take the database's write lock for the whole upgrade.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine

from audit_middleware._exceptions import MigrationError, map_database_error
from audit_middleware.storage._roles import database_roles
from audit_middleware.storage._urls import sync_url

__all__ = ["migrate", "migrate_command", "migrate_sync"]

SCRIPT_LOCATION = "audit_middleware.storage:migrations"
# Alembic's ``context`` is a module-level proxy, so one process runs one migration at a time
# (other processes queue on the database's lock instead).
_ALEMBIC_LOCK = threading.Lock()
VERSION_TABLE = "auditevt_alembic_version"
MIGRATION_LOCK_KEY = 0x61756469746576  # "auditev": the transaction-scoped advisory lock


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the package ships."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise MigrationError("no migrations found in audit_middleware/storage/migrations")
    return head


def _engine(url: URL) -> Engine:
    if url.drivername.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        # The whole upgrade in one write transaction: BEGIN IMMEDIATE takes SQLite's write lock
        # first, so a concurrent migration waits and then sees the new version.
        @event.listens_for(engine, "connect")
        def _manual_transactions(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA journal_mode = WAL")

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, connect_args={"connect_timeout": 10})


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _upgrade(url: str | URL) -> tuple[str | None, str | None]:
    engine = _engine(sync_url(url))
    try:
        with _ALEMBIC_LOCK, engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Several processes migrating one database at once (workers starting together)
                # queue here; each then reads the version the previous one committed.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            before = _current(connection)
            command.upgrade(_alembic_config(connection), "head")
            after = _current(connection)
        return before, after
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise map_database_error(exc, MigrationError, f"migrate {_safe(url)}") from exc
    except CommandError as exc:
        raise MigrationError(f"could not migrate {_safe(url)}: {exc}") from exc
    finally:
        engine.dispose()


def _safe(url: str | URL) -> str:
    return (
        sync_url(url)
        .set(drivername=sync_url(url).get_backend_name())
        .render_as_string(hide_password=True)
    )


def migrate_sync(url: str | URL) -> None:
    """Bring the audit schema at ``url`` up to date (blocking; safe to run again).

    ``url`` is any URL ``AuditStore.from_url`` accepts. Raises ``ValueError`` for a URL that is
    not PostgreSQL or a SQLite file, and ``MigrationError`` when the database cannot be reached
    or a migration fails (nothing is applied then).
    """
    _upgrade(url)


async def migrate(url: str | URL) -> None:
    """``migrate_sync`` in a worker thread, for use inside an event loop (e.g. app start-up)."""
    await asyncio.to_thread(_upgrade, url)


def migrate_command(url: str) -> str:
    """What ``auditevt migrate --database-url URL`` runs: migrate, return a one-line summary.

    Raises ``MigrationError`` with a one-line message for a bad URL, an unreachable database or
    a failed migration.
    """
    try:
        before, after = _upgrade(url)
    except ValueError as exc:
        raise MigrationError(str(exc)) from exc
    target = _safe(url)
    if before == after:
        summary = f"{target}: audit schema already at revision {after} (head), nothing to do"
    else:
        summary = (
            f"{target}: audit schema migrated from {before or 'empty'} to revision {after} (head)"
        )
    database = sync_url(url).database
    if sync_url(url).get_backend_name() == "postgresql" and database:
        # The names a DBA grants to the login roles (docs/security.md, "Database roles").
        roles = database_roles(database)
        summary += f"; roles {roles.app} (application), {roles.relay} (relay)"
    return summary
