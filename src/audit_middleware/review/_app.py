"""``ReviewApp``: the mountable audit review app (JSON API, exports, review trail, web page).

Mount it under a path of the Core API's choice (``Mount("/admin/audit", app=review)``). Every
request first asks the app's resolvers who the admin is: the organization and user id from the
authenticated session (never from the query string) and whether they may review. No
organization or no user means 403, before anything is read. Each listing, view, export and
review is itself audited (see ``_audit``) before it is answered; when that event cannot be
written the read is refused (503), so no read of the audit log goes unrecorded.

Routes, relative to the mount point::

    GET  /api/events                    filtered listing, keyset pages (limit, after)
    GET  /api/events/{event_id}         one event and its reviews
    GET  /api/export.csv, export.jsonl  the whole filtered range, streamed
    GET  /api/queue                     break-glass and impersonation events not yet reviewed
    POST /api/events/{event_id}/reviews record a review (JSON body: decision, note)
    GET  /, /events/{event_id}, /queue  the same as HTML pages; POST /events/{event_id}/review
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict, TypeVar, Unpack
from uuid import UUID

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from audit_middleware._exceptions import AuditError
from audit_middleware.request._client_ip import TrustedProxies
from audit_middleware.request._context import record
from audit_middleware.review import _pages
from audit_middleware.review._audit import REVIEW_ENTITY, AccessAuditor, Admin
from audit_middleware.review._csrf import CsrfTokens, cross_origin_reason
from audit_middleware.review._export import csv_chunks, jsonl_chunks
from audit_middleware.review._filter import EventFilter
from audit_middleware.review._query import EventPage, EventQuery
from audit_middleware.review._responses import (
    Refused,
    answer_json,
    page_json,
    record_json,
    review_json,
)
from audit_middleware.review._reviews import Review, ReviewLog
from audit_middleware.storage._reader import (
    MAX_PAGE_SIZE,
    AuditReader,
    AuditRecord,
    UnreadableRecord,
)
from audit_middleware.storage._store import AuditStore

__all__ = ["DEFAULT_PAGE_SIZE", "ReviewApp", "create_review_app"]

DEFAULT_PAGE_SIZE = 50
"""Rows per page when the request gives no ``limit``."""

T = TypeVar("T")
Resolver = Callable[[Request], T | Awaitable[T]]
_PAGING = frozenset({"limit", "after"})


def _never(_request: Request) -> bool:
    return False


async def _resolve(resolver: Resolver[T], request: Request) -> T:
    value = resolver(request)
    return await value if inspect.isawaitable(value) else value


class ReviewAppArguments(TypedDict):
    """:func:`create_review_app`'s keyword arguments: those of :class:`ReviewApp`."""

    store: AuditStore
    reader: AuditReader
    organization_resolver: Resolver[int | None]
    user_resolver: Resolver[int | None]
    reviewer_resolver: NotRequired[Resolver[bool]]
    trusted_proxies: NotRequired[TrustedProxies | None]
    csrf_secret: NotRequired[bytes | None]
    page_size: NotRequired[int]


class ReviewApp:
    """The review app; an ASGI app. Build it with :func:`create_review_app`."""

    def __init__(
        self,
        *,
        store: AuditStore,
        reader: AuditReader,
        organization_resolver: Resolver[int | None],
        user_resolver: Resolver[int | None],
        reviewer_resolver: Resolver[bool] = _never,
        trusted_proxies: TrustedProxies | None = None,
        csrf_secret: bytes | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if not isinstance(store, AuditStore):
            raise TypeError(f"store must be an AuditStore, not {type(store).__name__}")
        if not isinstance(reader, AuditReader):
            raise TypeError(f"reader must be an AuditReader, not {type(reader).__name__}")
        for name, resolver in (
            ("organization_resolver", organization_resolver),
            ("user_resolver", user_resolver),
            ("reviewer_resolver", reviewer_resolver),
        ):
            if not callable(resolver):
                raise TypeError(f"{name} must be callable, not {resolver!r}")
        if type(page_size) is not int or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size={page_size!r} must be an int from 1 to {MAX_PAGE_SIZE}")
        self.events = EventQuery(reader.engine)
        self.reviews = ReviewLog(reader.engine)
        self.auditor = AccessAuditor(store, trusted_proxies or TrustedProxies())
        # A random secret serves one process; several processes behind one URL must share one.
        self.csrf = CsrfTokens(os.urandom(32) if csrf_secret is None else csrf_secret)
        self.page_size = page_size
        self._organization = organization_resolver
        self._user = user_resolver
        self._reviewer = reviewer_resolver
        self._router = Starlette(
            routes=[
                Route("/api/events", self.api_list, methods=["GET"]),
                Route("/api/events/{event_id}", self.api_event, methods=["GET"]),
                Route("/api/events/{event_id}/reviews", self.api_review, methods=["POST"]),
                Route("/api/queue", self.api_queue, methods=["GET"]),
                Route("/api/export.csv", self.export_csv, methods=["GET"]),
                Route("/api/export.jsonl", self.export_jsonl, methods=["GET"]),
                *_pages.routes(self),
                Mount(
                    "/static",
                    StaticFiles(packages=[("audit_middleware.review", "static")]),
                    name="static",
                ),
            ],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._router(scope, receive, send)

    # --- shared steps -------------------------------------------------------------------------

    async def admin(self, request: Request) -> Admin:
        """Who is asking, from the app's resolvers; ``Refused(403)`` when nobody is."""
        organization_id = _identity("organization", await _resolve(self._organization, request))
        user_id = _identity("user", await _resolve(self._user, request))
        may_review = await _resolve(self._reviewer, request)
        return Admin(organization_id, user_id, may_review is True)

    def limit(self, request: Request) -> int:
        text = request.query_params.get("limit", "").strip()
        if not text:
            return self.page_size
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
            raise Refused(400, f"limit={text!r} must be an integer from 1 to {MAX_PAGE_SIZE}")
        return int(text)

    async def listing(
        self,
        request: Request,
        admin: Admin,
        *,
        operation: str,
        unreviewed: bool = False,
        ignore: frozenset[str] = frozenset(),
    ) -> tuple[EventFilter, EventPage, dict[UUID, list[Review]]]:
        """Parse, audit, read: one page of the filtered listing (or of the queue)."""
        event_filter = _filter(request, _PAGING | ignore)
        limit = self.limit(request)
        after = request.query_params.get("after") or None
        await self.audit(
            request,
            admin,
            {
                "operation": operation,
                "filter": event_filter.as_query(),
                "limit": limit,
                "after": after,
            },
        )
        try:
            page = await self.events.page(
                admin.organization_id,
                event_filter,
                limit=limit,
                after=after,
                unreviewed=unreviewed,
            )
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        reviews = await self.reviews.for_events(
            admin.organization_id, (item.event_id for item in page.items)
        )
        return event_filter, page, reviews

    async def one(
        self, request: Request, admin: Admin
    ) -> tuple[AuditRecord | UnreadableRecord, list[Review]]:
        """Audit, then read one event and its reviews; ``Refused(404)`` when not there."""
        event_id = _event_id(request.path_params["event_id"])
        await self.audit(request, admin, {"operation": "view", "event_id": str(event_id)})
        found = await self.events.get(admin.organization_id, event_id)
        if found is None:
            raise Refused(404, f"no audit event {event_id} in your organization")
        reviews = await self.reviews.for_events(admin.organization_id, [event_id])
        return found, reviews.get(event_id, [])

    async def add_review(
        self, request: Request, admin: Admin, decision: object, note: object
    ) -> Review:
        """Record a review and its audit event; refuses admins who may not review."""
        if not admin.may_review:
            raise Refused(403, "you may read the audit log but not record reviews")
        event_id = _event_id(request.path_params["event_id"])
        # The middleware, if the Core API runs one around us, need not audit this POST again
        # (we write a richer event below); without one, record() raises and there is nothing
        # to skip.
        with contextlib.suppress(RuntimeError):
            record(request, skip=True)
        if not isinstance(note, str):
            raise Refused(400, f"note={note!r} must be text")
        try:
            review = await self.reviews.record(
                admin.organization_id,
                event_id,
                reviewer_id=admin.user_id,
                decision=str(decision),
                note=note,
            )
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        if review is None:
            raise Refused(404, f"no audit event {event_id} in your organization")
        await self.audit(
            request,
            admin,
            {
                "operation": "review",
                "event_id": str(event_id),
                "decision": review.decision.value,
                "note": review.note,
            },
            entity_type=REVIEW_ENTITY,
            entity_id=review.id,
            status_code=201,
        )
        return review

    async def audit(
        self, request: Request, admin: Admin, changes: dict[str, Any], **kwargs: Any
    ) -> None:
        try:
            await self.auditor.write(request, admin, changes=changes, **kwargs)
        except AuditError:
            raise Refused(503, "the audit log cannot record this access right now") from None

    # --- JSON API -----------------------------------------------------------------------------

    async def api_list(self, request: Request) -> Response:
        return await answer_json(request, self._api_list)

    async def _api_list(self, request: Request) -> Response:
        admin = await self.admin(request)
        _, page, reviews = await self.listing(request, admin, operation="list")
        return page_json(page, reviews)

    async def api_queue(self, request: Request) -> Response:
        return await answer_json(request, self._api_queue)

    async def _api_queue(self, request: Request) -> Response:
        admin = await self.admin(request)
        _, page, reviews = await self.listing(request, admin, operation="queue", unreviewed=True)
        return page_json(page, reviews)

    async def api_event(self, request: Request) -> Response:
        return await answer_json(request, self._api_event)

    async def _api_event(self, request: Request) -> Response:
        admin = await self.admin(request)
        found, reviews = await self.one(request, admin)
        return JSONResponse(record_json(found, reviews))

    async def api_review(self, request: Request) -> Response:
        return await answer_json(request, self._api_review)

    async def _api_review(self, request: Request) -> Response:
        admin = await self.admin(request)
        reason = cross_origin_reason(request)
        if reason is not None:
            raise Refused(403, f"cross-origin POST refused: {reason}")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Refused(415, "send the review as Content-Type: application/json")
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object with decision and note")
        review = await self.add_review(request, admin, body.get("decision"), body.get("note", ""))
        return JSONResponse(review_json(review), status_code=201)

    async def export_csv(self, request: Request) -> Response:
        return await answer_json(request, self._export, "csv")

    async def export_jsonl(self, request: Request) -> Response:
        return await answer_json(request, self._export, "jsonl")

    async def _export(self, request: Request, kind: str) -> Response:
        admin = await self.admin(request)
        event_filter = _filter(request, ignore=frozenset())
        await self.audit(
            request,
            admin,
            {"operation": "export", "format": kind, "filter": event_filter.as_query()},
        )
        records = self.events.stream(admin.organization_id, event_filter)
        chunks = csv_chunks(records) if kind == "csv" else jsonl_chunks(records)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"audit-org{admin.organization_id}-{stamp}.{kind}"
        media = "text/csv; charset=utf-8" if kind == "csv" else "application/x-ndjson"
        return StreamingResponse(
            chunks,
            media_type=media,
            headers={
                "content-disposition": f'attachment; filename="{name}"',
                "cache-control": "no-store",
            },
        )


def create_review_app(**arguments: Unpack[ReviewAppArguments]) -> ReviewApp:
    """The review app for the Core API to mount (see docs/review.md).

    - ``store`` writes the access events (every read is audited) and ``reader`` gives the
      engine the app reads through (connect as the application role, held by RLS);
    - ``organization_resolver(request)`` and ``user_resolver(request)`` return the signed-in
      admin's organization and user id from the session, or ``None`` (then 403); sync or async;
    - ``reviewer_resolver(request)`` says whether that admin may record reviews (default: no);
    - ``trusted_proxies`` decides the client IP recorded in access events, as in the middleware;
    - ``csrf_secret`` keys the form tokens: pass the same 16+ bytes to every process;
    - ``page_size`` rows per page unless the request asks for a ``limit`` (up to 1000).
    """
    return ReviewApp(**arguments)


def _filter(request: Request, ignore: frozenset[str] = _PAGING) -> EventFilter:
    try:
        return EventFilter.from_query(request.query_params, ignore=ignore)
    except (TypeError, ValueError) as exc:
        raise Refused(400, str(exc)) from None


def _identity(name: str, value: object) -> int:
    if value is None:
        raise Refused(403, f"no {name} in the session: sign in as an admin")
    if type(value) is not int:
        raise TypeError(f"the {name} resolver returned {value!r}, not an int or None")
    return value


def _event_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise Refused(404, f"event_id={text!r} is not a UUID") from None
