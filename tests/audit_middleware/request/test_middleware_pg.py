"""``AuditMiddleware`` on PostgreSQL: concurrency, failures, redaction, uvicorn with 2 workers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from apps.audited_app import build_fastapi, build_starlette
from starlette.applications import Starlette
from test_middleware import (
    SECRETS,
    USER,
    CountAtResponseStart,
    client,
    dump_tables,
    fetch_rows,
    secret_shapes,
)

from audit_middleware import (
    AuditConfig,
    AuditMiddleware,
    AuditStats,
    AuditStore,
    TrustedProxies,
    migrate,
    migrate_sync,
)
from conftest import PG_ADMIN_DSN, free_port, fresh_pg_database, libpq

TESTS_DIR = Path(__file__).parent
PROXY = AuditConfig(trusted_proxies=TrustedProxies(["127.0.0.1/32"]))


# -- (a) 1,000 concurrent mixed requests from 20 organizations -------------------------------


def _plan(i: int) -> dict[str, Any]:
    """Request i: who sends it, what it does, and the row it must produce."""
    org = i % 20 + 1
    user = 100_000 + i  # unique: the key that ties each row back to its request
    ip = f"198.18.{i // 250}.{i % 250 + 1}"
    headers = {
        "x-test-user": str(user),
        "x-test-org": str(org),
        # A spoofed leftmost entry, then the client as our trusted proxy (127.0.0.1) saw it.
        "x-forwarded-for": f"6.6.6.{i % 200}, {ip}",
    }
    kind = i % 5
    if kind == 0:
        request = ("POST", "/patients", {"id": i, "changes": {"n": i}})
        expected = ("CREATE", "patient", i, 201)
    elif kind == 1:
        request = ("PUT", f"/patients/{i}", {"changes": {"n": i}})
        expected = ("UPDATE", "patient", i, 200)
    elif kind == 2:
        status = 409 if i % 3 == 0 else 202
        request = ("PATCH", f"/patients/{i}", {"status": status})
        expected = ("UPDATE", "patient", i, status)
    elif kind == 3:
        request = ("DELETE", f"/patients/{i}", None)
        expected = ("DELETE", "patient", i, 204)
    else:
        request = ("PUT", f"/api/v1/forms/{i}", {"n": i})  # the FastAPI app
        expected = ("UPDATE", "form", i, 200)
    return {"user": user, "org": org, "ip": ip, "headers": headers, "request": request,
            "expected": expected}  # fmt: skip


@pytest.mark.slow
@pytest.mark.anyio
async def test_middleware_pg_1000_concurrent_requests_none_missing_none_misattributed(
    pg_store: AuditStore,
) -> None:
    stats = AuditStats()
    starlette_app = client(build_starlette(pg_store, PROXY, stats))
    fastapi_app = client(build_fastapi(pg_store, PROXY, stats))
    plans = [_plan(i) for i in range(1000)]

    async def send(plan: dict[str, Any]) -> int:
        method, path, body = plan["request"]
        http = fastapi_app if path.startswith("/api/") else starlette_app
        response = await http.request(method, path, json=body, headers=plan["headers"])
        return response.status_code

    async with starlette_app, fastapi_app:
        statuses = await asyncio.gather(*(send(plan) for plan in plans))
    assert statuses == [plan["expected"][3] for plan in plans]

    rows, outbox = await fetch_rows(pg_store)
    assert len(rows) == 1000 and len(outbox) == 1000
    assert stats.written == 1000 and stats.failed == 0
    by_user = {row.user_id: row for row in rows}
    assert len(by_user) == 1000
    for plan in plans:
        row = by_user[plan["user"]]
        assert (row.action, row.entity_type, row.entity_id, row.status_code) == plan["expected"]
        assert row.organization_id == plan["org"]
        assert row.ip_address == plan["ip"]
        assert row.request_path == plan["request"][1]
    assert Counter(row.organization_id for row in rows) == {org: 50 for org in range(1, 21)}
    assert {o.event_id for o in outbox} == {r.event_id for r in rows}
    assert all(o.organization_id == by_id.organization_id for o, by_id in
               zip(outbox, (next(r for r in rows if r.id == o.audit_id) for o in outbox),
                   strict=True))  # fmt: skip


# -- (b) one row per failure mode --------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_pg_each_failure_mode_gives_exactly_one_row(pg_store: AuditStore) -> None:
    async with client(build_starlette(pg_store), raise_app_exceptions=False) as http:
        assert (await http.post("/errors/bad-request", headers=USER)).status_code == 400
        assert (await http.post("/errors/server-error", headers=USER)).status_code == 500
        assert (await http.post("/errors/raise", headers=USER)).status_code == 500
    rows, outbox = await fetch_rows(pg_store)
    assert [(r.request_path, r.status_code, r.organization_id) for r in rows] == [
        ("/errors/bad-request", 400, 3),
        ("/errors/server-error", 500, 3),
        ("/errors/raise", 500, 3),
    ]
    assert len(outbox) == 3


# -- (c) database unreachable: 503, never a 2xx ------------------------------------------------


@pytest.mark.anyio
async def test_middleware_pg_dropped_database_answers_503(pg_url: str) -> None:
    await migrate(pg_url)
    store = AuditStore.from_url(pg_url)
    stats = AuditStats()
    name = pg_url.rsplit("/", 1)[1]
    try:
        async with client(build_starlette(store, stats=stats)) as http:
            assert (await http.post("/patients", json={"id": 1}, headers=USER)).status_code == 201
            # Kill the pooled connection under the store, then the database itself.
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            responses = await asyncio.gather(
                *(
                    http.request(method, path, json={"id": 2}, headers=USER)
                    for method, path in [("POST", "/patients"), ("PUT", "/patients/2"),
                                         ("PATCH", "/patients/2"), ("DELETE", "/patients/2")]
                    * 10
                )
            )  # fmt: skip
            assert (await http.get("/patients/2", headers=USER)).status_code == 200
    finally:
        await store.aclose()
    assert [r.status_code for r in responses] == [503] * 40
    assert {r.json()["error"] for r in responses} == {"audit_unavailable"}
    assert stats.written == 1 and stats.failed == 40


@pytest.mark.anyio
async def test_middleware_pg_terminated_connections_recover(
    pg_store: AuditStore, pg_url: str
) -> None:
    name = pg_url.rsplit("/", 1)[1]
    async with client(build_starlette(pg_store)) as http:
        assert (await http.post("/patients", json={"id": 1}, headers=USER)).status_code == 201
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        # Each answer is either a committed row (2xx) or a 503: never a 2xx without its row.
        statuses = [
            (await http.post("/patients", json={"id": i}, headers=USER)).status_code
            for i in range(2, 6)
        ]
    rows, _ = await fetch_rows(pg_store)
    assert set(statuses) <= {201, 503}
    assert len(rows) == 1 + statuses.count(201)


# -- (d) secrets -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_pg_secrets_reach_neither_table(pg_store: AuditStore, pg_url: str) -> None:
    shapes = secret_shapes()
    async with client(build_starlette(pg_store)) as http:
        for i, changes in enumerate(shapes):
            response = await http.post(
                "/patients", json={"id": i + 1, "changes": changes}, headers=USER
            )
            assert response.status_code == 201
    dump = await dump_tables(pg_store)
    async with await psycopg.AsyncConnection.connect(libpq(pg_url)) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT string_agg(t::text, E'\\n') FROM audit_log t), "
            "(SELECT string_agg(t::text, E'\\n') FROM audit_outbox t)"
        )
        log_text, outbox_text = await cursor.fetchone() or ("", "")
    assert log_text.count("[REDACTED]") >= len(shapes) and outbox_text.count("[REDACTED]") >= len(
        shapes
    )
    for secret in SECRETS:
        assert secret not in dump
        assert secret not in log_text
        assert secret not in outbox_text


# -- (g) committed before the response -------------------------------------------------------


@pytest.mark.anyio
async def test_middleware_pg_row_is_committed_before_the_response_starts(
    pg_store: AuditStore, pg_url: str
) -> None:
    observer = AuditStore.from_url(pg_url)
    app = CountAtResponseStart(build_starlette(pg_store), observer.engine)
    try:
        async with client(app) as http:
            for i in range(1, 11):
                assert (
                    await http.post("/patients", json={"id": i}, headers=USER)
                ).status_code == 201
    finally:
        await observer.aclose()
    assert app.counts == list(range(1, 11))


# -- (e) a real uvicorn with 2 workers, and what only a real server shows ----------------------


@pytest.fixture(scope="module")
def server_db() -> Iterator[str]:
    with fresh_pg_database("auditevt_mw") as url:
        migrate_sync(url)
        yield url


@pytest.fixture(scope="module")
def server(server_db: str) -> Iterator[str]:
    """``uvicorn --workers 2 --no-proxy-headers`` running apps/audited_app.py:create_app."""
    port = free_port()
    env = {**os.environ, "AUDIT_TEST_DATABASE_URL": server_db}
    command = [
        sys.executable, "-m", "uvicorn", "apps.audited_app:create_app", "--factory",
        "--app-dir", str(TESTS_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "2", "--log-level", "warning",
        "--no-proxy-headers",  # the documented setting: TrustedProxies reads X-Forwarded-For
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        # Ready once both workers have answered (each poll is a new connection).
        deadline = time.monotonic() + 60
        pids: set[str] = set()
        while len(pids) < 2:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode}")
            try:
                response = httpx.get(f"{base}/health", timeout=1)
                if response.status_code == 200:
                    pids.add(response.headers["x-pid"])
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn workers not ready within 60 s (saw {pids})")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _rows(url: str, org: int) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(libpq(url)) as conn:
        cursor = await conn.execute(
            "SELECT user_id, entity_type, entity_id, status_code, ip_address, action "
            "FROM audit_log WHERE organization_id = %s ORDER BY id",
            (org,),
        )
        return list(await cursor.fetchall())


@pytest.mark.slow
@pytest.mark.anyio
async def test_middleware_pg_uvicorn_two_workers_all_rows_present(
    server: str, server_db: str
) -> None:
    orgs = range(1001, 1021)
    requests = 200
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
    pids: set[str] = set()
    async with httpx.AsyncClient(base_url=server, limits=limits, timeout=30) as http:

        async def send(i: int) -> None:
            org = orgs[i % 20]
            response = await http.post(
                "/patients",
                json={"id": i, "changes": {"i": i}},
                headers={"x-test-user": str(50_000 + i), "x-test-org": str(org),
                         "x-forwarded-for": f"6.6.6.6, 198.19.{i // 250}.{i % 250 + 1}"},
            )  # fmt: skip
            assert response.status_code == 201
            pids.add(response.headers["x-pid"])

        await asyncio.gather(*(send(i) for i in range(requests)))
    seen: dict[int, tuple[Any, ...]] = {}
    for org in orgs:
        for row in await _rows(server_db, org):
            user_id, entity_type, entity_id, status, ip, action = row
            i = user_id - 50_000
            assert orgs[i % 20] == org
            assert (entity_type, entity_id, status, action) == ("patient", i, 201, "CREATE")
            assert ip == f"198.19.{i // 250}.{i % 250 + 1}"
            seen[i] = row
    assert sorted(seen) == list(range(requests))
    assert len(pids) == 2, f"expected both workers to serve requests, saw pids {pids}"


@pytest.mark.anyio
async def test_middleware_pg_uvicorn_row_exists_when_the_response_arrives(
    server: str, server_db: str
) -> None:
    org = 2001
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        for i in range(1, 16):
            response = await http.post(
                "/patients", json={"id": i}, headers={"x-test-org": str(org), "x-test-user": "1"}
            )
            assert response.status_code == 201
            # Another process, another connection: the row is already committed.
            assert len(await _rows(server_db, org)) == i


async def _wait_for_rows(url: str, org: int, count: int) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + 10
    while True:
        rows = await _rows(url, org)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


def _raw_request(base: str, request: bytes, close_after: float) -> None:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        time.sleep(close_after)


@pytest.mark.anyio
async def test_middleware_pg_uvicorn_client_disconnects_are_audited_once(
    server: str, server_db: str
) -> None:
    # The client gives up while the handler still works: the handler finishes, the row is
    # written with the answer the app gave (which nobody receives).
    slow = (
        b"POST /slow?s=0.4 HTTP/1.1\r\nHost: t\r\nx-test-org: 3001\r\nx-test-user: 5\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    await asyncio.to_thread(_raw_request, server, slow, 0.05)
    # The client goes away in the middle of its body: the app sees http.disconnect.
    partial = (
        b"POST /read-body HTTP/1.1\r\nHost: t\r\nx-test-org: 3002\r\nx-test-user: 6\r\n"
        b'Content-Length: 100\r\n\r\n{"partial":'
    )
    await asyncio.to_thread(_raw_request, server, partial, 0.05)

    slow_rows = await _wait_for_rows(server_db, 3001, 1)
    partial_rows = await _wait_for_rows(server_db, 3002, 1)
    await asyncio.sleep(0.6)  # anything written twice would have arrived by now
    assert await _rows(server_db, 3001) == slow_rows
    assert await _rows(server_db, 3002) == partial_rows
    assert [(r[0], r[3]) for r in slow_rows] == [(5, 201)]
    assert [(r[0], r[3]) for r in partial_rows] == [(6, 499)]


async def _run_lifespan(app: Any) -> list[str]:
    """Drive an ASGI app through startup and shutdown; the message types it sent."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


@pytest.mark.anyio
async def test_middleware_pg_warns_at_startup_when_the_role_bypasses_rls(
    pg_store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = AuditMiddleware(Starlette(), sink=pg_store)
    with caplog.at_level(logging.WARNING, logger="audit_middleware"):
        sent = await _run_lifespan(app)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("row-level security is bypassed" in w and "superuser" in w for w in warnings)


@pytest.mark.anyio
async def test_middleware_pg_unmigrated_database_is_reported_at_startup(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # startup_check="warn": the app starts, the problem is in the log.
    store = AuditStore.from_url(pg_url)
    try:
        app = AuditMiddleware(Starlette(), sink=store, config=AuditConfig(startup_check="warn"))
        with caplog.at_level(logging.ERROR, logger="audit_middleware"):
            sent = await _run_lifespan(app)
    finally:
        await store.aclose()
    assert sent[0] == "lifespan.startup.complete"
    assert any("check at start-up failed" in r.getMessage() for r in caplog.records)
