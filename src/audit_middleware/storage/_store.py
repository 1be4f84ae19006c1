"""``AuditStore``: writes an audit row and its outbox row, atomically, before the response.

:meth:`AuditStore.commit_with` joins the request's own transaction (the transactional mode):
the rows go in on the connection carrying the handler's changes and commit with them; on
PostgreSQL the write (a statement prepared once per connection, its values bound) and the COMMIT
travel in one libpq pipeline, so auditing adds no round trip.
:meth:`AuditStore.write` is a transaction of its own (the separate-store mode, failed attempts):
on PostgreSQL one data-modifying CTE on an autocommit connection, no ``BEGIN``/``COMMIT`` trips.
SQLite (no data-modifying CTEs) gets two INSERTs; its writers queue on a lock, not busy-wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from datetime import UTC
from typing import Any
from uuid import UUID, SafeUUID

import sqlalchemy.exc
from psycopg.types.numeric import Int8
from sqlalchemy import DateTime, Uuid, bindparam, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from audit_middleware._exceptions import StoreError, map_database_error
from audit_middleware.integrity._rowhash import row_hash
from audit_middleware.storage import _statements, _transaction
from audit_middleware.storage._check import check_postgresql, check_sqlite_schema
from audit_middleware.storage._closing import EngineCloser
from audit_middleware.storage._statements import changes_json, pg_text
from audit_middleware.storage._urls import async_url
from auditevt import Action, Event

__all__ = ["AuditStore", "new_event_id"]

logger = logging.getLogger("audit_middleware")


def new_event_id() -> UUID:
    """A fresh, time-ordered event id (UUIDv7 layout: 48-bit Unix milliseconds, then random).

    Time order keeps inserts into the unique ``event_id`` index near its right-hand edge.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    # What UUID(int=value) builds, without its argument checks (a third of this function's
    # cost, and value is in range by construction).
    event_id = object.__new__(UUID)
    object.__setattr__(event_id, "int", value)
    object.__setattr__(event_id, "is_safe", SafeUUID.unknown)
    return event_id


_SQLITE_WRITE_LOG = text(
    "INSERT INTO main.audit_log (event_id, action, entity_type, entity_id, user_id, "
    "organization_id, ip_address, user_agent, request_path, status_code, timestamp, changes, "
    "action_context, break_glass_id, impersonation_id, event_json, row_hash) VALUES (:event_id, "
    ":action, :entity_type, :entity_id, :user_id, :organization_id, :ip_address, :user_agent, "
    ":request_path, :status_code, :timestamp, :changes, :action_context, :break_glass_id, "
    ":impersonation_id, :event_json, :row_hash)"
).bindparams(
    # SQLAlchemy's own encodings, so Core queries on AUDIT_LOG / AUDIT_OUTBOX read these back.
    bindparam("event_id", type_=Uuid(as_uuid=True)),
    bindparam("timestamp", type_=DateTime(timezone=True)),
)
_SQLITE_WRITE_OUTBOX = text(
    "INSERT INTO main.audit_outbox (event_id, audit_id, organization_id, payload) "
    "VALUES (:event_id, last_insert_rowid(), :organization_id, :event_json)"
).bindparams(bindparam("event_id", type_=Uuid(as_uuid=True)))

_SUPPORTED_DRIVERS = (("postgresql", "psycopg"), ("sqlite", "aiosqlite"))

# SQLite connections wait this long for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 5_000

# A write whose connection broke is retried this often, each time on a fresh connection.
_DISCONNECT_RETRIES = 2

# The constraint a retried write runs into when its first attempt did commit.
_EVENT_ID_CONSTRAINTS = ("audit_log_event_id_key", "audit_outbox_event_id_key")


def _from_json_params(event: Event, event_id: UUID) -> dict[str, Any] | None:
    """The FROM_JSON statements' values for ``event``, or None when it needs ``FULL``."""
    event_json = event.to_json()
    if not _statements.from_json_ok(event, event_json):
        return None
    digest = row_hash(event_id, event_json)
    return {"event_id": event_id, "event_json": event_json, "row_hash": digest}


def _int8_or_none(value: int | None) -> int | None:
    return None if value is None else Int8(value)


class AuditStore(EngineCloser):
    """Writes audit events to ``audit_log`` and ``audit_outbox`` (see ``migrate()``).

    Build one per process with :meth:`from_url`, or wrap an ``AsyncEngine`` you configured
    yourself (PostgreSQL through psycopg 3, or SQLite through aiosqlite). Nothing connects until
    the first :meth:`write` or :meth:`check`. :meth:`aclose` disposes an engine the store created,
    never one it was given.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        if not isinstance(engine, AsyncEngine):
            raise TypeError(f"engine must be a sqlalchemy AsyncEngine, not {type(engine).__name__}")
        dialect = engine.dialect
        if (dialect.name, dialect.driver) not in _SUPPORTED_DRIVERS:
            raise ValueError(
                f"unsupported engine {dialect.name}+{dialect.driver}; "
                "use postgresql+psycopg or sqlite+aiosqlite"
            )
        self._engine = engine
        self._owns_engine = False
        self._postgresql = dialect.name == "postgresql"
        # One statement is its own transaction: autocommit spares the BEGIN and COMMIT trips.
        self._write_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgresql else engine
        )
        # In-process SQLite writers take turns (one lock per event loop).
        self._sqlite_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._held: _transaction.Locks = weakref.WeakKeyDictionary()  # requests' SQLite locks
        self._watching = False  # watch_rollbacks() registered (on the first connect())

    @classmethod
    def from_url(cls, url: str | URL, **engine_kwargs: Any) -> AuditStore:
        """A store on a new engine for ``url``; ``engine_kwargs`` go to ``create_async_engine``.

        Accepts ``postgresql+psycopg://``, ``postgresql://`` (run on psycopg 3),
        ``sqlite+aiosqlite:///path`` and ``sqlite:///path`` (run on aiosqlite). Raises
        ``ValueError`` naming the scheme of anything else.
        """
        engine = create_engine(url, **engine_kwargs)
        store = cls(engine)
        store._owns_engine = True
        return store

    @property
    def engine(self) -> AsyncEngine:
        """The engine the store writes through (share it with ``AuditReader`` or the relay)."""
        return self._engine

    @property
    def dialect_name(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return "postgresql" if self._postgresql else "sqlite"

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"AuditStore({url!r})"

    async def write(self, event: Event, *, event_id: UUID | None = None) -> UUID:
        """Store ``event`` and its outbox entry atomically; return its ``event_id``.

        ``event_id`` is minted here (time-ordered) unless given; it is the idempotency key
        Telemetry deduplicates on. When this returns, both rows are committed. Raises
        ``StoreError`` (``StoreUnavailable`` when the database cannot be reached) when nothing
        was stored.
        """
        if not isinstance(event, Event):
            raise TypeError(f"event must be an auditevt.Event, not {type(event).__name__}")
        if event_id is None:
            event_id = new_event_id()
        elif not isinstance(event_id, UUID):
            raise TypeError(f"event_id must be a uuid.UUID, not {event_id!r}")
        if self._postgresql:
            from_json = _from_json_params(event, event_id)
            if from_json is not None:
                await self._write_postgresql(_statements.FROM_JSON_BOUND, from_json)
            else:
                params = self._checked_params(event, event_id)
                await self._write_postgresql(_statements.FULL, params)
        else:
            await self._write_sqlite(self._checked_params(event, event_id))
        return event_id

    async def connect(self) -> AsyncConnection:
        """A connection for one request's unit of work, its transaction begun (on SQLite
        holding this process's writer lock until :meth:`release`); raises ``StoreError``."""
        if not self._watching and self._postgresql:
            _transaction.watch_rollbacks(self._engine)  # here: only the transactional mode pays
            self._watching = True
        lock = None if self._postgresql else self._sqlite_lock()
        return await _transaction.open_connection(self._engine, lock, _prepare_sqlite, self._held)

    async def release(self, conn: AsyncConnection, *, session: AsyncSession | None = None) -> None:
        """Give back a connection from :meth:`connect`, rolling back what it left uncommitted;
        ``session`` (bound to it) is closed first, at no extra cost."""
        await _transaction.release_connection(conn, self._held, session)

    async def commit_with(
        self, conn: AsyncConnection, event: Event, *, event_id: UUID | None = None
    ) -> UUID:
        """Write ``event``'s audit and outbox rows in ``conn``'s transaction, then commit it.

        ``conn`` (from :meth:`connect`) carries the request's changes: they commit with the
        audit row or not at all; on PostgreSQL the INSERT and the COMMIT are one round trip.
        Raises ``StoreError`` when nothing was committed (roll ``conn`` back), and
        ``CommitOutcomeUnknown`` when the connection broke with the COMMIT in flight."""
        return await self._commit(conn, event, event_id, settle=True)

    async def commit_and_release(
        self,
        conn: AsyncConnection,
        event: Event,
        *,
        session: AsyncSession | None = None,
        event_id: UUID | None = None,
    ) -> UUID:
        """:meth:`commit_with`, then :meth:`release` (``session`` closed first), in fewer steps.

        The end of a unit of work that succeeded: on PostgreSQL SQLAlchemy's bookkeeping after
        the COMMIT and the closing share one greenlet. Raises as :meth:`commit_with` does, and
        then leaves ``conn`` to the caller (roll it back and release it)."""
        postgresql = self._postgresql
        event_id = await self._commit(conn, event, event_id, settle=not postgresql)
        await _transaction.release_connection(conn, self._held, session, settle=postgresql)
        return event_id

    async def _commit(
        self, conn: AsyncConnection, event: Event, event_id: UUID | None, *, settle: bool
    ) -> UUID:
        if not isinstance(event, Event):
            raise TypeError(f"event must be an auditevt.Event, not {type(event).__name__}")
        if event_id is None:
            event_id = new_event_id()
        if self._postgresql:
            try:
                values = _statements.bound_values(event, event_id, event.to_json())
            except ValueError as exc:
                raise StoreError(f"could not write the audit row: {exc}") from exc
            await _transaction.commit_prepared(
                conn, values, _statements.BOUND_FORMATS, settle=settle
            )
            return event_id
        await _commit_sqlite(conn, self._checked_params(event, event_id))
        return event_id

    def _sqlite_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._sqlite_locks.get(loop)
        if lock is None:
            lock = self._sqlite_locks[loop] = asyncio.Lock()
        return lock

    def _checked_params(self, event: Event, event_id: UUID) -> dict[str, Any]:
        try:
            return self._params(event, event_id)
        except (ValueError, OverflowError) as exc:
            raise StoreError(f"could not write the audit row: {exc}") from exc

    def _params(self, event: Event, event_id: UUID) -> dict[str, Any]:
        action = event.action
        context = event.action_context
        changes = changes_json(event.changes, self._postgresql)
        event_json = event.to_json()
        if self._postgresql:
            # Int8 keeps the parameter types, and so psycopg's prepared statement, the same
            # whatever the size of the ids; text loses U+0000, which PostgreSQL cannot store.
            return {
                "event_id": event_id,
                "action": action.value if isinstance(action, Action) else action,
                "entity_type": pg_text(event.entity_type),
                "entity_id": Int8(event.entity_id),
                "user_id": Int8(event.user_id),
                "organization_id": Int8(event.organization_id),
                "ip_address": pg_text(event.ip_address),
                "user_agent": pg_text(event.user_agent),
                "request_path": pg_text(event.request_path),
                "status_code": Int8(event.status_code),
                "timestamp": event.timestamp.to_datetime(),
                "changes": changes,
                "action_context": None if context is None else str(context),
                "break_glass_id": _int8_or_none(event.break_glass_id),
                "impersonation_id": _int8_or_none(event.impersonation_id),
                "event_json": event_json,
                "row_hash": row_hash(event_id, event_json),
            }
        return {
            "event_id": event_id,
            "action": action.value if isinstance(action, Action) else action,
            "entity_type": event.entity_type,
            "entity_id": event.entity_id,
            "user_id": event.user_id,
            "organization_id": event.organization_id,
            "ip_address": event.ip_address,
            "user_agent": event.user_agent,
            "request_path": event.request_path,
            "status_code": event.status_code,
            # SQLite stores datetimes as text without an offset: store UTC so they sort.
            "timestamp": event.timestamp.to_datetime().astimezone(UTC),
            "changes": changes,
            "action_context": None if context is None else str(context),
            "break_glass_id": event.break_glass_id,
            "impersonation_id": event.impersonation_id,
            "event_json": event_json,
            "row_hash": row_hash(event_id, event_json),
        }

    async def _write_postgresql(self, statement: str, params: dict[str, Any]) -> None:
        retries = 0
        while True:
            try:
                async with self._write_engine.connect() as conn:
                    await conn.exec_driver_sql(statement, params)
                return
            except sqlalchemy.exc.DBAPIError as exc:
                if retries < _DISCONNECT_RETRIES and _disconnected(exc):
                    # The server closed the connection (restart, failover, idle kill,
                    # pg_terminate_backend); the pool drops it. Try again on a fresh one: the
                    # statement is atomic and event_id unique, so it is never stored twice.
                    retries += 1
                    continue
                if retries and _constraint(exc) in _EVENT_ID_CONSTRAINTS:
                    return  # an attempt whose answer was lost did commit
                raise map_database_error(exc, StoreError, "write the audit row") from exc
            except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
                raise map_database_error(exc, StoreError, "write the audit row") from exc

    async def _write_sqlite(self, params: dict[str, Any]) -> None:
        lock = self._sqlite_lock()
        try:
            async with lock, self._engine.connect() as conn:
                await _prepare_sqlite(conn)
                await _commit_sqlite(conn, params)
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, StoreError, "write the audit row") from exc

    async def check(self) -> tuple[str, ...]:
        """Connect; confirm the schema is migrated and writable; report how RLS is bypassed.

        Raises ``StoreError`` when the database cannot be used (naming the grant to add when
        the role may not INSERT into ``audit_log`` and ``audit_outbox``). Returns the reasons
        the role is not held by row-level security on ``audit_log`` (superuser, BYPASSRLS,
        owner without FORCE, RLS off), each logged as a warning; always empty on SQLite."""
        try:
            async with self._engine.connect() as conn:
                if self._postgresql:
                    reasons = await check_postgresql(conn)
                else:
                    await _prepare_sqlite(conn)
                    await check_sqlite_schema(conn)
                    reasons = ()
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, StoreError, "check the audit database") from exc
        for reason in reasons:
            logger.warning("audit_log row-level security is bypassed: %s", reason)
        return reasons


def create_engine(url: str | URL, **engine_kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` with our defaults (see ``AuditStore.from_url``)."""
    parsed = async_url(url)
    if parsed.drivername.startswith("postgresql"):
        # Fail fast when the server is unreachable instead of holding the request open.
        connect_args = dict(engine_kwargs.pop("connect_args", None) or {})
        connect_args.setdefault("connect_timeout", 5)
        engine_kwargs["connect_args"] = connect_args
    return create_async_engine(parsed, **engine_kwargs)


def _disconnected(exc: sqlalchemy.exc.DBAPIError) -> bool:
    state = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or state in _transaction.SHUTDOWN_STATES


def _constraint(exc: sqlalchemy.exc.DBAPIError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return name if isinstance(name, str) else None


async def _commit_sqlite(conn: AsyncConnection, params: dict[str, Any]) -> None:
    try:
        await conn.execute(_SQLITE_WRITE_LOG, params)
        await conn.execute(_SQLITE_WRITE_OUTBOX, params)
        await conn.commit()
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, StoreError, "write the audit row") from exc


async def _prepare_sqlite(conn: AsyncConnection) -> None:
    # Once per pooled connection: WAL lets readers (the relay, AuditReader) run beside the
    # writer, and the busy timeout makes other processes' writers wait instead of failing.
    info = conn.info
    if info.get("auditevt_sqlite_ready"):
        return
    await conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    await conn.exec_driver_sql("PRAGMA journal_mode = WAL")
    await conn.commit()
    info["auditevt_sqlite_ready"] = True
