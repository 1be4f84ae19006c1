"""The review app's JSON API on PostgreSQL: tenancy, every filter, paging, one event, exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
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

from audit_middleware import AuditStore  # noqa: E402
from audit_middleware.review import CSV_COLUMNS, EventFilter, EventQuery  # noqa: E402
from auditevt import ActionContext, Event  # noqa: E402
from conftest import app_role, libpq  # noqa: E402

pytest_plugins = ["review_support"]
pytestmark = pytest.mark.anyio

SEEDED = {"until": CUTOFF}


def expected(org: int, keep: Callable[[Event], bool]) -> list[int]:
    """The seeded ``n`` values of ``org`` that ``keep`` admits, newest first."""
    return [n for n in reversed(range(PER_ORG[org])) if keep(seed_event(org, n))]


# --- who may ask ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/events",
        "/api/queue",
        "/api/export.csv",
        "/api/export.jsonl",
        "/api/events/01a2307a-4808-7c5c-a6dd-166e67b5dfff",
        "/",
        "/queue",
    ],
)
async def test_api_without_an_organization_in_the_session_is_403(
    review_client: httpx.AsyncClient, path: str
) -> None:
    response = await review_client.get(f"{MOUNT}{path}")
    assert response.status_code == 403
    assert "no organization in the session" in response.text


async def test_api_organization_id_in_the_query_is_refused(
    review_client: httpx.AsyncClient,
) -> None:
    for path in ("/api/events", "/api/export.csv"):
        response = await review_client.get(
            f"{MOUNT}{path}", params={"organization_id": str(OTHER_ORG)}, headers=admin()
        )
        assert response.status_code == 400
        assert "organization_id is not a filter" in response.json()["error"]


async def test_api_each_admin_sees_only_their_organization(
    review_client: httpx.AsyncClient, review_db: str
) -> None:
    mine = [
        item for page in await collect(review_client, "/api/events", {}, admin()) for item in page
    ]
    theirs = [
        item
        for page in await collect(review_client, "/api/events", {}, admin(OTHER_ORG))
        for item in page
    ]
    assert {item["event"]["organization_id"] for item in mine} == {ORG}
    assert {item["event"]["organization_id"] for item in theirs} == {OTHER_ORG}
    assert sorted(
        n for n in seed_numbers([i for i in theirs if i["event"]["entity_type"] != "audit_access"])
    ) == list(range(PER_ORG[OTHER_ORG]))
    # One of organization 7's events, asked for by organization 8's admin: not there.
    foreign = mine[-1]["event_id"]
    response = await review_client.get(f"{MOUNT}/api/events/{foreign}", headers=admin(OTHER_ORG))
    assert response.status_code == 404
    own = await review_client.get(f"{MOUNT}/api/events/{foreign}", headers=admin())
    assert own.status_code == 200 and own.json()["event_id"] == foreign
    export = await review_client.get(f"{MOUNT}/api/export.jsonl", headers=admin(OTHER_ORG))
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert lines and {line["event"]["organization_id"] for line in lines} == {OTHER_ORG}
    queue = await collect(review_client, "/api/queue", {}, admin(OTHER_ORG))
    assert {item["event"]["organization_id"] for page in queue for item in page} == {OTHER_ORG}


async def test_api_reads_as_a_role_held_by_rls(review_db: str) -> None:
    # The app's engine acts as the database's application role: with no organization set
    # it sees no row at all.
    harness = build(review_db)
    try:
        async with harness.reader.engine.connect() as conn:
            user = (await conn.exec_driver_sql("SELECT current_user")).scalar()
            rows = (await conn.exec_driver_sql("SELECT count(*) FROM audit_log")).scalar()
        assert (user, rows) == (app_role(review_db), 0)
    finally:
        await harness.aclose()


# --- filters --------------------------------------------------------------------------------

FILTERS: list[tuple[dict[str, str], Callable[[Event], bool]]] = [
    (
        {"since": "2024-05-01T09:10:00Z", "until": "2024-05-01T09:20:00Z"},
        lambda e: "09:10" <= str(e.timestamp)[11:16] < "09:20",
    ),
    (
        {"since": "2024-05-01T11:10:00+02:00", "until": CUTOFF},  # 09:10Z, another offset
        lambda e: str(e.timestamp)[11:16] >= "09:10",
    ),
    ({"user_id": "2"}, lambda e: e.user_id == 2),
    ({"entity_type": "patient"}, lambda e: e.entity_type == "patient"),
    (
        {"entity_type": "patient", "entity_id": "103"},
        lambda e: e.entity_type == "patient" and e.entity_id == 103,
    ),
    ({"action": "DELETE"}, lambda e: e.action == "DELETE"),
    ({"action": "update"}, lambda e: e.action == "UPDATE"),
    ({"action_context": "normal"}, lambda e: e.action_context in (None, ActionContext.NORMAL)),
    ({"action_context": "break_glass"}, lambda e: e.action_context == ActionContext.BREAK_GLASS),
    (
        {"action_context": "impersonation"},
        lambda e: e.action_context == ActionContext.IMPERSONATION,
    ),
    ({"status_class": "2xx"}, lambda e: 200 <= e.status_code < 300),
    ({"status_class": "3xx"}, lambda e: e.status_code == 302),
    ({"status_class": "4xx"}, lambda e: 400 <= e.status_code < 500),
    ({"status_class": "5xx"}, lambda e: e.status_code == 500),
    ({"status_class": "1xx"}, lambda e: False),
    ({"path_prefix": "/patients/1"}, lambda e: e.request_path.startswith("/patients/1")),
    ({"path_prefix": "/patients/%"}, lambda e: False),  # taken literally, not as a wildcard
    ({"path_prefix": "/appointments/_"}, lambda e: False),
    (
        {"user_id": "1", "action": "CREATE", "status_class": "2xx", "path_prefix": "/"},
        lambda e: e.user_id == 1 and e.action == "CREATE" and 200 <= e.status_code < 300,
    ),
]


@pytest.mark.parametrize(("params", "keep"), FILTERS, ids=[json.dumps(f[0]) for f in FILTERS])
async def test_api_filter_returns_exactly_the_matching_events(
    review_client: httpx.AsyncClient, params: dict[str, str], keep: Callable[[Event], bool]
) -> None:
    query = {"until": CUTOFF, **params, "limit": "9"}
    pages = await collect(review_client, "/api/events", query, admin())
    assert [n for page in pages for n in seed_numbers(page)] == expected(ORG, keep)
    # The export of the same filter holds the same events.
    export = await review_client.get(
        f"{MOUNT}/api/export.jsonl", params={"until": CUTOFF, **params}, headers=admin()
    )
    numbers = [json.loads(line)["event"]["changes"]["n"] for line in export.text.splitlines()]
    assert numbers == expected(ORG, keep)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status_class": "6xx"}, "status_class='6xx' must be one of 1xx, 2xx, 3xx, 4xx, 5xx"),
        ({"action": "READ"}, "action='READ' must be one of CREATE, UPDATE, DELETE"),
        ({"action_context": "sudo"}, "action_context='sudo' must be one of"),
        ({"since": "yesterday"}, "since='yesterday' is not an ISO 8601 time"),
        ({"user_id": "abc"}, "user_id='abc' is not an integer"),
        ({"entity_id": str(2**63)}, "is outside int64"),
        ({"since": "2024-06-01T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, "is after until"),
        ({"actor": "3"}, "unknown parameter actor='3'"),
        ({"limit": "0"}, "limit='0' must be an integer from 1 to 1000"),
        ({"limit": "1001"}, "limit='1001'"),
        ({"after": "not-a-cursor"}, "after='not-a-cursor' is not a cursor this app wrote"),
    ],
)
async def test_api_bad_parameter_is_400_naming_it(
    review_client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await review_client.get(f"{MOUNT}/api/events", params=params, headers=admin())
    assert response.status_code == 400
    assert message in response.json()["error"]


# --- paging and single events ---------------------------------------------------------------


async def test_api_keyset_pages_cover_every_event_once_newest_first(
    review_client: httpx.AsyncClient,
) -> None:
    pages = await collect(review_client, "/api/events", {**SEEDED, "limit": "7"}, admin())
    assert [len(page) for page in pages] == [7] * 8 + [4]
    numbers = [n for page in pages for n in seed_numbers(page)]
    assert numbers == list(reversed(range(PER_ORG[ORG])))
    stamps = [item["event"]["timestamp"] for page in pages for item in page]
    assert stamps == sorted(stamps, reverse=True)


async def test_api_default_page_size_and_last_page(review_client: httpx.AsyncClient) -> None:
    body = (await review_client.get(f"{MOUNT}/api/events", params=SEEDED, headers=admin())).json()
    assert len(body["items"]) == 50 and body["next_cursor"] is not None
    body = (
        await review_client.get(
            f"{MOUNT}/api/events", params={**SEEDED, "limit": "60"}, headers=admin()
        )
    ).json()
    assert len(body["items"]) == 60 and body["next_cursor"] is None


async def test_api_one_event_by_event_id(review_client: httpx.AsyncClient, review_db: str) -> None:
    with psycopg.connect(libpq(review_db)) as conn:
        event_id, event_json = conn.execute(
            "SELECT event_id, event_json FROM audit_log WHERE organization_id = %s "
            "AND request_path = '/appointments/2'",
            (ORG,),
        ).fetchone()
    body = (await review_client.get(f"{MOUNT}/api/events/{event_id}", headers=admin())).json()
    assert body["event_id"] == str(event_id)
    assert body["event"] == json.loads(event_json)
    assert body["event"]["timestamp"] == "2024-05-01T09:02:00.123456789Z"
    assert body["reviews"] == []
    missing = await review_client.get(
        f"{MOUNT}/api/events/00000000-0000-7000-8000-000000000000", headers=admin()
    )
    assert missing.status_code == 404
    garbage = await review_client.get(f"{MOUNT}/api/events/nope", headers=admin())
    assert garbage.status_code == 404 and "nope" in garbage.json()["error"]


# --- exports --------------------------------------------------------------------------------


async def test_api_csv_export_contents(review_client: httpx.AsyncClient, review_db: str) -> None:
    response = await review_client.get(
        f"{MOUNT}/api/export.csv", params={**SEEDED, "entity_type": "appointment"}, headers=admin()
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="audit-org7-')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [json.loads(row["changes"])["n"] for row in body] == expected(
        ORG, lambda e: e.entity_type == "appointment"
    )
    with psycopg.connect(libpq(review_db)) as conn:
        stored = dict(conn.execute("SELECT event_id::text, event_json FROM audit_log").fetchall())
    for row in body:
        event = Event.model_validate_json(stored[row["event_id"]])
        assert row["timestamp"] == str(event.timestamp)
        assert row["status_code"] == str(event.status_code)
        assert row["action_context"] == (event.action_context or "")
        assert row["break_glass_id"] == (
            "" if event.break_glass_id is None else str(event.break_glass_id)
        )
        assert json.loads(row["changes"]) == event.changes
    first = next(row for row in body if json.loads(row["changes"])["n"] == 0)
    # A user agent a spreadsheet would run as a formula is defused.
    assert first["user_agent"] == "'=cmd|' /C calc'!A0"


async def test_api_jsonl_export_is_the_stored_event_json_verbatim(
    review_client: httpx.AsyncClient, review_db: str
) -> None:
    response = await review_client.get(f"{MOUNT}/api/export.jsonl", params=SEEDED, headers=admin())
    assert response.headers["content-type"] == "application/x-ndjson"
    with psycopg.connect(libpq(review_db)) as conn:
        stored = dict(conn.execute("SELECT event_id::text, event_json FROM audit_log").fetchall())
    lines = response.text.splitlines()
    assert len(lines) == PER_ORG[ORG]
    for line in lines:
        event_id = json.loads(line)["event_id"]
        assert line == f'{{"event_id":"{event_id}","event":{stored[event_id]}}}'


async def test_query_stream_pages_through_everything(review_db: str) -> None:
    harness = build(review_db)
    try:
        query = EventQuery(harness.reader.engine)
        numbers = [
            record.event.changes["n"]  # type: ignore[index, call-overload]
            async for record in query.stream(ORG, EventFilter.from_query(SEEDED), page_size=7)
        ]
    finally:
        await harness.aclose()
    assert numbers == list(reversed(range(PER_ORG[ORG])))


# --- reads are audited ----------------------------------------------------------------------


def access_events(url: str, user_id: int) -> list[tuple[dict[str, Any], str, bool]]:
    """Access events by ``user_id``: changes, path, and whether an outbox row waits for it."""
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute(
            "SELECT l.changes, l.request_path, o.id IS NOT NULL FROM audit_log l "
            "LEFT JOIN audit_outbox o ON o.event_id = l.event_id "
            "WHERE l.entity_type = 'audit_access' AND l.user_id = %s ORDER BY l.id",
            (user_id,),
        ).fetchall()
    return [(row[0], row[1], row[2]) for row in rows]


async def test_api_every_read_is_itself_audited(
    review_client: httpx.AsyncClient, review_db: str
) -> None:
    reader = admin(user=4242)
    await review_client.get(f"{MOUNT}/api/events", params={"action": "DELETE"}, headers=reader)
    await review_client.get(f"{MOUNT}/api/export.csv", params={"user_id": "2"}, headers=reader)
    await review_client.get(f"{MOUNT}/api/queue", headers=reader)
    one = await review_client.get(f"{MOUNT}/api/events", params={"limit": "1"}, headers=reader)
    event_id = one.json()["items"][0]["event_id"]
    await review_client.get(f"{MOUNT}/api/events/{event_id}", headers=reader)
    seen = access_events(review_db, 4242)
    assert [changes for changes, _, _ in seen] == [
        {"operation": "list", "filter": {"action": "DELETE"}, "limit": 50, "after": None},
        {"operation": "export", "format": "csv", "filter": {"user_id": "2"}},
        {"operation": "queue", "filter": {}, "limit": 50, "after": None},
        {"operation": "list", "filter": {}, "limit": 1, "after": None},
        {"operation": "view", "event_id": event_id},
    ]
    assert [path for _, path, _ in seen] == [
        f"{MOUNT}/api/events",
        f"{MOUNT}/api/export.csv",
        f"{MOUNT}/api/queue",
        f"{MOUNT}/api/events",
        f"{MOUNT}/api/events/{event_id}",
    ]
    assert all(queued for _, _, queued in seen)  # each has its outbox row: the relay sends it
    # The access events are the organization's own audit events, listed like any other.
    listed = await review_client.get(
        f"{MOUNT}/api/events",
        params={"user_id": "4242", "entity_type": "audit_access"},
        headers=reader,
    )
    assert len(listed.json()["items"]) == 6


async def test_api_read_is_refused_when_it_cannot_be_audited(review_db: str) -> None:
    # The reads work, the audit write cannot: nothing is shown (fail closed).
    harness = build(review_db)
    broken = AuditStore.from_url("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    harness.review.auditor._store = broken
    transport = httpx.ASGITransport(app=harness.core_api)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://core-api") as http:
            for path in ("/api/events", "/api/export.csv", "/api/queue"):
                response = await http.get(f"{MOUNT}{path}", headers=admin())
                assert response.status_code == 503, path
                assert "cannot record this access" in response.json()["error"]
                assert "event_id" not in response.text
    finally:
        await broken.aclose()
        await harness.aclose()
