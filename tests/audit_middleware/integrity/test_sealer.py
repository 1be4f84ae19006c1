"""The sealer on PostgreSQL and SQLite: what a seal holds, late commits, concurrent writers."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from audit_middleware import (
    AuditStore,
    DirectorySink,
    IntegrityStats,
    Sealer,
    SigningKey,
    load_public_keys,
    merkle_root,
    migrate,
    new_event_id,
    row_hash,
    verify_database,
)
from audit_middleware.integrity._merkle import leaf_hash
from audit_middleware.integrity._sealer import create_engine
from audit_middleware.integrity._sink import load_published
from audit_middleware.storage._statements import FULL as _PG_WRITE
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_SEALS
from conftest import eventually, libpq, make_event

from .integrity_helpers import FAST

pytestmark = pytest.mark.anyio


async def sealed_ids(store: AuditStore, seq: int) -> list[int]:
    async with store.engine.connect() as conn:
        blob = (
            await conn.execute(select(AUDIT_SEALS.c.ids).where(AUDIT_SEALS.c.seq == seq))
        ).scalar_one()
    return [value for (value,) in struct.iter_unpack(">q", blob)]


def trusted(key: SigningKey) -> dict[str, Any]:
    return {key.key_id: key.public_key}


async def test_sealer_seals_rows_with_their_hashes_into_a_signed_chained_seal(
    pg_store: AuditStore, sealer_for: Callable[..., Sealer], key: SigningKey, published: Path
) -> None:
    events = [make_event() for _ in range(5)]
    event_ids = [await pg_store.write(event) for event in events]
    sealer = sealer_for(pg_store)
    first = await sealer.run_once()
    assert first is not None
    assert (first.seq, first.first_id, first.last_id, first.count) == (1, 1, 5, 5)
    assert first.prev == bytes(32) and first.key_id == key.key_id
    assert first.signature_problem(trusted(key)) is None
    # The root is RFC 6962 over (id, row_hash) in id order, the hash written by the store.
    async with pg_store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AUDIT_LOG.c.id, AUDIT_LOG.c.row_hash).order_by(AUDIT_LOG.c.id)
            )
        ).all()
    assert [bytes(h) for _, h in rows] == [
        row_hash(i, e.to_json()) for i, e in zip(event_ids, events, strict=True)
    ]
    assert first.root == merkle_root([leaf_hash(i, bytes(h)) for i, h in rows])
    assert await sealer.run_once() is None  # nothing new
    await pg_store.write(make_event())
    second = await sealer.run_once()
    assert second is not None
    assert (second.seq, second.first_id, second.last_id, second.prev) == (2, 6, 6, first.hash)
    assert sealer.stats.rows_sealed == 6 and sealer.stats.seals_written == 2
    assert sealer.stats.seal_lag() == 0.0
    copies = load_published(published)
    assert sorted(copies) == [1, 2] and copies[2] == second


async def test_sealer_late_commit_with_a_low_id_goes_into_the_next_seal(
    pg_store: AuditStore, pg_url: str, sealer_for: Callable[..., Sealer], key: SigningKey
) -> None:
    sealer = sealer_for(pg_store)
    await pg_store.write(make_event())  # id 1
    first = await sealer.run_once()
    assert first is not None and (first.first_id, first.last_id) == (1, 1)
    # A writer draws id 2 and keeps its transaction open...
    late = psycopg.connect(libpq(pg_url))
    late.execute(_PG_WRITE, pg_store._params(make_event(), new_event_id()))
    # ...while rows 3..6 commit and a seal runs: it must not seal past id 2.
    for _ in range(4):
        await pg_store.write(make_event())
    assert await sealer.run_once() is None
    assert await sealer.run_once() is None  # still open: still nothing safe
    late.commit()
    late.close()
    second = await sealer.run_once()
    assert second is not None and (second.first_id, second.last_id) == (2, 6)
    assert await sealed_ids(pg_store, 2) == [2, 3, 4, 5, 6]
    report = await verify_database(pg_store.engine, trusted(key))
    assert report.ok and report.unsealed_rows == 0, report.findings


async def test_sealer_a_fresh_sealer_waits_for_writers_it_has_not_seen_start(
    pg_store: AuditStore, pg_url: str, key: SigningKey
) -> None:
    # No earlier observation: an open writer's ids are unknown, so nothing above the last seal
    # is safe until it ends, whatever ids are visible.
    with psycopg.connect(libpq(pg_url)) as late:
        late.execute(_PG_WRITE, pg_store._params(make_event(), new_event_id()))  # id 1
        await pg_store.write(make_event())  # id 2, committed
        async with Sealer(pg_store.engine, key, config=FAST) as sealer:
            assert await sealer.run_once() is None
            late.commit()
            seal = await sealer.run_once()
    assert seal is not None and (seal.first_id, seal.last_id, seal.count) == (1, 2, 2)


async def test_sealer_clean_log_of_concurrent_writers_and_late_commits_verifies_clean(
    pg_store: AuditStore,
    pg_url: str,
    sealer_for: Callable[..., Sealer],
    key: SigningKey,
    published: Path,
) -> None:
    sealer = sealer_for(pg_store)
    stop = asyncio.Event()
    written: list[int] = []

    async def writer(organization_id: int) -> None:
        for _ in range(40):
            await pg_store.write(make_event(organization_id=organization_id))
            written.append(1)

    async def late_writer() -> None:
        # Three transactions that draw an id, then commit after later rows and seals.
        for _ in range(3):
            conn = await psycopg.AsyncConnection.connect(libpq(pg_url))
            await conn.execute(
                _PG_WRITE, pg_store._params(make_event(organization_id=9), new_event_id())
            )
            await asyncio.sleep(0.15)
            await conn.commit()
            await conn.close()
            written.append(1)

    async def seal_repeatedly() -> None:
        while not stop.is_set():
            await sealer.run_once()
            await asyncio.sleep(0.01)

    sealing = asyncio.create_task(seal_repeatedly())
    await asyncio.gather(*(writer(org) for org in (7, 8, 9, 10)), late_writer())
    stop.set()
    await sealing
    for _ in range(10):  # the rest, now that every writer is done
        if await sealer.run_once() is None:
            break
    report = await verify_database(pg_store.engine, trusted(key), published=str(published))
    assert report.problems == () and report.unsealed_rows == 0
    assert report.rows_checked == len(written) == 163
    assert sealer.stats.rows_sealed == 163


async def test_sealer_splits_a_backlog_by_max_rows(pg_store: AuditStore, key: SigningKey) -> None:
    from audit_middleware import SealerConfig

    for _ in range(7):
        await pg_store.write(make_event())
    sealer = Sealer(pg_store.engine, key, config=SealerConfig(max_rows=3, settle=0.2))
    seals = [await sealer.run_once() for _ in range(4)]
    assert [(s.first_id, s.last_id, s.count) for s in seals if s] == [
        (1, 3, 3), (4, 6, 3), (7, 7, 1),
    ]  # fmt: skip
    assert seals[3] is None


async def test_sealer_publishes_again_after_a_sink_failure(
    pg_store: AuditStore, key: SigningKey, tmp_path: Path
) -> None:
    from audit_middleware import IntegrityError

    class Flaky:
        def __init__(self) -> None:
            self.fail = True
            self.inner = DirectorySink(tmp_path / "out")

        def publish(self, seal: Any) -> None:
            if self.fail:
                raise OSError("bucket unreachable")
            self.inner.publish(seal)

    sink = Flaky()
    await pg_store.write(make_event())
    sealer = Sealer(pg_store.engine, key, sink=sink, config=FAST)
    with pytest.raises(IntegrityError, match="seal 1 committed but not published: bucket"):
        await sealer.run_once()
    await pg_store.write(make_event())
    with pytest.raises(IntegrityError, match="seal 1, 2 committed but not published: bucket"):
        await sealer.run_once()  # a refusing sink does not stop sealing
    assert sealer.stats.seal_failures == 2 and sealer.stats.seals_written == 2
    sink.fail = False
    assert await sealer.run_once() is None  # nothing new to seal, but both are published now
    assert sorted(load_published(tmp_path / "out")) == [1, 2]


async def test_sealer_refuses_to_chain_onto_a_damaged_seal(
    pg_store: AuditStore, key: SigningKey, superuser: Callable[..., Any]
) -> None:
    from audit_middleware import IntegrityError

    await pg_store.write(make_event())
    sealer = Sealer(pg_store.engine, key, config=FAST)
    await sealer.run_once()
    superuser("UPDATE audit_seals SET body = 'garbage'")
    await pg_store.write(make_event())
    with pytest.raises(IntegrityError, match=r"latest seal is damaged .* run auditevt verify"):
        await sealer.run_once()


async def test_sealer_and_verifier_on_sqlite(
    sqlite_url: str, key: SigningKey, tmp_path: Path
) -> None:
    await migrate(sqlite_url)
    async with AuditStore.from_url(sqlite_url) as store:
        for organization_id in (1, 2, 1):
            await store.write(make_event(organization_id=organization_id))
        sealer = Sealer(store.engine, key, sink=DirectorySink(tmp_path / "pub"))
        seal = await sealer.run_once()
        assert seal is not None and (seal.first_id, seal.last_id, seal.count) == (1, 3, 3)
        await store.write(make_event(organization_id=2))
        report = await verify_database(store.engine, trusted(key), published=str(tmp_path / "pub"))
        assert report.ok and report.unsealed_rows == 1 and report.rows_checked == 4
        scoped = await verify_database(store.engine, trusted(key), organization=2)
        assert scoped.ok and scoped.rows_checked == 2  # the content of organization 2's rows
        path = sqlite_url.split("///", 1)[1]
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER audit_log_append_only_update")
        conn.execute("UPDATE audit_log SET user_id = 1234 WHERE id = 2")
    async with AuditStore.from_url(sqlite_url) as store:
        report = await verify_database(store.engine, trusted(key))
    assert not report.ok
    assert [(f.kind, f.row_id) for f in report.problems] == [("altered_row", 2)]
    assert "user_id (column 1234" in report.problems[0].message


async def test_sealer_metrics_are_read_at_scrape_time(
    pg_store: AuditStore, key: SigningKey
) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    stats = IntegrityStats()
    sealer = Sealer(pg_store.engine, key, config=FAST, stats=stats, registry=registry)
    await pg_store.write(make_event())
    await sealer.run_once()
    await pg_store.write(make_event())
    stats.oldest_unsealed_at = 1.0  # as if the unsealed row were very old
    assert registry.get_sample_value("auditevt_seal_rows_sealed_total") == 1
    assert registry.get_sample_value("auditevt_seals_written_total") == 1
    assert registry.get_sample_value("auditevt_seal_lag_seconds") > 1e9
    del sealer, stats  # held weakly: a sealer that is gone is no longer reported
    import gc

    gc.collect()
    assert registry.get_sample_value("auditevt_seals_written_total") == 0
    assert load_public_keys  # exported beside the sealer


async def test_sealer_runs_as_a_member_of_the_sealer_role_under_forced_rls(
    pg_store: AuditStore, pg_url: str, key: SigningKey
) -> None:
    from audit_middleware.integrity._role import sealer_role

    role = f"auditevt_sealer_test_{uuid.uuid4().hex[:8]}"
    group = sealer_role(pg_url.rsplit("/", 1)[1])  # migration 0003 made it for this database
    with psycopg.connect(libpq(pg_url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE {role} LOGIN IN ROLE "{group}"')
    try:
        for organization_id in (1, 2, 3):
            await pg_store.write(make_event(organization_id=organization_id))
        url = pg_url.replace("postgres@", f"{role}@", 1)
        async with Sealer.from_url(url, key, config=FAST) as sealer:
            seal = await sealer.run_once()  # every organization's rows, not none of them
        assert seal is not None and seal.count == 3
        engine = create_engine(url)
        try:
            report = await verify_database(engine, trusted(key))
        finally:
            await engine.dispose()
        assert report.ok and report.rows_checked == 3
    finally:
        with psycopg.connect(libpq(pg_url), autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


async def test_sealer_run_forever_seals_each_interval_and_survives_a_failure(
    pg_store: AuditStore, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    from audit_middleware import SealerConfig

    passes: list[float] = []

    async def sleep(seconds: float) -> None:  # injected: no real waiting between passes
        passes.append(seconds)
        await asyncio.sleep(0)

    class Broken:
        def publish(self, seal: Any) -> None:
            raise OSError("disk full")

    config = SealerConfig(interval=30.0, settle=0.2, poll_interval=0.005)
    sealer = Sealer(pg_store.engine, key, sink=Broken(), config=config, sleep=sleep)
    await pg_store.write(make_event())
    task = asyncio.create_task(sealer.run_forever())
    await eventually(lambda: passes.count(30.0) >= 3)  # a few passes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sealer.stats.seals_written == 1 and sealer.stats.seal_failures >= 2
    assert "sealing failed: seal 1 committed but not published: disk full" in caplog.text


async def test_sealer_verify_counts_runs_and_failures(
    pg_store: AuditStore, key: SigningKey, pg_url: str
) -> None:
    await pg_store.write(make_event())
    await Sealer(pg_store.engine, key, config=FAST).run_once()
    stats = IntegrityStats()
    assert (await verify_database(pg_store.engine, trusted(key), stats=stats)).ok
    with psycopg.connect(libpq(pg_url)) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        conn.execute("UPDATE audit_log SET status_code = 201")
    assert not (await verify_database(pg_store.engine, trusted(key), stats=stats)).ok
    assert (stats.verify_runs, stats.verify_failures) == (2, 1)
