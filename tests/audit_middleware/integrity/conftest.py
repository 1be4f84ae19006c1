"""Fixtures of the integrity tests: keys, events, a migrated database, superuser SQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit_middleware import AuditStore, DirectorySink, Sealer, SealerConfig, SigningKey, migrate
from auditevt import Action, Event, Timestamp

_numbers = itertools.count(1)

# Short: a test's late writer holds the horizon back on purpose; a pass gives up soon.
FAST = SealerConfig(settle=0.2, poll_interval=0.005)


def make_event(organization_id: int = 7, **overrides: Any) -> Event:
    number = next(_numbers)
    fields: dict[str, Any] = {
        "action": Action.UPDATE,
        "entity_type": "appointment",
        "entity_id": number,
        "user_id": 40 + number % 5,
        "organization_id": organization_id,
        "ip_address": "203.0.113.9",
        "user_agent": "pytest/8",
        "request_path": f"/appointments/{number}",
        "status_code": 200,
        "timestamp": Timestamp.parse("2026-12-01T07:08:09.123456789Z"),
        "changes": {"status": {"from": "booked", "to": "cancelled"}, "n": number},
    }
    fields.update(overrides)
    return Event(**fields)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def published(tmp_path: Path) -> Path:
    return tmp_path / "published"


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[AuditStore]:
    """A store on a fresh, migrated PostgreSQL database."""
    await migrate(pg_url)
    async with AuditStore.from_url(pg_url) as store:
        yield store


@pytest.fixture
def sealer_for(key: SigningKey, published: Path) -> Callable[[AuditStore], Sealer]:
    def build(store: AuditStore, **kwargs: Any) -> Sealer:
        kwargs.setdefault("sink", DirectorySink(published))
        kwargs.setdefault("config", FAST)
        return Sealer(store.engine, key, **kwargs)

    return build


@pytest.fixture
def superuser(pg_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run SQL as the superuser with the append-only triggers off (as an attacker would)."""

    def run(*statements: str, params: Any = None) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        with psycopg.connect(libpq(pg_url)) as conn:
            conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
            conn.execute("ALTER TABLE audit_seals DISABLE TRIGGER USER")
            for statement in statements:
                cursor = conn.execute(statement, params)
                if cursor.description is not None:
                    rows.extend(cursor.fetchall())
            conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
            conn.execute("ALTER TABLE audit_seals ENABLE TRIGGER USER")
        return rows

    return run
