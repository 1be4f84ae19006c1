"""Alembic environment for the audit tables; run through ``audit_middleware.migrate()``.

The caller hands over a connection already inside a transaction
(``config.attributes["connection"]``) and holding the migration lock; it commits or rolls
back the whole upgrade. Our version
table is ``auditevt_alembic_version``, so the application's own Alembic history in the same
database is left alone.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

VERSION_TABLE = "auditevt_alembic_version"


def run_migrations_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(_connection, Connection):
    raise RuntimeError(
        "run these migrations with audit_middleware.migrate() or `auditevt migrate`, "
        "which supply the database connection"
    )
run_migrations_online(_connection)
