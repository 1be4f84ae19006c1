"""middleware.overhead_ratio: the separate-store mode's requests/s over those of a bare INSERT.

(``middleware.txn_overhead_ratio``, the transactional mode, is measured by
``bench_middleware_txn.py`` and reported with these.)

Two Starlette apps with the same route, the same request body and the same engine settings, on
one PostgreSQL database this benchmark creates and drops:

- **audited**: the handler reports ``changes`` with ``record()``; ``AuditMiddleware`` builds the
  event, redacts it and writes the audit row and its outbox row through ``AuditStore`` before the
  response goes out;
- **plain**: no middleware; the handler itself INSERTs one row of the same size into a table of
  the same shape (``CREATE TABLE ... (LIKE audit_log INCLUDING ALL)``), in one autocommit round
  trip: the write an audited request cannot avoid.

Both are driven in-process through ``httpx.ASGITransport`` by the same number of concurrent
clients, alternately, round by round (the order flips each round), so machine noise hits both
alike. ``overhead_ratio`` = audited requests/s over plain requests/s, each over all its rounds
(the median of the per-round ratios is in ``detail``); goal >= 0.85.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from _pg import bench_database
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit_middleware import AuditMiddleware, AuditStore, record
from audit_middleware.storage._store import create_engine
from auditevt import Action, Event, Timestamp

CONCURRENCY = 16
# Same pool for both apps, large enough that no request waits for or reopens a connection.
ENGINE_KWARGS: dict[str, Any] = {"pool_size": CONCURRENCY, "max_overflow": 0}
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
BODY = {
    "before": {"status": "scheduled", "room": "B-12", "duration_min": 30},
    "after": {"status": "confirmed", "room": "C-4", "duration_min": 45},
}
HEADERS = {"user-agent": USER_AGENT, "content-type": "application/json"}

_PLAIN_INSERT = """\
INSERT INTO bench_plain (event_id, action, entity_type, entity_id, user_id, organization_id,
                         ip_address, user_agent, request_path, status_code, "timestamp", changes,
                         action_context, break_glass_id, impersonation_id, event_json)
VALUES (%(event_id)s::uuid, %(action)s::varchar, %(entity_type)s::text, %(entity_id)s::bigint,
        %(user_id)s::bigint, %(organization_id)s::bigint, %(ip_address)s::text,
        %(user_agent)s::text, %(request_path)s::text, %(status_code)s::integer,
        %(timestamp)s::timestamptz, %(changes)s::jsonb, %(action_context)s::varchar,
        %(break_glass_id)s::bigint, %(impersonation_id)s::bigint, %(event_json)s::text)"""


def audited_app(store: AuditStore) -> Starlette:
    async def update(request: Request) -> Response:
        changes = await request.json()
        request.state.audit_user_id = 42
        request.state.audit_organization_id = 7
        record(request, changes=changes)
        return JSONResponse({"id": request.path_params["item_id"]})

    return Starlette(
        routes=[Route("/appointments/{item_id:int}", update, methods=["PUT"])],
        middleware=[Middleware(AuditMiddleware, sink=store)],  # the separate-store mode
    )


def plain_app(engine: AsyncEngine) -> Starlette:
    # The row the middleware would write, as the handler would build it by hand.
    sample = Event(
        action=Action.UPDATE,
        entity_type="appointment",
        entity_id=1,
        user_id=42,
        organization_id=7,
        ip_address="127.0.0.1",
        user_agent=USER_AGENT,
        request_path="/appointments/1",
        status_code=200,
        timestamp=Timestamp.now(),
        changes=BODY,
    )
    template = {
        "action": "UPDATE",
        "entity_type": "appointment",
        "user_id": 42,
        "organization_id": 7,
        "ip_address": "127.0.0.1",
        "user_agent": USER_AGENT,
        "status_code": 200,
        "action_context": None,
        "break_glass_id": None,
        "impersonation_id": None,
        "event_json": sample.to_json(),
    }

    async def update(request: Request) -> Response:
        changes = await request.json()
        item_id = request.path_params["item_id"]
        row = {
            **template,
            "event_id": uuid.uuid4(),
            "entity_id": item_id,
            "request_path": request.url.path,
            "timestamp": Timestamp.now().to_datetime(),
            "changes": json.dumps(changes, separators=(",", ":")),
        }
        async with engine.connect() as conn:
            await conn.exec_driver_sql(_PLAIN_INSERT, row)
        return JSONResponse({"id": item_id})

    return Starlette(routes=[Route("/appointments/{item_id:int}", update, methods=["PUT"])])


async def _drive(http: httpx.AsyncClient, requests: int) -> float:
    """Send ``requests`` PUTs from CONCURRENCY clients; return the seconds it took."""
    body = json.dumps(BODY).encode()
    pending = iter(range(requests))

    async def client() -> None:
        for i in pending:
            response = await http.put(f"/appointments/{i + 1}", content=body, headers=HEADERS)
            if response.status_code != 200:
                raise RuntimeError(f"request {i} answered {response.status_code}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def _measure(url: str, rounds: int, requests: int) -> dict[str, Any]:
    store = AuditStore.from_url(url, **ENGINE_KWARGS)
    engine = create_engine(url, **ENGINE_KWARGS).execution_options(isolation_level="AUTOCOMMIT")
    transport_kwargs: dict[str, Any] = {"base_url": "http://bench", "timeout": 60}
    audited = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=audited_app(store)), **transport_kwargs
    )
    plain = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=plain_app(engine)), **transport_kwargs
    )
    seconds: dict[str, list[float]] = {"audited": [], "plain": []}
    arms: dict[str, httpx.AsyncClient] = {"audited": audited, "plain": plain}
    try:
        for name in ("audited", "plain"):  # warm-up: fill both pools, warm caches
            await _drive(arms[name], CONCURRENCY * 8)
        for round_ in range(rounds):
            order = ("audited", "plain") if round_ % 2 == 0 else ("plain", "audited")
            for name in order:
                seconds[name].append(await _drive(arms[name], requests))
    finally:
        await audited.aclose()
        await plain.aclose()
        await store.aclose()
        await engine.dispose()
    rps = {name: [requests / s for s in values] for name, values in seconds.items()}
    return {
        "audited_rps": rounds * requests / sum(seconds["audited"]),
        "plain_rps": rounds * requests / sum(seconds["plain"]),
        "round_ratios": [a / p for a, p in zip(rps["audited"], rps["plain"], strict=True)],
        "rounds_rps": rps,
    }


def _database() -> tuple[str, Callable[[], None]]:
    stack = contextlib.ExitStack()
    url, dsn = stack.enter_context(bench_database())
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_plain (LIKE audit_log INCLUDING ALL)")
            conn.execute("CREATE SEQUENCE bench_plain_id_seq OWNED BY bench_plain.id")
            conn.execute(
                "ALTER TABLE bench_plain ALTER COLUMN id SET DEFAULT nextval('bench_plain_id_seq')"
            )
    except BaseException:
        stack.close()
        raise
    return url, stack.close


def run(quick: bool) -> list[dict[str, Any]]:
    rounds, requests = (12, 200) if quick else (24, 600)
    url, drop = _database()
    try:
        result = asyncio.run(_measure(url, rounds, requests))
    finally:
        drop()
    ratio = result["audited_rps"] / result["plain_rps"]
    detail = {
        "quick": quick,
        "rounds": rounds,
        "requests_per_round": requests,
        "concurrency": CONCURRENCY,
        "driver": "httpx.ASGITransport, in-process",
        "audited_rps": round(result["audited_rps"], 1),
        "plain_rps": round(result["plain_rps"], 1),
        "round_ratios": [round(r, 3) for r in result["round_ratios"]],
        # Robust to a burst of load from elsewhere on a shared machine, which skews one round.
        "median_round_ratio": round(statistics.median(result["round_ratios"]), 3),
        "goal": ">= 0.85",
    }
    from bench_middleware_txn import run as run_txn  # the transactional mode, cross-process

    return [
        *run_txn(quick),
        {"name": "middleware.overhead_ratio", "value": round(ratio, 3), "unit": "ratio",
         "detail": detail},
        {"name": "middleware.audited_rps", "value": round(result["audited_rps"], 1),
         "unit": "req/s", "detail": {"rounds_rps": [round(x, 1) for x in
                                                     result["rounds_rps"]["audited"]]}},
        {"name": "middleware.plain_insert_rps", "value": round(result["plain_rps"], 1),
         "unit": "req/s", "detail": {"rounds_rps": [round(x, 1) for x in
                                                     result["rounds_rps"]["plain"]]}},
    ]  # fmt: skip


if __name__ == "__main__":
    for entry in run(quick=True):
        print(json.dumps(entry))
