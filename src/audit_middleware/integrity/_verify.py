"""``verify_database``: recompute every row hash, every seal and the chain, and say what differs.

The rows are read once, in id order, beside the seals ordered by range (a merge): one seal's
sealed leaves are in memory at a time. Each row is checked three ways: its content against the
hash written with it, its column copies against its ``event_json``, and its hash against the one
its seal sealed (which names an altered row even when the attacker rewrote ``row_hash`` too).
Sealed ids that no row carries any more are deleted rows; rows in a sealed range that the seal
does not list were inserted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy.exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_middleware._exceptions import IntegrityError, map_database_error
from audit_middleware.integrity._chain import (
    StoredSeal,
    check_chain,
    check_published,
    sealed_leaves,
)
from audit_middleware.integrity._columns import COLUMNS, column_mismatches, parse_event
from audit_middleware.integrity._keys import PublicKeys
from audit_middleware.integrity._metrics import IntegrityStats
from audit_middleware.integrity._report import Finding, VerifyReport
from audit_middleware.integrity._retired import retire_removed_rows
from audit_middleware.integrity._rowhash import row_hash
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_SEALS, qualified

__all__ = ["DEFAULT_MAX_UNSEALED_AGE", "verify_database"]

DEFAULT_MAX_UNSEALED_AGE = 3600.0
"""Unsealed rows older than this many seconds are a problem (the sealer stalled, or seals
were removed); younger ones are a note."""

_SEAL_COLUMNS = (
    AUDIT_SEALS.c.seq,
    AUDIT_SEALS.c.first_id,
    AUDIT_SEALS.c.last_id,
    AUDIT_SEALS.c.row_count,
    AUDIT_SEALS.c.key_id,
    AUDIT_SEALS.c.body,
    AUDIT_SEALS.c.signature,
)
_ROW_COLUMNS = [
    AUDIT_LOG.c.id,
    AUDIT_LOG.c.event_id,
    AUDIT_LOG.c.event_json,
    AUDIT_LOG.c.row_hash,
    AUDIT_LOG.c.inserted_at,
    *(AUDIT_LOG.c[name] for name in COLUMNS),
]


class _Merge:
    """Walks the seals alongside the rows, one seal's leaves loaded at a time."""

    def __init__(self, conn: AsyncConnection, seals: Sequence[StoredSeal]) -> None:
        self._conn = conn
        # Ranges as the signed bodies say (or the columns, for a body that does not parse).
        self._ranges = sorted(
            (
                (s.seal.first_id, s.seal.last_id, s)
                if s.seal is not None
                else (int(str(s.columns["first_id"])), int(str(s.columns["last_id"])), s)
                for s in seals
                if s.columns is not None
            ),
            key=lambda entry: (entry[0], entry[2].seq),
        )
        self._index = 0
        self._loaded = -1
        self._leaves: dict[int, bytes] | None = None
        self._seen: set[int] = set()
        self.findings: list[Finding] = []
        self.sealed_up_to = max((last for _, last, _ in self._ranges), default=0)

    async def seal_for(self, row_id: int) -> tuple[StoredSeal | None, dict[int, bytes] | None]:
        while self._index < len(self._ranges) and self._ranges[self._index][1] < row_id:
            await self._finish()
        if self._index == len(self._ranges):
            return None, None
        first, _last, item = self._ranges[self._index]
        if row_id < first:
            return None, None
        await self._load()
        return item, self._leaves

    def saw(self, row_id: int) -> None:
        self._seen.add(row_id)

    async def _load(self) -> None:
        if self._loaded == self._index:
            return
        self._loaded = self._index
        item = self._ranges[self._index][2]
        if not item.trusted:
            return
        row = (
            await self._conn.execute(
                select(AUDIT_SEALS.c.ids, AUDIT_SEALS.c.row_hashes).where(
                    AUDIT_SEALS.c.seq == item.seq
                )
            )
        ).one()
        leaves, finding = sealed_leaves(item, bytes(row[0]), bytes(row[1]))
        if finding is not None:
            item.trusted = False
            self.findings.append(finding)
        self._leaves = leaves

    async def close(self) -> None:
        while self._index < len(self._ranges):
            await self._finish()

    async def _finish(self) -> None:
        await self._load()  # a seal none of whose rows is left must still be read
        item = self._ranges[self._index][2]
        if self._leaves is not None:
            for row_id in sorted(set(self._leaves) - self._seen):
                self.findings.append(
                    Finding(
                        "deleted_row",
                        f"row {row_id}, sealed in seal {item.seq}, is missing",
                        row_id=row_id,
                        seal=item.seq,
                    )
                )
        self._leaves = None
        self._seen = set()
        self._index += 1


def _check_row(
    row: Any,
    seal: StoredSeal | None,
    leaves: dict[int, bytes] | None,
    content: bool,
    postgresql: bool,
) -> Finding | None:
    row_id = row.id
    computed = row_hash(uuid.UUID(str(row.event_id)), row.event_json)
    reasons = []
    if row.row_hash is not None and bytes(row.row_hash) != computed:
        reasons.append("event_id/event_json no longer match the row_hash written with them")
    if content:
        event = parse_event(row.event_json)
        if isinstance(event, str):
            reasons.append(event)
        else:
            mismatches = column_mismatches(event, row, postgresql)
            if mismatches:
                reasons.append("columns disagree with event_json: " + "; ".join(mismatches))
    if leaves is not None and seal is not None:
        sealed = leaves.get(row_id)
        if sealed is None:
            return Finding(
                "inserted_row",
                f"row {row_id} lies in the range of seal {seal.seq} but was not sealed in it",
                row_id=row_id,
                seal=seal.seq,
            )
        if sealed != computed:
            reasons.append(f"its content differs from what seal {seal.seq} sealed")
    if not reasons:
        return None
    where = f" (seal {seal.seq})" if seal is not None else ""
    return Finding(
        "altered_row",
        f"row {row_id}{where}: {'; '.join(reasons)}",
        row_id=row_id,
        seal=None if seal is None else seal.seq,
    )


async def _load_seals(conn: AsyncConnection) -> list[StoredSeal]:
    result = await conn.execute(select(*_SEAL_COLUMNS).order_by(AUDIT_SEALS.c.seq))
    return [
        StoredSeal(
            seq=row.seq,
            body=row.body,
            signature=bytes(row.signature),
            columns=dict(row._mapping),
        )
        for row in result
    ]


async def verify_database(
    engine: AsyncEngine,
    keys: PublicKeys,
    *,
    organization: int | None = None,
    published: str | None = None,
    max_unsealed_age: float = DEFAULT_MAX_UNSEALED_AGE,
    stats: IntegrityStats | None = None,
) -> VerifyReport:
    """Verify ``audit_log`` and ``audit_seals`` behind ``engine`` against the trusted ``keys``.

    ``organization`` limits the row content checks to that organization's rows (the chain, the
    seals, deleted and inserted rows are checked for all). ``published`` is a directory a
    ``DirectorySink`` publishes to: seals missing from the database or differing from it are
    named. The role needs to read every row (a superuser, or a member of ``auditevt_sealer``).
    Raises ``IntegrityError`` when the database cannot be read; what it finds is the report.
    """
    postgresql = engine.dialect.name == "postgresql"
    findings: list[Finding] = []
    rows_checked = unsealed = 0
    oldest: datetime | None = None
    oldest_id: int | None = None
    try:
        async with qualified(engine).connect() as conn:
            if postgresql:
                # One snapshot for the seals and the rows they cover.
                await conn.exec_driver_sql(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                )
            seals = await _load_seals(conn)
            findings.extend(check_chain(seals, keys))
            if published is not None:
                findings.extend(check_published(seals, published, keys))
            merge = _Merge(conn, seals)
            query = select(*_ROW_COLUMNS).order_by(AUDIT_LOG.c.id)
            result = await conn.stream(query.execution_options(yield_per=2000))
            async for partition in result.partitions():
                for row in partition:
                    seal, leaves = await merge.seal_for(row.id)
                    if leaves is not None:
                        merge.saw(row.id)
                    content = organization is None or row.organization_id == organization
                    rows_checked += content
                    finding = _check_row(row, seal, leaves, content, postgresql)
                    if finding is not None:
                        findings.append(finding)
                    if seal is None:
                        if row.id <= merge.sealed_up_to:
                            findings.append(
                                Finding(
                                    "inserted_row",
                                    f"row {row.id} is in no seal, yet later ids are sealed",
                                    row_id=row.id,
                                )
                            )
                        else:
                            unsealed += 1
                            written = row.inserted_at
                            written = (
                                written.replace(tzinfo=UTC) if written.tzinfo is None else written
                            )
                            if oldest is None or written < oldest:
                                oldest, oldest_id = written, row.id
            await merge.close()
            findings.extend(merge.findings)
            if postgresql:
                findings = await retire_removed_rows(conn, findings)
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, IntegrityError, "verify audit_log") from exc
    age = None if oldest is None else max(0.0, time.time() - oldest.timestamp())
    if unsealed and age is not None:
        findings.append(
            Finding(
                "unsealed_rows",
                f"{unsealed} row(s) not sealed yet; the oldest, row {oldest_id}, was written "
                f"{age:.0f} s ago",
                row_id=oldest_id,
                problem=age > max_unsealed_age,
            )
        )
    report = VerifyReport(
        findings=tuple(findings),
        rows_checked=rows_checked,
        seals_checked=len(seals),
        unsealed_rows=unsealed,
        oldest_unsealed_age=age,
    )
    if stats is not None:
        stats.verify_runs += 1
        stats.verify_failures += not report.ok
    return report
