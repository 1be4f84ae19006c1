"""audit_middleware: the Core API side of auditevt.

Three subsystems, one folder each:

- ``request``: ``AuditMiddleware`` (pure ASGI), its ``AuditConfig``, ``record()`` for handlers,
  client IP, entity and identity resolution, redaction;
- ``storage``: ``AuditStore`` (audit row and outbox row, committed before the response),
  ``AuditReader`` (org-scoped under PostgreSQL row-level security), the ``Outbox`` queue and the
  packaged Alembic migrations (``migrate``);
- ``delivery``: ``OutboxRelay``, which forwards the outbox to Telemetry;
- ``integrity``: row hashes, the ``Sealer`` (signed, chained Merkle seals), ``verify_database``
  and the offline proofs export.

Every public name is importable from here. Needs the ``middleware`` extra.
"""

import importlib.util as _importlib_util

_REQUIRED = (
    "starlette",
    "sqlalchemy",
    "psycopg",
    "aiosqlite",
    "alembic",
    "httpx",
    "tenacity",
    "cryptography",
)
_missing = [name for name in _REQUIRED if _importlib_util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f"audit_middleware needs {', '.join(_missing)}: pip install 'auditevt[middleware]'",
        name=_missing[0],
    )

from audit_middleware._exceptions import (  # noqa: E402
    AuditError,
    CommitOutcomeUnknown,
    ConfigurationError,
    DatabaseUnavailable,
    IntegrityError,
    IntegritySchemaMissing,
    IntegrityUnavailable,
    MigrationError,
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
from audit_middleware.delivery import (  # noqa: E402
    DeliveryPolicy,
    Exporter,
    ExportFailure,
    ExportResult,
    OutboxRelay,
    RelayConfig,
    RelayStats,
    TelemetryExporter,
    relay_command,
)
from audit_middleware.integrity import (  # noqa: E402
    DirectorySink,
    Finding,
    IntegrityStats,
    Seal,
    Sealer,
    SealerConfig,
    SealSink,
    SigningKey,
    VerifyReport,
    build_export,
    generate_key_files,
    leaf_hash,
    load_public_keys,
    load_signing_key,
    merkle_root,
    root_from_inclusion_proof,
    row_hash,
    verify_database,
    verify_export,
)
from audit_middleware.request import (  # noqa: E402
    DEFAULT_METHODS,
    AuditConfig,
    AuditMiddleware,
    AuditSink,
    AuditStats,
    ChangesLimits,
    EntityResolver,
    IdentityResolver,
    RedactionPolicy,
    Redactor,
    TrustedProxies,
    audit_connection,
    audit_session,
    record,
    resolve_client_ip,
    route_entity,
)
from audit_middleware.storage import (  # noqa: E402
    MAX_PAGE_SIZE,
    AuditReader,
    AuditRecord,
    AuditStore,
    Cursor,
    DatabaseRoles,
    DeadLetter,
    Outbox,
    OutboxBackoff,
    OutboxItem,
    OutboxStats,
    Page,
    UnreadableRecord,
    database_roles,
    migrate,
    migrate_command,
    migrate_sync,
    new_event_id,
)

__all__ = [
    "DEFAULT_METHODS",
    "MAX_PAGE_SIZE",
    "AuditConfig",
    "AuditError",
    "AuditMiddleware",
    "AuditReader",
    "AuditRecord",
    "AuditSink",
    "AuditStats",
    "AuditStore",
    "ChangesLimits",
    "CommitOutcomeUnknown",
    "ConfigurationError",
    "Cursor",
    "DatabaseRoles",
    "DatabaseUnavailable",
    "DeadLetter",
    "DeliveryPolicy",
    "DirectorySink",
    "EntityResolver",
    "ExportFailure",
    "ExportResult",
    "Exporter",
    "Finding",
    "IdentityResolver",
    "IntegrityError",
    "IntegritySchemaMissing",
    "IntegrityStats",
    "IntegrityUnavailable",
    "MigrationError",
    "Outbox",
    "OutboxBackoff",
    "OutboxError",
    "OutboxItem",
    "OutboxRelay",
    "OutboxSchemaMissing",
    "OutboxStats",
    "OutboxUnavailable",
    "Page",
    "ReaderError",
    "ReaderSchemaMissing",
    "ReaderUnavailable",
    "RedactionPolicy",
    "Redactor",
    "RelayConfig",
    "RelayStats",
    "SchemaMissing",
    "Seal",
    "SealSink",
    "Sealer",
    "SealerConfig",
    "SigningKey",
    "StoreError",
    "StoreSchemaMissing",
    "StoreUnavailable",
    "TelemetryExporter",
    "TrustedProxies",
    "UnreadableRecord",
    "VerifyReport",
    "audit_connection",
    "audit_session",
    "build_export",
    "database_roles",
    "generate_key_files",
    "leaf_hash",
    "load_public_keys",
    "load_signing_key",
    "merkle_root",
    "migrate",
    "migrate_command",
    "migrate_sync",
    "new_event_id",
    "record",
    "relay_command",
    "resolve_client_ip",
    "root_from_inclusion_proof",
    "route_entity",
    "row_hash",
    "verify_database",
    "verify_export",
]

# Public names report the public module, as httpx does, so tracebacks and docs point here.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _value.__module__ = __name__
del _name, _value, _missing, _REQUIRED, _importlib_util
