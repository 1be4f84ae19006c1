"""The sample Core API that ``auditevt demo`` runs: Starlette, ``AuditMiddleware``, the relay.

A small patient-and-appointment API whose authentication is a stand-in for a real one: the
bearer token ``demo:<user_id>:<organization_id>`` puts the actor and the tenant on
``request.state`` (what a real auth layer does), ``X-Break-Glass: <grant id>`` and
``X-Impersonation: <session id>`` add those contexts. Every mutating route is audited by
``AuditMiddleware``; the in-app ``OutboxRelay`` (ASGI lifespan) forwards the events to
Telemetry; ``GET /admin/audit-log`` lists the caller's organization's audit log through
``AuditReader``, never another's; the audit review app is mounted at ``/admin/review``
(``GET /demo/sign-in?organization=N`` signs a browser in as that organization's admin). The
load balancer in front (the demo's load generator, on loopback) is the one trusted proxy, so
the client IP is the rightmost X-Forwarded-For hop it did not add itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from uuid import UUID

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from audit_middleware.delivery._command import RELAY_RETRY
from audit_middleware.delivery._relay import OutboxRelay, RelayConfig, RelayStats
from audit_middleware.request._client_ip import TrustedProxies
from audit_middleware.request._context import record
from audit_middleware.request._metrics import AuditStats
from audit_middleware.request._middleware import AuditConfig, AuditMiddleware, AuditSink
from audit_middleware.review import create_review_app
from audit_middleware.storage._reader import AuditReader, AuditRecord, UnreadableRecord
from audit_middleware.storage._store import AuditStore
from auditevt import Event, SigningKey
from telemetry_client import AsyncTelemetryClient

__all__ = [
    "DEMO_PATIENT_STATUSES",
    "REVIEW_PATH",
    "DemoCoreApi",
    "SimulatedFailure",
    "demo_token",
    "review_sign_in_url",
]

#: Where the audit review app is mounted.
REVIEW_PATH = "/admin/review"

#: What a patient's ``status`` may be set to; anything else is answered 422.
DEMO_PATIENT_STATUSES = frozenset({"active", "discharged", "on_hold"})

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_ASGIApp = Callable[[_Scope, Callable[[], Awaitable[_Message]], Any], Awaitable[None]]


class SimulatedFailure(RuntimeError):
    """Raised on purpose by ``POST /reports/export``: shows an app exception audited as 500."""


def demo_token(user_id: int, organization_id: int) -> str:
    """The bearer token the sample API accepts for ``user_id`` in ``organization_id``."""
    return f"demo:{user_id}:{organization_id}"


def _authenticate(request: Request) -> tuple[int, int] | None:
    """What an auth layer does: the actor and tenant from the session, onto request.state."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    parts = token.split(":")
    if scheme.lower() != "bearer" or len(parts) != 3 or parts[0] != "demo":
        return None
    try:
        user_id, organization_id = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    request.state.audit_user_id = user_id
    request.state.audit_organization_id = organization_id
    # A real app checks the grant and the impersonation session against its own records.
    if (grant := request.headers.get("x-break-glass", "")).isdigit():
        request.state.audit_break_glass_id = int(grant)
    if (session := request.headers.get("x-impersonation", "")).isdigit():
        request.state.audit_impersonation_id = int(session)
    return user_id, organization_id


#: The cookie ``GET /demo/sign-in`` sets: the browser's stand-in for a signed-in admin session.
SESSION_COOKIE = "auditevt_demo_admin"


def _admin_session(request: Request) -> tuple[int, int] | None:
    """The admin's (user_id, organization_id): the bearer token or the demo sign-in cookie."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = request.cookies.get(SESSION_COOKIE, "")
    parts = token.split(":")
    if len(parts) != 3 or parts[0] != "demo" or not (parts[1] + parts[2]).isdigit():
        return None
    return int(parts[1]), int(parts[2])


def _admin_organization(request: Request) -> int | None:
    session = _admin_session(request)
    return None if session is None else session[1]


def _admin_user(request: Request) -> int | None:
    session = _admin_session(request)
    return None if session is None else session[0]


def _unauthorized() -> Response:
    return JSONResponse({"error": "authentication required"}, 401)


class _Patients:
    """The app's own data: patients and appointments per organization, in memory."""

    def __init__(self) -> None:
        self.patients: dict[int, dict[int, str]] = {}
        self._ids = itertools.count(1)

    def create(self, organization_id: int) -> int:
        patient_id = next(self._ids)
        self.patients.setdefault(organization_id, {})[patient_id] = "active"
        return patient_id

    def get(self, organization_id: int, patient_id: int) -> str | None:
        return self.patients.get(organization_id, {}).get(patient_id)


class _QuietSimulatedFailures:
    """Outermost: swallows a ``SimulatedFailure`` after Starlette answered it with a 500.

    The failure is deliberate, so the server need not print its traceback; every other
    exception goes on as usual.
    """

    def __init__(self, app: _ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except SimulatedFailure:
            if scope["type"] != "http":
                raise


class _RecordingSink:
    """The store, remembering each ``event_id`` it wrote (the demo's own bookkeeping)."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._event_ids: list[UUID] = []

    async def write(self, event: Event) -> UUID:
        event_id = await self.store.write(event)
        with self._lock:
            self._event_ids.append(event_id)
        return event_id

    def event_ids(self) -> list[UUID]:
        with self._lock:
            return list(self._event_ids)


class DemoCoreApi:
    """The sample Core API: build it, serve ``.app`` with lifespan on, read what it wrote.

    Nothing connects until the first request. When ``telemetry_url`` is given the lifespan
    starts the relay (woken by every write; signing with ``signing_key``, default
    ``TELEMETRY_SIGNING_KEY``), and shutdown drains it for up to its
    ``drain_timeout``, then closes the client and the store. ``database_url`` must be
    migrated already.
    """

    def __init__(
        self,
        database_url: str,
        *,
        telemetry_url: str | None,
        relay_config: RelayConfig | None = None,
        signing_key: tuple[SigningKey, ...] | None = None,
    ) -> None:
        self._store = AuditStore.from_url(database_url)
        self._recorder = _RecordingSink(self._store)
        sink: AuditSink = self._recorder
        self._client: AsyncTelemetryClient | None = None
        self._relay: OutboxRelay | None = None
        if telemetry_url is not None:
            # The relay's client retries briefly; long outages wait in the outbox's backoff.
            self._client = AsyncTelemetryClient(
                telemetry_url, retry=RELAY_RETRY, signing_key=signing_key
            )
            self._relay = OutboxRelay(
                self._store,
                self._client,
                config=relay_config or RelayConfig(sweep_interval=0.5, drain_timeout=5.0),
            )
            # Wakes the relay after each committed write: sent at once, not at the next sweep.
            sink = self._relay.notifying(sink)
        self._reader = AuditReader(self._store.engine)
        self._patients = _Patients()
        self._appointments = itertools.count(1)
        self.stats = AuditStats()
        #: The relay's statistics once the app has shut down (None without a relay).
        self.relay_stats: RelayStats | None = None
        config = AuditConfig(
            # The load balancer (on loopback here) is the one proxy allowed to speak for the
            # client in X-Forwarded-For.
            trusted_proxies=TrustedProxies(["127.0.0.1/32", "::1/128"]),
        )
        routes = [
            Route("/patients", self._create_patient, methods=["POST"]),
            Route("/patients/{patient_id:int}", self._change_patient, methods=["PATCH", "DELETE"]),
            Route("/appointments", self._create_appointment, methods=["POST"]),
            Route("/reports/export", self._export, methods=["POST"]),
            Route("/admin/audit-log", self._audit_log, methods=["GET"]),
            # The audit review app, mounted as a Core API mounts it; the organization comes
            # from the admin's session, and every demo admin may review.
            Mount(
                REVIEW_PATH,
                app=create_review_app(
                    store=self._store,
                    reader=self._reader,
                    organization_resolver=_admin_organization,
                    user_resolver=_admin_user,
                    reviewer_resolver=lambda r: _admin_session(r) is not None,
                    trusted_proxies=config.trusted_proxies,
                ),
            ),
            Route("/demo/sign-in", _sign_in, methods=["GET"]),
        ]
        starlette = Starlette(
            routes=routes,
            middleware=[Middleware(AuditMiddleware, sink=sink, config=config, stats=self.stats)],
            lifespan=self._lifespan,
        )
        self.app: _ASGIApp = _QuietSimulatedFailures(starlette)

    def event_ids(self) -> list[UUID]:
        """The ``event_id`` of every audit row this app wrote, in write order."""
        return self._recorder.event_ids()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._store.aclose)
            if self._client is not None:
                stack.push_async_callback(self._client.aclose)
            if self._relay is not None:
                relay = self._relay

                async def remember_stats() -> None:
                    self.relay_stats = await relay.stats()

                stack.push_async_callback(remember_stats)
                # Started here; at shutdown it drains for drain_timeout, then stops.
                await stack.enter_async_context(relay.lifespan(app))
            yield

    # --- routes -----------------------------------------------------------------------------

    async def _create_patient(self, request: Request) -> Response:
        session = _authenticate(request)
        if session is None:
            return _unauthorized()
        body = await _json_object(request)
        if body is None:
            return JSONResponse({"error": "the body must be a JSON object"}, 422)
        patient_id = self._patients.create(session[1])
        # The portal password is redacted by the middleware's policy before anything is written.
        record(
            request,
            entity_id=patient_id,
            changes={"status": "active", "portal_password": body.get("portal_password")},
        )
        return JSONResponse({"id": patient_id}, 201)

    async def _change_patient(self, request: Request) -> Response:
        session = _authenticate(request)
        if session is None:
            return _unauthorized()
        patient_id: int = request.path_params["patient_id"]
        current = self._patients.get(session[1], patient_id)
        if current is None:
            return JSONResponse({"error": f"no patient {patient_id}"}, 404)
        if request.method == "DELETE":
            del self._patients.patients[session[1]][patient_id]
            record(request, changes={"status": {"from": current, "to": None}})
            return Response(status_code=204)
        body = await _json_object(request)
        status = None if body is None else body.get("status")
        if status not in DEMO_PATIENT_STATUSES:
            record(request, changes={"rejected": {"status": status}})
            return JSONResponse({"error": f"status={status!r} is not a patient status"}, 422)
        self._patients.patients[session[1]][patient_id] = status
        record(request, changes={"status": {"from": current, "to": status}})
        return JSONResponse({"id": patient_id, "status": status})

    async def _create_appointment(self, request: Request) -> Response:
        session = _authenticate(request)
        if session is None:
            return _unauthorized()
        body = await _json_object(request) or {}
        appointment_id = next(self._appointments)
        record(
            request,
            entity_type="appointment",
            entity_id=appointment_id,
            changes={"patient_id": body.get("patient_id"), "at": body.get("at")},
        )
        return JSONResponse({"id": appointment_id}, 201)

    async def _export(self, request: Request) -> Response:
        if _authenticate(request) is None:
            return _unauthorized()
        record(request, entity_type="report", changes={"format": "csv"})
        raise SimulatedFailure("the export service is down (simulated)")

    async def _audit_log(self, request: Request) -> Response:
        """The admin endpoint: the caller's organization's audit log, newest first."""
        session = _authenticate(request)
        if session is None:
            return _unauthorized()
        params = request.query_params
        try:
            page = await self._reader.list_events(
                session[1],  # from the session, never from the query
                entity_type=params.get("entity_type") or None,
                limit=int(params.get("limit", "100")),
                after=params.get("after") or None,
            )
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        items = ",".join(_listed(item) for item in page.items)
        cursor = json.dumps(page.next_cursor)
        body = f'{{"items":[{items}],"next_cursor":{cursor}}}'
        return Response(body, media_type="application/json")


def _listed(item: AuditRecord | UnreadableRecord) -> str:
    if isinstance(item, UnreadableRecord):
        # Listed, not hidden: the row stays in the append-only log for good.
        unreadable = {"id": item.id, "error": item.error, "event_json": item.event_json}
        return json.dumps({"event_id": str(item.event_id), "unreadable": unreadable})
    return f'{{"event_id":"{item.event_id}","event":{item.event.to_json()}}}'


def review_sign_in_url(base_url: str, organization_id: int) -> str:
    """Where a browser signs in as ``organization_id``'s admin and lands on the review page."""
    return f"{base_url}/demo/sign-in?organization={organization_id}"


async def _sign_in(request: Request) -> Response:
    """``GET /demo/sign-in?organization=N``: the demo's stand-in for a login page."""
    organization = request.query_params.get("organization", "")
    if not organization.isdigit():
        return JSONResponse({"error": f"organization={organization!r} is not a number"}, 400)
    response = RedirectResponse(f"{REVIEW_PATH}/", status_code=303)
    token = demo_token(int(organization) * 100 + 1, int(organization))
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
    return response


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
