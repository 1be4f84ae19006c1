"""A clinic app in transactional mode: patients written through the request's unit of work.

``build_fastapi(store)`` and ``build_starlette(store)`` serve the same routes; ``create_app()`` is
the uvicorn factory of the crash test (``AUDIT_TEST_DATABASE_URL``). Every handler writes one
``patients`` row; the audit row's ``entity_id`` is that row's ``id`` and ``changes`` holds its
``key``, so a test can pair each committed patient with its audit row.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from sqlalchemy import BigInteger, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from audit_middleware import AuditConfig, AuditMiddleware, AuditStore, audit_session, record


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[int] = mapped_column(BigInteger)


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


def authenticate(request: Request) -> None:
    request.state.audit_user_id = int(request.headers.get("x-test-user", "7"))
    request.state.audit_organization_id = int(request.headers.get("x-test-org", "3"))


async def add_patient(session: AsyncSession, request: Request, body: dict[str, Any]) -> Patient:
    authenticate(request)
    patient = Patient(key=body["key"], organization_id=request.state.audit_organization_id)
    session.add(patient)
    await session.flush()
    record(request, entity_type="patient", entity_id=patient.id, changes=body.get("changes", body))
    return patient


Session = Annotated[AsyncSession, Depends(audit_session)]


# The usual FastAPI unit of work: commit after the handler, roll back when it raises.
async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    session = await audit_session(request)
    try:
        yield session
        await session.commit()
    except Exception:
        await session.rollback()
        raise


RequestScoped = Annotated[AsyncSession, Depends(unit_of_work)]  # exit after the response
FunctionScoped = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]


def build_fastapi(store: Any, config: AuditConfig | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/patients", status_code=201)
    async def create(request: Request, session: Session) -> dict[str, Any]:
        patient = await add_patient(session, request, await request.json())
        await session.commit()  # as handlers usually do: must not commit early
        return {"id": patient.id}

    @app.post("/patients/request-scope", status_code=201)
    async def create_request_scope(request: Request, session: RequestScoped) -> dict[str, Any]:
        patient = await add_patient(session, request, await request.json())
        return {"id": patient.id}

    @app.post("/patients/function-scope", status_code=201)
    async def create_function_scope(request: Request, session: FunctionScoped) -> dict[str, Any]:
        patient = await add_patient(session, request, await request.json())
        return {"id": patient.id}

    @app.post("/patients/pending", status_code=201)
    async def create_unflushed(request: Request, session: RequestScoped) -> dict[str, str]:
        # Added, never flushed by the handler: the middleware flushes before it commits.
        authenticate(request)
        body = await request.json()
        session.add(Patient(key=body["key"], organization_id=3))
        return {"key": body["key"]}

    @app.post("/patients/raise")
    async def create_then_raise(request: Request, session: Session) -> None:
        await add_patient(session, request, await request.json())
        raise RuntimeError("handler exploded after writing")

    @app.post("/patients/conflict")
    async def create_then_409(request: Request, session: Session) -> None:
        await add_patient(session, request, await request.json())
        raise HTTPException(409, "conflict after writing")

    @app.post("/patients/retry", status_code=201)
    async def rollback_then_write(request: Request, session: Session) -> dict[str, Any]:
        body = await request.json()
        await add_patient(session, request, {"key": body["key"] + "-abandoned"})
        await session.rollback()  # gives up the first attempt...
        patient = await add_patient(session, request, body)  # ...and writes again
        await session.commit()
        return {"id": patient.id}

    @app.post("/patients/stream", status_code=201)
    async def create_and_stream(request: Request, session: Session) -> Response:
        await add_patient(session, request, await request.json())

        async def body() -> AsyncIterator[bytes]:
            yield b"committed\n"
            try:  # after the commit the unit of work is closed: no write gets through
                session.add(Patient(key="streamed", organization_id=3))
                await session.commit()
                yield b"written\n"
            except Exception as exc:
                yield f"refused: {type(exc).__name__}\n".encode()

        return StreamingResponse(body(), status_code=201)

    @app.get("/patients/count")
    async def count(request: Request) -> dict[str, int]:
        engine = request.app.state.engine
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Patient.id))).all()
        return {"count": len(rows)}

    app.add_middleware(AuditMiddleware, store=store, config=config)
    app.state.engine = store.engine
    return app


async def starlette_create(request: Request) -> Response:
    session = await audit_session(request)
    patient = await add_patient(session, request, await request.json())
    await session.commit()
    return JSONResponse({"id": patient.id}, 201)


def build_starlette(store: Any, config: AuditConfig | None = None) -> Starlette:
    return Starlette(
        routes=[Route("/patients", starlette_create, methods=["POST"])],
        middleware=[Middleware(AuditMiddleware, store=store, config=config)],
    )


def create_app() -> FastAPI:
    """The uvicorn factory: the FastAPI clinic on ``AUDIT_TEST_DATABASE_URL``."""
    store = AuditStore.from_url(os.environ["AUDIT_TEST_DATABASE_URL"], pool_size=40)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await store.aclose()

    app = build_fastapi(store)
    app.router.lifespan_context = lifespan
    return app
