"""The errors ``audit_middleware`` raises, and the one place database errors become them.

Our exception tree::

    AuditError                      the root: catch this to catch everything below
    ├── ConfigurationError          (also ValueError and TypeError) a bad argument or setting
    ├── DatabaseUnavailable         the database could not be reached or went away (any of below)
    ├── SchemaMissing               the audit tables are not there: run `auditevt migrate`
    ├── StoreError                  an audit row could not be written (bad value, constraint, ...)
    │   ├── StoreUnavailable        ... because the database is unavailable (a DatabaseUnavailable)
    │   │   └── CommitOutcomeUnknown  ... with the COMMIT in flight: all of it or none of it
    │   └── StoreSchemaMissing      ... because the tables are missing (a SchemaMissing)
    ├── ReaderError                 an audit query failed
    │   ├── ReaderUnavailable       (a DatabaseUnavailable)
    │   └── ReaderSchemaMissing     (a SchemaMissing)
    ├── OutboxError                 an outbox operation of the relay (claim, ack, ...) failed
    │   ├── OutboxUnavailable       (a DatabaseUnavailable)
    │   └── OutboxSchemaMissing     (a SchemaMissing)
    ├── MigrationError              the schema could not be migrated (bad URL, unreachable, DDL)
    └── IntegrityError              sealing or verification could not run (key file, database)
        ├── IntegrityUnavailable    (a DatabaseUnavailable)
        └── IntegritySchemaMissing  (a SchemaMissing)

Catch ``DatabaseUnavailable`` for an outage and ``SchemaMissing`` for an unmigrated database,
whichever part met it; catch ``StoreError`` (and so on) for everything one part can raise.

Bad arguments (an unknown URL scheme, a naive datetime, a limit out of range) raise
``ConfigurationError`` naming the value; being a ``ValueError`` and a ``TypeError`` too, it is
caught by the clauses Python code writes for bad arguments. SQLAlchemy, psycopg, aiosqlite and
sqlite3 errors never reach the caller raw: :func:`map_database_error` translates them, keeping
the original as ``__cause__``.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy.exc

__all__ = [
    "AuditError",
    "CommitOutcomeUnknown",
    "ConfigurationError",
    "DatabaseUnavailable",
    "IntegrityError",
    "IntegritySchemaMissing",
    "IntegrityUnavailable",
    "MigrationError",
    "OutboxError",
    "OutboxSchemaMissing",
    "OutboxUnavailable",
    "ReaderError",
    "ReaderSchemaMissing",
    "ReaderUnavailable",
    "SchemaMissing",
    "StoreError",
    "StoreSchemaMissing",
    "StoreUnavailable",
    "map_database_error",
]


class AuditError(Exception):
    """The root of every error ``audit_middleware`` raises."""


class ConfigurationError(AuditError, ValueError, TypeError):
    """A bad argument or setting, named with its value; nothing was done."""


class DatabaseUnavailable(AuditError):
    """The database could not be reached, or the connection broke (retry later)."""


class SchemaMissing(AuditError):
    """The audit tables do not exist: run ``auditevt migrate --database-url URL``."""


class StoreError(AuditError):
    """An audit row (and its outbox row) could not be written; nothing was stored."""


class StoreUnavailable(StoreError, DatabaseUnavailable):
    """The database could not be reached, or the connection broke during the write."""


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection broke while the request's transaction was committing.

    Its changes and its audit row were committed together or not at all; which one, only the
    database knows.
    """


class StoreSchemaMissing(StoreError, SchemaMissing):
    """The write found no audit tables."""


class OutboxError(AuditError):
    """An outbox operation (claim, acknowledge, reschedule, ...) failed in the database."""


class OutboxUnavailable(OutboxError, DatabaseUnavailable):
    """The outbox's database could not be reached, or the connection broke."""


class OutboxSchemaMissing(OutboxError, SchemaMissing):
    """The outbox table does not exist."""


class ReaderError(AuditError):
    """Audit rows could not be read."""


class ReaderUnavailable(ReaderError, DatabaseUnavailable):
    """The database could not be reached, or the connection broke during the read."""


class ReaderSchemaMissing(ReaderError, SchemaMissing):
    """The audit tables do not exist."""


class MigrationError(AuditError):
    """The audit schema could not be migrated."""


class IntegrityError(AuditError):
    """Seals could not be made or checked: a bad key file, an unusable database or sink.

    What verification *finds* (an altered row, a broken chain) is no exception: it is a finding
    in the report.
    """


class IntegrityUnavailable(IntegrityError, DatabaseUnavailable):
    """The database could not be reached, or the connection broke, while sealing or verifying."""


class IntegritySchemaMissing(IntegrityError, SchemaMissing):
    """The audit or seal tables do not exist (migration 0003 adds ``audit_seals``)."""


# The error of each family for an outage and for missing tables.
_VARIANTS: dict[type[AuditError], tuple[type[AuditError], type[AuditError]]] = {
    StoreError: (StoreUnavailable, StoreSchemaMissing),
    OutboxError: (OutboxUnavailable, OutboxSchemaMissing),
    ReaderError: (ReaderUnavailable, ReaderSchemaMissing),
    IntegrityError: (IntegrityUnavailable, IntegritySchemaMissing),
}

# undefined_table, invalid_schema_name
_MISSING_STATES = ("42P01", "3F000")


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


def _is_schema_missing(exc: BaseException) -> bool:
    inner = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if isinstance(inner, sqlite3.OperationalError):
        return str(inner).startswith("no such table")
    return getattr(inner, "sqlstate", None) in _MISSING_STATES


def _describe(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else None
    inner = orig if orig is not None else exc
    text = str(inner).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


def map_database_error(exc: BaseException, error: type[AuditError], action: str) -> AuditError:
    """Translate a foreign database error into ``error``, or its unavailable or schema-missing
    variant (``StoreUnavailable``, ``OutboxSchemaMissing``, ...) when that is what happened.

    ``action`` says what failed, e.g. ``"write the audit row"``. Use it as
    ``raise map_database_error(exc, StoreError, "...") from exc``.
    """
    variants = _VARIANTS.get(error)
    if variants is not None:
        if _is_unavailable(exc):
            error = variants[0]
        elif _is_schema_missing(exc):
            return variants[1](
                f"could not {action}: {_describe(exc)} "
                "(run `auditevt migrate --database-url URL` first)"
            )
    return error(f"could not {action}: {_describe(exc)}")
