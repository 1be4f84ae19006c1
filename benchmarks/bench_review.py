"""review.export_rss_mib: RSS growth of the review app while it exports 1,000,000 rows.

A PostgreSQL database gets N audit rows of one organization (inserted with one
``generate_series`` statement as the superuser: the rows are what ``AuditStore`` writes, only
faster to make). The review app then runs under uvicorn in a process of its own, connected as
the application role (held by row-level security), and a client on loopback downloads the CSV
export of all N rows, reading the stream as it comes. The figure is the server's peak RSS
during the export (``VmHWM``, reset just before it through ``/proc/PID/clear_refs``) minus its
RSS after a warm-up export. The goal is <= 100 MiB whatever N: the export pages by keyset, 1000
rows a transaction, and sends 64 KiB chunks. ``--quick`` exports 100,000 rows and says so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _pg import bench_database

SRC = str(Path(__file__).resolve().parents[1] / "src")
ORGANIZATION = 1
GOAL_MIB = 100

# The review app in a process of its own: the admin is organization 1's, from a header.
SERVER = """
import socket, sys, uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from audit_middleware import AuditReader, AuditStore
from audit_middleware.review import create_review_app

from audit_middleware import database_roles
role = database_roles(sys.argv[1].rsplit("/", 1)[1]).app
url = sys.argv[1] + "?options=-crole%3D" + role
store = AuditStore.from_url(url)
reader = AuditReader(store.engine)
review = create_review_app(
    store=store, reader=reader,
    organization_resolver=lambda r: int(r.headers["x-org"]) if "x-org" in r.headers else None,
    user_resolver=lambda r: 1,
)
app = Starlette(routes=[Mount("/admin/audit", app=review)])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print("http://127.0.0.1:%d" % sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")).run(
    sockets=[sock]
)
"""

# N rows of one organization, as AuditStore writes them (event_json is the canonical JSON).
_INSERT = """
INSERT INTO audit_log (event_id, action, entity_type, entity_id, user_id, organization_id,
                       ip_address, user_agent, request_path, status_code, "timestamp", changes,
                       action_context, event_json)
SELECT gen_random_uuid(), 'UPDATE', 'patient', n %% 5000, 1 + n %% 40, %(org)s, '203.0.113.5',
       'Mozilla/5.0 (X11; Linux x86_64)', '/patients/' || (n %% 5000), 200, ts,
       jsonb_build_object('status', jsonb_build_object('from', 'active', 'to', 'on_hold'), 'n', n),
       NULL,
       '{"action":"UPDATE","entity_type":"patient","entity_id":' || (n %% 5000)
       || ',"user_id":' || (1 + n %% 40) || ',"organization_id":' || %(org)s
       || ',"ip_address":"203.0.113.5","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"'
       || ',"request_path":"/patients/' || (n %% 5000) || '","status_code":200,"timestamp":"'
       || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '123Z"'
       || ',"changes":{"n":' || n || ',"status":{"from":"active","to":"on_hold"}}}'
FROM (SELECT n, timestamptz '2024-01-01 00:00:00+00' + n * interval '1 second' AS ts
      FROM generate_series(1, %(rows)s) AS n) AS s
"""


@contextlib.contextmanager
def _database(rows: int) -> Iterator[str]:
    with bench_database("auditevt_bench_review") as (url, dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(_INSERT, {"org": ORGANIZATION, "rows": rows})
            conn.execute("VACUUM ANALYZE audit_log")
        yield url


@contextlib.contextmanager
def _server(url: str) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        base = process.stdout.readline().strip()
        if not base.startswith("http://"):
            raise RuntimeError(f"the review app did not start (said {base!r})")
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _export(base: str, params: dict[str, str]) -> tuple[int, int, float]:
    """Download one CSV export; (lines, bytes, seconds)."""
    started = time.perf_counter()
    lines = size = 0
    with httpx.stream(
        "GET",
        f"{base}/admin/audit/api/export.csv",
        params=params,
        headers={"x-org": str(ORGANIZATION)},
        timeout=httpx.Timeout(60.0, read=300.0),
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    return lines, size, time.perf_counter() - started


def export_rss(rows: int, *, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    with _database(rows) as url:
        filled = time.perf_counter() - started
        with _server(url) as (base, pid):
            # Warm-up: imports, pools, the first pages' caches; then measure from here.
            warm_lines, _, _ = _export(base, {"user_id": "1", "until": "2024-01-01T01:00:00Z"})
            before = _status_kib(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
            lines, size, seconds = _export(base, {"entity_type": "patient"})  # not access events
            peak = _status_kib(pid, "VmHWM")
    if lines != rows + 1:
        raise RuntimeError(f"the export held {lines - 1} rows, not {rows}")
    growth = max(0, peak - before) / 1024
    return {
        "name": "review.export_rss_mib",
        "value": round(growth, 1),
        "unit": "MiB",
        "detail": {
            "rows": rows,
            "quick": quick,
            "note": "--quick exports 100,000 rows; the full run 1,000,000" if quick else None,
            "goal_mib": GOAL_MIB,
            "met": growth <= GOAL_MIB,
            "format": "csv",
            "rss_after_warmup_mib": round(before / 1024, 1),
            "peak_rss_mib": round(peak / 1024, 1),
            "export_mib": round(size / 2**20, 1),
            "export_s": round(seconds, 1),
            "rows_per_s": round(rows / seconds),
            "fill_s": round(filled, 1),
            "warmup_rows": warm_lines - 1,
            "server": "uvicorn, own process, as the database's application role, under RLS",
        },
    }


def run(quick: bool) -> list[dict[str, Any]]:
    return [export_rss(100_000 if quick else 1_000_000, quick=quick)]


if __name__ == "__main__":
    import json

    for entry in run("--quick" in sys.argv):
        print(json.dumps(entry))
