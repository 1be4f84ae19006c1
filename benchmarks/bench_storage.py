"""store.write_growth_ratio, reader.page_depth_ratio and retention.drop_s (PostgreSQL).

- **write_growth_ratio**: audited writes per second (``AuditStore.write``, 16 at a time) into a
  database whose ``audit_log`` already holds N rows spread over 24 past months, divided by the
  same into an empty one; the two databases take turns, round for round. Goal >= 0.9.
- **page_depth_ratio**: the latency of an organization's first page (100 rows, newest first)
  divided by that of a page N rows deep in the same organization (keyset: the cursor of the row
  N places back), alternating, medians. Goal >= 0.8.
- **retention_drop_s**: the time ``apply_retention`` takes to check and remove one month of N
  delivered rows (detach, drop, log), once. Goal <= 1.

The rows are written with SQL (``generate_series``) as the table owner, shaped like the
middleware's: UUIDv7 event ids of their month, ~350 bytes of event JSON. ``--quick`` uses
smaller tables and says so in ``detail``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from bench_relay import _database as database

from audit_middleware import AuditReader, AuditStore, Cursor, Sealer, SigningKey
from audit_middleware.integrity._rowhash import PG_ROW_HASH
from audit_middleware.storage._partitions import Partitions
from audit_middleware.storage._retention import RetentionWindow, apply_retention
from auditevt import Action, Event, Timestamp

# One month of rows as the middleware writes them: ids of that month, in time order.
_FILL = """
INSERT INTO audit_log (event_id, action, entity_type, entity_id, user_id, organization_id,
                       ip_address, user_agent, request_path, status_code, "timestamp",
                       changes, event_json)
SELECT (lpad(to_hex(%(start_ms)s::bigint + i * %(step_ms)s::bigint), 12, '0') || '7'
        || substr(md5(i::text || %(salt)s), 1, 3) || '8'
        || substr(md5(i::text || %(salt)s), 4, 15))::uuid,
       'UPDATE', 'appointment', i, 42, %(organization)s::bigint + i %% %(organizations)s,
       '203.0.113.9', 'Mozilla/5.0 (X11; Linux x86_64)', '/api/v1/appointments/' || i, 200,
       to_timestamp((%(start_ms)s::bigint + i * %(step_ms)s::bigint) / 1000.0),
       '{"status": {"from": "booked", "to": "cancelled"}}',
       '{"action":"UPDATE","entity_type":"appointment","entity_id":' || i
       || ',"user_id":42,"organization_id":7,"ip_address":"203.0.113.9","user_agent":'
       || '"Mozilla/5.0 (X11; Linux x86_64)","request_path":"/api/v1/appointments/' || i
       || '","status_code":200,"timestamp":"2026-11-27T10:11:12.123456789Z","changes":'
       || '{"status":{"from":"booked","to":"cancelled"}}}'
FROM generate_series(0, %(count)s::bigint - 1) AS i
"""


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _month(back: int) -> datetime:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _fill(url: str, month: datetime, count: int, *, organization: int, organizations: int) -> None:
    following = (month + timedelta(days=32)).replace(day=1)
    span_ms = int((following - month).total_seconds() * 1000) - 1
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(
            _FILL,
            {
                "start_ms": int(month.timestamp() * 1000),
                "step_ms": max(1, span_ms // max(count, 1)),
                "salt": f"{month.isoformat()}-{organization}",
                "organization": organization,
                "organizations": organizations,
                "count": count,
            },
        )


def _hash_and_seal(url: str) -> None:
    """Give the SQL-written rows their row hash (as the store would have) and seal them all."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("ALTER TABLE public.audit_log DISABLE TRIGGER USER")
        for (partition,) in conn.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('public.audit_log')"
        ).fetchall():
            conn.execute(f"ALTER TABLE {partition} DISABLE TRIGGER USER")
        conn.execute(f"UPDATE public.audit_log SET row_hash = {PG_ROW_HASH} WHERE row_hash IS NULL")
        for (partition,) in conn.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('public.audit_log')"
        ).fetchall():
            conn.execute(f"ALTER TABLE {partition} ENABLE TRIGGER USER")

    async def seal() -> None:
        async with AuditStore.from_url(url) as store:
            await Sealer(store.engine, SigningKey.generate()).run_once()

    asyncio.run(seal())


def _analyze(url: str, *, vacuum: bool = False) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) audit_log" if vacuum else "ANALYZE audit_log")


def _event(n: int) -> Event:
    return Event(
        action=Action.UPDATE,
        entity_type="appointment",
        entity_id=n + 1,
        user_id=42,
        organization_id=7 + n % 20,
        ip_address="203.0.113.9",
        user_agent="Mozilla/5.0 (X11; Linux x86_64)",
        request_path=f"/api/v1/appointments/{n + 1}",
        status_code=200,
        timestamp=Timestamp.now(),
        changes={"status": {"from": "booked", "to": "cancelled"}},
    )


async def _writes_per_s(store: AuditStore, count: int, concurrency: int = 16) -> float:
    events = [_event(n) for n in range(count)]

    async def writer(share: list[Event]) -> None:
        for event in share:
            await store.write(event)

    started = time.perf_counter()
    await asyncio.gather(*(writer(events[i::concurrency]) for i in range(concurrency)))
    return count / (time.perf_counter() - started)


async def _write_growth(empty_url: str, full_url: str, rounds: int, writes: int) -> list[float]:
    async with AuditStore.from_url(empty_url) as empty, AuditStore.from_url(full_url) as full:
        await _writes_per_s(empty, 200)  # connections and prepared statements warm
        await _writes_per_s(full, 200)
        ratios = []
        for number in range(rounds):
            # Alternate which goes first, so a drift in the machine's load cancels out.
            if number % 2:
                grown = await _writes_per_s(full, writes)
                fresh = await _writes_per_s(empty, writes)
            else:
                fresh = await _writes_per_s(empty, writes)
                grown = await _writes_per_s(full, writes)
            ratios.append(grown / fresh)
        return ratios


def write_growth(quick: bool) -> dict[str, Any]:
    preloaded = 60_000 if quick else 10_000_000
    months = 12 if quick else 24
    with database() as empty_url, database() as full_url:
        asyncio.run(_partitions(full_url, _month(months)))
        started = time.perf_counter()
        for back in range(months, 0, -1):
            _fill(full_url, _month(back), preloaded // months, organization=1, organizations=50)
        _analyze(full_url)
        load_s = time.perf_counter() - started
        writes = 300 if quick else 2000
        ratios = asyncio.run(_write_growth(empty_url, full_url, 6 if quick else 10, writes))
    return {
        "name": "store.write_growth_ratio",
        "value": round(statistics.median(ratios), 3),
        "unit": "ratio",
        "detail": {
            "goal": ">= 0.9",
            "quick": quick,
            "rows_already_in_audit_log": preloaded,
            "quick_mode_smaller_table": quick,
            "months_of_partitions": months,
            "writes_per_round": writes,
            "round_ratios": [round(r, 3) for r in ratios],
            "preload_s": round(load_s, 1),
        },
    }


async def _partitions(url: str, since: datetime) -> None:
    async with AuditStore.from_url(url) as store:
        await Partitions(store.engine).ensure(1, since=since)


async def _page_latencies(url: str, depth: int, rounds: int) -> tuple[list[float], list[float]]:
    async with AuditStore.from_url(url) as store:
        reader = AuditReader(store.engine)
        with psycopg.connect(_libpq(url)) as conn:
            row = conn.execute(
                'SELECT "timestamp", event_id FROM public.audit_log WHERE organization_id = 7'
                ' ORDER BY "timestamp" DESC, event_id DESC OFFSET %s LIMIT 1',
                (depth,),
            ).fetchone()
        assert row is not None
        deep = Cursor(timestamp=row[0], event_id=row[1])
        first_page = await reader.list_events(7, limit=100)
        deep_page = await reader.list_events(7, limit=100, after=deep)
        assert len(first_page.items) == len(deep_page.items) == 100
        first: list[float] = []
        deeper: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()
            await reader.list_events(7, limit=100)
            first.append(time.perf_counter() - started)
            started = time.perf_counter()
            await reader.list_events(7, limit=100, after=deep)
            deeper.append(time.perf_counter() - started)
        return first, deeper


def page_depth(quick: bool) -> dict[str, Any]:
    depth = 20_000 if quick else 1_000_000
    with database() as url:
        asyncio.run(_partitions(url, _month(12)))
        for back in range(12, 0, -1):  # one organization's rows over a year, and others'
            _fill(url, _month(back), (depth + 1000) // 12, organization=7, organizations=1)
            _fill(url, _month(back), depth // 12, organization=100, organizations=10)
        _analyze(url)
        first, deeper = asyncio.run(_page_latencies(url, depth, 40 if quick else 100))
    ratio = statistics.median(first) / statistics.median(deeper)
    return {
        "name": "reader.page_depth_ratio",
        "value": round(ratio, 3),
        "unit": "ratio",
        "detail": {
            "goal": ">= 0.8",
            "quick": quick,
            "quick_mode_shallower_page": quick,
            "depth_rows": depth,
            "first_page_ms": round(statistics.median(first) * 1000, 2),
            "deep_page_ms": round(statistics.median(deeper) * 1000, 2),
            "page_size": 100,
        },
    }


def retention_drop(quick: bool) -> dict[str, Any]:
    rows = 50_000 if quick else 1_000_000
    with database() as url:
        old = _month(8)
        asyncio.run(_partitions(url, old))
        _fill(url, old, rows, organization=1, organizations=20)
        _hash_and_seal(url)  # retention removes only sealed months
        _analyze(url, vacuum=True)  # a month that old has long been vacuumed

        async def remove() -> tuple[float, list[Any]]:
            async with AuditStore.from_url(url) as store:
                started = time.perf_counter()
                done = await apply_retention(store.engine, RetentionWindow.parse("6m"))
                return time.perf_counter() - started, done

        seconds, done = asyncio.run(remove())
    removed = [d for d in done if d.removable]
    return {
        "name": "retention.drop_s",
        "value": round(seconds, 3),
        "unit": "s",
        "detail": {
            "goal": "<= 1",
            "quick": quick,
            "quick_mode_smaller_month": quick,
            "month_vacuumed_before": True,
            "rows_in_the_month": rows,
            "partitions_removed": len(removed),
            "rows_removed": sum(d.rows for d in removed),
        },
    }


def run(quick: bool) -> list[dict[str, Any]]:
    return [write_growth(quick), page_depth(quick), retention_drop(quick)]
