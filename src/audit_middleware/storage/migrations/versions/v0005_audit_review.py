"""audit_review: the append-only, org-scoped review trail of break-glass and impersonation events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A new table only: no existing row is touched. On PostgreSQL it gets row-level security, forced
so its owner is held by it too (reads see the transaction's organization, inserts must carry
it), triggers that refuse UPDATE, DELETE and TRUNCATE even for the owner, and the grants
``audit_log`` has for this database's application role (SELECT and INSERT; revision 0002 names
it, ``audit_middleware.database_roles``), nothing for the relay role. SQLite gets the triggers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit_middleware.storage._roles import database_roles

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SCHEMA = "public"

# The organization a transaction is scoped to; unset or '' is NULL, which equals nothing.
_ORG_SETTING = "NULLIF(current_setting('auditevt.organization_id', true), '')"

_POSTGRESQL_HARDENING = [
    f"ALTER TABLE {SCHEMA}.audit_review ENABLE ROW LEVEL SECURITY",
    f"ALTER TABLE {SCHEMA}.audit_review FORCE ROW LEVEL SECURITY",
    f"""CREATE POLICY audit_review_select_own_organization ON {SCHEMA}.audit_review FOR SELECT
        USING (organization_id = {_ORG_SETTING}::bigint)""",
    # Stricter than audit_log's writer policy: a review is always written by an admin of one
    # organization, so an unscoped transaction may insert nothing.
    f"""CREATE POLICY audit_review_insert_own_organization ON {SCHEMA}.audit_review FOR INSERT
        WITH CHECK (organization_id = {_ORG_SETTING}::bigint)""",
    # Its own function (auditevt_refuse_change names audit_log, and 0001 owns it).
    f"""CREATE FUNCTION {SCHEMA}.auditevt_review_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_review is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'a review is corrected by recording a new one, never by changing the old';
END
$$""",
    f"""CREATE TRIGGER audit_review_append_only_statement
        BEFORE UPDATE OR DELETE OR TRUNCATE ON {SCHEMA}.audit_review
        FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.auditevt_review_refuse_change()""",
    f"""CREATE TRIGGER audit_review_append_only_row
        BEFORE UPDATE OR DELETE ON {SCHEMA}.audit_review
        FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.auditevt_review_refuse_change()""",
]


def _grants(app: str) -> list[str]:
    return [
        f"GRANT SELECT, INSERT ON {SCHEMA}.audit_review TO {app}",
        f"GRANT USAGE ON SEQUENCE {SCHEMA}.audit_review_id_seq TO {app}",
    ]


_SQLITE_HARDENING = [
    """CREATE TRIGGER audit_review_append_only_update BEFORE UPDATE ON audit_review
       BEGIN SELECT RAISE(ABORT, 'audit_review is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_review_append_only_delete BEFORE DELETE ON audit_review
       BEGIN SELECT RAISE(ABORT, 'audit_review is append-only: DELETE refused'); END""",
]


def upgrade() -> None:
    conn = op.get_bind()
    postgresql = conn.dialect.name == "postgresql"
    op.create_table(
        "audit_review",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.Uuid(as_uuid=True), nullable=False),
        sa.Column("audit_id", sa.BigInteger(), nullable=False),
        sa.Column("reviewer_id", sa.BigInteger(), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column(
            "reviewed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA if postgresql else None,
    )
    op.create_index(
        "ix_audit_review_org_event",
        "audit_review",
        ["organization_id", "event_id"],
        schema=SCHEMA if postgresql else None,
    )
    if not postgresql:
        for statement in _SQLITE_HARDENING:
            op.execute(statement)
        return
    database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
    app = conn.dialect.identifier_preparer.quote(database_roles(database).app)
    for statement in [*_POSTGRESQL_HARDENING, *_grants(app)]:
        op.execute(statement)


def downgrade() -> None:
    # Drops the review trail: only for development databases.
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.drop_table("audit_review", schema=SCHEMA if postgresql else None)
    if postgresql:
        op.execute(f"DROP FUNCTION {SCHEMA}.auditevt_review_refuse_change()")
