"""Fixtures of the integrity tests: keys, a sealer, superuser SQL (the store is pg_store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit_middleware import AuditStore, DirectorySink, Sealer, SigningKey
from conftest import libpq

from .integrity_helpers import FAST


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def published(tmp_path: Path) -> Path:
    return tmp_path / "published"


@pytest.fixture
def sealer_for(key: SigningKey, published: Path) -> Callable[[AuditStore], Sealer]:
    def build(store: AuditStore, **kwargs: Any) -> Sealer:
        kwargs.setdefault("sink", DirectorySink(published))
        kwargs.setdefault("config", FAST)
        return Sealer(store.engine, key, **kwargs)

    return build


def _audit_log_triggers(conn: psycopg.Connection[Any], verb: str) -> None:
    # audit_log and each of its partitions (a partition's statement triggers are its own).
    tables = conn.execute(
        "SELECT relid::regclass::text FROM pg_partition_tree('public.audit_log')"
    ).fetchall()
    for (table,) in tables or [("audit_log",)]:
        conn.execute(f"ALTER TABLE {table} {verb} TRIGGER USER")


@pytest.fixture
def superuser(pg_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run SQL as the superuser with the append-only triggers off (as an attacker would)."""

    def run(*statements: str, params: Any = None) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        with psycopg.connect(libpq(pg_url)) as conn:
            _audit_log_triggers(conn, "DISABLE")
            conn.execute("ALTER TABLE audit_seals DISABLE TRIGGER USER")
            for statement in statements:
                cursor = conn.execute(statement, params)
                if cursor.description is not None:
                    rows.extend(cursor.fetchall())
            _audit_log_triggers(conn, "ENABLE")
            conn.execute("ALTER TABLE audit_seals ENABLE TRIGGER USER")
        return rows

    return run
