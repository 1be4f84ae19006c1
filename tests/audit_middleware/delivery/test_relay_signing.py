"""The relay signs what it sends, and a signature refused is a configuration problem: a relay
with the wrong key leaves every event in the outbox (none dead-lettered) and says why in its
log, then delivers everything once it has the right key. Real HTTP to a stand-in that requires
signatures, on loopback; the outbox on SQLite.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit_middleware import (
    AuditStore,
    OutboxBackoff,
    OutboxRelay,
    RelayConfig,
    migrate,
    migrate_sync,
    relay_command,
)
from audit_middleware.storage._tables import AUDIT_OUTBOX
from auditevt import SigningKey
from auditevt._cli import main
from conftest import eventually, write_events
from telemetry_client import ENV_SIGNING_KEY, AsyncTelemetryClient, RetryPolicy
from telemetry_client.testing import TelemetryStandIn

KEY = SigningKey.generate()
QUICK = RelayConfig(
    sweep_interval=0.05, backoff=OutboxBackoff(base=0.01, cap=0.05), log_interval=0.0,
    metrics=False,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("no_env_key")


async def outbox(store: AuditStore) -> tuple[int, int]:
    """(rows, dead-lettered rows) in the outbox."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(sa.func.count()).select_from(AUDIT_OUTBOX))).scalar()
        dead = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(AUDIT_OUTBOX)
                .where(AUDIT_OUTBOX.c.dead_lettered_at.is_not(None))
            )
        ).scalar()
    return int(rows or 0), int(dead or 0)


@pytest.mark.anyio
async def test_relay_with_a_wrong_key_keeps_every_event_then_delivers_with_the_right_one(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(sqlite_url)
    standin = TelemetryStandIn(signing_key=KEY)
    caplog.set_level(logging.WARNING)
    async with AuditStore.from_url(sqlite_url) as store:
        event_ids = set(await write_events(store, 12))
        with standin.serve() as url:
            retry = RetryPolicy(max_attempts=2, initial_wait=0.001, max_wait=0.002)
            async with AsyncTelemetryClient(
                url, retry=retry, signing_key=SigningKey.generate()
            ) as wrong:
                relay = OutboxRelay(store, wrong, config=QUICK)
                await relay.start()
                await eventually(lambda: sum(standin.signature_refusals().values()) >= 3, within=30)
                await relay.stop(timeout=5)
                refused = await relay.stats()
            assert await outbox(store) == (12, 0)  # every event kept, none dead-lettered
            assert (refused.delivered, refused.dead_lettered) == (0, 0)
            assert standin.event_ids() == frozenset()
            assert set(standin.signature_refusals()) == {"bad_signature"}

            async with AsyncTelemetryClient(url, retry=retry, signing_key=KEY) as right:
                relay = OutboxRelay(store, right, config=QUICK)
                delivered = await asyncio.wait_for(relay.run_until_empty(), timeout=30)
        assert await outbox(store) == (0, 0)
    assert delivered.delivered == 12
    assert standin.event_ids() == event_ids
    logged = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert logged, "the refusal was not logged"
    assert "401" in logged[0] and "webhook signature is not valid (bad_signature)" in logged[0]
    assert KEY.secret not in caplog.text


def test_relay_command_signs_with_the_key_file(tmp_path: Path, sqlite_url: str) -> None:
    migrate_sync(sqlite_url)

    async def write() -> set[object]:
        async with AuditStore.from_url(sqlite_url) as store:
            return set(await write_events(store, 5))

    written = asyncio.run(write())
    key_file = tmp_path / "relay.key"
    key_file.write_text(f"{KEY.secret}\n")
    standin = TelemetryStandIn(signing_key=KEY)
    out, err = io.StringIO(), io.StringIO()
    with standin.serve() as url:
        status = relay_command(
            sqlite_url,
            url,
            True,
            config=QUICK,
            signing_key=KEY,
            stdout=out,
            stderr=err,
            handle_signals=False,
        )
        # The command line reads the same key from the file (nothing left to send: exit 0).
        cli = main(
            ["relay", "--database-url", sqlite_url, "--telemetry-url", url, "--until-empty",
             "--signing-key-file", str(key_file)]
        )  # fmt: skip
    assert status == 0, err.getvalue()
    assert "delivered 5 event(s); 0 pending, 0 dead-lettered" in out.getvalue()
    assert standin.event_ids() == written
    assert standin.signature_refusals() == {}
    assert cli == 0


def test_relay_command_refuses_a_bad_key_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'none.sqlite3'}"
    err = io.StringIO()
    status = relay_command(url, None, True, signing_key="hunter2" * 4, stderr=err)
    assert status == 2
    assert err.getvalue().startswith("auditevt relay: signing key: a signing key must start")
    assert "hunter2" not in err.getvalue() and err.getvalue().count("\n") == 1

    monkeypatch.setenv(ENV_SIGNING_KEY, "whsec_c2hvcnQ=")
    err = io.StringIO()
    assert relay_command(url, None, True, stderr=err) == 2
    assert "$TELEMETRY_SIGNING_KEY: a signing key of 5 bytes" in err.getvalue()

    bad_file = tmp_path / "bad.key"
    bad_file.write_text("not a key\n")
    assert main(["relay", "--database-url", url, "--signing-key-file", str(bad_file)]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith("auditevt: error: relay: --signing-key-file ")
    assert printed.count("\n") == 1
