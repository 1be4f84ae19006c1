"""A fresh, migrated PostgreSQL database for one benchmark, dropped afterwards with its roles."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg

from audit_middleware import database_roles, migrate_sync

ADMIN_DSN = os.environ.get("AUDITEVT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def bench_database(prefix: str = "auditevt_bench") -> Iterator[tuple[str, str]]:
    """``(SQLAlchemy URL, libpq DSN)`` of a new database, migrated; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        migrate_sync(url)
        yield url, dsn
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            roles = database_roles(name)  # roles outlive the database: drop all three
            admin.execute(f'DROP ROLE IF EXISTS "{roles.app}", "{roles.relay}", "{roles.sealer}"')
