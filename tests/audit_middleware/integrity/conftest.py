"""Fixtures of the integrity tests: keys, events, a migrated database, superuser SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit_middleware import AuditStore, DirectorySink, Sealer, SigningKey, migrate

from .integrity_helpers import FAST, libpq


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
