"""``AuditMiddleware`` over the real store (SQLite here; PostgreSQL in test_middleware_pg.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import httpx
import pytest
import sqlalchemy as sa
from apps.audited_app import build_fastapi, build_starlette
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from audit_middleware import (
    DEFAULT_METHODS,
    AuditConfig,
    AuditMiddleware,
    AuditStats,
    AuditStore,
    RedactionPolicy,
    TrustedProxies,
    record,
)
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_OUTBOX
from auditevt import Action, ActionContext, Event, Timestamp

USER = {"x-test-user": "7", "x-test-org": "3"}

# Secrets seeded in 24 shapes of ``changes``; none may reach audit_log or audit_outbox.
SECRETS = [f"SECRET-{i:02d}-q8Zt" for i in range(24)]


def secret_shapes() -> list[Any]:
    s = SECRETS
    return [
        {"password": s[0]},
        {"PASSWORD": s[1]},
        {"Pass-Word": s[2]},
        {"API_KEY": s[3]},
        {"apiKey": s[4]},
        {"client.secret": s[5]},
        {"Access Token": s[6]},
        {"x-auth-token": s[7]},
        {"Authorization": "Bearer " + s[8]},
        {"headers": {"Cookie": "sid=" + s[9]}},
        {"patient": {"ssn": s[10], "name": "Ann"}},
        {"creditCardNumber": s[11]},
        {"newpassword": s[12]},
        {"refreshToken": s[13]},
        {"password": {"old": s[14], "new": s[14]}},
        {"tokens": [s[15], s[15]]},
        {"users": [{"name": "a", "secret": s[16]}, {"name": "b", "pwd": s[16]}]},
        {"a": {"b": [{"c": [{"d": {"client_secret": s[17]}}]}]}},
        [{"token": s[18]}, {"id": 3}],
        {"before": {"password_hash": s[19]}, "after": {"password_hash": s[19]}},
        {"RSAPrivateKey": s[20]},
        {"response": {"set-cookie": [s[21]]}},
        {"PATIENT_SSN": s[22]},
        {"nested": [[{"Id_Token": s[23]}]]},
    ]


async def fetch_rows(store: AuditStore) -> tuple[list[Any], list[Any]]:
    """Every audit_log and audit_outbox row, in id order."""
    async with store.engine.connect() as conn:
        log = (await conn.execute(sa.select(AUDIT_LOG).order_by(AUDIT_LOG.c.id))).all()
        outbox = (await conn.execute(sa.select(AUDIT_OUTBOX).order_by(AUDIT_OUTBOX.c.id))).all()
    return list(log), list(outbox)


async def dump_tables(store: AuditStore) -> str:
    """Every column of every row of both tables, as text (raw SQL: nothing decoded)."""
    lines = []
    async with store.engine.connect() as conn:
        for table in ("audit_log", "audit_outbox"):
            for row in (await conn.exec_driver_sql(f"SELECT * FROM {table}")).all():
                lines.append(json.dumps([str(value) for value in row]))
    return "\n".join(lines)


def client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def http_scope(method: str = "POST", path: str = "/patients") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("192.0.2.10", 5000),
        "server": ("testserver", 80),
    }


async def empty_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class ListSink:
    """Collects events in memory; only for tests of what the event holds before the DB."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def write(self, event: Event) -> UUID:
        self.events.append(event)
        return UUID(int=len(self.events))


# -- what each row holds ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_writes_the_event_and_its_outbox_row(sqlite_store: AuditStore) -> None:
    before = Timestamp.now()
    async with client(build_starlette(sqlite_store)) as http:
        response = await http.post(
            "/patients?access_token=abc&q=1",
            json={"id": 41, "changes": {"name": "Ann", "password": "hunter2"}},
            headers={**USER, "user-agent": "agent/1.0"},
        )
    after = Timestamp.now()
    assert response.status_code == 201
    [row], [outbox] = await fetch_rows(sqlite_store)
    assert (row.action, row.entity_type, row.entity_id) == ("CREATE", "patient", 41)
    assert (row.user_id, row.organization_id, row.status_code) == (7, 3, 201)
    assert row.ip_address == "127.0.0.1"
    assert row.user_agent == "agent/1.0"
    assert row.request_path == "/patients"  # no query string: it may carry tokens
    assert row.changes == {"name": "Ann", "password": "[REDACTED]"}
    assert row.action_context is None
    event = Event.model_validate_json(row.event_json)
    assert before <= event.timestamp <= after
    assert event.timestamp.offset_seconds == 0
    assert "hunter2" not in row.event_json and "access_token" not in row.event_json
    assert outbox.event_id == row.event_id
    assert outbox.audit_id == row.id
    assert outbox.payload == row.event_json


@pytest.mark.anyio
async def test_middleware_actions_entities_and_statuses(sqlite_store: AuditStore) -> None:
    async with client(build_starlette(sqlite_store)) as http:
        assert (
            await http.put("/patients/5", json={"changes": {"a": 1}}, headers=USER)
        ).status_code == 200
        assert (
            await http.patch("/patients/6", json={"status": 202}, headers=USER)
        ).status_code == 202
        assert (await http.delete("/patients/7", headers=USER)).status_code == 204
        response = await http.post(
            "/patients/7/appointments", json={"appointment_id": 99, "at": "10:00"}, headers=USER
        )
        assert response.status_code == 201
    rows, outbox = await fetch_rows(sqlite_store)
    assert [(r.action, r.entity_type, r.entity_id, r.status_code) for r in rows] == [
        ("UPDATE", "patient", 5, 200),
        ("UPDATE", "patient", 6, 202),
        ("DELETE", "patient", 7, 204),
        ("CREATE", "appointment", 99, 201),
    ]
    assert rows[0].changes == {"a": 1}
    assert rows[3].changes == {"at": "10:00"}
    assert len(outbox) == 4


@pytest.mark.anyio
async def test_middleware_get_head_options_are_not_audited(sqlite_store: AuditStore) -> None:
    async with client(build_starlette(sqlite_store)) as http:
        response = await http.get("/patients/5", headers=USER)
        assert response.json() == {"id": 5, "audited": False}
        assert (await http.head("/patients/5", headers=USER)).status_code == 200
        assert (await http.options("/patients/5", headers=USER)).status_code == 405
        assert (await http.get("/health")).status_code == 200
    assert await fetch_rows(sqlite_store) == ([], [])


@pytest.mark.anyio
async def test_middleware_each_failure_mode_gives_exactly_one_row(sqlite_store: AuditStore) -> None:
    app = build_starlette(sqlite_store)
    async with client(app, raise_app_exceptions=False) as http:
        assert (await http.post("/errors/bad-request", headers=USER)).status_code == 400
        assert (await http.post("/errors/server-error", headers=USER)).status_code == 500
        assert (await http.post("/errors/raise", headers=USER)).status_code == 500
        assert (await http.post("/nowhere/12", headers=USER)).status_code == 404
        assert (await http.put("/patients", headers=USER)).status_code == 405
    rows, outbox = await fetch_rows(sqlite_store)
    assert [(r.request_path, r.status_code) for r in rows] == [
        ("/errors/bad-request", 400),
        ("/errors/server-error", 500),
        ("/errors/raise", 500),
        ("/nowhere/12", 404),
        ("/patients", 405),
    ]
    assert len(outbox) == 5
    # Identity set by the handler before it raised is still seen.
    assert {(r.user_id, r.organization_id) for r in rows[:3]} == {(7, 3)}
    # An unmatched route falls back to the raw path for the entity.
    assert (rows[3].entity_type, rows[3].entity_id) == ("nowhere", 12)


@pytest.mark.anyio
async def test_middleware_exception_is_audited_as_500_and_reraised(
    sqlite_store: AuditStore,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["state"]["audit_organization_id"] = 4
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await AuditMiddleware(app, sink=sqlite_store)(http_scope(), empty_receive, _discard)
    [row], _ = await fetch_rows(sqlite_store)
    assert (row.status_code, row.organization_id, row.ip_address) == (500, 4, "192.0.2.10")


@pytest.mark.anyio
async def test_middleware_app_without_response_is_audited_as_500(sqlite_store: AuditStore) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    await AuditMiddleware(app, sink=sqlite_store)(http_scope(), empty_receive, _discard)
    [row], _ = await fetch_rows(sqlite_store)
    assert row.status_code == 500


@pytest.mark.anyio
async def test_middleware_client_disconnect_before_response_is_audited_once(
    sqlite_store: AuditStore,
) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = build_starlette(sqlite_store)
    scope = http_scope("POST", "/read-body")
    scope["headers"] += [(b"x-test-user", b"8"), (b"x-test-org", b"2")]
    with pytest.raises(ClientDisconnect):
        await app(scope, receive, send)
    [row], [_] = await fetch_rows(sqlite_store)
    # 499: the client closed the request before any answer (nginx's convention).
    assert (row.status_code, row.user_id, row.organization_id) == (499, 8, 2)


@pytest.mark.anyio
async def test_middleware_cancelled_request_is_still_audited(sqlite_store: AuditStore) -> None:
    entered = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["state"]["audit_organization_id"] = 5
        entered.set()
        await anyio.sleep_forever()

    middleware = AuditMiddleware(app, sink=sqlite_store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, http_scope(), empty_receive, _discard)
        await entered.wait()
        tg.cancel_scope.cancel()
    [row], [_] = await fetch_rows(sqlite_store)
    assert (row.status_code, row.organization_id) == (499, 5)


@pytest.mark.anyio
async def test_middleware_send_failing_after_write_gives_one_row(sqlite_store: AuditStore) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["state"]["audit_organization_id"] = 6
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def broken_send(message: Any) -> None:
        raise OSError("connection reset by peer")

    with pytest.raises(OSError, match="reset"):
        await AuditMiddleware(app, sink=sqlite_store)(http_scope(), empty_receive, broken_send)
    [row], [_] = await fetch_rows(sqlite_store)
    assert row.status_code == 201


@pytest.mark.anyio
async def test_middleware_streaming_response_is_audited_once(sqlite_store: AuditStore) -> None:
    async with client(build_starlette(sqlite_store)) as http:
        response = await http.post("/stream", headers=USER)
    assert response.text == "chunk0\nchunk1\nchunk2\n"
    [row], _ = await fetch_rows(sqlite_store)
    assert row.status_code == 201


async def _discard(message: Any) -> None:
    return None


# -- the row is committed before the response is released ------------------------------------


class CountAtResponseStart:
    """Outer ASGI layer: counts audit_log rows (on its own connection) as each response starts."""

    def __init__(self, app: Any, engine: Any) -> None:
        self.app = app
        self.engine = engine
        self.counts: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def observe(message: Any) -> None:
            if message["type"] == "http.response.start":
                async with self.engine.connect() as conn:
                    count = await conn.scalar(sa.select(sa.func.count()).select_from(AUDIT_LOG))
                self.counts.append(int(count or 0))
            await send(message)

        await self.app(scope, receive, observe)


@pytest.mark.anyio
async def test_middleware_row_is_committed_before_the_response_starts(
    sqlite_store: AuditStore, sqlite_url: str
) -> None:
    observer_store = AuditStore.from_url(sqlite_url)
    app = CountAtResponseStart(build_starlette(sqlite_store), observer_store.engine)
    try:
        async with client(app) as http:
            for i in range(1, 11):
                response = await http.post("/patients", json={"id": i}, headers=USER)
                assert response.status_code == 201
                rows, outbox = await fetch_rows(sqlite_store)
                assert len(rows) == len(outbox) == i
    finally:
        await observer_store.aclose()
    assert app.counts == list(range(1, 11))


# -- failing closed --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_database_unreachable_answers_503(
    caplog: pytest.LogCaptureFixture, closed_port: int
) -> None:
    dead = AuditStore.from_url(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/x")
    stats = AuditStats()
    try:
        async with client(build_starlette(dead, stats=stats)) as http:
            responses = [
                await http.post("/patients", json={"id": 1}, headers=USER),
                await http.put("/patients/1", json={}, headers=USER),
                await http.patch("/patients/1", json={}, headers=USER),
                await http.delete("/patients/1", headers=USER),
                await http.post("/stream", headers=USER),
                await http.post("/errors/bad-request", headers=USER),
            ]
            assert (await http.get("/patients/1", headers=USER)).status_code == 200
    finally:
        await dead.aclose()
    for response in responses:
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == "audit_unavailable"
        assert "id" not in response.json()  # the app's body is never leaked
    assert stats.failed == 6 and stats.written == 0
    assert [r.levelno for r in caplog.records if "answering 503" in r.getMessage()] == [
        logging.ERROR
    ] * 6


@pytest.mark.anyio
async def test_middleware_sqlite_unopenable_answers_503(tmp_path: Path) -> None:
    broken = AuditStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'a.db'}")
    try:
        async with client(build_starlette(broken)) as http:
            response = await http.post("/patients", json={"id": 1}, headers=USER)
    finally:
        await broken.aclose()
    assert response.status_code == 503


@pytest.mark.anyio
async def test_middleware_bad_identity_value_answers_503(sqlite_store: AuditStore) -> None:
    config = AuditConfig(identity_resolver=lambda scope: (7, "3"))  # type: ignore[arg-type,return-value]
    stats = AuditStats()
    async with client(build_starlette(sqlite_store, config, stats)) as http:
        response = await http.post("/patients", json={"id": 1})
    assert response.status_code == 503
    assert stats.failed == 1
    assert await fetch_rows(sqlite_store) == ([], [])


@pytest.mark.anyio
async def test_middleware_fail_open_releases_the_response_loudly(
    caplog: pytest.LogCaptureFixture, closed_port: int
) -> None:
    dead = AuditStore.from_url(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/x")
    stats = AuditStats()
    try:
        app = build_starlette(dead, AuditConfig(fail_open=True), stats)
        async with client(app) as http:
            response = await http.post("/patients", json={"id": 1}, headers=USER)
    finally:
        await dead.aclose()
    assert response.status_code == 201
    assert (stats.failed, stats.failed_open, stats.written) == (1, 1, 0)
    [logged] = [r for r in caplog.records if "fail_open" in r.getMessage()]
    assert logged.levelno == logging.ERROR and "WITHOUT" in logged.getMessage()


@pytest.mark.anyio
async def test_middleware_write_timeout_answers_503() -> None:
    class HangingSink:
        async def write(self, event: Event) -> UUID:
            await anyio.sleep(10)
            raise AssertionError("not reached")

    app = build_starlette(HangingSink(), AuditConfig(write_timeout=0.05))
    async with client(app) as http:
        response = await http.post("/patients", json={"id": 1}, headers=USER)
    assert response.status_code == 503


# -- identity, context, proxies, user agent ---------------------------------------------------


@pytest.mark.anyio
async def test_middleware_missing_organization_is_audited_as_anonymous(
    sqlite_store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    stats = AuditStats()
    async with client(build_starlette(sqlite_store, stats=stats)) as http:
        assert (await http.post("/patients", json={"id": 1})).status_code == 201
        assert (
            await http.post("/patients", json={"id": 2}, headers={"x-test-user": "9"})
        ).status_code == 201
    rows, _ = await fetch_rows(sqlite_store)
    assert [(r.user_id, r.organization_id) for r in rows] == [(0, 0), (9, 0)]
    assert stats.anonymous == 2
    # Once a minute per route, not once a request.
    assert sum("no authenticated organization" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.anyio
async def test_middleware_missing_organization_can_be_skipped_or_given_an_id(
    sqlite_store: AuditStore,
) -> None:
    stats = AuditStats()
    skip = build_starlette(sqlite_store, AuditConfig(on_missing_organization="skip"), stats)
    async with client(skip) as http:
        assert (await http.post("/patients", json={"id": 1})).status_code == 201
        assert (await http.post("/patients", json={"id": 2}, headers=USER)).status_code == 201
    assert stats.skipped == 1
    anonymous = build_starlette(sqlite_store, AuditConfig(anonymous_organization_id=-1))
    async with client(anonymous) as http:
        assert (await http.post("/patients", json={"id": 3})).status_code == 201
    rows, _ = await fetch_rows(sqlite_store)
    assert [(r.entity_id, r.organization_id) for r in rows] == [(2, 3), (3, -1)]


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True])
async def test_middleware_identity_resolver(sqlite_store: AuditStore, is_async: bool) -> None:
    def sync_resolver(scope: Any) -> tuple[int | None, int | None]:
        headers = dict(scope["headers"])
        return int(headers[b"x-uid"]), int(headers[b"x-oid"])

    async def async_resolver(scope: Any) -> tuple[int | None, int | None]:
        return sync_resolver(scope)

    config = AuditConfig(identity_resolver=async_resolver if is_async else sync_resolver)
    async with client(build_starlette(sqlite_store, config)) as http:
        response = await http.post(
            "/patients", json={"id": 1}, headers={"x-uid": "70", "x-oid": "30"}
        )
    assert response.status_code == 201
    [row], _ = await fetch_rows(sqlite_store)
    assert (row.user_id, row.organization_id) == (70, 30)


@pytest.mark.anyio
async def test_middleware_break_glass_and_impersonation(sqlite_store: AuditStore) -> None:
    async with client(build_starlette(sqlite_store)) as http:
        await http.post("/patients", json={"id": 1}, headers={**USER, "x-test-break-glass": "11"})
        await http.post("/patients", json={"id": 2}, headers={**USER, "x-test-impersonation": "0"})
    rows, _ = await fetch_rows(sqlite_store)
    assert [(r.action_context, r.break_glass_id, r.impersonation_id) for r in rows] == [
        ("break_glass", 11, None),
        ("impersonation", None, 0),
    ]
    events = [Event.model_validate_json(r.event_json) for r in rows]
    assert events[0].action_context is ActionContext.BREAK_GLASS
    assert '"impersonation_id":0' in rows[1].event_json


@pytest.mark.anyio
async def test_middleware_explicit_action_context_from_state(sqlite_store: AuditStore) -> None:
    async def handler(request: Request) -> Response:
        request.state.audit_organization_id = 1
        request.state.audit_action_context = "normal"
        return Response(status_code=201)

    app = Starlette(
        routes=[Route("/things", handler, methods=["POST"])],
        middleware=[Middleware(AuditMiddleware, sink=sqlite_store)],
    )
    async with client(app) as http:
        await http.post("/things")
    [row], _ = await fetch_rows(sqlite_store)
    assert (row.entity_type, row.action_context) == ("thing", "normal")


@pytest.mark.anyio
async def test_middleware_ip_through_trusted_proxy(sqlite_store: AuditStore) -> None:
    trusted = AuditConfig(trusted_proxies=TrustedProxies(["127.0.0.1/32"]))
    async with client(build_starlette(sqlite_store, trusted)) as http:
        await http.post(
            "/patients",
            json={"id": 1},
            headers=[
                ("x-test-org", "1"),
                ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
                ("x-forwarded-for", "[2001:db8::5]:443"),
            ],
        )
        await http.post(
            "/patients", json={"id": 2}, headers={"x-test-org": "1", "x-forwarded-for": "garbage"}
        )
    async with client(build_starlette(sqlite_store)) as http:
        await http.post(
            "/patients", json={"id": 3}, headers={"x-test-org": "1", "x-forwarded-for": "6.6.6.6"}
        )
    rows, _ = await fetch_rows(sqlite_store)
    assert [r.ip_address for r in rows] == ["2001:db8::5", "127.0.0.1", "127.0.0.1"]


@pytest.mark.anyio
async def test_middleware_user_agent_is_capped(sqlite_store: AuditStore) -> None:
    config = AuditConfig(max_user_agent_length=16)
    async with client(build_starlette(sqlite_store, config)) as http:
        await http.post("/patients", json={"id": 1}, headers={**USER, "user-agent": "A" * 5000})
    async with client(build_starlette(sqlite_store)) as http:
        await http.post("/patients", json={"id": 2}, headers={**USER, "user-agent": "B" * 5000})
    rows, _ = await fetch_rows(sqlite_store)
    assert [len(r.user_agent) for r in rows] == [16, 512]


# -- the handler helper ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_record_skip_and_late_call(sqlite_store: AuditStore) -> None:
    stats = AuditStats()
    app = build_starlette(sqlite_store, stats=stats)
    async with client(app) as http:
        assert (await http.post("/skip", headers=USER)).status_code == 200
        assert (await http.post("/late", headers=USER)).status_code == 201
    assert stats.skipped == 1
    [row], _ = await fetch_rows(sqlite_store)
    assert (row.request_path, row.changes) == ("/late", None)
    [error] = app.state.late_errors
    assert "after the response started" in error


@pytest.mark.anyio
async def test_record_rejects_bad_values() -> None:
    errors: list[str] = []

    async def handler(request: Request) -> Response:
        for kwargs in ({"entity_id": "5"}, {"entity_type": 5}, {"entity_id": True}):
            try:
                record(request, **kwargs)
            except TypeError as exc:
                errors.append(str(exc))
        return Response(status_code=201)

    app = Starlette(routes=[Route("/x", handler, methods=["POST"])])
    async with client(AuditMiddleware(app, sink=ListSink())) as http:
        await http.post("/x")
    assert len(errors) == 3 and "entity_id='5'" in errors[0]


@pytest.mark.anyio
async def test_middleware_handler_overrides_win_over_the_route() -> None:
    sink = ListSink()

    async def archive(request: Request) -> Response:
        request.state.audit_organization_id = 1
        record(request, entity_type="patient")
        record(request, entity_id=request.path_params["pid"], changes={"archived": True})
        return Response(status_code=200)

    app = Starlette(routes=[Route("/patients/{pid:int}/archive", archive, methods=["POST"])])
    async with client(AuditMiddleware(app, sink=sink)) as http:
        await http.post("/patients/12/archive")
    [event] = sink.events
    assert (event.entity_type, event.entity_id, event.changes) == (
        "patient",
        12,
        {"archived": True},
    )


# -- route selection -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_include_exclude_and_predicate() -> None:
    sink = ListSink()

    async def ok(request: Request) -> Response:
        request.state.audit_organization_id = 1
        return Response(status_code=200)

    routes = [
        Route(p, ok, methods=["POST"])
        for p in ("/login", "/login/sso", "/login-help", "/api/items", "/api/internal/x", "/other")
    ]
    config = AuditConfig(
        include_paths=("/login-help", "/api", "/login"),
        exclude_paths=("/login", "/api/internal/"),
        should_audit=lambda scope: (
            scope["route"].path != "/login-help" or b"x" in scope["query_string"]
        ),
        methods={**DEFAULT_METHODS, "POST": Action.UPDATE},
    )
    async with client(AuditMiddleware(Starlette(routes=routes), sink=sink, config=config)) as http:
        for path in (
            "/login",
            "/login/sso",
            "/login-help",
            "/login-help?x=1",
            "/api/items",
            "/api/internal/x",
            "/other",
        ):
            assert (await http.post(path)).status_code == 200
    assert [(e.request_path, e.action) for e in sink.events] == [
        ("/login-help", Action.UPDATE),
        ("/api/items", Action.UPDATE),
    ]


@pytest.mark.anyio
async def test_middleware_mounted_routes() -> None:
    sink = ListSink()

    async def ok(request: Request) -> Response:
        request.state.audit_organization_id = 1
        return Response(status_code=201)

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse({}, 201)(scope, receive, send)

    app = Starlette(
        routes=[
            Mount("/api/v2", routes=[Route("/care-plans/{plan_id}", ok, methods=["PUT"])]),
            Mount("/legacy", app=raw_app),
        ]
    )
    async with client(AuditMiddleware(app, sink=sink)) as http:
        await http.put("/api/v2/care-plans/77")
        await http.post("/legacy/forms/5")
    assert [(e.entity_type, e.entity_id, e.request_path) for e in sink.events] == [
        ("care-plan", 77, "/api/v2/care-plans/77"),
        ("form", 5, "/legacy/forms/5"),
    ]


# -- FastAPI ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_fastapi_app(sqlite_store: AuditStore) -> None:
    app = build_fastapi(sqlite_store)
    async with client(app, raise_app_exceptions=False) as http:
        created = await http.post(
            "/api/v1/forms",
            json={"id": 8, "changes": {"title": "Intake", "apiKey": "k"}},
            headers=USER,
        )
        assert created.status_code == 201
        updated = await http.put("/api/v1/forms/8", json={"title": "Intake 2"}, headers=USER)
        assert updated.status_code == 200
        assert (await http.delete("/api/v1/forms/404", headers=USER)).status_code == 404
        assert (await http.get("/api/v1/forms/8", headers=USER)).status_code == 200
        assert (await http.post("/api/v1/forms/8/raise", headers=USER)).status_code == 500
        assert (await http.put("/api/v1/forms/x", json={}, headers=USER)).status_code == 422
    rows, outbox = await fetch_rows(sqlite_store)
    assert [
        (r.action, r.entity_type, r.entity_id, r.user_id, r.organization_id, r.status_code)
        for r in rows
    ] == [
        ("CREATE", "form", 8, 7, 3, 201),
        ("UPDATE", "form", 8, 7, 3, 200),
        ("DELETE", "form", 404, 7, 3, 404),
        ("CREATE", "raise", 0, 7, 3, 500),  # the last static segment: override with record()
        ("UPDATE", "form", 0, 7, 3, 422),
    ]
    assert rows[0].changes == {"title": "Intake", "apiKey": "[REDACTED]"}
    assert rows[1].changes == {"title": "Intake 2"}  # recorded from a sync endpoint's thread
    assert len(outbox) == 5


# -- redaction end to end --------------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_secrets_reach_neither_table(sqlite_store: AuditStore) -> None:
    shapes = secret_shapes()
    assert len(shapes) >= 20
    async with client(build_starlette(sqlite_store)) as http:
        for i, changes in enumerate(shapes):
            response = await http.post(
                "/patients", json={"id": i + 1, "changes": changes}, headers=USER
            )
            assert response.status_code == 201
    dump = await dump_tables(sqlite_store)
    rows, outbox = await fetch_rows(sqlite_store)
    assert len(rows) == len(outbox) == len(shapes)
    for secret in SECRETS:
        assert secret not in dump
    assert dump.count("[REDACTED]") >= len(shapes) * 2


@pytest.mark.anyio
async def test_middleware_custom_redaction_callable() -> None:
    sink = ListSink()
    policy = RedactionPolicy(["diagnosis"], fragments=(), replacement="***")

    async def handler(request: Request) -> Response:
        request.state.audit_organization_id = 1
        record(request, changes={"Diagnosis": "flu", "password": "kept by this policy"})
        return Response(status_code=201)

    app = Starlette(routes=[Route("/notes", handler, methods=["POST"])])
    async with client(
        AuditMiddleware(app, sink=sink, config=AuditConfig(redaction=policy))
    ) as http:
        await http.post("/notes")
    assert sink.events[0].changes == {"Diagnosis": "***", "password": "kept by this policy"}


# -- plumbing --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_passes_non_http_scopes_through() -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    middleware = AuditMiddleware(app, sink=ListSink())
    for kind in ("lifespan", "websocket"):
        scope = {"type": kind}
        await middleware(scope, empty_receive, _discard)
        assert seen[-1] == (scope, empty_receive, _discard)
        assert "state" not in scope


@pytest.mark.anyio
async def test_middleware_counts_in_prometheus(sqlite_store: AuditStore) -> None:
    from prometheus_client import REGISTRY

    def written() -> float:
        name = "auditevt_middleware_requests_total"
        value = REGISTRY.get_sample_value(name, {"outcome": "written"})
        return value or 0.0

    before = written()
    async with client(build_starlette(sqlite_store)) as http:
        await http.post("/patients", json={"id": 1}, headers=USER)
        await http.post("/patients", json={"id": 2}, headers=USER)
    assert written() == before + 2
    # Opted out: counted on the middleware only.
    stats = AuditStats()
    async with client(build_starlette(sqlite_store, AuditConfig(metrics=False), stats)) as http:
        await http.post("/patients", json={"id": 3}, headers=USER)
    assert (stats.written, written()) == (1, before + 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": {"post": Action.CREATE}}, ValueError, "upper-case"),
        ({"methods": {"POST": "CREATE"}}, TypeError, "Action"),
        ({"include_paths": "/api"}, TypeError, "include_paths"),
        ({"exclude_paths": ("api",)}, ValueError, "exclude_paths"),
        ({"user_id_key": ""}, ValueError, "user_id_key"),
        ({"trusted_proxies": ["10.0.0.0/8"]}, TypeError, "trusted_proxies"),
        ({"redaction": "password"}, TypeError, "redaction"),
        ({"max_user_agent_length": -1}, ValueError, "max_user_agent_length"),
        ({"on_missing_organization": "reject"}, ValueError, "on_missing_organization"),
        ({"anonymous_organization_id": 2**63}, ValueError, "anonymous_organization_id"),
        ({"write_timeout": 0}, ValueError, "write_timeout"),
    ],
)
def test_audit_config_rejects_bad_values(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        AuditConfig(**kwargs)


def test_audit_middleware_rejects_bad_arguments() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(TypeError, match="sink"):
        AuditMiddleware(app, sink=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        AuditMiddleware(app, sink=ListSink(), config={"fail_open": True})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stats"):
        AuditMiddleware(app, sink=ListSink(), stats={})  # type: ignore[arg-type]


def test_audit_middleware_constructor_starts_nothing() -> None:
    calls: list[str] = []

    class Sink:
        async def write(self, event: Event) -> UUID:
            calls.append("write")
            return UUID(int=1)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append("app")

    AuditMiddleware(app, sink=Sink())
    assert calls == []


@pytest.mark.anyio
async def test_middleware_malformed_start_message_answers_503() -> None:
    sink = ListSink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["state"]["audit_organization_id"] = 1
        await send({"type": "http.response.start", "headers": []})  # no status
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[Any] = []

    async def collect(message: Any) -> None:
        sent.append(message)

    await AuditMiddleware(app, sink=sink)(http_scope(), empty_receive, collect)
    assert sink.events == []
    assert sent[0]["status"] == 503 and len(sent) == 2


@pytest.mark.anyio
async def test_middleware_failure_tracebacks_are_throttled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FailingSink:
        async def write(self, event: Event) -> UUID:
            raise ConnectionError("database gone")

    app = build_starlette(FailingSink())
    async with client(app) as http:
        for i in range(3):
            assert (await http.post("/patients", json={"id": i}, headers=USER)).status_code == 503
    failures = [r for r in caplog.records if "answering 503" in r.getMessage()]
    assert len(failures) == 3
    assert "ConnectionError: database gone" in failures[0].getMessage()
    assert [bool(r.exc_info) for r in failures] == [True, False, False]


@pytest.mark.anyio
async def test_middleware_write_survives_streaming_cancel_on_disconnect() -> None:
    # Starlette cancels a StreamingResponse when the client disconnects (ASGI spec < 2.4, as
    # uvicorn reports): the write it interrupts must still complete.
    class SlowSink(ListSink):
        async def write(self, event: Event) -> UUID:
            await anyio.sleep(0.1)
            return await super().write(event)

    sink = SlowSink()
    app = build_starlette(sink)
    scope = http_scope("POST", "/stream")
    scope["asgi"]["spec_version"] = "2.3"
    scope["headers"] += [(b"x-test-org", b"4")]
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep(0.02)  # the client goes away while the audit write is in flight
        return {"type": "http.disconnect"}

    await app(scope, receive, _discard)
    assert [(e.status_code, e.organization_id) for e in sink.events] == [(201, 4)]
