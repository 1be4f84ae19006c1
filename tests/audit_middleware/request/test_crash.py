"""The crash test: a clinic app under uvicorn on PostgreSQL, SIGKILLed mid-load, six times.

32 clients create patients through the FastAPI clinic app (``apps/clinic_app.py``, transactional
mode; the routes commit the usual ways: in the handler, in a yield dependency of either scope,
with a streamed body, and some fail). The server process is killed with SIGKILL while requests
are in flight, then started again. After each kill, once PostgreSQL has finished the dead
server's sessions: every committed patient has its audit row (2xx, its id, its key), every audit
row saying 2xx has its committed patient, and every 201 a client received is a committed patient.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from audit_middleware import AuditStore, migrate_sync
from conftest import free_port, libpq

TESTS_DIR = Path(__file__).parent
KILLS = 6
CLIENTS = 32
ROUTES = [
    "/patients",
    "/patients/request-scope",
    "/patients/function-scope",
    "/patients/stream",
    "/patients/raise",
    "/patients/conflict",
]


def _start(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AUDIT_TEST_DATABASE_URL": url}
    command = [
        sys.executable, "-m", "uvicorn", "apps.clinic_app:create_app", "--factory",
        "--app-dir", str(TESTS_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "critical",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/patients/count", timeout=1).is_success:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("uvicorn not ready within 60 s")
        time.sleep(0.05)


async def _load(base: str, round_: int, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Send requests from CLIENTS clients until the server is killed; what the clients saw."""
    ok: list[int] = []  # ids the clients were told were created
    answered = 0
    errors = 0
    stop = asyncio.Event()
    busy = asyncio.Event()  # set once the load is well under way
    rng = random.Random(round_)

    async def client(number: int, http: httpx.AsyncClient) -> None:
        nonlocal answered, errors
        for n in range(10_000):  # bounded; the kill ends it long before
            if stop.is_set():
                return
            route = ROUTES[(number + n) % len(ROUTES)]
            key = f"k{round_}-{number}-{n}"
            try:
                response = await http.post(route, json={"key": key})
            except httpx.TransportError:
                errors += 1
                if stop.is_set():
                    return
                await asyncio.sleep(0.01)
                continue
            answered += 1
            if answered >= 150:
                busy.set()
            if response.status_code == 201 and route != "/patients/stream":
                ok.append(response.json()["id"])

    async def killer() -> None:
        async with asyncio.timeout(30):
            await busy.wait()
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # somewhere in the middle of the load
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
        stop.set()

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:
        await asyncio.gather(killer(), *(client(i, http) for i in range(CLIENTS)))
    return {"answered": answered, "transport_errors": errors, "ok_ids": ok}


def _settle(url: str) -> None:
    """Wait until the killed server's sessions are gone (each commits or rolls back first)."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
            if row == (0,):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{row} sessions of the killed server still open after 30 s")
            time.sleep(0.05)


def _check(url: str, ok_ids: list[int]) -> dict[str, int]:
    with psycopg.connect(libpq(url)) as conn:
        patients = dict(conn.execute("SELECT id, key FROM patients").fetchall())
        audit = conn.execute(
            "SELECT entity_id, status_code, changes->>'key' FROM audit_log"
        ).fetchall()
        outbox = conn.execute("SELECT count(*) FROM audit_outbox").fetchone()
    success = {entity_id: key for entity_id, status, key in audit if 200 <= status < 400}
    orphans = sorted(set(patients) - set(success))  # changes without their audit row
    phantoms = sorted(set(success) - set(patients))  # audit rows for changes that never were
    mismatched = [i for i in set(patients) & set(success) if patients[i] != success[i]]
    lost = sorted(set(ok_ids) - set(patients))  # a 201 the client got, for nothing committed
    assert orphans == [], f"committed patients without an audit row: {orphans[:10]}"
    assert phantoms == [], f"2xx audit rows without their patient: {phantoms[:10]}"
    assert mismatched == [] and lost == []
    assert outbox is not None and outbox[0] == len(audit)
    return {"patients": len(patients), "audit_rows": len(audit), "success_rows": len(success)}


@pytest.fixture
def crash_db() -> Iterator[str]:
    from conftest import fresh_pg_database

    with fresh_pg_database("auditevt_crash") as url:
        migrate_sync(url)

        async def tables() -> None:
            from apps.clinic_app import create_tables

            async with AuditStore.from_url(url) as store:
                await create_tables(store.engine)

        asyncio.run(tables())
        yield url


def test_crash_sigkill_mid_load_leaves_every_change_with_its_audit_row(
    crash_db: str, record_property: Any
) -> None:
    kills = []
    previous = {"patients": 0, "audit_rows": 0, "success_rows": 0}
    for round_ in range(KILLS):
        port = free_port()
        process = _start(crash_db, port)
        try:
            seen = asyncio.run(_load(f"http://127.0.0.1:{port}", round_, process))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == -signal.SIGKILL
        _settle(crash_db)
        totals = _check(crash_db, seen["ok_ids"])
        kill = {
            "kill": round_ + 1,
            "answered": seen["answered"],
            "client_201s": len(seen["ok_ids"]),
            "in_flight_errors": seen["transport_errors"],
            **{f"new_{k}": totals[k] - previous[k] for k in totals},
            "orphans": 0,
            "phantoms": 0,
        }
        previous = totals
        kills.append(kill)
        print(json.dumps(kill))
    record_property("kills", kills)
    assert all(k["new_patients"] > 0 for k in kills)  # each kill came mid-load, after work
