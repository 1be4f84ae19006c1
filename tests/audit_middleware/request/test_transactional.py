"""Transactional mode: the handler's changes and their audit row commit together, or neither does.

On PostgreSQL and SQLite (the ``store`` fixture), through FastAPI and Starlette apps whose
handlers write through ``audit_session()``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from apps.clinic_app import Patient, build_fastapi, build_starlette, create_tables
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit_middleware import AuditMiddleware, AuditStats, AuditStore, audit_session
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_OUTBOX


@pytest.fixture
async def clinic(store: AuditStore) -> AuditStore:
    await create_tables(store.engine)
    return store


async def state(store: AuditStore) -> tuple[list[str], list[tuple[str, int, Any]]]:
    """Committed patient keys, and (path, status, changes) of every audit row, in id order."""
    async with store.engine.connect() as conn:
        keys = (await conn.execute(sa.select(Patient.key).order_by(Patient.id))).scalars().all()
        rows = await conn.execute(
            sa.select(
                AUDIT_LOG.c.request_path, AUDIT_LOG.c.status_code, AUDIT_LOG.c.changes
            ).order_by(AUDIT_LOG.c.id)
        )
        audit = [(r[0], r[1], r[2]) for r in rows]
        outbox = (await conn.execute(sa.select(sa.func.count()).select_from(AUDIT_OUTBOX))).one()
    assert outbox[0] == len(audit)  # every audit row has its outbox row
    return list(keys), audit


async def _client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://clinic") as http:
        yield http


@pytest.fixture
async def fastapi_http(clinic: AuditStore) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(build_fastapi(clinic)):
        yield http


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/patients", "/patients/request-scope", "/patients/function-scope"]
)
async def test_txn_commit_writes_change_and_audit_row_together(
    fastapi_http: httpx.AsyncClient, clinic: AuditStore, path: str
) -> None:
    response = await fastapi_http.post(path, json={"key": "p1"})
    assert response.status_code == 201, response.text
    keys, audit = await state(clinic)
    assert keys == ["p1"]
    assert audit == [(path, 201, {"key": "p1"})]


@pytest.mark.anyio
async def test_txn_unflushed_changes_are_flushed_and_committed_with_the_row(
    fastapi_http: httpx.AsyncClient, clinic: AuditStore
) -> None:
    response = await fastapi_http.post("/patients/pending", json={"key": "p2"})
    assert response.status_code == 201
    keys, audit = await state(clinic)
    assert keys == ["p2"] and [a[1] for a in audit] == [201]


@pytest.mark.anyio
async def test_txn_modified_and_deleted_objects_are_flushed_before_the_commit(
    clinic: AuditStore,
) -> None:
    # Neither handler flushes: what only the session knows (a changed or a deleted object)
    # is written by the middleware's flush before the commit, as a new object is.
    async with clinic.engine.begin() as conn:
        await conn.execute(sa.insert(Patient), [{"key": k, "organization_id": 3} for k in "ab"])

    async def loaded(request: Request) -> dict[str, Patient]:
        request.state.audit_organization_id = 3
        session = await audit_session(request)
        return {p.key: p for p in (await session.execute(sa.select(Patient))).scalars()}

    async def rename(request: Request) -> Response:
        (await loaded(request))["a"].key = "renamed"
        return JSONResponse({}, 200)

    async def delete(request: Request) -> Response:
        await (await audit_session(request)).delete((await loaded(request))["b"])
        return JSONResponse({}, 200)

    app = Starlette(
        routes=[Route("/rename", rename, methods=["PUT"]), Route("/b", delete, methods=["DELETE"])]
    )
    async for http in _client(AuditMiddleware(app, store=clinic)):
        assert (await http.put("/rename")).status_code == 200
        assert (await http.delete("/b")).status_code == 200
    keys, audit = await state(clinic)
    assert keys == ["renamed"] and [(a[0], a[1]) for a in audit] == [("/rename", 200), ("/b", 200)]


@pytest.mark.anyio
async def test_txn_handler_commit_does_not_commit_early(clinic: AuditStore) -> None:
    # The handler calls session.commit(); a second connection must not see the row before the
    # response starts (the middleware's single COMMIT).
    seen: list[int] = []

    async def peek(request: Any) -> Any:
        from starlette.responses import JSONResponse

        session = await audit_session(request)
        request.state.audit_organization_id = 3
        session.add(Patient(key="early", organization_id=3))
        await session.commit()
        async with clinic.engine.connect() as other:  # SQLite: WAL lets a reader in
            seen.append(len((await other.execute(sa.select(Patient.id))).all()))
        return JSONResponse({}, 201)

    from starlette.applications import Starlette
    from starlette.routing import Route

    app = AuditMiddleware(Starlette(routes=[Route("/p", peek, methods=["POST"])]), store=clinic)
    async for http in _client(app):
        assert (await http.post("/p")).status_code == 201
    assert seen == [0]
    keys, audit = await state(clinic)
    assert keys == ["early"] and [a[1] for a in audit] == [201]


@pytest.mark.anyio
async def test_txn_handler_raising_rolls_back_and_is_audited_as_500(
    fastapi_http: httpx.AsyncClient, clinic: AuditStore
) -> None:
    response = await fastapi_http.post("/patients/raise", json={"key": "p3"})
    assert response.status_code == 500
    keys, audit = await state(clinic)
    assert keys == []  # the write before the exception is gone
    assert [(a[0], a[1]) for a in audit] == [("/patients/raise", 500)]


@pytest.mark.anyio
async def test_txn_error_status_rolls_back_and_commits_the_audit_row_alone(
    fastapi_http: httpx.AsyncClient, clinic: AuditStore
) -> None:
    response = await fastapi_http.post("/patients/conflict", json={"key": "p4"})
    assert response.status_code == 409
    keys, audit = await state(clinic)
    assert keys == []
    assert [(a[0], a[1]) for a in audit] == [("/patients/conflict", 409)]


@pytest.mark.anyio
async def test_txn_session_rollback_then_commit_still_waits_for_the_middleware(
    fastapi_http: httpx.AsyncClient, clinic: AuditStore
) -> None:
    response = await fastapi_http.post("/patients/retry", json={"key": "p5"})
    assert response.status_code == 201, response.text
    keys, audit = await state(clinic)
    assert keys == ["p5"]  # the abandoned first attempt was rolled back
    assert [a[1] for a in audit] == [201]


@pytest.mark.anyio
async def test_txn_streamed_body_cannot_write_after_the_commit(
    fastapi_http: httpx.AsyncClient, clinic: AuditStore
) -> None:
    response = await fastapi_http.post("/patients/stream", json={"key": "p6"})
    assert response.status_code == 201
    lines = response.text.splitlines()
    assert lines[0] == "committed" and lines[1].startswith("refused: ")
    keys, audit = await state(clinic)
    assert keys == ["p6"] and [a[1] for a in audit] == [201]


@pytest.mark.anyio
async def test_txn_nan_in_changes_leaves_no_change_and_no_success_row(
    fastapi_http: httpx.AsyncClient, clinic: AuditStore
) -> None:
    # Whether record() refuses it at the call (the handler raises: 500) or the row cannot be
    # written (503, rolled back), the change does not stand and the attempt is recorded.
    response = await fastapi_http.post(
        "/patients", content=json.dumps({"key": "nan", "changes": {"x": math.nan}})
    )
    assert response.status_code in (500, 503)
    if response.status_code == 503:
        body = response.json()
        assert body["error"] == "audit_unavailable" and "nothing was changed" in body["detail"]
        assert "safe to retry" in body["detail"]
    keys, audit = await state(clinic)
    assert keys == []
    assert [(a[0], a[1], a[2]) for a in audit] == [("/patients", response.status_code, None)]


@pytest.mark.anyio
async def test_txn_starlette_app(clinic: AuditStore) -> None:
    stats = AuditStats()
    async for http in _client(build_starlette(clinic)):
        for i in range(5):
            assert (await http.post("/patients", json={"key": f"s{i}"})).status_code == 201
    keys, audit = await state(clinic)
    assert keys == [f"s{i}" for i in range(5)]
    assert [a[2] for a in audit] == [{"key": f"s{i}"} for i in range(5)]
    assert stats.failed == 0


@pytest.mark.anyio
async def test_txn_session_outside_an_audited_request_is_refused(clinic: AuditStore) -> None:
    with pytest.raises(RuntimeError, match="no unit of work"):
        await audit_session({"type": "http", "state": {}})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Request or an ASGI scope"):
        await audit_session(42)  # type: ignore[arg-type]


def test_txn_store_and_sink_are_exclusive(sqlite_url: str) -> None:
    store = AuditStore.from_url(sqlite_url)
    with pytest.raises(TypeError, match="not both or neither"):
        AuditMiddleware(lambda *a: None, store=store, sink=store)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not both or neither"):
        AuditMiddleware(lambda *a: None)  # type: ignore[arg-type]
    from audit_middleware import AuditConfig

    with pytest.raises(ValueError, match="fail_open applies to sink= only"):
        AuditMiddleware(lambda *a: None, store=store, config=AuditConfig(fail_open=True))  # type: ignore[arg-type]


def test_txn_a_store_without_what_the_mode_calls_is_refused_by_name() -> None:
    class WritesOnly:  # a sink= store passed as store=: no unit of work to give
        async def write(self, event: Any) -> None: ...

        async def connect(self) -> None: ...

    with pytest.raises(TypeError, match=r"has no commit_and_release\(\), release\(\): pass"):
        AuditMiddleware(lambda *a: None, store=WritesOnly())  # type: ignore[arg-type]


def _core_app(store: AuditStore, commit_early: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from audit_middleware import audit_connection

    async def create(request: Any) -> Any:
        request.state.audit_organization_id = 3
        conn = await audit_connection(request)
        await conn.execute(sa.insert(Patient).values(key="core", organization_id=3))
        if commit_early:
            await conn.commit()  # wrong: the middleware commits
        return JSONResponse({}, int(request.query_params.get("status", "201")))

    return AuditMiddleware(Starlette(routes=[Route("/p", create, methods=["POST"])]), store=store)


@pytest.mark.anyio
async def test_txn_core_connection_joins_the_transaction(clinic: AuditStore) -> None:
    async for http in _client(_core_app(clinic, commit_early=False)):
        assert (await http.post("/p?status=422")).status_code == 422  # rolled back
        assert (await http.post("/p")).status_code == 201
    keys, audit = await state(clinic)
    assert keys == ["core"] and [a[1] for a in audit] == [422, 201]


@pytest.mark.anyio
async def test_txn_commit_on_the_request_connection_is_reported(
    clinic: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.ERROR, logger="audit_middleware"):
        async for http in _client(_core_app(clinic, commit_early=True)):
            assert (await http.post("/p")).status_code == 201
    assert any("outside the audit transaction" in r.getMessage() for r in caplog.records)
    keys, audit = await state(clinic)
    assert keys == ["core"] and [a[1] for a in audit] == [201]  # the row still follows


@pytest.mark.anyio
async def test_txn_a_context_kept_after_the_request_holds_nothing_of_its_audit(
    clinic: AuditStore,
) -> None:
    # The event loop keeps copies of a context after the request (each timer made during it
    # holds the one it was made in): they must not keep the request's values alive.
    import contextvars
    import gc

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from audit_middleware import record
    from audit_middleware.request import _context

    kept: list[contextvars.Context] = []
    marker = {"marker": "kept-context"}

    async def handler(request: Request) -> Response:
        request.state.audit_organization_id = 3
        session = await audit_session(request)
        session.add(Patient(key="k", organization_id=3))
        record(changes=marker)  # found through the context variable
        kept.append(contextvars.copy_context())
        return JSONResponse({}, 201)

    app = AuditMiddleware(Starlette(routes=[Route("/p", handler, methods=["POST"])]), store=clinic)
    async for http in _client(app):
        assert (await http.post("/p")).status_code == 201
    [context] = kept
    with pytest.raises(RuntimeError, match="found no AuditMiddleware"):
        context.run(record, changes={})
    gc.collect()
    alive = [
        o for o in gc.get_objects() if isinstance(o, _context.RequestAudit) and o.changes == marker
    ]
    assert alive == []
    assert (await state(clinic))[1] == [("/p", 201, marker)]
