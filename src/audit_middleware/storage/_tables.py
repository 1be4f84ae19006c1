"""The tables, as SQLAlchemy Core: ``audit_log`` (append-only) and ``audit_outbox`` (delivery).

The Alembic migrations in ``audit_middleware/storage/migrations`` create exactly these; a
test compares them. ``audit_outbox`` carries its own copy of the event JSON because ``audit_log``
is under forced row-level security: a relay, which serves every organization, reads only the outbox.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["AUDIT_LOG", "AUDIT_OUTBOX", "metadata"]

metadata = MetaData()

# BIGINT ids on PostgreSQL; SQLite assigns rowids only to a column declared INTEGER PRIMARY KEY.
_Id = BigInteger().with_variant(Integer(), "sqlite")
_Json = JSON().with_variant(JSONB(), "postgresql")

AUDIT_LOG = Table(
    "audit_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", Uuid(as_uuid=True), nullable=False, unique=True),
    Column("action", String(16), nullable=False),
    Column("entity_type", Text, nullable=False),
    Column("entity_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("organization_id", BigInteger, nullable=False),
    Column("ip_address", Text, nullable=False),
    Column("user_agent", Text, nullable=False),
    Column("request_path", Text, nullable=False),
    Column("status_code", Integer, nullable=False),
    # Microsecond precision for filtering and ordering; the exact nanoseconds and offset are in
    # event_json.
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("changes", _Json, nullable=True),
    Column("action_context", String(32), nullable=True),
    Column("break_glass_id", BigInteger, nullable=True),
    Column("impersonation_id", BigInteger, nullable=True),
    # The canonical Event JSON (Event.to_json()), kept verbatim: what Telemetry receives.
    Column("event_json", Text, nullable=False),
    Column("inserted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_audit_log_org_ts_id", "organization_id", "timestamp", "id"),
)

AUDIT_OUTBOX = Table(
    "audit_outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", Uuid(as_uuid=True), nullable=False, unique=True),
    Column("audit_id", BigInteger, nullable=False),
    Column("organization_id", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column(
        "next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()
    ),
    Column("lease_owner", Text, nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    # NULL while deliverable; set (with last_error as the reason) once Telemetry rejected it.
    Column("dead_lettered_at", DateTime(timezone=True), nullable=True),
    Index(
        "ix_audit_outbox_due",
        "next_attempt_at",
        "id",
        postgresql_where=text("dead_lettered_at IS NULL"),
        sqlite_where=text("dead_lettered_at IS NULL"),
    ),
)
