"""Least privilege per database: roles of this database only, column grants, CONNECT, cursors.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

On PostgreSQL:

- creates the NOLOGIN roles ``auditevt_app_<database>`` and ``auditevt_relay_<database>``
  (``audit_middleware.database_roles`` names them) and grants them this database's tables, and
  nothing of any other database's;
- takes every privilege on the tables away from the cluster-wide ``auditevt_app`` and
  ``auditevt_relay`` of revision 0001, which every database shared (their members must be made
  members of the new roles: the migration logs which login roles are affected);
- lets both roles UPDATE only the delivery columns of ``audit_outbox`` (lease, attempts,
  schedule, error, dead letter), never ``payload``, ``event_id`` or ``organization_id``;
- makes CONNECT on this database explicit: granted to both roles and to the migrating role,
  revoked from PUBLIC (when the migrating role owns the database; otherwise it logs the two
  statements for the owner to run);
- on both dialects, replaces the index on (organization_id, timestamp, id) by one on
  (organization_id, timestamp, event_id): the reader's keyset no longer involves the global id.

Tables must be in schema ``public``, the one every statement names.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from audit_middleware.storage._roles import database_roles

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

logger = logging.getLogger("audit_middleware")

SCHEMA = "public"
LEGACY_ROLES = ("auditevt_app", "auditevt_relay")

# What the outbox code (storage/_outbox.py) updates: leasing, rescheduling, dead-lettering and
# re-driving a row. payload, event_id, audit_id, organization_id and created_at stay as written.
DELIVERY_COLUMNS = (
    "lease_owner",
    "lease_expires_at",
    "attempts",
    "next_attempt_at",
    "last_error",
    "dead_lettered_at",
)

_OLD_INDEX = ("ix_audit_log_org_ts_id", ["organization_id", "timestamp", "id"])
_NEW_INDEX = ("ix_audit_log_org_ts_event", ["organization_id", "timestamp", "event_id"])

# SQLSTATEs a concurrent CREATE ROLE of the same name ends in: it exists, which is the goal.
_ROLE_EXISTS = ("42710", "23505")  # duplicate_object, unique_violation


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _role_exists(conn: Connection, name: str) -> bool:
    found = conn.execute(
        sa.text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :name"), {"name": name}
    )
    return found.first() is not None


def _create_role(conn: Connection, name: str) -> None:
    if _role_exists(conn, name):
        return  # made by a DBA beforehand, or by an earlier run: used as it is
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(f"CREATE ROLE {_quote(conn, name)} NOLOGIN")
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        if getattr(exc.orig, "sqlstate", None) not in _ROLE_EXISTS:
            raise
    else:
        savepoint.commit()


def _tables_in_public(conn: Connection) -> None:
    # A RAISE here becomes a MigrationError naming the problem, and the whole upgrade (0001
    # included, on a fresh database) rolls back.
    op.execute(
        """DO $$
BEGIN
  IF to_regclass('public.audit_log') IS NULL OR to_regclass('public.audit_outbox') IS NULL THEN
    RAISE EXCEPTION 'audit_log and audit_outbox must be in schema public, not %',
      current_schema()
      USING HINT = 'migrate as a role whose search_path starts with public';
  END IF;
END
$$"""
    )


def _privileges(app: str, relay: str) -> list[str]:
    columns = ", ".join(DELIVERY_COLUMNS)
    return [
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {app}, {relay}",
        f"GRANT SELECT, INSERT ON {SCHEMA}.audit_log TO {app}",
        f"GRANT USAGE ON SEQUENCE {SCHEMA}.audit_log_id_seq TO {app}",
        f"GRANT SELECT, INSERT, DELETE ON {SCHEMA}.audit_outbox TO {app}",
        f"GRANT UPDATE ({columns}) ON {SCHEMA}.audit_outbox TO {app}",
        f"GRANT USAGE ON SEQUENCE {SCHEMA}.audit_outbox_id_seq TO {app}",
        f"GRANT SELECT, DELETE ON {SCHEMA}.audit_outbox TO {relay}",
        f"GRANT UPDATE ({columns}) ON {SCHEMA}.audit_outbox TO {relay}",
    ]


def _revoke_all(roles: str) -> list[str]:
    # Table-level REVOKE ALL also takes column privileges away.
    return [
        f"REVOKE ALL ON {SCHEMA}.audit_log, {SCHEMA}.audit_outbox FROM {roles}",
        f"REVOKE ALL ON SEQUENCE {SCHEMA}.audit_log_id_seq, {SCHEMA}.audit_outbox_id_seq "
        f"FROM {roles}",
        f"REVOKE USAGE ON SCHEMA {SCHEMA} FROM {roles}",
    ]


def _owns_database(conn: Connection) -> bool:
    row = conn.exec_driver_sql(
        "SELECT pg_has_role(current_user, d.datdba, 'MEMBER') OR r.rolsuper"
        " FROM pg_catalog.pg_database d, pg_catalog.pg_roles r"
        " WHERE d.datname = current_database() AND r.rolname = current_user"
    ).scalar()
    return bool(row)


def _legacy_members(conn: Connection) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT m.rolname FROM pg_catalog.pg_auth_members a"
            " JOIN pg_catalog.pg_roles g ON g.oid = a.roleid"
            " JOIN pg_catalog.pg_roles m ON m.oid = a.member"
            " WHERE g.rolname IN ('auditevt_app', 'auditevt_relay') ORDER BY 1"
        )
    )
    return [row[0] for row in rows]


def _upgrade_postgresql(conn: Connection) -> None:
    _tables_in_public(conn)
    database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
    roles = database_roles(database)
    for name in (roles.app, roles.relay):
        _create_role(conn, name)
    app, relay, db = _quote(conn, roles.app), _quote(conn, roles.relay), _quote(conn, database)
    legacy = [name for name in LEGACY_ROLES if _role_exists(conn, name)]
    statements = _revoke_all(", ".join(legacy)) if legacy else []
    statements += _privileges(app, relay)
    for statement in statements:
        conn.exec_driver_sql(statement)
    connect = [
        f"GRANT CONNECT ON DATABASE {db} TO {app}, {relay}, CURRENT_USER",
        f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC",
    ]
    if _owns_database(conn):
        for statement in connect:
            conn.exec_driver_sql(statement)
    else:
        logger.warning(
            "CONNECT on database %s is unchanged: the migrating role does not own it; "
            "as its owner, run: %s",
            database,
            "; ".join(connect).replace("CURRENT_USER", "<the migrating role>"),
        )
    members = _legacy_members(conn)
    if members:
        logger.warning(
            "roles %s are members of the shared auditevt_app/auditevt_relay, which no longer "
            "hold privileges in database %s: GRANT %s (or %s) TO each that uses it",
            ", ".join(members),
            database,
            roles.app,
            roles.relay,
        )


def _swap_index(old: tuple[str, list[str]], new: tuple[str, list[str]], schema: str | None) -> None:
    # IF NOT EXISTS: on a large table a DBA may build the index beforehand, CONCURRENTLY, so the
    # migration's transaction does not hold writes back while it is built (docs/security.md).
    op.create_index(new[0], "audit_log", new[1], schema=schema, if_not_exists=True)
    op.drop_index(old[0], table_name="audit_log", schema=schema, if_exists=True)


def upgrade() -> None:
    conn = op.get_bind()
    postgresql = conn.dialect.name == "postgresql"
    if postgresql:
        _upgrade_postgresql(conn)
    _swap_index(_OLD_INDEX, _NEW_INDEX, SCHEMA if postgresql else None)


def downgrade() -> None:
    # Back to 0001's grants: the shared roles again, CONNECT for PUBLIC. The per-database roles
    # are dropped unless something else of theirs still depends on them.
    conn = op.get_bind()
    postgresql = conn.dialect.name == "postgresql"
    _swap_index(_NEW_INDEX, _OLD_INDEX, SCHEMA if postgresql else None)
    if not postgresql:
        return
    database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
    roles = database_roles(database)
    app, relay, db = _quote(conn, roles.app), _quote(conn, roles.relay), _quote(conn, database)
    for name in LEGACY_ROLES:
        _create_role(conn, name)
    statements = [
        *_revoke_all(f"{app}, {relay}"),
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO auditevt_app, auditevt_relay",
        f"GRANT SELECT, INSERT ON {SCHEMA}.audit_log TO auditevt_app",
        f"GRANT USAGE ON SEQUENCE {SCHEMA}.audit_log_id_seq TO auditevt_app",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {SCHEMA}.audit_outbox TO auditevt_app",
        f"GRANT USAGE ON SEQUENCE {SCHEMA}.audit_outbox_id_seq TO auditevt_app",
        f"GRANT SELECT, UPDATE, DELETE ON {SCHEMA}.audit_outbox TO auditevt_relay",
    ]
    if _owns_database(conn):
        statements += [
            f"GRANT CONNECT ON DATABASE {db} TO PUBLIC",
            f"REVOKE CONNECT ON DATABASE {db} FROM {app}, {relay}",
        ]
    for statement in statements:
        conn.exec_driver_sql(statement)
    for name in (app, relay):
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(f"DROP ROLE {name}")
        except sa.exc.DBAPIError:
            savepoint.rollback()  # privileges elsewhere (granted by a DBA): the role stays
        else:
            savepoint.commit()
