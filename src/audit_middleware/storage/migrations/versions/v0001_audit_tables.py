"""audit_log and audit_outbox, with PostgreSQL row-level security and an append-only guard.

Revision ID: 0001
Revises:
Create Date: 2026-05-09

On PostgreSQL this also creates the cluster-wide roles ``auditevt_app`` and ``auditevt_relay``
(NOLOGIN, when missing), enables and forces row-level security on ``audit_log``, and installs
triggers that refuse UPDATE, DELETE and TRUNCATE on it even for its owner. ``docs/security.md``
explains each piece.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

APP_ROLE = "auditevt_app"
RELAY_ROLE = "auditevt_relay"

# The organization a transaction is scoped to; unset or '' is NULL, which equals nothing.
_ORG_SETTING = "NULLIF(current_setting('auditevt.organization_id', true), '')"


def _create_role(name: str) -> str:
    # Roles belong to the cluster, not the database: migrations of several databases may race
    # to create one. The loser of the race blocks until the winner commits and then gets a
    # unique_violation (or duplicate_object), which means the role exists: fine.
    return f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{name}') THEN
    BEGIN
      CREATE ROLE {name} NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END IF;
END
$$"""


_POSTGRESQL_HARDENING = [
    _create_role(APP_ROLE),
    _create_role(RELAY_ROLE),
    # The outbox is a queue: each row is leased (updated) and deleted soon after it is written.
    # Free room on every page keeps the lease updates HOT (no index churn), and an eager
    # autovacuum clears the deleted rows before claims have to step over them.
    "ALTER TABLE audit_outbox SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02,"
    " autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0)",
    # Row-level security, forced so the table owner is held by it too.
    "ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE audit_log FORCE ROW LEVEL SECURITY",
    # Reads see exactly the transaction's organization; no setting means no rows.
    f"""CREATE POLICY audit_log_select_own_organization ON audit_log FOR SELECT
        USING (organization_id = {_ORG_SETTING}::bigint)""",
    # The writer serves every organization, so an unscoped transaction may insert any
    # organization's row (the middleware takes organization_id from the authenticated session,
    # never from the request body); a transaction scoped to one organization may insert only
    # that organization's rows. Who may insert at all is decided by GRANT, not here.
    f"""CREATE POLICY audit_log_insert ON audit_log FOR INSERT
        WITH CHECK ({_ORG_SETTING} IS NULL OR organization_id = {_ORG_SETTING}::bigint)""",
    # Append-only, for everyone: privileges already keep the app role out, and these triggers
    # refuse the owner as well. The statement-level trigger fires even when no row matches
    # (which, under forced RLS, is every UPDATE or DELETE the owner can issue).
    """CREATE FUNCTION auditevt_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'audit rows are never changed or removed by the application';
END
$$""",
    """CREATE TRIGGER audit_log_append_only_statement
        BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION auditevt_refuse_change()""",
    """CREATE TRIGGER audit_log_append_only_row
        BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION auditevt_refuse_change()""",
    # The application: append and read audit rows, queue and deliver outbox rows (the relay
    # may run inside the app). The relay alone: deliver outbox rows, nothing of audit_log.
    f"GRANT SELECT, INSERT ON audit_log TO {APP_ROLE}",
    f"GRANT USAGE ON SEQUENCE audit_log_id_seq TO {APP_ROLE}",
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON audit_outbox TO {APP_ROLE}",
    f"GRANT USAGE ON SEQUENCE audit_outbox_id_seq TO {APP_ROLE}",
    f"GRANT SELECT, UPDATE, DELETE ON audit_outbox TO {RELAY_ROLE}",
    f"""DO $$
BEGIN
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO {APP_ROLE}, {RELAY_ROLE}', current_schema());
END
$$""",
]

_SQLITE_HARDENING = [
    """CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END""",
]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Uuid(as_uuid=True), nullable=False, unique=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("entity_type", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("ip_address", sa.Text(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=False),
        sa.Column("request_path", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changes", _Json, nullable=True),
        sa.Column("action_context", sa.String(32), nullable=True),
        sa.Column("break_glass_id", sa.BigInteger(), nullable=True),
        sa.Column("impersonation_id", sa.BigInteger(), nullable=True),
        sa.Column("event_json", sa.Text(), nullable=False),
        sa.Column(
            "inserted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_audit_log_org_ts_id", "audit_log", ["organization_id", "timestamp", "id"])
    op.create_table(
        "audit_outbox",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Uuid(as_uuid=True), nullable=False, unique=True),
        sa.Column("audit_id", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_audit_outbox_due",
        "audit_outbox",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("dead_lettered_at IS NULL"),
        sqlite_where=sa.text("dead_lettered_at IS NULL"),
    )
    dialect = op.get_bind().dialect.name
    for statement in _POSTGRESQL_HARDENING if dialect == "postgresql" else _SQLITE_HARDENING:
        op.execute(statement)


def downgrade() -> None:
    # Drops the audit trail itself: only for development databases. Roles stay (they belong to
    # the cluster and other databases may use them).
    op.drop_table("audit_outbox")
    op.drop_table("audit_log")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION auditevt_refuse_change()")
