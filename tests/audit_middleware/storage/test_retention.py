"""Retention removes whole old months, and only those nothing keeps: undelivered events and
legal holds keep a partition; every removal is logged and may be exported first."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from test_partitions import uuid7_at

from audit_middleware import (
    AuditStore,
    ConfigurationError,
    Sealer,
    SigningKey,
    StoreError,
    migrate,
    verify_database,
)
from audit_middleware.storage._partitions import Partitions
from audit_middleware.storage._retention import (
    RetentionWindow,
    apply_retention,
    plan_retention,
)
from auditevt._cli import main
from conftest import database_name, libpq, make_event


def months_ago(count: int) -> datetime:
    """The 10th of the month ``count`` months before this one, at noon UTC."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - count
    return datetime(index // 12, index % 12 + 1, 10, 12, tzinfo=UTC)


async def populate(url: str) -> dict[str, list[uuid.UUID]]:
    """Four months back: month -4 delivered, -3 undelivered, -2 delivered with organization 9
    on legal hold, -1 delivered (inside a 1-month window's edge), plus this month."""
    await migrate(url)
    written: dict[str, list[uuid.UUID]] = {}
    async with AuditStore.from_url(url) as store:
        await Partitions(store.engine).ensure(1, since=months_ago(5))
        for back in (4, 3, 2, 1, 0):
            name = months_ago(back).strftime("audit_log_%Y_%m")
            ids = []
            for n in range(25):
                organization = 9 if back == 2 and n == 3 else 1 + n % 3
                moment = months_ago(back) + timedelta(minutes=n)
                ids.append(
                    await store.write(
                        make_event(n, organization_id=organization), event_id=uuid7_at(moment)
                    )
                )
            written[name] = ids
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        # Delivered means gone from the outbox; month -3 stays undelivered.
        undelivered = months_ago(3).strftime("audit_log_%Y_%m")
        for name, ids in written.items():
            if name != undelivered:
                conn.execute("DELETE FROM audit_outbox WHERE event_id = ANY(%s)", (ids,))
        conn.execute(
            "INSERT INTO audit_legal_hold (organization_id, reason) VALUES (9, 'litigation')"
        )
    await seal_everything(url)
    return written


SEAL_KEY = SigningKey.generate()


async def seal_everything(url: str) -> None:
    """Seal every committed row (retention removes only sealed months)."""
    async with AuditStore.from_url(url) as store:
        await Sealer(store.engine, SEAL_KEY).run_once()


def partitions(url: str) -> set[str]:
    with psycopg.connect(libpq(url)) as conn:
        return {
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'audit_log'::regclass"
            )
        }


def event_jsons(url: str) -> dict[uuid.UUID, str]:
    with psycopg.connect(libpq(url)) as conn:
        return dict(conn.execute("SELECT event_id, event_json FROM audit_log").fetchall())


@pytest.mark.anyio
async def test_retention_removes_only_old_delivered_unheld_months(
    pg_url: str, tmp_path: Path
) -> None:
    written = await populate(pg_url)
    before = event_jsons(pg_url)
    removable, undelivered, held = (months_ago(b).strftime("audit_log_%Y_%m") for b in (4, 3, 2))
    from audit_middleware.storage._store import create_engine

    engine = create_engine(pg_url)
    try:
        keep = RetentionWindow.parse("1m")
        plan = {d.partition: d for d in await plan_retention(engine, keep)}
        assert set(plan) >= {removable, undelivered, held}
        assert plan[removable].removable and plan[removable].rows == 25
        assert plan[undelivered].kept_because == ("25 event(s) not delivered to Telemetry yet",)
        assert plan[held].kept_because == ("legal hold on organization(s) 9",)
        assert event_jsons(pg_url) == before  # planning changes nothing

        done = {d.partition: d for d in await apply_retention(engine, keep, export_dir=tmp_path)}
    finally:
        await engine.dispose()
    assert done[removable].removable and done[removable].exported_to is not None
    assert removable not in partitions(pg_url)
    assert {undelivered, held} <= partitions(pg_url)
    after = event_jsons(pg_url)
    gone = set(written[removable])
    assert set(before) - set(after) == gone  # exactly that month, every other row untouched
    assert all(after[event_id] == before[event_id] for event_id in after)
    # The export holds the removed rows exactly as stored.
    lines = (tmp_path / f"{removable}.jsonl").read_text(encoding="utf-8").splitlines()
    exported = [json.loads(line) for line in lines]
    assert {uuid.UUID(item["event_id"]) for item in exported} == gone
    assert all(
        json.dumps(item["event"], separators=(",", ":"), ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        == before[uuid.UUID(item["event_id"])]
        for item in exported
    )
    with psycopg.connect(libpq(pg_url)) as conn:
        logged = conn.execute(
            "SELECT partition_name, row_count, exported_to FROM audit_retention_log ORDER BY 1"
        ).fetchall()
    empty = months_ago(5).strftime("audit_log_%Y_%m")  # made ahead of the writes, never used
    assert logged == [
        (empty, 0, str(tmp_path / f"{empty}.jsonl")),
        (removable, 25, str(tmp_path / f"{removable}.jsonl")),
    ]


def test_retention_lifting_the_hold_and_delivering_frees_the_months(pg_url: str) -> None:
    asyncio.run(populate(pg_url))
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute("DELETE FROM audit_legal_hold")
        conn.execute("DELETE FROM audit_outbox")
    assert main(["retention", "--database-url", pg_url, "--keep", "1m"]) == 0
    left = partitions(pg_url)
    assert not {months_ago(b).strftime("audit_log_%Y_%m") for b in (5, 4, 3, 2)} & left
    assert months_ago(0).strftime("audit_log_%Y_%m") in left


def test_retention_window_parsing() -> None:
    assert RetentionWindow.parse("6y") == RetentionWindow(months=72)
    assert RetentionWindow.parse("18m") == RetentionWindow(months=18)
    assert RetentionWindow.parse("400d") == RetentionWindow(days=400)
    assert str(RetentionWindow.parse("6y")) == "6y"
    now = datetime(2026, 3, 31, 8, tzinfo=UTC)
    assert RetentionWindow.parse("1m").cutoff(now) == datetime(2026, 2, 28, 8, tzinfo=UTC)
    for bad in ("0y", "6", "six years", "-1y", "6w"):
        with pytest.raises(ConfigurationError, match="keep="):
            RetentionWindow.parse(bad)


@pytest.mark.anyio
async def test_retention_needs_a_role_row_level_security_does_not_hold(pg_url: str) -> None:
    await populate(pg_url)
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        role = f"retention_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT CONNECT ON DATABASE \"{database_name(pg_url)}\" TO {role}")
        try:
            limited = pg_url.replace("postgres@", f"{role}@", 1)
            from audit_middleware.storage._store import create_engine

            engine = create_engine(limited)
            try:
                with pytest.raises(StoreError, match="BYPASSRLS"):
                    await plan_retention(engine, RetentionWindow(months=1))
            finally:
                await engine.dispose()
        finally:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retention", "--database-url", "sqlite:///x.db", "--keep", "6y"], "SQLite has no"),
        (["partitions", "--database-url", "sqlite:///x.db"], "SQLite has no partitions"),
        (["retention", "--database-url", "postgresql://h/db", "--keep", "soon"], "--keep"),
        (["retention", "--database-url", "postgresql://h/db"], "--keep"),
    ],
)
def test_retention_and_partitions_user_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in _err(capsys)


def test_retention_dry_run_and_partitions_commands(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(populate(pg_url))
    before = partitions(pg_url)
    assert main(["retention", "--database-url", pg_url, "--keep", "1m", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove {months_ago(4).strftime('audit_log_%Y_%m')}: 25 row(s)" in out
    assert "kept " + months_ago(2).strftime("audit_log_%Y_%m") + ": legal hold" in out
    assert partitions(pg_url) == before
    assert main(["partitions", "--database-url", pg_url, "--months-ahead", "6"]) == 0
    out = capsys.readouterr().out
    assert "partitions ready 6 month(s) ahead" in out
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/x"
    assert main(["partitions", "--database-url", unreachable]) == 1
    assert "could not" in _err(capsys)




@pytest.mark.anyio
async def test_retention_removal_verifies_as_retired_and_a_deletion_beside_it_does_not(
    pg_url: str,
) -> None:
    await populate(pg_url)
    keys = {SEAL_KEY.key_id: SEAL_KEY.public_key}
    async with AuditStore.from_url(pg_url) as store:
        assert (await verify_database(store.engine, keys)).ok
        await apply_retention(store.engine, RetentionWindow.parse("1m"))
        report = await verify_database(store.engine, keys)
        assert report.ok, [f.message for f in report.findings if f.problem]
        retired = [f for f in report.findings if f.kind == "retired_rows"]
        assert len(retired) == 1 and "25 sealed row(s) of" in retired[0].message
    # An attacker who also deletes a sealed row of a month that stays is still caught.
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE public.audit_log DISABLE TRIGGER USER")
        victim = conn.execute("SELECT min(id) FROM public.audit_log").fetchone()
        assert victim is not None
        conn.execute("DELETE FROM public.audit_log WHERE id = %s", victim)
        conn.execute("ALTER TABLE public.audit_log ENABLE TRIGGER USER")
    async with AuditStore.from_url(pg_url) as store:
        report = await verify_database(store.engine, keys)
    assert not report.ok
    assert [f.row_id for f in report.findings if f.kind == "deleted_row"] == [victim[0]]


@pytest.mark.anyio
async def test_retention_keeps_a_month_with_a_row_not_sealed_yet(pg_url: str) -> None:
    await populate(pg_url)
    removable = months_ago(4)
    async with AuditStore.from_url(pg_url) as store:
        # A late row of that month, written after the last seal.
        await store.write(make_event(99), event_id=uuid7_at(removable + timedelta(hours=1)))
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            conn.execute("DELETE FROM public.audit_outbox")  # delivered; only the seal is missing
        plan = {d.partition: d for d in await plan_retention(store.engine, RetentionWindow(1))}
    reasons = plan[removable.strftime("audit_log_%Y_%m")].kept_because
    assert len(reasons) == 1 and "not sealed" in reasons[0], reasons
