"""Storage: the audit tables, the store that writes them, the reader, the outbox queue, migrations.

PostgreSQL (psycopg 3) in production, SQLite (aiosqlite) for demos and first trials.
"""

from audit_middleware.storage._migrate import migrate, migrate_command, migrate_sync
from audit_middleware.storage._outbox import (
    DeadLetter,
    Outbox,
    OutboxBackoff,
    OutboxItem,
    OutboxStats,
)
from audit_middleware.storage._reader import (
    MAX_PAGE_SIZE,
    AuditReader,
    AuditRecord,
    Cursor,
    Page,
    UnreadableRecord,
)
from audit_middleware.storage._roles import DatabaseRoles, database_roles
from audit_middleware.storage._store import AuditStore, new_event_id

__all__ = [
    "MAX_PAGE_SIZE",
    "AuditReader",
    "AuditRecord",
    "AuditStore",
    "Cursor",
    "DatabaseRoles",
    "DeadLetter",
    "Outbox",
    "OutboxBackoff",
    "OutboxItem",
    "OutboxStats",
    "Page",
    "UnreadableRecord",
    "database_roles",
    "migrate",
    "migrate_command",
    "migrate_sync",
    "new_event_id",
]
