"""Answers shared by the JSON API and the pages: ``Refused`` and the JSON form of records."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from audit_middleware._exceptions import AuditError
from audit_middleware.review._query import EventPage
from audit_middleware.review._reviews import Review
from audit_middleware.storage._reader import AuditRecord, UnreadableRecord

__all__ = ["Refused", "answer_json", "page_json", "record_json", "review_json"]


class Refused(Exception):
    """A request answered with ``status`` and ``message`` (400, 403, 404, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def answer_json(
    request: Request, handler: Callable[..., Awaitable[Response]], *args: Any
) -> Response:
    try:
        return await handler(request, *args)
    except Refused as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except AuditError:
        return JSONResponse({"error": "the audit log is unavailable"}, status_code=503)


def review_json(review: Review) -> dict[str, Any]:
    """A review as JSON values."""
    out = asdict(review)
    out.update(
        event_id=str(review.event_id),
        decision=review.decision.value,
        reviewed_at=review.reviewed_at.isoformat(),
    )
    return out


def record_json(found: AuditRecord | UnreadableRecord, reviews: list[Review]) -> dict[str, Any]:
    """An event, its row id and insert time, and its reviews (oldest first), as JSON values.

    A row this version cannot read has ``unreadable`` (its stored text and why) for ``event``.
    """
    if isinstance(found, UnreadableRecord):
        return {
            "id": found.id,
            "event_id": str(found.event_id),
            "inserted_at": found.inserted_at.isoformat(),
            "unreadable": {"error": found.error, "event_json": found.event_json},
            "reviews": [review_json(review) for review in reviews],
        }
    return {
        "id": found.id,
        "event_id": str(found.event_id),
        "inserted_at": found.inserted_at.isoformat(),
        "event": json.loads(found.event.to_json()),
        "reviews": [review_json(review) for review in reviews],
    }


def page_json(page: EventPage, reviews: dict[UUID, list[Review]]) -> Response:
    return JSONResponse(
        {
            "items": [record_json(item, reviews.get(item.event_id, [])) for item in page.items],
            "next_cursor": page.next_cursor,
        }
    )
