"""PostgreSQL hardening, as the application role: org-scoped reads, append-only audit_log."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from audit_middleware import AuditReader, AuditStore, migrate_sync
from conftest import app_role, as_app_role, fresh_pg_database, libpq, make_event

ORGANIZATIONS = [*range(1, 50), 2**62]  # 50 organizations, one with a large id
PER_ORGANIZATION = 4


APP = "app"  # connect(url) acts as the database's application role


def connect(url: str, role: str | None = APP) -> psycopg.Connection[Any]:
    if role == APP:
        role = app_role(url)
    options = {} if role is None else {"options": f"-c role={role}"}
    return psycopg.connect(libpq(url), **options)


@pytest.fixture(scope="module")
def seeded_url() -> Iterator[str]:
    """One migrated database for this module, holding PER_ORGANIZATION events of each
    organization, interleaved. Its tests only read it (or prove they cannot change it)."""
    with fresh_pg_database("auditevt_test_rls") as url:
        migrate_sync(url)
        asyncio.run(_seed(url))
        yield url


async def _seed(url: str) -> None:
    async with AuditStore.from_url(as_app_role(url)) as store:
        for n in range(PER_ORGANIZATION):
            await asyncio.gather(
                *(
                    store.write(make_event(n, organization_id=org, user_id=1000 + n))
                    for org in ORGANIZATIONS
                )
            )


def _event_ids(url: str) -> dict[int, set[uuid.UUID]]:
    written: dict[int, set[uuid.UUID]] = {org: set() for org in ORGANIZATIONS}
    with connect(url, role=None) as conn:
        for org, event_id in conn.execute("SELECT organization_id, event_id FROM audit_log"):
            written[org].add(event_id)
    return written


def test_rls_reads_of_fifty_organizations_never_cross(
    seeded_url: str,
) -> None:
    async def read_all() -> list[tuple[int, set[uuid.UUID], set[int]]]:
        # Three pooled connections carry 200 concurrent reads of 50 organizations.
        reader = AuditReader(as_app_role(seeded_url), pool_size=3, max_overflow=0)
        orgs = ORGANIZATIONS * 4
        random.Random(7).shuffle(orgs)

        async def read(org: int) -> tuple[int, set[uuid.UUID], set[int]]:
            page = await reader.list_events(org, limit=1000)
            return (
                org,
                {r.event_id for r in page.items},
                {r.event.organization_id for r in page.items},
            )

        try:
            return await asyncio.gather(*(read(org) for org in orgs))
        finally:
            await reader.aclose()

    results = asyncio.run(read_all())
    expected = _event_ids(seeded_url)
    assert sum(map(len, expected.values())) == len(ORGANIZATIONS) * PER_ORGANIZATION
    assert len(results) == 200
    for org, event_ids, seen_orgs in results:
        assert seen_orgs == {org}
        assert event_ids == expected[org]


def test_rls_bare_select_with_no_organization_set_returns_no_rows(
    seeded_url: str,
) -> None:
    with connect(seeded_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (app_role(seeded_url),)
        assert conn.execute("SELECT * FROM audit_log").fetchall() == []
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)
        assert conn.execute("SELECT * FROM audit_log WHERE organization_id = 1").fetchall() == []
    with connect(seeded_url, role=None) as conn:  # the superuser sees them all: RLS is bypassed
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (
            len(ORGANIZATIONS) * PER_ORGANIZATION,
        )


def test_rls_empty_organization_setting_returns_no_rows(
    seeded_url: str,
) -> None:
    with connect(seeded_url) as conn:
        conn.execute("SELECT set_config('auditevt.organization_id', '', true)")
        assert conn.execute("SELECT * FROM audit_log").fetchall() == []
        conn.rollback()
        conn.execute("SET auditevt.organization_id = ''")  # session-wide, also empty
        assert conn.execute("SELECT * FROM audit_log").fetchall() == []


def test_rls_garbage_organization_setting_fails_closed(
    seeded_url: str,
) -> None:
    with connect(seeded_url) as conn:
        conn.execute("SELECT set_config('auditevt.organization_id', '1 OR true', true)")
        with pytest.raises(errors.InvalidTextRepresentation):
            conn.execute("SELECT * FROM audit_log").fetchall()


def test_rls_organization_setting_ends_with_its_transaction(
    seeded_url: str,
) -> None:
    with connect(seeded_url) as conn:
        conn.execute("SELECT set_config('auditevt.organization_id', '7', true)")
        rows = conn.execute("SELECT DISTINCT organization_id FROM audit_log").fetchall()
        assert rows == [(7,)]
        # Even asking for another organization by name finds nothing of it.
        assert conn.execute("SELECT * FROM audit_log WHERE organization_id = 8").fetchall() == []
        conn.commit()
        assert conn.execute("SELECT * FROM audit_log").fetchall() == []


def test_rls_pooled_connection_carries_no_tenant_after_a_read(
    seeded_url: str,
) -> None:
    async def run() -> tuple[int, int]:
        reader = AuditReader(as_app_role(seeded_url), pool_size=1, max_overflow=0)
        try:
            page = await reader.list_events(5)
            # The same (only) pooled connection, outside the reader's transaction:
            async with reader.engine.connect() as conn:
                leaked = await conn.exec_driver_sql("SELECT count(*) FROM audit_log")
                return len(page.items), int(leaked.scalar_one())
        finally:
            await reader.aclose()

    assert asyncio.run(run()) == (PER_ORGANIZATION, 0)


CHANGES = [
    "UPDATE audit_log SET user_id = 0",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "UPDATE audit_log SET event_json = '{}' WHERE organization_id = 3",
    "DELETE FROM audit_log WHERE organization_id = 3",
    "UPDATE audit_log SET user_id = 0 WHERE false",  # even when no row matches
    "INSERT INTO audit_log SELECT * FROM audit_log LIMIT 1"
    " ON CONFLICT (event_id) DO UPDATE SET user_id = 0",
]


def test_rls_app_role_cannot_change_audit_rows(
    seeded_url: str,
) -> None:
    for statement in CHANGES[:-1]:
        for organization in ("", "3"):
            with connect(seeded_url) as conn:
                conn.execute(
                    "SELECT set_config('auditevt.organization_id', %s, true)", [organization]
                )
                with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
                    conn.execute(statement)
    _assert_untouched(seeded_url)


def test_rls_owner_cannot_change_audit_rows(seeded_url: str) -> None:
    owner = f"auditevt_owner_{uuid.uuid4().hex[:8]}"
    with connect(seeded_url, role=None) as conn:
        conn.execute(f"CREATE ROLE {owner} NOLOGIN")
        conn.execute(f"ALTER TABLE audit_log OWNER TO {owner}")
        conn.commit()
    try:
        # The superuser (who bypasses RLS), and an ordinary owning role, scoped or not.
        for statement in CHANGES:
            for role, organization in ((None, ""), (owner, ""), (owner, "3")):
                with connect(seeded_url, role=role) as conn:
                    conn.execute(
                        "SELECT set_config('auditevt.organization_id', %s, true)", [organization]
                    )
                    with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                        conn.execute(statement)
    finally:
        with connect(seeded_url, role=None) as conn:
            conn.execute(f"REASSIGN OWNED BY {owner} TO postgres")
            conn.execute(f"DROP OWNED BY {owner}")
            conn.execute(f"DROP ROLE {owner}")
            conn.commit()
    _assert_untouched(seeded_url)


def test_rls_app_role_cannot_lift_the_protections(pg_url: str) -> None:
    migrate_sync(pg_url)
    for statement in [
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only_statement",
        "ALTER TABLE audit_log NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE audit_log DISABLE ROW LEVEL SECURITY",
        "DROP POLICY audit_log_select_own_organization ON audit_log",
        "DROP TABLE audit_log",
    ]:
        with connect(pg_url) as conn, pytest.raises(errors.InsufficientPrivilege, match="owner"):
            conn.execute(statement)


def test_rls_scoped_transaction_may_insert_only_its_own_organization(pg_url: str) -> None:
    migrate_sync(pg_url)
    insert = (
        "INSERT INTO audit_log (event_id, action, entity_type, entity_id, user_id,"
        " organization_id, ip_address, user_agent, request_path, status_code, timestamp,"
        " event_json) VALUES (gen_random_uuid(), 'CREATE', 't', 1, 1, %s, '', '', '/', 200,"
        " now(), '{}')"
    )
    with connect(pg_url) as conn:
        conn.execute("SELECT set_config('auditevt.organization_id', '1', true)")
        conn.execute(insert, [1])
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(insert, [2])
    with connect(pg_url) as conn:  # unscoped, as the middleware writes: any organization
        conn.execute(insert, [2])
        conn.execute(insert, [3])
        conn.commit()
    with connect(pg_url, role=None) as conn:
        rows = conn.execute("SELECT organization_id FROM audit_log ORDER BY 1").fetchall()
        assert rows == [(2,), (3,)]


def _assert_untouched(pg_url: str) -> None:
    with connect(pg_url, role=None) as conn:
        count = conn.execute("SELECT count(*), min(user_id) FROM audit_log").fetchone()
    assert count == (len(ORGANIZATIONS) * PER_ORGANIZATION, 1000)
