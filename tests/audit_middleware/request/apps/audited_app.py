"""Test apps behind ``AuditMiddleware``: a Starlette app and a FastAPI app with the same routes.

Authentication is simulated inside the handlers (as a FastAPI dependency would do it): the
``x-test-user`` and ``x-test-org`` headers become ``request.state.audit_user_id`` and
``request.state.audit_organization_id``, so the middleware must read identity when the
response starts, not when the request arrives.

``create_app()`` is the factory uvicorn runs (``--factory``) in the cross-process tests; it reads
``AUDIT_TEST_DATABASE_URL`` and trusts the networks in ``AUDIT_TEST_TRUSTED_PROXIES``
(comma-separated; 127.0.0.1 when unset, nobody when empty) as proxies.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from audit_middleware import (
    AuditConfig,
    AuditMiddleware,
    AuditSink,
    AuditStats,
    AuditStore,
    TrustedProxies,
    record,
)


def authenticate(request: Request) -> None:
    """What an auth layer does: put the actor and the tenant on request.state."""
    headers = request.headers
    if "x-test-user" in headers:
        request.state.audit_user_id = int(headers["x-test-user"])
    if "x-test-org" in headers:
        request.state.audit_organization_id = int(headers["x-test-org"])
    if "x-test-break-glass" in headers:
        request.state.audit_break_glass_id = int(headers["x-test-break-glass"])
    if "x-test-impersonation" in headers:
        request.state.audit_impersonation_id = int(headers["x-test-impersonation"])


async def _json(request: Request) -> Any:
    body = await request.body()
    return await request.json() if body else None


async def create_patient(request: Request) -> Response:
    authenticate(request)
    body = await _json(request) or {}
    record(request, entity_id=int(body.get("id", 0)), changes=body.get("changes"))
    return JSONResponse({"id": body.get("id", 0)}, 201, headers={"x-pid": str(os.getpid())})


async def change_patient(request: Request) -> Response:
    authenticate(request)
    body = await _json(request)
    if body is not None:
        record(request, changes=body.get("changes"))
    if request.method == "DELETE":
        return Response(status_code=204)
    status = int(body.get("status", 200)) if body else 200
    return JSONResponse({"id": request.path_params["patient_id"]}, status)


async def create_appointment(request: Request) -> Response:
    authenticate(request)
    body = await _json(request) or {}
    # No request argument: found through the context variable.
    record(entity_id=int(body["appointment_id"]), changes={"at": body.get("at")})
    return JSONResponse({"id": body["appointment_id"]}, 201)


async def read_patient(request: Request) -> Response:
    authenticate(request)
    return JSONResponse({"id": request.path_params["patient_id"], "audited": record(request)})


async def bad_request(request: Request) -> Response:
    authenticate(request)
    return JSONResponse({"error": "bad"}, 400)


async def server_error(request: Request) -> Response:
    authenticate(request)
    return JSONResponse({"error": "oops"}, 500)


async def raise_error(request: Request) -> Response:
    authenticate(request)
    raise RuntimeError("handler exploded")


async def slow(request: Request) -> Response:
    authenticate(request)
    await asyncio.sleep(float(request.query_params.get("s", "0.5")))
    return JSONResponse({"slept": True}, 201)


async def read_body(request: Request) -> Response:
    authenticate(request)
    await request.body()  # raises ClientDisconnect when the client has gone
    return JSONResponse({}, 201)


async def stream(request: Request) -> Response:
    authenticate(request)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"chunk{i}\n".encode()

    return StreamingResponse(chunks(), status_code=201)


async def skip(request: Request) -> Response:
    authenticate(request)
    record(request, skip=True)
    return JSONResponse({}, 200)


async def late_record(request: Request) -> Response:
    authenticate(request)
    errors: list[str] = []

    def too_late() -> None:
        try:
            record(request, changes={"late": True})
        except RuntimeError as exc:
            errors.append(str(exc))
        request.app.state.late_errors = errors

    return JSONResponse({}, 201, background=BackgroundTask(too_late))


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True}, headers={"x-pid": str(os.getpid())})


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/patients", create_patient, methods=["POST"]),
    Route("/patients/{patient_id:int}", read_patient, methods=["GET"]),
    Route("/patients/{patient_id:int}", change_patient, methods=["PUT", "PATCH", "DELETE"]),
    Route("/patients/{patient_id:int}/appointments", create_appointment, methods=["POST"]),
    Route("/errors/bad-request", bad_request, methods=["POST"]),
    Route("/errors/server-error", server_error, methods=["POST"]),
    Route("/errors/raise", raise_error, methods=["POST"]),
    Route("/slow", slow, methods=["POST"]),
    Route("/read-body", read_body, methods=["POST"]),
    Route("/stream", stream, methods=["POST"]),
    Route("/skip", skip, methods=["POST"]),
    Route("/late", late_record, methods=["POST"]),
]


def build_starlette(
    sink: AuditSink, config: AuditConfig | None = None, stats: AuditStats | None = None
) -> Starlette:
    """The Starlette test app, with ``AuditMiddleware`` added the usual way."""
    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(AuditMiddleware, sink=sink, config=config, stats=stats)],
    )


# FastAPI: the same identity, set by a dependency instead of inside the handler.
def current_identity(request: Request) -> None:
    authenticate(request)


router = APIRouter(prefix="/api/v1", dependencies=[Depends(current_identity)])


@router.post("/forms", status_code=201)
async def fastapi_create_form(request: Request) -> dict[str, Any]:
    body = await request.json()
    record(request, entity_id=body["id"], changes=body.get("changes"))
    return {"id": body["id"]}


@router.put("/forms/{form_id}")
def fastapi_update_form(form_id: int, payload: dict[str, Any]) -> dict[str, Any]:
    # A sync endpoint runs in a worker thread: record() finds the request by context variable.
    record(changes=payload)
    return {"id": form_id}


@router.delete("/forms/{form_id}", status_code=204)
async def fastapi_delete_form(form_id: int) -> None:
    if form_id == 404:
        raise HTTPException(404, "no such form")


@router.get("/forms/{form_id}")
async def fastapi_read_form(form_id: int) -> dict[str, Any]:
    return {"id": form_id}


@router.post("/forms/{form_id}/raise")
async def fastapi_raise(form_id: int) -> None:
    raise RuntimeError("fastapi handler exploded")


def build_fastapi(
    sink: AuditSink, config: AuditConfig | None = None, stats: AuditStats | None = None
) -> FastAPI:
    """The FastAPI test app; identity comes from a router dependency."""
    app = FastAPI()
    app.include_router(router)
    app.add_middleware(AuditMiddleware, sink=sink, config=config, stats=stats)
    return app


def create_app() -> Starlette:
    """The uvicorn factory: the Starlette test app on ``AUDIT_TEST_DATABASE_URL``."""
    store = AuditStore.from_url(os.environ["AUDIT_TEST_DATABASE_URL"])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await store.aclose()

    networks = os.environ.get("AUDIT_TEST_TRUSTED_PROXIES", "127.0.0.1/32")
    trusted = TrustedProxies([n for n in networks.split(",") if n])
    config = AuditConfig(trusted_proxies=trusted)
    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(AuditMiddleware, sink=store, config=config)],
        lifespan=lifespan,
    )
