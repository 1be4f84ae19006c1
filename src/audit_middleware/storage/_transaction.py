"""The connection of one request's unit of work: opened, committed with its audit row, released.

The audit INSERT and the COMMIT go to PostgreSQL in one message (a prepared statement's EXECUTE
and the COMMIT, :func:`commit_prepared`) or one pipeline (psycopg 3, :func:`commit_pipelined`),
so the audited request pays the round trips its own transaction pays, and not one more.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import psycopg
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_middleware._exceptions import (
    AuditError,
    CommitOutcomeUnknown,
    StoreError,
    map_database_error,
)

__all__ = [
    "SHUTDOWN_STATES",
    "Locks",
    "commit_pipelined",
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
    if lock is not None:
        await lock.acquire()
    try:
        conn = await engine.connect()
        try:
            if lock is not None:
                await prepare(conn)
            await conn.begin()
        except BaseException:
            await conn.close()
            raise
        if lock is not None:
            held[conn] = lock
    except BaseException as exc:
        if lock is not None:
            lock.release()
        if isinstance(exc, sqlalchemy.exc.SQLAlchemyError | OSError):
            raise map_database_error(exc, StoreError, "open the request's transaction") from exc
        raise
    return conn


async def release_connection(conn: AsyncConnection, held: Locks) -> None:
    """Close ``conn`` (rolling back anything uncommitted) and release its lock."""
    lock = held.pop(conn, None) if held else None  # PostgreSQL holds no lock: skip the lookup
    try:
        await conn.close()
    except (sqlalchemy.exc.SQLAlchemyError, OSError):
        logger.warning("closing the request's connection failed", exc_info=True)
    finally:
        if lock is not None:
            lock.release()


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


async def commit_pipelined(conn: AsyncConnection, statement: str, params: dict[str, Any]) -> None:
    """Run ``statement`` in ``conn``'s transaction and COMMIT, both in one psycopg pipeline."""
    driver = await _driver(conn)
    try:
        async with driver.pipeline():
            await driver.execute(statement, params)
            # As a statement, not driver.commit(): that one syncs and waits for its answer,
            # and leaving the pipeline would then wait a second time.
            await driver.execute("COMMIT")
    except psycopg.Error as exc:
        raise await _translate(conn, driver, statement, exc) from exc
    # SQLAlchemy still counts its transaction open; closing it sends nothing, as the server's
    # transaction is already over.
    await conn.commit()


# Where a connection keeps the EXECUTE of the write statement PREPAREd on it, and the cursor that
# sends it (a cursor costs more to make than to reuse): the pool's info of the DBAPI connection,
# which lives exactly as long as the server session holding the statement. Absent: not (or not
# surely) prepared; a fresh name each time, so that a PREPARE whose outcome is unknown never
# collides.
_PREPARED_KEY = "auditevt.prepared_write"
_names = itertools.count(1)


async def commit_prepared(
    conn: AsyncConnection, params: dict[str, Any], *, preparable: str, types: str, inline: str
) -> None:
    """EXECUTE the write (PREPAREd on first use) and COMMIT, in one message, one round trip.

    ``params`` are in the order of ``preparable``'s $1, $2...; ``inline`` names them as
    ``%(name)s``. The values travel as literals, quoted by psycopg (client-side binding); the
    statement is planned once per connection. Cheaper for the application than a pipeline,
    and for the database than sending the whole statement every time. A connection with prepared
    statements turned off (``prepare_threshold=None``, as behind a pooler in transaction mode)
    gets ``inline`` with the values instead. Raises as :func:`commit_pipelined` does; a
    prepared statement gone from the session (``DEALLOCATE ALL``) fails that one write, and
    the next one prepares again.
    """
    driver = await _driver(conn)
    info, key = conn.info, (_PREPARED_KEY, preparable)  # one entry per statement
    known: tuple[str, psycopg.AsyncClientCursor[Any]] | None = info.pop(key, None)
    if known is not None:
        query, cursor = known
        execute = query
    else:
        cursor = psycopg.AsyncClientCursor(driver)
        if driver.prepare_threshold is None:
            execute = query = inline + ";\nCOMMIT"
        else:
            name = f"auditevt_write_{next(_names)}"
            arguments = ", ".join(f"%({key})s" for key in params)
            execute = f"EXECUTE {name} ({arguments});\nCOMMIT"
            query = f"PREPARE {name} ({types}) AS {preparable};\n{execute}"
    try:
        await cursor.execute(query, params, prepare=False)
    except psycopg.Error as exc:
        raise await _translate(conn, driver, query, exc) from exc
    info[key] = (execute, cursor)
    await conn.commit()  # bookkeeping only, as in commit_pipelined
