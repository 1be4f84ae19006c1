"""``EventQuery``: the filtered, org-scoped reads the review app needs beyond ``AuditReader``.

``AuditReader.list_events`` filters on time, actor, entity and action; the review app also
filters on action context, status class and path prefix, looks one event up by ``event_id``,
lists the review queue and streams exports. Those queries live here, on the reader's engine,
with the reader's discipline: every call is one short transaction that first runs
``set_config('auditevt.organization_id', :org, true)``, so PostgreSQL's forced row-level security
admits that organization's rows and no other, and the setting ends with the transaction. The
SQL filters on ``organization_id`` too (what the index serves; the only guard on SQLite).

Exports page by keyset, one transaction per page, so memory stays bounded whatever the size and
no transaction stays open while a slow client downloads.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import sqlalchemy.exc
from sqlalchemy import ColumnElement, Select, exists, literal, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from audit_middleware._exceptions import ReaderError, map_database_error
from audit_middleware.review._filter import EventFilter
from audit_middleware.storage._position import BAD_POSITION, decode_position, encode_position
from audit_middleware.storage._reader import AuditRecord, UnreadableRecord
from audit_middleware.storage._reader import _record as read_record
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_REVIEW, qualified

__all__ = ["REVIEWABLE_CONTEXTS", "EventPage", "EventQuery", "scoped"]

REVIEWABLE_CONTEXTS = ("break_glass", "impersonation")
"""The action contexts whose events wait in the review queue."""

SET_ORGANIZATION = text("SELECT set_config('auditevt.organization_id', :org, true)")
_CURSOR_PREFIX = "r2"
_EXPORT_PAGE = 1000


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a listing, newest first."""

    items: list[AuditRecord | UnreadableRecord]
    """Up to ``limit`` rows, newest ``timestamp`` first (then highest event_id); a row whose event
    this version cannot read is an ``UnreadableRecord`` in its place, as in ``AuditReader``."""
    next_cursor: str | None
    """Pass as ``after`` for the next, older page; ``None`` on the last page."""


@contextlib.asynccontextmanager
async def scoped(engine: AsyncEngine, organization_id: int) -> AsyncIterator[AsyncConnection]:
    """One transaction on ``engine``, scoped to ``organization_id`` for row-level security."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(SET_ORGANIZATION, {"org": str(organization_id)})
        yield conn


class EventQuery:
    """Org-scoped queries of ``audit_log`` on ``engine`` (share ``AuditReader.engine``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgresql = engine.dialect.name == "postgresql"
        # Read-only transactions; every table name schema-qualified, as the reader's.
        self._read_engine = (
            qualified(engine).execution_options(
                isolation_level="READ COMMITTED", postgresql_readonly=True
            )
            if self._postgresql
            else qualified(engine)
        )

    async def page(
        self,
        organization_id: int,
        event_filter: EventFilter,
        *,
        limit: int,
        after: str | None = None,
        unreviewed: bool = False,
    ) -> EventPage:
        """One page of matching events, newest first; ``unreviewed`` gives the review queue."""
        conditions = event_filter.conditions(postgresql=self._postgresql)
        if unreviewed:
            conditions.extend(_queue_conditions())
        if after is not None:
            conditions.append(self._after(after))
        query = self._select(organization_id, conditions).limit(limit + 1)
        rows = await self._rows(organization_id, query)
        items = [read_record(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_position(_CURSOR_PREFIX, _utc(last.timestamp), last.event_id)
        return EventPage(items=items, next_cursor=next_cursor)

    async def get(
        self, organization_id: int, event_id: UUID
    ) -> AuditRecord | UnreadableRecord | None:
        """The organization's event with this ``event_id``, or ``None`` (also for another's)."""
        query = self._select(organization_id, [AUDIT_LOG.c.event_id == event_id])
        rows = await self._rows(organization_id, query)
        return read_record(rows[0]) if rows else None

    async def stream(
        self, organization_id: int, event_filter: EventFilter, *, page_size: int = _EXPORT_PAGE
    ) -> AsyncIterator[AuditRecord | UnreadableRecord]:
        """Every matching event, newest first, fetched ``page_size`` rows per transaction."""
        base = event_filter.conditions(postgresql=self._postgresql)
        cursor: tuple[datetime, UUID] | None = None
        while True:
            conditions = list(base)
            if cursor is not None:
                conditions.append(self._before(*cursor))
            query = self._select(organization_id, conditions).limit(page_size)
            rows = await self._rows(organization_id, query)
            for row in rows:
                yield read_record(row)
            if len(rows) < page_size:
                return
            cursor = (_utc(rows[-1].timestamp), rows[-1].event_id)
            del rows

    def _select(
        self, organization_id: int, conditions: Sequence[ColumnElement[bool]]
    ) -> Select[Any]:
        table = AUDIT_LOG.c
        return (
            select(table.id, table.event_id, table.event_json, table.inserted_at, table.timestamp)
            .where(table.organization_id == organization_id, *conditions)
            .order_by(table.timestamp.desc(), table.event_id.desc())
        )

    def _after(self, after: str) -> ColumnElement[bool]:
        try:
            moment, event_id = decode_position(_CURSOR_PREFIX, after)
        except BAD_POSITION:
            raise ValueError(f"after={after!r} is not a cursor this app wrote") from None
        return self._before(moment, event_id)

    def _before(self, moment: datetime, event_id: UUID) -> ColumnElement[bool]:
        # (timestamp, event_id), what the index holds after 0002: no global row id involved.
        when = moment if self._postgresql else moment.astimezone(UTC)
        return tuple_(AUDIT_LOG.c.timestamp, AUDIT_LOG.c.event_id) < tuple_(
            literal(when, AUDIT_LOG.c.timestamp.type), literal(event_id, AUDIT_LOG.c.event_id.type)
        )

    async def _rows(self, organization_id: int, query: Select[Any]) -> list[Any]:
        try:
            async with scoped(self._read_engine, organization_id) as conn:
                return list((await conn.execute(query)).all())
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, ReaderError, "read audit rows") from exc


def _queue_conditions() -> list[ColumnElement[bool]]:
    reviewed = exists().where(
        AUDIT_REVIEW.c.organization_id == AUDIT_LOG.c.organization_id,
        AUDIT_REVIEW.c.event_id == AUDIT_LOG.c.event_id,
    )
    return [AUDIT_LOG.c.action_context.in_(REVIEWABLE_CONTEXTS), ~reviewed]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
