"""The errors ``audit_middleware`` raises, and the one place database errors become them.

Our exception tree::

    AuditError                  the root: catch this to catch everything below
    ├── StoreError              an audit row could not be written (bad value, constraint, ...)
    │   └── StoreUnavailable    ... because the database could not be reached or went away
    ├── ReaderError             an audit query failed
    ├── OutboxError             an outbox operation of the relay (claim, ack, ...) failed
    └── MigrationError          the schema could not be migrated (bad URL, unreachable, failed DDL)

Bad arguments (an unknown URL scheme, a naive datetime, a limit out of range) raise ``ValueError``
or ``TypeError`` naming the value, as Python code does. SQLAlchemy, psycopg, aiosqlite and
sqlite3 errors never reach the caller raw: :func:`map_database_error` translates them, keeping
the original as ``__cause__``.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy.exc

__all__ = [
    "AuditError",
    "MigrationError",
    "OutboxError",
    "ReaderError",
    "StoreError",
    "StoreUnavailable",
    "map_database_error",
]


class AuditError(Exception):
    """The root of every error ``audit_middleware`` raises."""


class StoreError(AuditError):
    """An audit row (and its outbox row) could not be written; nothing was stored."""


class StoreUnavailable(StoreError):
    """The database could not be reached, or the connection broke during the write."""


class OutboxError(AuditError):
    """An outbox operation (claim, acknowledge, reschedule, ...) failed in the database."""


class ReaderError(AuditError):
    """Audit rows could not be read."""


class MigrationError(AuditError):
    """The audit schema could not be migrated."""


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlalchemy.exc.TimeoutError | OSError | TimeoutError):
        return True  # pool exhausted / socket errors / connect timeouts
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, sqlite3.Error):
        # A locked or busy SQLite file is contention, not a broken database.
        return isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc)
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not isinstance(
        exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable
    )


def _describe(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else None
    inner = orig if orig is not None else exc
    text = str(inner).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


def map_database_error(exc: BaseException, error: type[AuditError], action: str) -> AuditError:
    """Translate a foreign database error into ``error`` (or ``StoreUnavailable``).

    ``action`` says what failed, e.g. ``"write the audit row"``. Use it as
    ``raise map_database_error(exc, StoreError, "...") from exc``.
    """
    if error is StoreError and _is_unavailable(exc):
        error = StoreUnavailable
    return error(f"could not {action}: {_describe(exc)}")
