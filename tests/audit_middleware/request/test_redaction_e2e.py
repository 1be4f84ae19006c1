"""Issue 11's findings end to end, on PostgreSQL and SQLite: no secret in any stored column.

A Starlette app under ``AuditMiddleware`` writes through ``AuditStore``; every column of every
``audit_log`` and ``audit_outbox`` row (the ``changes`` column, ``event_json`` and the outbox
``payload``) is read back as raw text and searched for each secret.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from test_redaction_findings import FOUND_KEYS, VALUE_CASES

from audit_middleware import AuditConfig, AuditMiddleware, AuditStore, record
from audit_middleware.request._changes import ChangesLimits
from audit_middleware.request._redaction import RedactionPolicy


def build_app(store: AuditStore, config: AuditConfig | None = None) -> Starlette:
    async def notes(request: Request) -> Response:
        body = json.loads(await request.body())
        request.state.audit_organization_id = 7
        request.state.audit_user_id = 42
        record(request, entity_type="note", entity_id=1, changes=body)
        return JSONResponse({"ok": True}, status_code=201)

    return Starlette(
        routes=[Route("/notes", notes, methods=["POST"])],
        middleware=[Middleware(AuditMiddleware, sink=store, config=config)],
    )


def client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def stored(store: AuditStore) -> tuple[str, list[Any], list[int]]:
    """Every column of every row of both tables as raw text; the audit rows' changes, status."""
    lines = []
    changes = []
    statuses = []
    async with store.engine.connect() as conn:
        for table in ("audit_log", "audit_outbox"):
            result = await conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id")
            for row in result.mappings().all():
                lines.append(json.dumps([str(value) for value in row.values()]))
                if table == "audit_log":
                    value = row["changes"]
                    changes.append(json.loads(value) if isinstance(value, str) else value)
                    statuses.append(row["status_code"])
    return "\n".join(lines), changes, statuses


def secret(i: int) -> str:
    return f"Sx{i:03d}-q8Zt-kept-VALUE"


def found_shapes() -> list[tuple[Any, str]]:
    """Each finding of the issue as a request body, with the secret it holds."""
    shapes: list[tuple[Any, str]] = []
    for key in FOUND_KEYS:
        i = len(shapes)
        shapes.append(({key: secret(i)}, secret(i)))
        i = len(shapes)
        shapes.append(({"user": [{"profile": {key: secret(i)}}]}, secret(i)))
    for _, text, _ in VALUE_CASES:
        i = len(shapes)
        # Each case's own secret text, made unique by appending ours where it is the secret.
        shapes.append(({"note": text.replace("Zq8-s3cr3t-VALUE-77f", secret(i))}, secret(i)))
    for body in (
        {"payload": json.dumps({"password": "{s}"})},
        {"fields": [{"name": "password", "value": "{s}"}]},
        {"fields": [{"key": "api_key", "value": "{s}"}]},
        {"fields": [{"field": "ssn", "value": "{s}"}]},
    ):
        i = len(shapes)
        shapes.append((json.loads(json.dumps(body).replace("{s}", secret(i))), secret(i)))
    return shapes


@pytest.mark.anyio
async def test_no_finding_reaches_any_column(store: AuditStore) -> None:
    shapes = found_shapes()
    assert len(shapes) >= 60
    async with client(build_app(store)) as http:
        for body, _ in shapes:
            response = await http.post("/notes", content=json.dumps(body))
            assert response.status_code == 201, response.text
    dump, changes, _ = await stored(store)
    assert len(changes) == len(shapes)
    leaked = [s for body, s in shapes if s in dump and s in json.dumps(body)]
    assert leaked == []
    assert dump.count("[REDACTED]") >= 3 * len(shapes)  # changes, event_json and payload


@pytest.mark.anyio
async def test_oversized_changes_are_recorded_as_a_summary(store: AuditStore) -> None:
    config = AuditConfig(changes_limits=ChangesLimits(max_elements=1000, max_summary_keys=4))
    rows = {f"row{i}": {"n": i, "token": secret(1)} for i in range(2000)}
    body = {"password": secret(0), **rows}
    async with client(build_app(store, config)) as http:
        response = await http.post("/notes", content=json.dumps(body))
        assert response.status_code == 201
    dump, changes, statuses = await stored(store)
    assert statuses == [201]
    info = changes[0]["$oversized"]
    assert info["reason"] == "more than 1000 elements (max_elements)"
    assert info["keys"] == ["password", "row0", "row1", "row2"]
    assert info["length"] == 2001 and info["type"] == "object"
    redacted = json.dumps(RedactionPolicy()(body), ensure_ascii=False, separators=(",", ":"))
    assert info["bytes"] == len(redacted.encode())
    assert info["sha256"] == hashlib.sha256(redacted.encode()).hexdigest()
    assert secret(0) not in dump and secret(1) not in dump


@pytest.mark.anyio
async def test_unwritable_changes_fail_the_handler_and_the_attempt_is_audited(
    store: AuditStore,
) -> None:
    async with client(build_app(store)) as http:
        response = await http.post("/notes", content='{"weight": NaN}')
    assert response.status_code == 500  # record() raised in the handler: its traceback
    _, changes, statuses = await stored(store)
    assert statuses == [500] and changes == [None]
