"""Tamper evidence: a content hash on every audit row, and the append-only seals table.

Revision ID: 0003
Revises: 0001 (the lead re-chains it after 0002 at merge; nothing here depends on 0002)
Create Date: 2026-12-01

- ``audit_log.row_hash``: SHA-256 over a domain tag, the event id and the event JSON
  (``audit_middleware.integrity._rowhash``), written by the store with each row. Rows written
  before this revision get theirs here, computed from their own content, so no row is lost or
  changed otherwise. On PostgreSQL that is one ``UPDATE`` with the append-only triggers and
  ``FORCE ROW LEVEL SECURITY`` lifted for the length of this transaction only; on SQLite the
  update trigger is dropped and recreated around it.
- ``audit_seals``: one signed seal per sealed id range, append-only like ``audit_log``.
- PostgreSQL: the role ``auditevt_sealer`` (NOLOGIN) may read every organization's rows (a
  policy of its own) and append seals; ``auditevt seal`` and ``auditevt verify`` run as a
  member of it.

The column stays nullable: a writer of an older version still running during a rolling upgrade
writes rows without a hash, and the sealer and the verifier compute it from the row's content.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

from audit_middleware.integrity._rowhash import PG_ROW_HASH, row_hash
from audit_middleware.storage.migrations.versions.v0001_audit_tables import _create_role

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

SEALER_ROLE = "auditevt_sealer"

_APPEND_ONLY_TRIGGERS = ("audit_log_append_only_statement", "audit_log_append_only_row")

_POSTGRESQL_SEALS = [
    _create_role(SEALER_ROLE),
    """CREATE FUNCTION auditevt_refuse_seal_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_seals is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'seals are never changed or removed; auditevt verify checks them';
END
$$""",
    """CREATE TRIGGER audit_seals_append_only_statement
        BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_seals
        FOR EACH STATEMENT EXECUTE FUNCTION auditevt_refuse_seal_change()""",
    """CREATE TRIGGER audit_seals_append_only_row
        BEFORE UPDATE OR DELETE ON audit_seals
        FOR EACH ROW EXECUTE FUNCTION auditevt_refuse_seal_change()""",
    # The sealer and the verifier hash every organization's rows: a read policy of their own,
    # for members of this role only (the application's policies are unchanged).
    f"CREATE POLICY audit_log_select_sealer ON audit_log FOR SELECT TO {SEALER_ROLE} USING (true)",
    f"GRANT SELECT ON audit_log TO {SEALER_ROLE}",
    f"GRANT SELECT ON SEQUENCE audit_log_id_seq TO {SEALER_ROLE}",
    f"GRANT SELECT, INSERT ON audit_seals TO {SEALER_ROLE}",
    f"""DO $$
BEGIN
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO {SEALER_ROLE}', current_schema());
END
$$""",
]

_SQLITE_SEALS = [
    """CREATE TRIGGER audit_seals_append_only_update BEFORE UPDATE ON audit_seals
       BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_seals_append_only_delete BEFORE DELETE ON audit_seals
       BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only: DELETE refused'); END""",
]
_SQLITE_LOG_UPDATE_TRIGGER = """CREATE TRIGGER audit_log_append_only_update
       BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END"""


def _backfill_postgresql() -> None:
    for trigger in _APPEND_ONLY_TRIGGERS:
        op.execute(f"ALTER TABLE audit_log DISABLE TRIGGER {trigger}")
    # The owner is held by forced RLS, and no policy allows UPDATE: lift it for this statement.
    op.execute("ALTER TABLE audit_log NO FORCE ROW LEVEL SECURITY")
    op.execute(f"UPDATE audit_log SET row_hash = {PG_ROW_HASH} WHERE row_hash IS NULL")
    op.execute("ALTER TABLE audit_log FORCE ROW LEVEL SECURITY")
    for trigger in _APPEND_ONLY_TRIGGERS:
        op.execute(f"ALTER TABLE audit_log ENABLE TRIGGER {trigger}")


def _backfill_sqlite() -> None:
    bind = op.get_bind()
    op.execute("DROP TRIGGER audit_log_append_only_update")
    rows = bind.exec_driver_sql(
        "SELECT id, event_id, event_json FROM audit_log WHERE row_hash IS NULL"
    ).fetchall()
    if rows:
        bind.exec_driver_sql(
            "UPDATE audit_log SET row_hash = ? WHERE id = ?",
            [
                (row_hash(uuid.UUID(str(event_id)), event_json), id_)
                for id_, event_id, event_json in rows
            ],
        )
    op.execute(_SQLITE_LOG_UPDATE_TRIGGER)


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("row_hash", sa.LargeBinary(), nullable=True))
    op.create_table(
        "audit_seals",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("ids", sa.LargeBinary(), nullable=False),
        sa.Column("row_hashes", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_audit_seals_last_id", "audit_seals", ["last_id"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        _backfill_postgresql()
        for statement in _POSTGRESQL_SEALS:
            op.execute(statement)
    else:
        _backfill_sqlite()
        for statement in _SQLITE_SEALS:
            op.execute(statement)


def downgrade() -> None:
    # Development databases only: drops every seal. The sealer role stays (cluster-wide).
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.drop_table("audit_seals")
    if postgresql:
        op.execute("DROP FUNCTION auditevt_refuse_seal_change()")
        op.execute("DROP POLICY audit_log_select_sealer ON audit_log")
    else:
        # SQLite rebuilds nothing for DROP COLUMN, but refuses it while a trigger names it.
        op.execute("DROP TRIGGER audit_log_append_only_update")
    op.drop_column("audit_log", "row_hash")
    if not postgresql:
        op.execute(_SQLITE_LOG_UPDATE_TRIGGER)
