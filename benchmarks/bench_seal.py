"""seal.rows_per_s and verify.rows_per_s: sealing and verifying a backlog on PostgreSQL.

A database this benchmark creates and drops is filled (COPY) with N audit rows as the store
writes them, content hash included. Then one ``Sealer.run_once()`` seals all N (one seal: read
the ids and hashes, build the RFC 6962 tree, sign, insert the seal with its leaves), timed end to
end; then ``verify_database`` recomputes every row (hash, column copies, sealed leaf). Goal:
``seal.rows_per_s`` >= 100,000.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import psycopg

from audit_middleware import Sealer, SealerConfig, SigningKey, migrate_sync, verify_database
from audit_middleware.integrity._columns import _expected
from audit_middleware.integrity._sealer import create_engine
from audit_middleware.storage._store import new_event_id
from auditevt import Action, Event, Timestamp

ADMIN_DSN = os.environ.get("AUDITEVT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_COLUMNS = (
    "event_id", "action", "entity_type", "entity_id", "user_id", "organization_id",
    "ip_address", "user_agent", "request_path", "status_code", "timestamp", "changes",
    "action_context", "break_glass_id", "impersonation_id", "event_json", "row_hash",
)  # fmt: skip


def _fill(dsn: str, rows: int) -> None:
    from psycopg.types.json import Jsonb

    from audit_middleware import row_hash

    started = Timestamp.parse("2026-12-01T07:00:00Z")
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY audit_log ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for number in range(rows):
                event = Event(
                    action=Action.UPDATE,
                    entity_type="appointment",
                    entity_id=number,
                    user_id=40 + number % 100,
                    organization_id=1 + number % 20,
                    ip_address="203.0.113.9",
                    user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
                    request_path=f"/appointments/{number}",
                    status_code=200,
                    timestamp=started,
                    changes={"status": {"from": "scheduled", "to": "confirmed"}},
                )
                event_id = new_event_id()
                values = _expected(event, True)
                values["changes"] = Jsonb(values["changes"])
                text = event.to_json()
                values.update(event_id=event_id, event_json=text, row_hash=row_hash(event_id, text))
                copy.write_row([values[c] for c in _COLUMNS])
        conn.commit()


async def _measure(url: str, rows: int) -> dict[str, Any]:
    engine = create_engine(url)
    key = SigningKey.generate()
    try:
        sealer = Sealer(engine, key, config=SealerConfig(max_rows=rows, settle=1.0))
        started = time.perf_counter()
        seal = await sealer.run_once()
        seal_seconds = time.perf_counter() - started
        if seal is None or seal.count != rows:
            raise RuntimeError(f"expected one seal of {rows} rows, got {seal}")
        started = time.perf_counter()
        report = await verify_database(engine, {key.key_id: key.public_key})
        verify_seconds = time.perf_counter() - started
        if not report.ok or report.rows_checked != rows:
            raise RuntimeError(f"verification of a clean log failed: {report.summary()}")
    finally:
        await engine.dispose()
    return {"seal_seconds": seal_seconds, "verify_seconds": verify_seconds}


def run(quick: bool) -> list[dict[str, Any]]:
    rows = 100_000 if quick else 500_000
    name = f"auditevt_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_DSN.rsplit("/", 1)[0]
    try:
        url = f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
        migrate_sync(url)
        started = time.perf_counter()
        _fill(f"{base}/{name}", rows)
        fill_seconds = time.perf_counter() - started
        result = asyncio.run(_measure(url, rows))
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    detail = {"rows": rows, "fill_seconds": round(fill_seconds, 2), "quick": quick}
    return [
        {
            "name": "seal.rows_per_s",
            "value": round(rows / result["seal_seconds"]),
            "unit": "rows/s",
            "detail": {**detail, "seconds": round(result["seal_seconds"], 3), "goal": 100_000},
        },
        {
            "name": "verify.rows_per_s",
            "value": round(rows / result["verify_seconds"]),
            "unit": "rows/s",
            "detail": {**detail, "seconds": round(result["verify_seconds"], 3)},
        },
    ]
