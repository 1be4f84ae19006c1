"""The tables, as SQLAlchemy Core: ``audit_log`` (append-only) and ``audit_outbox`` (delivery).

The Alembic migrations in ``audit_middleware/storage/migrations`` create exactly these; a test
compares them. ``audit_outbox`` carries its own copy of the event JSON because ``audit_log`` is
under forced row-level security: a relay, which serves every organization, reads only the outbox.

Every statement names the schema of the tables (``public`` on PostgreSQL, ``main`` on SQLite):
both databases look a bare name up in the session's temporary schema first, so a
``CREATE TEMP TABLE audit_log (LIKE audit_log)`` on a pooled connection would otherwise take
every write meant for the real table. The tables here carry no schema; engines get
:func:`qualified` (SQLAlchemy's ``schema_translate_map``) and hand-written SQL spells it out.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "AUDIT_LOG",
    "AUDIT_OUTBOX",
    "AUDIT_REVIEW",
    "AUDIT_SEALS",
    "POSTGRESQL_SCHEMA",
    "SQLITE_SCHEMA",
    "metadata",
    "qualified",
]

POSTGRESQL_SCHEMA = "public"
"""The schema the migrations create the tables in, and every statement names, on PostgreSQL."""
SQLITE_SCHEMA = "main"
"""The SQLite database the tables live in (``temp`` is searched before it)."""

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
    # SHA-256 over event_id and event_json (audit_middleware.integrity._rowhash), by the writer;
    # NULL only from a writer older than migration 0003 (the sealer computes it then).
    Column("row_hash", LargeBinary, nullable=True),
    # The reader's filter and keyset order, within one organization (revision 0002).
    Index("ix_audit_log_org_ts_event", "organization_id", "timestamp", "event_id"),
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
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
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

# Signed seals over id ranges of audit_log (audit_middleware.integrity), append-only.
AUDIT_SEALS = Table(
    "audit_seals",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("first_id", BigInteger, nullable=False),
    Column("last_id", BigInteger, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("sealed_at", DateTime(timezone=True), nullable=False),
    # The signed canonical JSON; the columns above are copies for queries, checked against it.
    Column("body", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    # The sealed leaves (8-byte big-endian ids, 32-byte row hashes), authenticated by the root:
    # what lets the verifier name the altered, deleted or inserted row, not just the seal.
    Column("ids", LargeBinary, nullable=False),
    Column("row_hashes", LargeBinary, nullable=False),
    Index("ix_audit_seals_last_id", "last_id", unique=True),
)

# The review trail of break-glass and impersonation events (audit_middleware.review):
# append-only and org-scoped under forced row-level security, like audit_log.
AUDIT_REVIEW = Table(
    "audit_review",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("organization_id", BigInteger, nullable=False),
    # The reviewed audit_log row, by its event_id (and its id, for joins).
    Column("event_id", Uuid(as_uuid=True), nullable=False),
    Column("audit_id", BigInteger, nullable=False),
    Column("reviewer_id", BigInteger, nullable=False),
    Column("decision", String(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("reviewed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_audit_review_org_event", "organization_id", "event_id"),
)


def qualified(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` whose Core statements on these tables name their schema."""
    schema = POSTGRESQL_SCHEMA if engine.dialect.name == "postgresql" else SQLITE_SCHEMA
    return engine.execution_options(schema_translate_map={None: schema})
