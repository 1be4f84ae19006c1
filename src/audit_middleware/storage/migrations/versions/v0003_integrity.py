"""Tamper evidence: a content hash on every audit row, and the append-only seals table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- ``audit_log.row_hash``: SHA-256 over a domain tag, the event id and the event JSON
  (``audit_middleware.integrity._rowhash``), written by the store with each row. Rows written
  before this revision get theirs here, computed from their own content, so no row is lost or
  changed otherwise. On PostgreSQL that is one ``UPDATE`` with the append-only triggers and
  ``FORCE ROW LEVEL SECURITY`` lifted for the length of this transaction only; on SQLite the
  update trigger is dropped and recreated around it.
- ``audit_seals``: one signed seal per sealed id range, append-only like ``audit_log``.
- PostgreSQL: the role ``auditevt_sealer_<database>`` (NOLOGIN, named like revision 0002's
  roles, ``audit_middleware.integrity.sealer_role``) may read every organization's rows (a
  policy of its own), append seals and connect; ``auditevt seal`` and ``auditevt verify`` run as
  a member of it.

The column stays nullable: a writer of an older version still running during a rolling upgrade
writes rows without a hash, and the sealer and the verifier compute it from the row's content.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

from audit_middleware.integrity._role import sealer_role
from audit_middleware.integrity._rowhash import PG_ROW_HASH, row_hash
from audit_middleware.storage.migrations.versions.v0002_least_privilege import (
    SCHEMA,
    _create_role,
    _owns_database,
    _quote,
    logger,
)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_APPEND_ONLY_TRIGGERS = ("audit_log_append_only_statement", "audit_log_append_only_row")

_REFUSE_SEAL_CHANGE = """CREATE FUNCTION public.auditevt_refuse_seal_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_seals is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'seals are never changed or removed; auditevt verify checks them';
END
$$"""


def _postgresql_seals(sealer: str) -> list[str]:
    return [
        _REFUSE_SEAL_CHANGE,
        """CREATE TRIGGER audit_seals_append_only_statement
            BEFORE UPDATE OR DELETE OR TRUNCATE ON public.audit_seals
            FOR EACH STATEMENT EXECUTE FUNCTION public.auditevt_refuse_seal_change()""",
        """CREATE TRIGGER audit_seals_append_only_row
            BEFORE UPDATE OR DELETE ON public.audit_seals
            FOR EACH ROW EXECUTE FUNCTION public.auditevt_refuse_seal_change()""",
        # The sealer and the verifier hash every organization's rows: a read policy of their
        # own, for members of this role only (the application's policies are unchanged).
        f"CREATE POLICY audit_log_select_sealer ON public.audit_log FOR SELECT TO {sealer}"
        " USING (true)",
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {sealer}",
        f"GRANT SELECT ON {SCHEMA}.audit_log TO {sealer}",
        f"GRANT SELECT ON SEQUENCE {SCHEMA}.audit_log_id_seq TO {sealer}",
        f"GRANT SELECT, INSERT ON {SCHEMA}.audit_seals TO {sealer}",
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
        op.execute(f"ALTER TABLE public.audit_log DISABLE TRIGGER {trigger}")
    # The owner is held by forced RLS, and no policy allows UPDATE: lift it for this statement.
    op.execute("ALTER TABLE public.audit_log NO FORCE ROW LEVEL SECURITY")
    op.execute(f"UPDATE public.audit_log SET row_hash = {PG_ROW_HASH} WHERE row_hash IS NULL")
    op.execute("ALTER TABLE public.audit_log FORCE ROW LEVEL SECURITY")
    for trigger in _APPEND_ONLY_TRIGGERS:
        op.execute(f"ALTER TABLE public.audit_log ENABLE TRIGGER {trigger}")


def _sealer_postgresql() -> None:
    conn = op.get_bind()
    database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
    name = sealer_role(database)
    _create_role(conn, name)
    sealer = _quote(conn, name)
    for statement in _postgresql_seals(sealer):
        op.execute(statement)  # not exec_driver_sql: the function body holds a literal %
    connect = f"GRANT CONNECT ON DATABASE {_quote(conn, database)} TO {sealer}"
    if _owns_database(conn):
        conn.exec_driver_sql(connect)
    else:
        logger.warning(
            "the migrating role does not own database %s; as its owner, run: %s", database, connect
        )


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
    postgresql = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgresql else None
    op.add_column(
        "audit_log", sa.Column("row_hash", sa.LargeBinary(), nullable=True), schema=schema
    )
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
        schema=schema,
    )
    op.create_index(
        "ix_audit_seals_last_id", "audit_seals", ["last_id"], unique=True, schema=schema
    )
    if postgresql:
        _backfill_postgresql()
        _sealer_postgresql()
    else:
        _backfill_sqlite()
        for statement in _SQLITE_SEALS:
            op.execute(statement)


def downgrade() -> None:
    # Development databases only: drops every seal. The sealer role stays (cluster-wide).
    postgresql = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgresql else None
    op.drop_table("audit_seals", schema=schema)
    if postgresql:
        op.execute("DROP FUNCTION public.auditevt_refuse_seal_change()")
        op.execute("DROP POLICY audit_log_select_sealer ON public.audit_log")
    else:
        # SQLite rebuilds nothing for DROP COLUMN, but refuses it while a trigger names it.
        op.execute("DROP TRIGGER audit_log_append_only_update")
    op.drop_column("audit_log", "row_hash", schema=schema)
    if not postgresql:
        op.execute(_SQLITE_LOG_UPDATE_TRIGGER)
