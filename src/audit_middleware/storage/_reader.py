"""``AuditReader``: org-scoped, keyset-paginated reads of ``audit_log`` for admin endpoints.

On PostgreSQL every call is one read-only transaction that first scopes itself to the
organization with ``set_config('auditevt.organization_id', ..., true)``; the row-level security
policies of the migrations then admit that organization's rows and no others, and the setting
ends with the transaction, so a pooled connection never carries a tenant into the next request.
The query also filters on ``organization_id`` itself, which is what the index serves. SQLite has
no row-level security: there the SQL filter is the only guard.

Pages are keyed on (``timestamp``, ``event_id``) within the organization, served by the index
``ix_audit_log_org_ts_event``: a cursor holds only what the page it ends already showed, never
the global ``audit_log.id``, whose gaps would tell an admin how much every other organization
wrote meanwhile. Filters are checked before any query: a bad one is a ``ConfigurationError`` (a
``ValueError`` and a ``TypeError`` too) naming the parameter, never a database error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pydantic
import sqlalchemy.exc
from sqlalchemy import ColumnElement, literal, select, text, tuple_
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import ConfigurationError, ReaderError, map_database_error
from audit_middleware.storage._closing import EngineCloser
from audit_middleware.storage._position import BAD_POSITION, decode_position, encode_position
from audit_middleware.storage._store import create_engine
from audit_middleware.storage._tables import AUDIT_LOG, qualified
from auditevt import Action, Event, Timestamp

__all__ = ["MAX_PAGE_SIZE", "AuditReader", "AuditRecord", "Cursor", "Page", "UnreadableRecord"]

MAX_PAGE_SIZE = 1000
"""The most rows one ``list_events`` call returns."""
_MAX_FILTER_LENGTH = 256  # the longest entity_type filter, in characters

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Version 1 carried the global audit_log.id; such cursors are refused, not misread.
_CURSOR_VERSION = "2"
_MAX_CURSOR_LENGTH = 96  # a version-2 cursor is about 70 characters
_SET_ORGANIZATION = text("SELECT set_config('auditevt.organization_id', :org, true)")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a listing: the last row seen, by (``timestamp``, ``event_id``).

    Pass ``Page.next_cursor`` back as ``after``; its text form is opaque and URL-safe, and holds
    nothing the page did not show (no global row id).
    """

    timestamp: datetime
    """The row's ``timestamp`` column (UTC, microseconds)."""
    event_id: UUID
    """The row's ``event_id``, which breaks ties between equal timestamps."""

    def __post_init__(self) -> None:
        if not isinstance(self.timestamp, datetime) or self.timestamp.tzinfo is None:
            raise ConfigurationError(
                f"Cursor timestamp={self.timestamp!r} must be an aware datetime"
            )
        if not isinstance(self.event_id, UUID):
            raise ConfigurationError(f"Cursor event_id={self.event_id!r} must be a uuid.UUID")

    def encode(self) -> str:
        """The cursor as opaque URL-safe text."""
        return encode_position(_CURSOR_VERSION, self.timestamp, self.event_id)

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """Read a cursor written by :meth:`encode`; ``ConfigurationError`` names a bad one."""
        if not isinstance(value, str):
            raise ConfigurationError(f"after={value!r} must be a cursor string")
        if len(value) > _MAX_CURSOR_LENGTH:
            raise ConfigurationError(
                f"after={_shown(value)} ({len(value)} characters) is not a cursor"
            )
        try:
            moment, event_id = decode_position(_CURSOR_VERSION, value)
            return cls(timestamp=moment, event_id=event_id)
        except BAD_POSITION as exc:
            raise ConfigurationError(f"after={value!r} is not a cursor this reader wrote") from exc


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row: the event exactly as written, with its delivery id and insert time."""

    id: int
    """``audit_log.id``: global across organizations, so keep it out of what tenants see."""
    event_id: UUID
    """The idempotency key Telemetry deduplicates on."""
    event: Event
    """The event, parsed from the verbatim ``event_json`` (nanoseconds and offset intact)."""
    inserted_at: datetime
    """When the database stored the row (UTC)."""


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    """An audit row whose ``event_json`` this version cannot read, listed instead of hidden.

    The log is append-only, so one such row (an event written by a newer or a foreign writer,
    or a damaged one) stays for good: it must neither stop the listing nor disappear from it.
    """

    id: int
    """``audit_log.id``."""
    event_id: UUID
    """The idempotency key Telemetry deduplicates on."""
    event_json: str
    """The stored text, verbatim."""
    error: str
    """Why it could not be read: each validation error as ``field: message``."""
    inserted_at: datetime
    """When the database stored the row (UTC)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, newest first."""

    items: list[AuditRecord | UnreadableRecord]
    """Up to ``limit`` rows, newest ``timestamp`` first (then highest ``event_id``); a row whose
    event cannot be read is an :class:`UnreadableRecord` in its place."""
    next_cursor: str | None
    """Pass as ``after`` for the next, older page; ``None`` on the last page."""


class AuditReader(EngineCloser):
    """Lists one organization's audit events: filters, newest first, keyset pagination.

    ``AuditReader(engine)`` shares an engine (``AuditStore.engine`` for instance) and leaves it
    open on :meth:`aclose`; ``AuditReader(url)`` creates one and disposes of it. Connect as the
    application role (a member of ``database_roles(name).app``), never as a role that bypasses
    row-level security, or the database stops enforcing the organization boundary.
    """

    def __init__(self, engine_or_url: AsyncEngine | str | URL, **engine_kwargs: Any) -> None:
        if isinstance(engine_or_url, AsyncEngine):
            if engine_kwargs:
                raise TypeError("engine_kwargs apply only when a URL is given")
            engine, self._owns_engine = engine_or_url, False
        elif isinstance(engine_or_url, str | URL):
            engine, self._owns_engine = create_engine(engine_or_url, **engine_kwargs), True
        else:
            raise TypeError(
                "engine_or_url must be an AsyncEngine, str or URL, "
                f"not {type(engine_or_url).__name__}"
            )
        self._engine = engine
        self._postgresql = engine.dialect.name == "postgresql"
        if not self._postgresql and engine.dialect.name != "sqlite":
            raise ConfigurationError(f"unsupported database {engine.dialect.name!r}")
        # A real transaction (so set_config(..., true) lasts for the query), read-only; every
        # table name schema-qualified (see _tables.py).
        self._read_engine = (
            qualified(engine).execution_options(
                isolation_level="READ COMMITTED", postgresql_readonly=True
            )
            if self._postgresql
            else qualified(engine)
        )

    @property
    def engine(self) -> AsyncEngine:
        """The engine the reader queries through."""
        return self._engine

    async def list_events(
        self,
        organization_id: int,
        *,
        entity_type: str | None = None,
        entity_id: int | None = None,
        user_id: int | None = None,
        action: Action | str | None = None,
        since: datetime | Timestamp | None = None,
        until: datetime | Timestamp | None = None,
        limit: int = 100,
        after: Cursor | str | None = None,
    ) -> Page:
        """One page of ``organization_id``'s events, newest first.

        ``since`` is inclusive and ``until`` exclusive, to the microsecond; both must be
        timezone-aware. ``limit`` is 1 to 1000. ``after`` is the previous page's
        ``next_cursor``. A bad value (wrong type, out of range, over-long, holding U+0000)
        raises ``ConfigurationError`` (also a ``ValueError`` and a ``TypeError``) naming the
        parameter and the value, before anything is queried; a database failure raises
        ``ReaderError``. A row whose event cannot be read is listed as an
        :class:`UnreadableRecord`, and the pages go on past it.
        """
        org = _int64("organization_id", organization_id)
        conditions: list[ColumnElement[bool]] = [AUDIT_LOG.c.organization_id == org]
        if entity_type is not None:
            conditions.append(AUDIT_LOG.c.entity_type == _text("entity_type", entity_type))
        if entity_id is not None:
            conditions.append(AUDIT_LOG.c.entity_id == _int64("entity_id", entity_id))
        if user_id is not None:
            conditions.append(AUDIT_LOG.c.user_id == _int64("user_id", user_id))
        if action is not None:
            conditions.append(AUDIT_LOG.c.action == _action(action).value)
        start = None if since is None else _moment("since", since)
        end = None if until is None else _moment("until", until)
        if start is not None and end is not None and start > end:
            raise ConfigurationError(f"since={since!r} is after until={until!r}")
        if start is not None:
            conditions.append(AUDIT_LOG.c.timestamp >= self._when(start))
        if end is not None:
            conditions.append(AUDIT_LOG.c.timestamp < self._when(end))
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"limit={limit!r} must be an int from 1 to {MAX_PAGE_SIZE}")
        if after is not None:
            cursor = Cursor.decode(after) if isinstance(after, str) else after
            if not isinstance(cursor, Cursor):
                raise ConfigurationError(f"after={after!r} must be a Cursor, str or None")
            conditions.append(
                tuple_(AUDIT_LOG.c.timestamp, AUDIT_LOG.c.event_id)
                < tuple_(
                    literal(self._when(cursor.timestamp), AUDIT_LOG.c.timestamp.type),
                    literal(cursor.event_id, AUDIT_LOG.c.event_id.type),
                )
            )
        query = (
            select(
                AUDIT_LOG.c.id,
                AUDIT_LOG.c.event_id,
                AUDIT_LOG.c.event_json,
                AUDIT_LOG.c.inserted_at,
                AUDIT_LOG.c.timestamp,
            )
            .where(*conditions)
            .order_by(AUDIT_LOG.c.timestamp.desc(), AUDIT_LOG.c.event_id.desc())
            .limit(limit + 1)
        )
        try:
            async with self._read_engine.begin() as conn:
                if self._postgresql:
                    await conn.execute(_SET_ORGANIZATION, {"org": str(org)})
                rows = (await conn.execute(query)).all()
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, ReaderError, "read audit rows") from exc
        items = [_record(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = Cursor(timestamp=_utc(last.timestamp), event_id=last.event_id).encode()
        return Page(items=items, next_cursor=next_cursor)

    def _when(self, moment: datetime) -> datetime:
        # SQLite keeps datetimes as UTC text without an offset (see AuditStore).
        return moment if self._postgresql else moment.astimezone(UTC)


def _int64(name: str, value: object) -> int:
    if type(value) is not int:
        raise ConfigurationError(f"{name}={value!r} must be an int")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ConfigurationError(f"{name}={value!r} is outside int64")
    return value


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name}={value!r} must be a str")
    if not value:
        raise ConfigurationError(f"{name}={value!r} must be a non-empty str")
    if len(value) > _MAX_FILTER_LENGTH:
        raise ConfigurationError(
            f"{name}={_shown(value)} is {len(value)} characters, more than {_MAX_FILTER_LENGTH}"
        )
    if "\x00" in value:
        # PostgreSQL text cannot hold U+0000: the query would fail as if the database had.
        raise ConfigurationError(f"{name}={value!r} must not contain U+0000")
    return value


def _action(value: Action | str) -> Action:
    if not isinstance(value, Action | str):
        raise ConfigurationError(f"action={value!r} must be an Action or str")
    try:
        return Action(value)
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise ConfigurationError(f"action={_shown(value)} must be one of {choices}") from None


def _moment(name: str, value: object) -> datetime:
    if isinstance(value, Timestamp):
        return value.to_datetime()
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(f"{name}={value!r} must be timezone-aware")
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ConfigurationError(
                f"{name}={value!r} is outside the years 1 to 9999 in UTC"
            ) from None
        return value
    raise ConfigurationError(f"{name}={value!r} must be a datetime or Timestamp")


def _shown(value: str) -> str:
    # An over-long value is named by its start: the message stays one readable line.
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}..."


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _record(row: Any) -> AuditRecord | UnreadableRecord:
    try:
        event = Event.model_validate_json(row.event_json)
    except pydantic.ValidationError as exc:
        # Paging is by the row's columns, not its JSON, so the listing goes on past it.
        error = "; ".join(
            ".".join(str(part) for part in detail["loc"]) + f": {detail['msg']}"
            if detail["loc"]
            else detail["msg"]
            for detail in exc.errors(include_url=False)
        )
        return UnreadableRecord(
            id=row.id,
            event_id=row.event_id,
            event_json=row.event_json,
            error=error,
            inserted_at=_utc(row.inserted_at),
        )
    return AuditRecord(
        id=row.id, event_id=row.event_id, event=event, inserted_at=_utc(row.inserted_at)
    )
