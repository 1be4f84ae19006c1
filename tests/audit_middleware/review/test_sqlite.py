"""The review app on SQLite (what the demo and first trials use): the same answers, no RLS."""

from __future__ import annotations

import json

import httpx
import pytest

pytest.register_assert_rewrite("review_support")

from review_support import (  # noqa: E402
    CUTOFF,
    MOUNT,
    ORG,
    OTHER_ORG,
    PER_ORG,
    admin,
    build,
    collect,
    seed_event,
    seed_numbers,
)

from audit_middleware import AuditStore, migrate  # noqa: E402
from auditevt import ActionContext  # noqa: E402

pytestmark = pytest.mark.anyio


async def test_review_app_on_sqlite(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    async with AuditStore.from_url(sqlite_url) as store:
        for org, count in PER_ORG.items():
            for n in range(count):
                await store.write(seed_event(org, n))
    harness = build(sqlite_url)
    transport = httpx.ASGITransport(app=harness.core_api)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://core-api") as client:
            params = {
                "until": CUTOFF,
                "since": "2024-05-01T11:05:00+02:00",
                "action_context": "normal",
                "path_prefix": "/patients/",
                "limit": "4",
            }
            pages = await collect(client, "/api/events", params, admin())
            numbers = [n for page in pages for n in seed_numbers(page)]
            assert numbers == [
                n
                for n in reversed(range(5, PER_ORG[ORG]))
                if n % 2 and seed_event(ORG, n).action_context in (None, ActionContext.NORMAL)
            ]
            export = await client.get(
                f"{MOUNT}/api/export.jsonl", params={"until": CUTOFF}, headers=admin(OTHER_ORG)
            )
            assert len(export.text.splitlines()) == PER_ORG[OTHER_ORG]
            assert {
                json.loads(line)["event"]["organization_id"] for line in export.text.splitlines()
            } == {OTHER_ORG}
            queue = await collect(client, "/api/queue", {}, admin())
            target = queue[0][0]["event_id"]
            reviewed = await client.post(
                f"{MOUNT}/api/events/{target}/reviews",
                json={"decision": "unjustified"},
                headers=admin(reviewer=True),
            )
            assert reviewed.status_code == 201
            after = await collect(client, "/api/queue", {}, admin())
            assert target not in {item["event_id"] for page in after for item in page}
            shown = (await client.get(f"{MOUNT}/api/events/{target}", headers=admin())).json()
            assert [r["decision"] for r in shown["reviews"]] == ["unjustified"]
            foreign = await client.get(f"{MOUNT}/api/events/{target}", headers=admin(OTHER_ORG))
            assert foreign.status_code == 404
    finally:
        await harness.aclose()


async def test_keyset_pages_break_timestamp_ties_by_event_id(store: AuditStore) -> None:
    from audit_middleware import AuditReader
    from audit_middleware.review import EventFilter, EventQuery

    for n in range(7):  # the same microsecond for all seven
        await store.write(seed_event(ORG, 0).model_copy(update={"entity_id": n}))
    query = EventQuery(AuditReader(store.engine).engine)
    seen: list[int] = []
    after = None
    for _ in range(10):
        page = await query.page(ORG, EventFilter(), limit=2, after=after)
        seen.extend(item.event.entity_id for item in page.items)  # type: ignore[union-attr]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert sorted(seen) == list(range(7)) and len(seen) == 7
    streamed = [r.event.entity_id async for r in query.stream(ORG, EventFilter(), page_size=3)]  # type: ignore[union-attr]
    assert streamed == seen
