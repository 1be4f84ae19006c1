"""Sealed rows that retention removed are retired, not deleted.

``auditevt retention`` drops whole months and records each removal in ``audit_retention_log``
with the id range, the row count and the SHA-256 of the removed ids (8-byte big-endian, in
order). Verification names every sealed id that no row carries as ``deleted_row``; the ids that
one recorded removal accounts for exactly (same count, same digest) become one
``retired_rows`` note instead. One row more or less, or another row of that range deleted as
well, and the digest differs: every missing id of the range stays a ``deleted_row``.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from audit_middleware.integrity._report import Finding

__all__ = ["ids_digest", "retire_removed_rows"]

_REMOVALS = text(
    "SELECT partition_name, min_id, max_id, row_count, ids_sha256, removed_at"
    " FROM public.audit_retention_log WHERE min_id IS NOT NULL AND ids_sha256 IS NOT NULL"
    " ORDER BY id"
)


def ids_digest(ids: list[int]) -> bytes:
    """SHA-256 of ``ids`` in order, each 8 bytes big-endian (PostgreSQL's ``int8send``)."""
    return hashlib.sha256(b"".join(i.to_bytes(8, "big", signed=True) for i in ids)).digest()


async def retire_removed_rows(conn: AsyncConnection, findings: list[Finding]) -> list[Finding]:
    """``findings`` with the deleted rows that a recorded retention removal explains replaced
    by one note per removal (PostgreSQL; unchanged where no removal is recorded)."""
    installed = await conn.execute(text("SELECT to_regclass('public.audit_retention_log')"))
    if installed.scalar_one() is None:
        return findings
    removals = (await conn.execute(_REMOVALS)).all()
    deleted = sorted(f.row_id for f in findings if f.kind == "deleted_row" and f.row_id is not None)
    retired: set[int] = set()
    notes: list[Finding] = []
    for name, low, high, count, digest, removed_at in removals:
        ids = [i for i in deleted if low <= i <= high]
        if len(ids) == count and ids_digest(ids) == bytes(digest):
            retired.update(ids)
            notes.append(
                Finding(
                    "retired_rows",
                    f"{count} sealed row(s) of {name} (ids {low} to {high}) were removed by "
                    f"retention at {removed_at.isoformat()}; the recorded digest matches",
                    problem=False,
                )
            )
    kept = [f for f in findings if not (f.kind == "deleted_row" and f.row_id in retired)]
    return kept + notes
