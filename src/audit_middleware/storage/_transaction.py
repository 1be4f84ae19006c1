"""The connection of one request's unit of work: opened, committed with its audit row, released.

The audit INSERT and the COMMIT go to PostgreSQL in one libpq pipeline (a prepared statement's
Bind and Execute, then the COMMIT, :func:`commit_prepared`), so the audited request pays the round
trips its own transaction pays, and not one more. The pipeline is driven on the libpq connection
itself: psycopg's Pipeline object costs more Python than the whole write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import psycopg
import sqlalchemy.exc
from psycopg import generators, pq
from psycopg.abc import PQGen
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from audit_middleware._exceptions import (
    AuditError,
    CommitOutcomeUnknown,
    StoreError,
    map_database_error,
)
from audit_middleware.storage._statements import FULL_PREPARABLE

__all__ = [
    "SHUTDOWN_STATES",
    "Locks",
    "commit_prepared",
    "open_connection",
    "release_connection",
]

logger = logging.getLogger("audit_middleware")

# admin_shutdown, crash_shutdown: the backend is going away, whatever psycopg noticed yet.
SHUTDOWN_STATES = ("57P01", "57P02")


Locks: TypeAlias = "weakref.WeakKeyDictionary[AsyncConnection, asyncio.Lock]"


async def open_connection(
    engine: AsyncEngine,
    lock: asyncio.Lock | None,
    prepare: Callable[[AsyncConnection], Awaitable[None]],
    held: Locks,
) -> AsyncConnection:
    """A connection with its transaction begun; ``lock`` (SQLite's writer lock) held with it,
    noted in ``held`` (not in ``conn.info``: a broken connection cannot be asked for that)."""
    if lock is None:
        try:
            return AsyncConnection(engine, await greenlet_spawn(_begun, engine.sync_engine))
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, StoreError, "open the request's transaction") from exc
    await lock.acquire()
    try:
        conn = await engine.connect()
        try:
            await prepare(conn)
            await conn.begin()
        except BaseException:
            await conn.close()
            raise
        held[conn] = lock
    except BaseException as exc:
        lock.release()
        if isinstance(exc, sqlalchemy.exc.SQLAlchemyError | OSError):
            raise map_database_error(exc, StoreError, "open the request's transaction") from exc
        raise
    return conn


def _begun(engine: Engine) -> Connection:
    # Connected and begun in one greenlet: each greenlet_spawn costs about 8 us, and begin()
    # sends nothing (the driver begins with the first statement).
    conn = engine.connect()
    try:
        conn.begin()
    except BaseException:
        conn.close()
        raise
    return conn


async def release_connection(
    conn: AsyncConnection,
    held: Locks,
    session: AsyncSession | None = None,
    *,
    settle: bool = False,
) -> None:
    """Close ``session`` (if any; a failure is raised), then ``conn`` (rolling back anything
    uncommitted; a failure is logged), and release its lock. ``settle``: first commit
    SQLAlchemy's transaction, which the server committed already (commit_prepared(settle=False)).
    """
    lock = held.pop(conn, None) if held else None  # PostgreSQL holds no lock: skip the lookup
    try:
        if session is None and not settle:
            try:
                await conn.close()
            except (sqlalchemy.exc.SQLAlchemyError, OSError):
                logger.warning("closing the request's connection failed", exc_info=True)
        else:
            # One greenlet for all of it (each greenlet_spawn costs about 8 us).
            await greenlet_spawn(
                _settle_and_close, conn.sync_connection, session and session.sync_session, settle
            )
    finally:
        if lock is not None:
            lock.release()


def _settle_and_close(conn: Connection | None, session: Session | None, settle: bool) -> None:
    try:
        if settle and conn is not None:
            conn.commit()  # sends nothing: the server's transaction is over
        if session is not None:
            session.close()
    except (sqlalchemy.exc.SQLAlchemyError, OSError):
        if not settle:
            raise
        # The server has committed: nothing failing after that may report that it did not.
        logger.warning("closing the request's session after its commit failed", exc_info=True)
    finally:
        try:
            if conn is not None:
                conn.close()
        except (sqlalchemy.exc.SQLAlchemyError, OSError):
            logger.warning("closing the request's connection failed", exc_info=True)


def _broke(exc: psycopg.Error) -> bool:
    # A server-reported error (other than a shutdown) means the COMMIT did not happen.
    if isinstance(exc, psycopg.errors.PipelineAborted):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in SHUTDOWN_STATES


async def _driver(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    try:
        sync = conn.sync_connection
        if sync is not None and not sync.invalidated and not sync.closed:
            driver = sync.connection.driver_connection  # checked out already: no I/O, no greenlet
        else:
            driver = (await conn.get_raw_connection()).driver_connection
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, StoreError, "write the audit row") from exc
    if not isinstance(driver, psycopg.AsyncConnection):
        raise StoreError(f"expected a psycopg connection, not {type(driver).__name__}")
    return driver


async def _translate(
    conn: AsyncConnection, driver: psycopg.AsyncConnection[Any], statement: str, exc: psycopg.Error
) -> AuditError:
    if driver.broken or driver.closed or _broke(exc):
        await conn.invalidate()
        return CommitOutcomeUnknown(f"the connection broke while committing the audit row: {exc}")
    wrapped = sqlalchemy.exc.DBAPIError(statement, None, exc)
    return map_database_error(wrapped, StoreError, "write the audit row")


# Where a connection keeps the name of the write statement prepared on it: the pool's info of the
# DBAPI connection, which lives exactly as long as the server session holding the statement.
# Absent: not (or not surely) prepared; a fresh name each time, so that a Parse whose outcome is
# unknown never collides.
_PREPARED_KEY = "auditevt.prepared_write"
_names = itertools.count(1)
# Set beside a prepared name when psycopg may have deallocated it since (watch_rollbacks): the
# next write closes the statement (no error if it is gone) and prepares it again.
_STALE_KEY = "auditevt.prepared_write_stale"
_CAN_CLOSE = psycopg.capabilities.has_send_close_prepared()  # libpq 17 or later


def watch_rollbacks(engine: AsyncEngine) -> None:
    """Mark the write statement prepared on a connection as stale at every ROLLBACK psycopg may
    answer with ``DEALLOCATE ALL``: it does so after rolling back a transaction, or to a
    savepoint, whenever it holds prepared statements of its own (any statement run five times on
    the connection), and that takes the write's statement too. Rollbacks SQLAlchemy does not
    see (raw SQL) still fail the one write that follows. Idempotent."""
    sync = engine.sync_engine
    if not event.contains(sync, "rollback", _on_rollback):
        event.listen(sync, "rollback", _on_rollback)
        event.listen(sync, "rollback_savepoint", _on_rollback_savepoint)
        event.listen(sync.pool, "reset", _on_reset)


def _mark_stale(info: dict[Any, Any]) -> None:
    for key in [key for key in info if type(key) is tuple and key[0] == _PREPARED_KEY]:
        info[(_STALE_KEY, key[1])] = True


def _rolls_back(driver: Any) -> bool:
    # psycopg sends no ROLLBACK (and deallocates nothing) for a connection with no transaction.
    try:
        return bool(driver.pgconn.transaction_status != pq.TransactionStatus.IDLE)
    except Exception:
        return True


# The listeners never raise: an invalidated connection's info is cleared anyway.
def _on_rollback(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        if _rolls_back(conn.connection.driver_connection):
            _mark_stale(conn.info)


def _on_rollback_savepoint(conn: Connection, name: str, context: Any) -> None:
    with contextlib.suppress(Exception):
        _mark_stale(conn.info)


def _on_reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
    with contextlib.suppress(Exception):
        if _rolls_back(record.driver_connection):
            _mark_stale(record.info)


_INTRANS = pq.TransactionStatus.INTRANS
_INERROR = pq.TransactionStatus.INERROR
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_NO_SUCH_STATEMENT = "26000"  # invalid_sql_statement_name: DEALLOCATE ALL ran on the session


def _exchange(pgconn: pq.abc.PGconn) -> PQGen[list[pq.abc.PGresult]]:
    """Flush what is queued in pipeline mode; every result up to the Sync's."""
    yield from generators.send(pgconn)
    results: list[pq.abc.PGresult] = []
    while True:
        batch = yield from generators.fetch_many(pgconn)
        results.extend(batch)
        if batch and batch[-1].status == _PIPELINE_SYNC:
            return results


async def commit_prepared(
    conn: AsyncConnection,
    values: Sequence[bytes | None],
    formats: Sequence[int],
    *,
    statement: bytes = FULL_PREPARABLE,
    settle: bool = True,
) -> None:
    """Run the write ``statement`` with ``values`` in ``conn``'s transaction, and COMMIT.

    One libpq pipeline, one round trip: Parse (the first time on a connection), Bind and
    Execute, COMMIT, Sync. The values are bound (no literals for the database to parse), and
    the statement is planned once per connection. A connection with prepared statements turned
    off (``prepare_threshold=None``, as behind a pooler in transaction mode) gets the unnamed
    statement instead. Raises ``CommitOutcomeUnknown`` when the connection broke (the COMMIT may
    have happened) and ``StoreError`` when nothing was committed; a prepared statement gone
    from the session by a rollback is prepared again in the same pipeline (:func:`watch_rollbacks`);
    gone otherwise (``DEALLOCATE ALL`` in raw SQL), it fails that one write, and the next one
    prepares again.
    """
    driver = await _driver(conn)
    if driver.pgconn.transaction_status == _INERROR:
        # A statement of the handler failed and the app answered anyway: the transaction
        # refuses everything until it is rolled back.
        raise StoreError(
            "a statement of the request's transaction failed (and the app answered anyway): "
            "nothing of it can be committed"
        )
    info, key = conn.info, (_PREPARED_KEY, statement)  # one entry per statement
    name: bytes | None = info.pop(key, None)
    stale = info.pop((_STALE_KEY, statement), False)
    parsed = False  # this call sends the Parse
    closed = False  # ... after a Close of the same name (its results come first)
    results: list[pq.abc.PGresult] = []
    try:
        async with driver.lock:
            pgconn = driver.pgconn
            # No transaction begun (the handler ran no statement): the pipeline's own implicit
            # transaction holds the write, and its Sync commits it.
            commit = pgconn.transaction_status == _INTRANS
            pgconn.enter_pipeline_mode()
            try:
                if driver.prepare_threshold is None:
                    pgconn.send_query_params(statement, values, param_formats=formats)
                else:
                    if name is not None and stale:
                        if _CAN_CLOSE:
                            pgconn.send_close_prepared(name)
                            pgconn.send_prepare(name, statement)
                            parsed = closed = True
                        else:
                            name = None  # a new name; the old one may stay in the session
                    if name is None:
                        name, parsed = b"auditevt_write_%d" % next(_names), True
                        pgconn.send_prepare(name, statement)
                    pgconn.send_query_prepared(name, values, param_formats=formats)
                if commit:
                    pgconn.send_query_params(b"COMMIT", None)
                pgconn.pipeline_sync()
                results = await driver.wait(_exchange(pgconn))
            finally:
                if pgconn.pipeline_status:
                    with contextlib.suppress(psycopg.Error):
                        pgconn.exit_pipeline_mode()
        failed = [result for result in results if result.status == _FATAL_ERROR]
        if failed:
            raise psycopg.errors.error_from_result(failed[0], encoding=driver.info.encoding)
    except psycopg.Error as exc:
        # The statement stays prepared unless it was just refused, or is gone from the session.
        if parsed:
            parse = 1 if closed else 0
            prepared = len(results) > parse and results[parse].status == _COMMAND_OK
        else:
            prepared = exc.sqlstate != _NO_SUCH_STATEMENT
        if name is not None and prepared:
            info[key] = name
        raise await _translate(conn, driver, statement.decode(), exc) from exc
    if name is not None:
        info[key] = name
    if settle:
        # SQLAlchemy still counts its transaction open; committing it sends nothing, as the
        # server's transaction is already over. Unsettled, release_connection(settle=True) must.
        await conn.commit()
