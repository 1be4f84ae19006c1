"""Transactional mode on PostgreSQL: a store that refuses writes, round trips, start-up checks."""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from apps.clinic_app import Patient, build_fastapi, create_tables
from psycopg.pq import Trace
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit_middleware import (
    AuditConfig,
    AuditMiddleware,
    AuditStats,
    AuditStore,
    OutboxRelay,
    audit_session,
    database_roles,
    migrate,
    migrate_sync,
    record,
)
from conftest import libpq
from telemetry_client import AsyncTelemetryClient


@pytest.fixture
async def pg_clinic(pg_store: AuditStore) -> AuditStore:
    """pg_store with the clinic app's tables beside the audit tables."""
    await create_tables(pg_store.engine)
    return pg_store


def _client(
    handler: Any, store: AuditStore, config: AuditConfig | None = None
) -> httpx.AsyncClient:
    """A client of a Starlette app serving ``handler`` at ``POST /p``, audited in ``store``."""
    app = Starlette(routes=[Route("/p", handler, methods=["POST"])])
    transport = httpx.ASGITransport(app=AuditMiddleware(app, store=store, config=config))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def _patient_added(request: Request, key: str) -> AsyncSession:
    """The request's session, a patient of organization 3 flushed into it."""
    request.state.audit_organization_id = 3
    session = await audit_session(request)
    session.add(Patient(key=key, organization_id=3))
    await session.flush()
    return session


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(libpq(url)) as conn:
        patients = conn.execute("SELECT count(*) FROM patients").fetchone()
        audit = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    assert patients is not None and audit is not None
    return patients[0], audit[0]


@pytest.mark.anyio
async def test_txn_pg_store_refusing_writes_leaves_no_change_100_of_100(
    pg_url: str, pg_clinic: AuditStore
) -> None:
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_log refuses writes'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    stats = AuditStats()
    app = build_fastapi(pg_clinic)
    app.user_middleware.clear()
    app.add_middleware(AuditMiddleware, store=pg_clinic, stats=stats)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    statuses = []
    async with httpx.AsyncClient(transport=transport, base_url="http://clinic") as http:
        for i in range(100):
            response = await http.post("/patients", json={"key": f"r{i}"})
            statuses.append(response.status_code)
            assert "nothing was changed" in response.json()["detail"]
    assert statuses == [503] * 100
    assert counts(pg_url) == (0, 0)  # no patient committed, and (the trigger) no audit row
    assert stats.failed >= 100


def _round_trips(trace: str) -> int:
    """Client-to-server bursts in a libpq trace: each is one wait for the server."""
    bursts, previous = 0, ""
    for line in trace.splitlines():
        direction = line.split("\t", 1)[0]
        if direction == "F" and previous != "F":
            bursts += 1
        if direction in ("F", "B"):
            previous = direction
    return bursts


@pytest.mark.anyio
async def test_txn_pg_audited_request_costs_no_extra_round_trip(
    pg_url: str, tmp_path: Path
) -> None:
    await migrate(pg_url)
    store = AuditStore.from_url(pg_url, pool_size=1, max_overflow=0)
    await create_tables(store.engine)

    async def audited(request: Request) -> Response:
        request.state.audit_organization_id = 3
        session = await audit_session(request)
        session.add(Patient(key=request.query_params["k"], organization_id=3))
        await session.commit()
        record(request, changes={"k": request.query_params["k"]})
        return JSONResponse({}, 201)

    async def plain(request: Request) -> Response:
        async with AsyncSession(store.engine) as session:
            session.add(Patient(key=request.query_params["k"], organization_id=3))
            await session.commit()
        return JSONResponse({}, 201)

    apps = {
        "audited": AuditMiddleware(
            Starlette(routes=[Route("/p", audited, methods=["POST"])]), store=store
        ),
        "plain": Starlette(routes=[Route("/p", plain, methods=["POST"])]),
    }
    trips: dict[str, list[int]] = {"audited": [], "plain": []}
    async with store.engine.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
    assert pg is not None
    for name, app in apps.items():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for i in range(8):  # past psycopg's prepare threshold, so prepares do not count
                assert (await http.post(f"/p?k={name}-warm{i}")).status_code == 201
            for i in range(3):
                trace_file = tmp_path / f"{name}{i}.trace"
                with trace_file.open("w") as sink:
                    pg.pgconn.trace(sink.fileno())
                    pg.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
                    assert (await http.post(f"/p?k={name}{i}")).status_code == 201
                    pg.pgconn.untrace()
                trips[name].append(_round_trips(trace_file.read_text()))
    await store.aclose()
    # BEGIN, the patient INSERT, COMMIT: the audit INSERT travels with the COMMIT.
    assert trips["plain"] == [3, 3, 3]
    assert trips["audited"] == trips["plain"]
    assert counts(pg_url) == (22, 11)


def _lifespan_messages() -> tuple[Any, Any, list[dict[str, Any]]]:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return receive, send, sent


@pytest.fixture
def reader_role(pg_url: str) -> Any:
    """A role that may read audit_log but not write it."""
    role = f"auditevt_txn_ro_{uuid.uuid4().hex[:8]}"
    migrate_sync(pg_url)
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
        conn.execute(f'GRANT SELECT ON audit_log, audit_outbox TO "{role}"')
    yield role
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.anyio
@pytest.mark.parametrize("wrapped", [False, True], ids=["store", "relay.notifying(store)"])
async def test_txn_pg_startup_refuses_when_the_role_cannot_insert(
    pg_url: str, reader_role: str, wrapped: bool, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(pg_url)
    store = AuditStore.from_url(f"{pg_url}?options=-crole%3D{reader_role}")
    client = AsyncTelemetryClient("http://127.0.0.1:9")
    target: Any = OutboxRelay(store, client).notifying(store) if wrapped else store
    started: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.append(True)

    receive, send, sent = _lifespan_messages()
    try:
        await AuditMiddleware(app, store=target)({"type": "lifespan"}, receive, send)
    finally:
        await store.aclose()
        await client.aclose()
    assert started == []  # the app never started
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    message = sent[0]["message"]
    assert f"role '{reader_role}' cannot write the audit log" in message
    assert "INSERT on audit_log" in message and "INSERT on audit_outbox" in message
    app_role = database_roles(pg_url.rsplit("/", 1)[1]).app  # the per-database role
    assert f'GRANT {app_role} TO "{reader_role}"' in message


@pytest.mark.anyio
async def test_txn_pg_startup_warn_starts_and_requests_answer_503(
    pg_url: str, reader_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(pg_url)
    async with AuditStore.from_url(pg_url) as admin:
        await create_tables(admin.engine)
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(f'GRANT SELECT, INSERT ON patients TO "{reader_role}"')
        conn.execute(f'GRANT USAGE ON SEQUENCE patients_id_seq TO "{reader_role}"')
    store = AuditStore.from_url(f"{pg_url}?options=-crole%3D{reader_role}")
    app = build_fastapi(store, AuditConfig(startup_check="warn"))
    receive, send, sent = _lifespan_messages()
    with caplog.at_level(logging.ERROR, logger="audit_middleware"):
        await app({"type": "lifespan", "state": {}}, receive, send)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://clinic") as http:
            response = await http.post("/patients", json={"key": "w"})
    await store.aclose()
    assert sent[0]["type"] == "lifespan.startup.complete"
    assert any("cannot write the audit log" in r.getMessage() for r in caplog.records)
    assert response.status_code == 503
    assert counts(pg_url) == (0, 0)


@pytest.mark.anyio
async def test_txn_pg_identity_of_the_wrong_type_is_named_once_per_route(
    pg_clinic: AuditStore, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: Request) -> Response:
        request.state.audit_user_id = "42"  # a JWT claim, still text
        request.state.audit_organization_id = 3
        (await audit_session(request)).add(
            Patient(key=request.query_params["k"], organization_id=3)
        )
        return JSONResponse({}, 201)

    app = AuditMiddleware(
        Starlette(routes=[Route("/p", handler, methods=["POST"])]), store=pg_clinic
    )
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.ERROR, logger="audit_middleware"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            statuses = [(await http.post(f"/p?k={i}")).status_code for i in range(3)]
    assert statuses == [503] * 3
    named = [r.getMessage() for r in caplog.records if "cannot be audited" in r.getMessage()]
    assert len(named) == 1
    assert "request.state.audit_user_id holds '42' of type str; expected an int" in named[0]
    # Nothing committed; each attempt recorded (as user 0, the value being unusable).
    with psycopg.connect(libpq(pg_url)) as conn:
        rows = conn.execute("SELECT user_id, status_code FROM audit_log").fetchall()
        patients = conn.execute("SELECT count(*) FROM patients").fetchone()
    assert rows == [(0, 503)] * 3 and patients == (0,)


@pytest.mark.anyio
async def test_txn_pg_connection_lost_before_the_commit_answers_outcome_unknown(
    pg_clinic: AuditStore, pg_url: str
) -> None:
    killed: list[int] = []

    async def handler(request: Request) -> Response:
        session = await _patient_added(request, "lost")
        if killed:
            return JSONResponse({}, 201)
        pid = (await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        async with await psycopg.AsyncConnection.connect(libpq(pg_url), autocommit=True) as dba:
            await dba.execute("SELECT pg_terminate_backend(%s)", (pid,))
        killed.append(pid)
        return JSONResponse({}, 201)

    async with _client(handler, pg_clinic) as http:
        response = await http.post("/p")
        assert (await http.post("/p")).status_code == 201  # the pool dropped the dead connection
    assert response.status_code == 503
    assert response.json()["error"] == "audit_commit_unknown"
    assert "committed together or not at all" in response.json()["detail"]
    assert counts(pg_url) == (1, 1)  # the killed one committed nothing; the next one did


@pytest.mark.anyio
async def test_txn_pg_a_hung_write_times_out_and_leaves_the_connection_usable(
    pg_clinic: AuditStore, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: Request) -> Response:
        session = await _patient_added(request, f"p{len(pids)}")
        pids.append((await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())
        return JSONResponse({}, 201)

    pids: list[int] = []
    async with _client(handler, pg_clinic, AuditConfig(write_timeout=0.3)) as http:
        with psycopg.connect(libpq(pg_url)) as blocker:
            # The audit INSERT waits for this lock: a database that does not answer.
            blocker.execute("LOCK TABLE audit_outbox IN ACCESS EXCLUSIVE MODE")
            hung = await http.post("/p")
            blocker.rollback()
        after = await http.post("/p")
    assert hung.status_code == 503
    assert hung.json()["error"] == "audit_commit_unknown"
    [logged] = [r for r in caplog.records if "audit write failed" in r.getMessage()]
    assert "TimeoutError: the audit write took longer than 0.3 s" in logged.getMessage()
    # The statement was cancelled in the server, so the same connection served the next request.
    assert after.status_code == 201 and pids[0] == pids[1]
    assert counts(pg_url) == (1, 1)


@pytest.mark.anyio
async def test_txn_pg_a_failed_statement_the_handler_caught_commits_nothing(
    pg_clinic: AuditStore, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: Request) -> Response:
        session = await _patient_added(request, "caught")
        with contextlib.suppress(sa.exc.DBAPIError):  # caught: answered as if all went well
            await session.execute(sa.text("SELECT 1 / 0"))
        return JSONResponse({}, 201)

    async with _client(handler, pg_clinic) as http:
        response = await http.post("/p")
    assert response.status_code == 503
    assert "nothing was changed" in response.json()["detail"]
    [logged] = [r for r in caplog.records if "audit write failed" in r.getMessage()]
    assert "a statement of the request's transaction failed" in logged.getMessage()
    with psycopg.connect(libpq(pg_url)) as conn:
        rows = conn.execute("SELECT status_code FROM audit_log").fetchall()
    # No patient; the attempt alone is recorded, with what the client got.
    assert counts(pg_url) == (0, 1) and rows == [(503,)]


@pytest.mark.anyio
@pytest.mark.parametrize("rollback", ["error status", "session.rollback()", "savepoint"])
async def test_txn_pg_a_rollback_does_not_cost_the_next_write_its_statement(
    pg_url: str, rollback: str
) -> None:
    # psycopg prepares a statement run five times on a connection, and then answers every
    # ROLLBACK with DEALLOCATE ALL, which takes the audit write's prepared statement too.
    await migrate(pg_url)
    async with AuditStore.from_url(pg_url, pool_size=1, max_overflow=0) as store:
        await create_tables(store.engine)

        async def handler(request: Request) -> Response:
            session = await _patient_added(request, f"p{len(answers)}")
            for _ in range(6):
                await session.execute(sa.text("SELECT 1"))  # psycopg prepares it
            if rollback == "session.rollback()":
                await session.rollback()
            elif rollback == "savepoint":
                with contextlib.suppress(sa.exc.DBAPIError):
                    async with session.begin_nested():
                        await session.execute(sa.text("SELECT 1 / 0"))
            return JSONResponse({}, 409 if rollback == "error status" else 201)

        answers: list[int] = []
        async with _client(handler, store) as http:
            for _ in range(4):
                answers.append((await http.post("/p")).status_code)
    expected = 409 if rollback == "error status" else 201
    assert answers == [expected] * 4
    with psycopg.connect(libpq(pg_url)) as conn:
        rows = conn.execute("SELECT status_code FROM audit_log").fetchall()
    assert rows == [(expected,)] * 4
