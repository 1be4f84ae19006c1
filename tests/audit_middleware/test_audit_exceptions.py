"""``audit_middleware``'s exception tree: one root, the drawing in ``_exceptions.py`` kept true,
and outages and missing tables told apart by class wherever they are met."""

from __future__ import annotations

import inspect
import sys

import pytest

import audit_middleware
from audit_middleware import (
    AuditError,
    AuditReader,
    ConfigurationError,
    DatabaseUnavailable,
    IntegrityError,
    IntegritySchemaMissing,
    IntegrityUnavailable,
    MigrationError,
    Outbox,
    OutboxError,
    OutboxSchemaMissing,
    OutboxUnavailable,
    ReaderError,
    ReaderSchemaMissing,
    ReaderUnavailable,
    SchemaMissing,
    StoreError,
    StoreSchemaMissing,
    StoreUnavailable,
)


@pytest.mark.parametrize(
    ("cls", "parents"),
    [
        (ConfigurationError, (AuditError, ValueError, TypeError)),
        (DatabaseUnavailable, (AuditError,)),
        (SchemaMissing, (AuditError,)),
        (StoreError, (AuditError,)),
        (StoreUnavailable, (StoreError, DatabaseUnavailable)),
        (StoreSchemaMissing, (StoreError, SchemaMissing)),
        (ReaderError, (AuditError,)),
        (ReaderUnavailable, (ReaderError, DatabaseUnavailable)),
        (ReaderSchemaMissing, (ReaderError, SchemaMissing)),
        (OutboxError, (AuditError,)),
        (OutboxUnavailable, (OutboxError, DatabaseUnavailable)),
        (OutboxSchemaMissing, (OutboxError, SchemaMissing)),
        (MigrationError, (AuditError,)),
        (IntegrityError, (AuditError,)),
        (IntegrityUnavailable, (IntegrityError, DatabaseUnavailable)),
        (IntegritySchemaMissing, (IntegrityError, SchemaMissing)),
    ],
)
def test_exceptions_tree_matches_the_drawing(
    cls: type[Exception], parents: tuple[type[Exception], ...]
) -> None:
    assert cls.__bases__ == parents
    assert cls.__name__ in (sys.modules["audit_middleware._exceptions"].__doc__ or "")


def test_exceptions_every_exported_exception_descends_from_audit_error() -> None:
    exceptions = [
        member
        for member in vars(audit_middleware).values()
        if inspect.isclass(member) and issubclass(member, BaseException)
    ]
    assert len(exceptions) == 18
    assert all(issubclass(cls, AuditError) for cls in exceptions)


@pytest.mark.anyio
async def test_exceptions_outbox_and_reader_tell_missing_tables_from_outages(
    pg_url: str, closed_port: int
) -> None:
    from audit_middleware.storage._store import create_engine

    engine = create_engine(pg_url)  # an empty database: never migrated
    try:
        with pytest.raises(OutboxSchemaMissing, match="auditevt migrate"):
            await Outbox(engine).stats()
        with pytest.raises(ReaderSchemaMissing, match="auditevt migrate"):
            await AuditReader(engine).list_events(1)
    finally:
        await engine.dispose()
    unreachable = create_engine(f"postgresql://postgres@127.0.0.1:{closed_port}/audit")
    try:
        with pytest.raises(OutboxUnavailable):
            await Outbox(unreachable).stats()
        with pytest.raises(ReaderUnavailable):
            await AuditReader(unreachable).list_events(1)
    finally:
        await unreachable.dispose()
