"""AuditReader: org-scoped listing, filters, keyset pagination, on PostgreSQL and SQLite."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import event as sa_event

from audit_middleware import (
    MAX_PAGE_SIZE,
    AuditReader,
    AuditRecord,
    AuditStore,
    ConfigurationError,
    Cursor,
    Page,
    ReaderError,
    UnreadableRecord,
    migrate,
)
from auditevt import Action, ActionContext, Event, Timestamp
from conftest import as_app_role, fresh_pg_database, libpq, make_event

BASE = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def reader_event(n: int, **fields: Any) -> Event:
    """Event ``n`` of the reader's tests: what the filters select on varies with ``n``."""
    varied: dict[str, Any] = {
        "action": [Action.CREATE, Action.UPDATE, Action.DELETE][n % 3],
        "entity_type": "patient" if n % 2 else "appointment",
        "entity_id": n % 5,
        "user_id": 100 + n % 4,
        "organization_id": 1,
        # One event a minute, with nanoseconds, written in a +05:30 offset.
        "timestamp": Timestamp.parse(
            (BASE + timedelta(minutes=n))
            .astimezone(timezone(timedelta(hours=5, minutes=30)))
            .isoformat()
            .replace("+05:30", f".{n:03d}000007+05:30")
        ),
    }
    return make_event(n, **(varied | fields))


@pytest.fixture(params=["postgresql", "sqlite"])
async def url(request: pytest.FixtureRequest) -> str:
    """A migrated database; on PostgreSQL reached as the application role (RLS applies)."""
    if request.param == "postgresql":
        pg_url: str = request.getfixturevalue("pg_url")
        await migrate(pg_url)
        return as_app_role(pg_url)
    sqlite_url: str = request.getfixturevalue("sqlite_url")
    await migrate(sqlite_url)
    return sqlite_url


async def write(url: str, events: list[Event]) -> list[Any]:
    async with AuditStore.from_url(url) as store:
        return [await store.write(e) for e in events]


async def all_pages(reader: AuditReader, organization_id: int, **filters: Any) -> list[Page]:
    pages = [await reader.list_events(organization_id, **filters)]
    while pages[-1].next_cursor is not None:
        pages.append(
            await reader.list_events(organization_id, after=pages[-1].next_cursor, **filters)
        )
    return pages


@pytest.mark.anyio
async def test_reader_lists_events_exactly_as_written_newest_first(url: str) -> None:
    events = [
        reader_event(0, changes={"password": "[REDACTED]", "n": [1, 2.5, None]}),
        reader_event(1, action_context=ActionContext.BREAK_GLASS, break_glass_id=0),
        reader_event(2, user_agent="<script>&\u2028"),
    ]
    ids = await write(url, events)
    async with AuditReader(url) as reader:
        page = await reader.list_events(1)
    assert page.next_cursor is None
    assert [r.event_id for r in page.items] == ids[::-1]
    for record, event in zip(page.items, events[::-1], strict=True):
        assert isinstance(record, AuditRecord)
        assert record.event == event
        assert record.event.to_json() == event.to_json()  # nanoseconds and offset intact
        assert record.inserted_at.tzinfo is not None
        assert abs(record.inserted_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert page.items[0].id > page.items[1].id > page.items[2].id


@pytest.mark.anyio
async def test_reader_keyset_pages_cover_everything_once(url: str) -> None:
    ids = await write(url, [reader_event(n) for n in range(23)])
    async with AuditReader(url) as reader:
        pages = await all_pages(reader, 1, limit=5)
    assert [len(p.items) for p in pages] == [5, 5, 5, 5, 3]
    listed = [r.event_id for p in pages for r in p.items]
    assert listed == ids[::-1]


@pytest.mark.anyio
async def test_reader_pages_through_equal_timestamps_by_event_id(url: str) -> None:
    same = Timestamp.parse("2024-03-01T12:00:00.5Z")
    ids = await write(url, [reader_event(n, timestamp=same) for n in range(7)])
    async with AuditReader(url) as reader:
        pages = await all_pages(reader, 1, limit=2)
        cursor = Cursor.decode(pages[0].next_cursor or "")
    assert [r.event_id for p in pages for r in p.items] == sorted(ids, reverse=True)
    assert cursor.timestamp == datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert cursor.event_id == pages[0].items[-1].event_id


@pytest.mark.anyio
async def test_reader_never_returns_another_organizations_rows(url: str) -> None:
    await write(url, [reader_event(n, organization_id=1 + n % 3) for n in range(30)])
    async with AuditReader(url) as reader:
        for org in (1, 2, 3):
            page = await reader.list_events(org)
            assert len(page.items) == 10
            assert {r.event.organization_id for r in page.items} == {org}
        assert (await reader.list_events(4)).items == []


@pytest.mark.anyio
async def test_reader_filters(url: str) -> None:
    events = [reader_event(n) for n in range(30)]
    await write(url, events)

    async def listed(**filters: Any) -> list[int]:
        async with AuditReader(url) as reader:
            pages = await all_pages(reader, 1, limit=4, **filters)
        return sorted(int(r.event.request_path.rsplit("/", 1)[1]) for p in pages for r in p.items)

    assert await listed(entity_type="patient") == [n for n in range(30) if n % 2]
    assert await listed(entity_type="patient", entity_id=3) == [3, 13, 23]
    assert await listed(user_id=101) == [n for n in range(30) if n % 4 == 1]
    assert await listed(action=Action.DELETE) == [n for n in range(30) if n % 3 == 2]
    assert await listed(action="UPDATE", user_id=100) == [4, 16, 28]
    # since is inclusive, until exclusive; any offset; a Timestamp works too.
    since = BASE + timedelta(minutes=10)
    until = (BASE + timedelta(minutes=14)).astimezone(timezone(timedelta(hours=-7)))
    assert await listed(since=since, until=until) == [10, 11, 12, 13]
    assert await listed(since=Timestamp.from_datetime(BASE + timedelta(minutes=27))) == [
        27,
        28,
        29,
    ]
    assert await listed(until=BASE + timedelta(minutes=2)) == [0, 1]
    assert await listed(entity_type="nothing") == []


@pytest.mark.anyio
async def test_reader_limit_bounds(url: str) -> None:
    await write(url, [reader_event(n) for n in range(3)])
    async with AuditReader(url) as reader:
        page = await reader.list_events(1, limit=1)
        assert len(page.items) == 1 and page.next_cursor is not None
        page = await reader.list_events(1, limit=MAX_PAGE_SIZE)
        assert len(page.items) == 3 and page.next_cursor is None


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"organization_id": "1"}, TypeError, "organization_id='1'"),
        ({"organization_id": True}, TypeError, "organization_id=True"),
        ({"organization_id": 2**63}, ValueError, "organization_id=9223372036854775808"),
        ({"entity_type": ""}, ValueError, "entity_type=''"),
        ({"entity_id": 1.5}, TypeError, "entity_id=1.5"),
        ({"user_id": None, "action": "READ"}, ValueError, "action='READ'"),
        ({"since": datetime(2024, 1, 1)}, ValueError, "since=datetime"),
        ({"until": "2024-01-01"}, TypeError, "until='2024-01-01'"),
        ({"since": BASE, "until": BASE - timedelta(1)}, ValueError, "is after until"),
        ({"limit": 0}, ValueError, "limit=0"),
        ({"limit": 1001}, ValueError, "limit=1001"),
        ({"limit": "10"}, ValueError, "limit='10'"),
        ({"after": "garbage!"}, ValueError, "after='garbage!'"),
        ({"after": "MzoxOjE"}, ValueError, "after='MzoxOjE'"),  # "3:1:1", unknown version
        ({"after": 12}, TypeError, "after=12"),
    ],
)
@pytest.mark.anyio
async def test_reader_rejects_bad_filter_values(
    sqlite_url: str, arguments: dict[str, Any], error: type[Exception], named: str
) -> None:
    arguments = {"organization_id": 1, **arguments}
    reader = AuditReader(sqlite_url)
    with pytest.raises(error) as caught:
        await reader.list_events(**arguments)
    assert named in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)  # a ValueError: the endpoint's 400


def test_reader_cursor_round_trips() -> None:
    event_id = uuid.UUID("018f3a2e-7b1c-7d2e-9f00-0123456789ab")
    cursor = Cursor(timestamp=datetime(2024, 3, 1, 12, 0, 0, 1, tzinfo=UTC), event_id=event_id)
    text = cursor.encode()
    assert text.isascii() and "=" not in text and "/" not in text and "+" not in text
    assert Cursor.decode(text) == cursor
    with pytest.raises(ValueError, match="aware"):
        Cursor(timestamp=datetime(2024, 1, 1), event_id=event_id)
    with pytest.raises(ValueError, match="event_id=-1"):
        Cursor(timestamp=datetime(2024, 1, 1, tzinfo=UTC), event_id=-1)  # type: ignore[arg-type]
    # A version-1 cursor (it carried the global audit_log.id) is refused, not misread.
    old = base64.urlsafe_b64encode(b"1:1709294400000001:1099511627776").decode().rstrip("=")
    with pytest.raises(ValueError, match="is not a cursor this reader wrote"):
        Cursor.decode(old)


@pytest.mark.anyio
async def test_reader_unreachable_database_raises_reader_error(closed_port: int) -> None:
    async with AuditReader(f"postgresql://postgres@127.0.0.1:{closed_port}/audit") as reader:
        with pytest.raises(ReaderError, match="could not read audit rows"):
            await reader.list_events(1)


@pytest.mark.anyio
async def test_reader_shares_an_engine_without_closing_it(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    async with AuditStore.from_url(sqlite_url) as store:
        await store.write(reader_event(1))
        async with AuditReader(store.engine) as reader:
            assert len((await reader.list_events(1)).items) == 1
        await store.write(reader_event(2))  # the engine is still open
    with pytest.raises(TypeError, match="engine_or_url"):
        AuditReader(42)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_reader_postgresql_scopes_one_read_only_transaction_per_call(pg_url: str) -> None:
    await migrate(pg_url)
    url = as_app_role(pg_url)
    await write(url, [reader_event(n, organization_id=5) for n in range(3)])
    reader = AuditReader(url, pool_size=1, max_overflow=0)
    seen: list[tuple[str, Any, bool]] = []

    @sa_event.listens_for(reader.engine.sync_engine, "before_cursor_execute")
    def _record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        words = statement.split()
        seen.append((f"{words[0]} {words[1]}", parameters, dbapi.read_only))

    @sa_event.listens_for(reader.engine.sync_engine, "commit")
    def _commit(conn: Any) -> None:
        seen.append(("COMMIT", None, True))

    page = await reader.list_events(5, limit=2)
    assert len(page.items) == 2
    # set_config first, in the same transaction as the query, then the commit ends both.
    assert [(s[0], s[2]) for s in seen] == [
        ("SELECT set_config('auditevt.organization_id',", True),
        ("SELECT public.audit_log.id,", True),  # the schema named
        ("COMMIT", True),
    ]
    assert seen[0][1] == {"org": "5"}
    async with reader.engine.connect() as conn:  # the pooled connection afterwards: no tenant
        setting = await conn.exec_driver_sql(
            "SELECT current_setting('auditevt.organization_id', true)"
        )
        assert setting.scalar_one() in (None, "")
    await reader.aclose()


@pytest.mark.anyio
async def test_reader_pages_past_unreadable_rows_postgresql(pg_url: str) -> None:
    await migrate(pg_url)
    app_url = as_app_role(pg_url)
    events = [reader_event(n) for n in range(9)]
    await write(app_url, events)
    # Rows no Event reads, inserted as the table owner (the log is append-only: insert only).
    # Each sits between readable rows in time, so paging has to step over it.
    deep = '{"action":"CREATE","changes":' + "[" * 300 + "]" * 300 + "}"
    bad = {
        "00000000-0000-0000-0000-00000000000a": "not json at all",
        "00000000-0000-0000-0000-00000000000b": deep,
        "00000000-0000-0000-0000-00000000000c": events[0]
        .to_json()
        .replace('"user_id":100', '"user_id":"x"'),
    }
    async with await psycopg.AsyncConnection.connect(libpq(pg_url)) as conn:
        for minute, (event_id, text) in zip((1.5, 4.5, 7.5), bad.items(), strict=True):
            await conn.execute(
                "INSERT INTO audit_log (event_id, action, entity_type, entity_id, user_id,"
                " organization_id, ip_address, user_agent, request_path, status_code, timestamp,"
                " event_json) VALUES (%s, 'CREATE', 't', 1, 1, 1, '', '', '/', 200, %s, %s)",
                [event_id, BASE + timedelta(minutes=minute), text],
            )
    async with AuditReader(app_url) as reader:
        pages = await all_pages(reader, 1, limit=2)
    items = [item for page in pages for item in page.items]
    assert len(items) == 12 and len(pages) == 6
    readable = [item for item in items if isinstance(item, AuditRecord)]
    assert [item.event for item in readable] == events[::-1]
    unreadable = [item for item in items if isinstance(item, UnreadableRecord)]
    assert [(str(item.event_id), item.event_json) for item in unreadable] == list(bad.items())[::-1]
    assert "user_id: Input should be a valid integer" in unreadable[0].error
    assert "changes: " in unreadable[1].error and "nest deeper than 64" in unreadable[1].error
    assert "Invalid JSON" in unreadable[2].error
    assert all(item.id > 0 and item.inserted_at.tzinfo is not None for item in unreadable)


# -- hostile and malformed filters: a ValueError naming the parameter, before any query ------

WRONG_TYPES: list[tuple[str, Any]] = [
    ("organization_id", 1.0),
    ("organization_id", None),
    ("entity_type", 7),
    ("entity_type", b"patient"),
    ("entity_id", "5"),
    ("entity_id", False),
    ("user_id", 2.0),
    ("action", 1),
    ("since", 1709294400),
    ("until", BASE.date()),
    ("limit", 10.0),
    ("after", b"cursor"),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
@pytest.mark.anyio
async def test_reader_wrongly_typed_filters_raise_value_error_naming_them(
    url: str, name: str, value: Any
) -> None:
    arguments: dict[str, Any] = {"organization_id": 1, name: value}
    async with AuditReader(url) as reader:
        with pytest.raises(ValueError, match=f"^{name}=") as caught:
            await reader.list_events(**arguments)
    assert isinstance(caught.value, ConfigurationError)  # an AuditError
    assert isinstance(caught.value, TypeError)  # as before, for callers that catch TypeError
    assert not isinstance(caught.value, ReaderError)


NUL_OR_OVERLONG: list[tuple[str, Any, str]] = [
    ("entity_type", "patient\x00", "U+0000"),
    ("entity_type", "\x00", "U+0000"),
    ("entity_type", "p" * 257, "257 characters"),
    ("entity_type", "p" * 1_000_000, "1000000 characters"),
    ("action", "CREATE\x00", "must be one of"),
    ("action", "C" * 100_000, "must be one of"),
    ("after", "\x00", "is not a cursor"),
    ("after", "A" * 100_000, "100000 characters"),
    ("organization_id", -(2**63) - 1, "outside int64"),
    ("entity_id", 2**64, "outside int64"),
    ("user_id", 10**30, "outside int64"),
    ("since", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "years 1 to 9999"),
    ("until", datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))), "years 1"),
]


@pytest.mark.parametrize(("name", "value", "why"), NUL_OR_OVERLONG)
@pytest.mark.anyio
async def test_reader_nul_and_overlong_filters_raise_value_error_naming_them(
    url: str, name: str, value: Any, why: str
) -> None:
    # A NUL reached PostgreSQL before and came back as a database failure (ReaderError, 503).
    await write(url, [reader_event(1)])
    arguments: dict[str, Any] = {"organization_id": 1, name: value}
    async with AuditReader(url) as reader:
        with pytest.raises(ValueError, match=f"^{name}=") as caught:
            await reader.list_events(**arguments)
        assert why in str(caught.value)
        assert len(str(caught.value)) < 300  # the value is named by its start, not repeated
        assert isinstance(caught.value, ConfigurationError)
        assert not isinstance(caught.value, ReaderError)
        assert len((await reader.list_events(1)).items) == 1  # and the reader still works


def _other_organizations(n: int) -> list[Event]:
    return [reader_event(k, organization_id=2 + k % 7) for k in range(n)]


@pytest.mark.anyio
async def test_reader_cursors_reveal_nothing_about_other_organizations(
    request: pytest.FixtureRequest,
) -> None:
    # The same events of organization 1, in two databases: one quiet, one where other
    # organizations wrote 250 rows between each of them. Every cursor organization 1's admin
    # receives is the same text in both: it cannot tell how much anyone else wrote.
    ours = [reader_event(n) for n in range(6)]
    event_ids = [uuid.UUID(int=(0x018F << 112) + n) for n in range(6)]
    cursors: list[list[str | None]] = []
    for busy in (False, True):
        with fresh_pg_database("auditevt_reader_leak") as pg_url:
            await migrate(pg_url)
            app = as_app_role(pg_url)
            async with AuditStore.from_url(app) as store:
                for event, event_id in zip(ours, event_ids, strict=True):
                    if busy:
                        for other in _other_organizations(250):
                            await store.write(other)
                    await store.write(event, event_id=event_id)
            async with AuditReader(app) as reader:
                pages = await all_pages(reader, 1, limit=2)
            assert [r.event_id for p in pages for r in p.items] == event_ids[::-1]
            cursors.append([p.next_cursor for p in pages])
    assert cursors[0] == cursors[1]
    assert cursors[0][:2] == [
        Cursor(timestamp=_micros(ours[4]), event_id=event_ids[4]).encode(),
        Cursor(timestamp=_micros(ours[2]), event_id=event_ids[2]).encode(),
    ]


def _micros(event: Event) -> datetime:
    moment = event.timestamp.to_datetime().astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond)


@pytest.mark.anyio
async def test_reader_keyset_query_uses_the_organization_index(pg_url: str) -> None:
    # 60,000 rows of 30 organizations, written this month (UUIDv7 ids of now, so in this
    # month's partition); a deep page of one is an index range scan, not a sort.
    await migrate(pg_url)
    with psycopg.connect(libpq(pg_url)) as conn:
        conn.execute(
            "INSERT INTO public.audit_log (event_id, action, entity_type, entity_id, user_id,"
            ' organization_id, ip_address, user_agent, request_path, status_code, "timestamp",'
            " event_json) SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint + g),"
            " 12, '0') || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))"
            "::uuid, 'CREATE', 'patient', g, 1, g % 30, '', '',"
            " '/', 201, timestamptz '2024-01-01' + g * interval '1 second', '{}'"
            " FROM generate_series(1, 60000) g"
        )
        conn.execute("ANALYZE public.audit_log")
    captured: list[tuple[str, Any]] = []
    reader = AuditReader(as_app_role(pg_url))

    @sa_event.listens_for(reader.engine.sync_engine, "before_cursor_execute")
    def _capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "audit_log" in statement:
            captured.append((statement, parameters))

    # Halfway down: a deep page ('{}' reads as an UnreadableRecord: parsing is not measured).
    after = Cursor(timestamp=datetime(2024, 1, 1, 8, 20, tzinfo=UTC), event_id=uuid.UUID(int=0))
    try:
        await reader.list_events(7, after=after, limit=50)
    finally:
        await reader.aclose()
    ((statement, parameters),) = captured
    with psycopg.connect(libpq(pg_url)) as conn:
        conn.execute("SELECT set_config('auditevt.organization_id', '7', true)")
        plan = "\n".join(
            row[0] for row in conn.execute(f"EXPLAIN {statement}", parameters).fetchall()
        )
    # On PostgreSQL audit_log is partitioned by month: each partition's copy of the index
    # serves the filter and the order, and the partitions are merged, not sorted.
    this_month = datetime.now(UTC).strftime("audit_log_%Y_%m")
    assert f"Index Scan Backward using {this_month}_organization_id_timestamp_event_id_idx" in plan
    # The rows are never sorted: the partitions' index orders are merged (an empty partition
    # may be sorted, which costs nothing).
    assert "Merge Append" in plan or "Sort" not in plan, plan
    assert f"Seq Scan on {this_month}" not in plan, plan
