"""What ``AuditStore.check()`` asks the database: migrated, writable, held by row-level security."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from audit_middleware._exceptions import StoreError, StoreSchemaMissing
from audit_middleware.storage._roles import database_roles

__all__ = ["check_postgresql", "check_sqlite_schema"]

# Names are schema-qualified, as in _store.py: a TEMP table of the same name must not answer.


async def check_sqlite_schema(conn: AsyncConnection) -> None:
    """Raise ``StoreError`` naming the missing tables."""
    result = await conn.exec_driver_sql(
        "SELECT name FROM main.sqlite_master WHERE type = 'table' "
        "AND name IN ('audit_log', 'audit_outbox')"
    )
    found = {row[0] for row in result}
    missing = sorted({"audit_log", "audit_outbox"} - found)
    if missing:
        raise StoreSchemaMissing(
            f"table(s) {', '.join(missing)} missing: run `auditevt migrate --database-url URL`"
        )


_PG_CHECK = """\
SELECT current_database(), current_user, r.rolsuper, r.rolbypassrls,
       to_regclass('public.audit_log') IS NOT NULL, to_regclass('public.audit_outbox') IS NOT NULL,
       c.relrowsecurity, c.relforcerowsecurity,
       CASE WHEN c.oid IS NULL THEN false
            ELSE pg_has_role(current_user, c.relowner, 'USAGE') END,
       CASE WHEN c.oid IS NULL THEN false
            ELSE has_table_privilege(c.oid, 'INSERT') END,
       CASE WHEN to_regclass('public.audit_outbox') IS NULL THEN false
            ELSE has_table_privilege(to_regclass('public.audit_outbox'), 'INSERT') END,
       CASE WHEN to_regclass('public.audit_log_id_seq') IS NULL THEN false
            ELSE has_sequence_privilege(to_regclass('public.audit_log_id_seq'), 'USAGE') END,
       CASE WHEN to_regclass('public.audit_outbox_id_seq') IS NULL THEN false
            ELSE has_sequence_privilege(to_regclass('public.audit_outbox_id_seq'), 'USAGE') END
FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass('public.audit_log')
WHERE r.rolname = current_user"""


async def check_postgresql(conn: AsyncConnection) -> tuple[str, ...]:
    """The reasons the role bypasses RLS; raise ``StoreError`` when it cannot write at all."""
    row = (await conn.exec_driver_sql(_PG_CHECK)).one()
    await conn.rollback()
    database, user, superuser, bypassrls, has_log, has_outbox, rls, forced, owner, *grants = tuple(
        row
    )
    if not (has_log and has_outbox):
        raise StoreSchemaMissing(
            "tables audit_log and audit_outbox missing: run `auditevt migrate --database-url URL`"
        )
    lacking = [
        what
        for what, granted in zip(
            (
                "INSERT on audit_log",
                "INSERT on audit_outbox",
                "USAGE on audit_log_id_seq",
                "USAGE on audit_outbox_id_seq",
            ),
            grants,
            strict=True,
        )
        if not granted
    ]
    if lacking:
        raise StoreError(
            f"role {user!r} cannot write the audit log (no {', '.join(lacking)}): "
            f'GRANT {database_roles(database).app} TO "{user}" (the role `auditevt migrate` '
            "creates for this database), "
            "or grant those privileges"
        )
    reasons = []
    if superuser:
        reasons.append(f"role {user!r} is a superuser")
    elif bypassrls:  # superusers have it too; one reason is enough
        reasons.append(f"role {user!r} has BYPASSRLS")
    if not rls:
        reasons.append("row-level security is not enabled on audit_log")
    elif owner and not forced:
        reasons.append(f"role {user!r} owns audit_log, which lacks FORCE ROW LEVEL SECURITY")
    return tuple(reasons)
