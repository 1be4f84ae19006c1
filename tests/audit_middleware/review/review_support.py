"""A seeded audit log of two organizations, and the review app mounted in a small Core API.

The stand-in authentication reads the header (or, for the browser, the cookie)
``admin=<organization>:<user>[:reviewer]``; a real Core API takes these from its session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from audit_middleware import AuditReader, AuditStore, migrate_sync
from audit_middleware.review import ReviewApp, create_review_app
from auditevt import Action, ActionContext, Event, Timestamp
from conftest import as_app_role, fresh_pg_database

ORG, OTHER_ORG = 7, 8
PER_ORG = {ORG: 60, OTHER_ORG: 12}
MOUNT = "/admin/audit"
CUTOFF = "2025-01-01T00:00:00Z"  # seeded events are before it, access events after it


def seed_event(org: int, n: int) -> Event:
    """The n-th seeded event of ``org``: every filterable field varies with n."""
    context = [None, ActionContext.NORMAL, ActionContext.BREAK_GLASS, ActionContext.IMPERSONATION][
        n % 4
    ]
    return Event(
        action=[Action.CREATE, Action.UPDATE, Action.DELETE][n % 3],
        entity_type="patient" if n % 2 else "appointment",
        entity_id=100 + n % 5,
        user_id=1 + n % 3,
        organization_id=org,
        ip_address="203.0.113.5",
        user_agent="=cmd|' /C calc'!A0" if n == 0 else "seed",
        request_path=f"/patients/{n}" if n % 2 else f"/appointments/{n}",
        status_code=[200, 201, 204, 302, 404, 422, 500][n % 7],
        timestamp=Timestamp.parse(f"2024-05-01T{9 + n // 60:02d}:{n % 60:02d}:00.123456789Z"),
        changes={"n": n, "portal_password": "[REDACTED]", "note": "ü"},
        action_context=context,
        break_glass_id=900 + n if context is ActionContext.BREAK_GLASS else None,
        impersonation_id=800 + n if context is ActionContext.IMPERSONATION else None,
    )


async def _seed(url: str) -> None:
    async with AuditStore.from_url(as_app_role(url)) as store:
        for org, count in PER_ORG.items():
            for n in range(count):
                await store.write(seed_event(org, n))


@pytest.fixture(scope="module")
def review_db() -> Iterator[str]:
    """A migrated PostgreSQL database with the seeded events (shared by a module's tests)."""
    with fresh_pg_database("auditevt_review") as url:
        migrate_sync(url)
        asyncio.run(_seed(url))
        yield url


def _admin_value(request: Request) -> list[str] | None:
    value = request.headers.get("x-admin") or request.cookies.get("admin")
    return value.split(":") if value else None


def organization_of(request: Request) -> int | None:
    parts = _admin_value(request)
    return int(parts[0]) if parts else None


def user_of(request: Request) -> int | None:
    parts = _admin_value(request)
    return int(parts[1]) if parts else None


async def may_review(request: Request) -> bool:  # async on purpose: both kinds are accepted
    parts = _admin_value(request)
    return bool(parts) and parts[-1] == "reviewer"


@dataclass
class Harness:
    """The review app mounted at ``MOUNT`` of a Core API, and what it reads and writes."""

    core_api: Starlette
    review: ReviewApp
    store: AuditStore
    reader: AuditReader

    async def aclose(self) -> None:
        await self.reader.aclose()
        await self.store.aclose()


def build(url: str, **options: object) -> Harness:
    # On PostgreSQL act as the application role (SQLite has no roles, and no RLS).
    store = AuditStore.from_url(as_app_role(url) if url.startswith("postgresql") else url)
    reader = AuditReader(store.engine)
    review = create_review_app(
        store=store,
        reader=reader,
        organization_resolver=organization_of,
        user_resolver=user_of,
        reviewer_resolver=may_review,
        csrf_secret=b"test secret of sixteen bytes or more",
        **options,  # type: ignore[arg-type]
    )
    return Harness(Starlette(routes=[Mount(MOUNT, app=review)]), review, store, reader)


@pytest.fixture
async def review_client(review_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the Core API (in-process), no admin signed in."""
    harness = build(review_db)
    transport = httpx.ASGITransport(app=harness.core_api)
    async with httpx.AsyncClient(transport=transport, base_url="http://core-api") as http:
        yield http
    await harness.aclose()


def admin(org: int = ORG, user: int = 41, *, reviewer: bool = False) -> dict[str, str]:
    """Headers that sign in an admin of ``org``."""
    return {"x-admin": f"{org}:{user}" + (":reviewer" if reviewer else "")}


@pytest.fixture
def fresh_review_db() -> Iterator[str]:
    """Like ``review_db``, but a database of the test's own (for tests that record reviews)."""
    with fresh_pg_database("auditevt_review") as url:
        migrate_sync(url)
        asyncio.run(_seed(url))
        yield url


@pytest.fixture
async def fresh_client(fresh_review_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a Core API on ``fresh_review_db``."""
    harness = build(fresh_review_db)
    transport = httpx.ASGITransport(app=harness.core_api)
    async with httpx.AsyncClient(transport=transport, base_url="http://core-api") as http:
        yield http
    await harness.aclose()


async def collect(
    client: httpx.AsyncClient, path: str, params: dict[str, str], headers: dict[str, str]
) -> list[list[dict[str, object]]]:
    """Every page of a listing, following ``next_cursor`` (at most 1000 pages)."""
    pages: list[list[dict[str, object]]] = []
    query = dict(params)
    for _ in range(1000):
        response = await client.get(f"{MOUNT}{path}", params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        if body["next_cursor"] is None:
            return pages
        query = {**params, "after": body["next_cursor"]}
    raise AssertionError("more than 1000 pages")


def seed_numbers(items: list[dict[str, object]]) -> list[int]:
    """The ``n`` of each seeded event in ``items`` (from its changes), in order."""
    return [item["event"]["changes"]["n"] for item in items]  # type: ignore[index]
