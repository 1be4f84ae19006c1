"""audit_middleware: the Core API side of auditevt.

Durable, synchronous audit writes (``AuditStore``) into an append-only ``audit_log`` with a
delivery outbox, org-scoped reads under PostgreSQL row-level security (``AuditReader``), and the
schema as packaged Alembic migrations (``migrate``).
"""

import importlib.util

_REQUIRED = ("starlette", "sqlalchemy", "psycopg", "aiosqlite", "alembic", "httpx", "tenacity")
_missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f"audit_middleware needs {', '.join(_missing)}: pip install 'auditevt[middleware]'"
    )

from audit_middleware._client_ip import TrustedProxies, resolve_client_ip  # noqa: E402
from audit_middleware._context import record  # noqa: E402
from audit_middleware._entity import route_entity  # noqa: E402
from audit_middleware._exceptions import (  # noqa: E402
    AuditError,
    MigrationError,
    ReaderError,
    StoreError,
    StoreUnavailable,
)
from audit_middleware._metrics import AuditStats  # noqa: E402
from audit_middleware._middleware import (  # noqa: E402
    DEFAULT_METHODS,
    AuditConfig,
    AuditMiddleware,
    AuditSink,
)
from audit_middleware._migrate import migrate, migrate_command, migrate_sync  # noqa: E402
from audit_middleware._outbox import (  # noqa: E402
    DeadLetter,
    Outbox,
    OutboxBackoff,
    OutboxError,
    OutboxItem,
    OutboxStats,
)
from audit_middleware._reader import (  # noqa: E402
    MAX_PAGE_SIZE,
    AuditReader,
    AuditRecord,
    Cursor,
    Page,
)
from audit_middleware._redaction import RedactionPolicy  # noqa: E402
from audit_middleware._relay import OutboxRelay, RelayConfig, RelayStats  # noqa: E402
from audit_middleware._relay_cli import relay_command  # noqa: E402
from audit_middleware._store import AuditStore, new_event_id  # noqa: E402

__all__ = [
    "AuditConfig",
    "AuditError",
    "AuditMiddleware",
    "AuditReader",
    "AuditRecord",
    "AuditSink",
    "AuditStats",
    "AuditStore",
    "Cursor",
    "DEFAULT_METHODS",
    "DeadLetter",
    "MAX_PAGE_SIZE",
    "MigrationError",
    "Outbox",
    "OutboxBackoff",
    "OutboxError",
    "OutboxItem",
    "OutboxRelay",
    "OutboxStats",
    "Page",
    "ReaderError",
    "RedactionPolicy",
    "RelayConfig",
    "RelayStats",
    "StoreError",
    "StoreUnavailable",
    "TrustedProxies",
    "migrate",
    "migrate_command",
    "migrate_sync",
    "new_event_id",
    "record",
    "relay_command",
    "resolve_client_ip",
    "route_entity",
]
