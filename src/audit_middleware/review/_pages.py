"""The review app's web page: server-rendered HTML (Jinja2 through Starlette's templates).

No JavaScript and no build step: plain links and forms, so every control works from the
keyboard and the page reads the same to a screen reader. The templates and the stylesheet
ship inside the package (``templates/``, ``static/``). The review form carries a CSRF token
(see ``_csrf``) and is refused from another origin.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from audit_middleware._exceptions import AuditError
from audit_middleware.review._csrf import cross_origin_reason
from audit_middleware.review._filter import STATUS_CLASSES, EventFilter
from audit_middleware.review._query import REVIEWABLE_CONTEXTS
from audit_middleware.review._reviews import MAX_NOTE_LENGTH, ReviewDecision
from auditevt import Action, ActionContext

if TYPE_CHECKING:
    from audit_middleware.review._app import ReviewApp

__all__ = ["routes"]

_templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.PackageLoader("audit_middleware.review", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)
_MAX_FORM_BYTES = 64 * 1024


def routes(app: ReviewApp) -> list[BaseRoute]:
    """The HTML routes of ``app``."""
    pages = _Pages(app)
    return [
        Route("/", pages.events, methods=["GET"], name="events"),
        Route("/queue", pages.queue, methods=["GET"], name="queue"),
        Route("/events/{event_id}", pages.event, methods=["GET"], name="event"),
        Route("/events/{event_id}/review", pages.review, methods=["POST"], name="review"),
    ]


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form body (parsed here: python-multipart is not a dependency)."""
    from audit_middleware.review._responses import Refused

    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise Refused(415, f"the form must be application/x-www-form-urlencoded, not {kind!r}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise Refused(413, f"the form is larger than {_MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form is not valid urlencoded UTF-8") from None
    return dict(pairs)


def _form_values(request: Request) -> dict[str, str]:
    # What the filter form shows: the values as typed, so a bad one can be corrected.
    return {k: request.query_params.get(k, "") for k in EventFilter.__dataclass_fields__}


class _Pages:
    def __init__(self, app: ReviewApp) -> None:
        self.app = app

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        root = request.scope.get("root_path", "")
        context.setdefault("admin", None)
        context["active"] = {"events.html": "events", "event.html": "events"}.get(
            name, "queue" if name == "queue.html" else ""
        )
        context.update(
            root=root,
            title=context.get("title", "Audit log"),
            decisions=[d.value for d in ReviewDecision],
            max_note=MAX_NOTE_LENGTH,
            pretty=_pretty,
            reviewable_contexts=REVIEWABLE_CONTEXTS,
        )
        response = _templates.TemplateResponse(request, name, context, status_code=status)
        # The page shows audit data: never cached, never framed by another site.
        response.headers["cache-control"] = "no-store"
        response.headers["x-frame-options"] = "DENY"
        response.headers["content-security-policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    async def guarded(
        self, request: Request, build: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        from audit_middleware.review._responses import Refused

        try:
            return await build(request)
        except Refused as exc:
            return self.render(
                request, "error.html", exc.status, title="Not available", message=exc.message
            )
        except AuditError:
            message = "The audit log is unavailable right now. Try again shortly."
            return self.render(request, "error.html", 503, title="Unavailable", message=message)

    async def events(self, request: Request) -> Response:
        return await self.guarded(request, self._events)

    async def _events(self, request: Request) -> Response:
        from audit_middleware.review._responses import Refused

        admin = await self.app.admin(request)
        try:
            event_filter, page, reviews = await self.app.listing(request, admin, operation="list")
        except Refused as exc:
            if exc.status != 400:
                raise
            # A bad filter: show the form again with the message, and no rows.
            return self.render(
                request,
                "events.html",
                400,
                admin=admin,
                error=exc.message,
                items=[],
                reviews={},
                query=_form_values(request),
                next_url=None,
                export=None,
                actions=[a.value for a in Action],
                contexts=[c.value for c in ActionContext],
                status_classes=STATUS_CLASSES,
                first_url=None,
            )
        query = event_filter.as_query()
        root = request.scope.get("root_path", "")
        limit = request.query_params.get("limit")
        paging = {**query, **({"limit": limit} if limit else {})}
        next_url = (
            None
            if page.next_cursor is None
            else f"{root}/?{urlencode({**paging, 'after': page.next_cursor})}"
        )
        first_url = f"{root}/?{urlencode(paging)}" if request.query_params.get("after") else None
        return self.render(
            request,
            "events.html",
            admin=admin,
            error=None,
            items=page.items,
            reviews=reviews,
            query=_form_values(request),
            next_url=next_url,
            first_url=first_url,
            export=urlencode(query),
            actions=[a.value for a in Action],
            contexts=[c.value for c in ActionContext],
            status_classes=STATUS_CLASSES,
        )

    async def queue(self, request: Request) -> Response:
        return await self.guarded(request, self._queue)

    async def _queue(self, request: Request) -> Response:
        admin = await self.app.admin(request)
        _, page, _ = await self.app.listing(
            request, admin, operation="queue", unreviewed=True, ignore=frozenset({"reviewed"})
        )
        root = request.scope.get("root_path", "")
        next_url = (
            None
            if page.next_cursor is None
            else f"{root}/queue?{urlencode({'after': page.next_cursor})}"
        )
        return self.render(
            request,
            "queue.html",
            title="Review queue",
            admin=admin,
            items=page.items,
            next_url=next_url,
            csrf=self.app.csrf.issue(admin.organization_id, admin.user_id),
            done=request.query_params.get("reviewed"),
        )

    async def event(self, request: Request) -> Response:
        return await self.guarded(request, self._event)

    async def _event(self, request: Request) -> Response:
        admin = await self.app.admin(request)
        found, reviews = await self.app.one(request, admin)
        return self.render(
            request,
            "event.html",
            title=f"Audit event {found.event_id}",
            admin=admin,
            record=found,
            reviews=reviews,
            csrf=self.app.csrf.issue(admin.organization_id, admin.user_id),
            done=request.query_params.get("reviewed") == "1",
        )

    async def review(self, request: Request) -> Response:
        return await self.guarded(request, self._review)

    async def _review(self, request: Request) -> Response:
        from audit_middleware.review._responses import Refused

        admin = await self.app.admin(request)
        reason = cross_origin_reason(request)
        if reason is not None:
            raise Refused(403, f"cross-origin form refused: {reason}")
        form = await _form(request)
        token = form.get("csrf_token")
        if not isinstance(token, str) or not self.app.csrf.valid(
            token, admin.organization_id, admin.user_id
        ):
            raise Refused(403, "the form has expired or was not issued to you: reload the page")
        review = await self.app.add_review(
            request, admin, form.get("decision"), form.get("note", "")
        )
        root = request.scope.get("root_path", "")
        if form.get("next") == "queue":
            target = f"{root}/queue?{urlencode({'reviewed': str(review.event_id)})}"
        else:
            target = f"{root}/events/{review.event_id}?reviewed=1"
        return RedirectResponse(target, status_code=303)
