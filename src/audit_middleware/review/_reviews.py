"""``ReviewLog``: the append-only review trail of break-glass and impersonation events.

A review is a row of ``audit_review``: which event, who reviewed it, the decision and a note.
Rows are never changed (triggers refuse UPDATE, DELETE and TRUNCATE, even for the owner); a
changed mind is a new review, and the newest one is the event's current decision. Like every
read here, each write is one transaction scoped to the admin's organization, and row-level
security refuses a review row of any other organization. The reviewed event is looked up in
that same transaction, so an event of another organization cannot be reviewed: it is not there.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import sqlalchemy.exc
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import ReaderError, StoreError, map_database_error
from audit_middleware.review._query import REVIEWABLE_CONTEXTS, scoped
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_REVIEW, qualified

__all__ = ["MAX_NOTE_LENGTH", "Review", "ReviewDecision", "ReviewLog"]

MAX_NOTE_LENGTH = 4000
"""The longest note a review may carry, in characters."""

_IN_CHUNK = 500


class ReviewDecision(enum.StrEnum):
    """What the reviewer concluded about a break-glass or impersonation access."""

    JUSTIFIED = "justified"
    UNJUSTIFIED = "unjustified"
    NEEDS_FOLLOW_UP = "needs_follow_up"


@dataclass(frozen=True, slots=True)
class Review:
    """One recorded review of one event."""

    id: int
    """``audit_review.id``."""
    event_id: UUID
    """The reviewed event."""
    reviewer_id: int
    """The user id of the admin who reviewed it."""
    decision: ReviewDecision
    """What they concluded."""
    note: str
    """Why (may be empty)."""
    reviewed_at: datetime
    """When the database stored the review (UTC)."""


class ReviewLog:
    """Records and reads reviews on ``engine`` (share ``AuditReader.engine``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = qualified(engine)  # every table name schema-qualified

    async def record(
        self,
        organization_id: int,
        event_id: UUID,
        *,
        reviewer_id: int,
        decision: ReviewDecision | str,
        note: str,
    ) -> Review | None:
        """Append a review; ``None`` when the organization has no event ``event_id``.

        Raises ``ValueError`` naming a bad decision, a note too long, or an event that is not
        break-glass or impersonation; ``StoreError`` when the database fails.
        """
        chosen = _decision(decision)
        if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH:
            raise ValueError(f"note must be text of at most {MAX_NOTE_LENGTH} characters")
        if "\x00" in note:
            raise ValueError("note must not contain U+0000")
        table = AUDIT_LOG.c
        try:
            async with scoped(self._engine, organization_id) as conn:
                row = (
                    await conn.execute(
                        select(table.id, table.action_context).where(
                            table.organization_id == organization_id, table.event_id == event_id
                        )
                    )
                ).first()
                if row is None:
                    return None
                if row.action_context not in REVIEWABLE_CONTEXTS:
                    raise ValueError(
                        f"event {event_id} has action_context={row.action_context!r}: only "
                        "break_glass and impersonation events are reviewed"
                    )
                stored = (
                    await conn.execute(
                        insert(AUDIT_REVIEW)
                        .values(
                            organization_id=organization_id,
                            event_id=event_id,
                            audit_id=row.id,
                            reviewer_id=reviewer_id,
                            decision=chosen.value,
                            note=note,
                        )
                        .returning(AUDIT_REVIEW.c.id, AUDIT_REVIEW.c.reviewed_at)
                    )
                ).one()
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, StoreError, "record the review") from exc
        return Review(
            id=stored.id,
            event_id=event_id,
            reviewer_id=reviewer_id,
            decision=chosen,
            note=note,
            reviewed_at=_utc(stored.reviewed_at),
        )

    async def for_events(
        self, organization_id: int, event_ids: Iterable[UUID]
    ) -> dict[UUID, list[Review]]:
        """Each event's reviews, oldest first (the last is the current decision)."""
        ids = list(dict.fromkeys(event_ids))
        found: dict[UUID, list[Review]] = {}
        table = AUDIT_REVIEW.c
        try:
            async with scoped(self._engine, organization_id) as conn:
                for start in range(0, len(ids), _IN_CHUNK):
                    query = (
                        select(AUDIT_REVIEW)
                        .where(
                            table.organization_id == organization_id,
                            table.event_id.in_(ids[start : start + _IN_CHUNK]),
                        )
                        .order_by(table.id)
                    )
                    for row in (await conn.execute(query)).all():
                        found.setdefault(row.event_id, []).append(
                            Review(
                                id=row.id,
                                event_id=row.event_id,
                                reviewer_id=row.reviewer_id,
                                decision=ReviewDecision(row.decision),
                                note=row.note,
                                reviewed_at=_utc(row.reviewed_at),
                            )
                        )
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise map_database_error(exc, ReaderError, "read reviews") from exc
        return found


def _decision(value: object) -> ReviewDecision:
    try:
        return ReviewDecision(str(value))
    except ValueError:
        choices = ", ".join(d.value for d in ReviewDecision)
        raise ValueError(f"decision={value!r} must be one of {choices}") from None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
