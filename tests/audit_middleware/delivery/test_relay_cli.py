"""relay_command (``auditevt relay``): exit statuses and one-line errors, in this process.

The signal behaviour (SIGTERM, SIGKILL) runs the command in a real subprocess and lives in
test_relay_integration.py.
"""

from __future__ import annotations

import asyncio
import io

import pytest

from audit_middleware import (
    AuditStore,
    OutboxBackoff,
    RelayConfig,
    migrate_sync,
    relay_command,
)
from conftest import make_event
from telemetry_client import RetryPolicy
from telemetry_client.testing import TelemetryStandIn

QUICK = RelayConfig(sweep_interval=0.05, backoff=OutboxBackoff(base=0.01, cap=0.02), metrics=False)


def run(*args: object, **kwargs: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = relay_command(
        *args,  # type: ignore[arg-type]
        stdout=out,
        stderr=err,
        handle_signals=False,
        **kwargs,  # type: ignore[arg-type]
    )
    return status, out.getvalue(), err.getvalue()


def seed(url: str, organization_ids: list[int]) -> None:
    """One event of each organization in the list, written to the database at ``url``."""

    async def write() -> None:
        async with AuditStore.from_url(url) as store:
            for number, organization_id in enumerate(organization_ids, start=1):
                await store.write(make_event(number, organization_id=organization_id))

    asyncio.run(write())


def test_relay_command_until_empty_delivers_and_reports_dead_letters(sqlite_url: str) -> None:
    migrate_sync(sqlite_url)
    seed(sqlite_url, [4, 4, -1, 4])  # the stand-in rejects a negative organization
    standin = TelemetryStandIn()
    with standin.serve() as telemetry_url:
        status, out, err = run(sqlite_url, telemetry_url, True, config=QUICK)

    assert status == 0, err
    assert len(standin.event_ids()) == 3
    assert "delivered 3 event(s); 0 pending, 1 dead-lettered" in out
    assert "warning: 1 dead-lettered event(s) remain in the outbox" in err
    assert "Traceback" not in err


def test_relay_command_until_empty_on_an_empty_outbox_exits_at_once(pg_url: str) -> None:
    migrate_sync(pg_url)
    status, out, err = run(pg_url, "http://127.0.0.1:9", True, config=QUICK)
    assert status == 0, err
    assert "delivered 0 event(s); 0 pending, 0 dead-lettered" in out
    assert "warning" not in err


def test_relay_command_rejects_a_bad_database_url_in_one_line() -> None:
    status, _, err = run("mysql://db/audit", "http://127.0.0.1:9", True)
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("auditevt relay: --database-url: unsupported database URL scheme")


def test_relay_command_reports_an_unreachable_database_in_one_line(closed_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port}/audit"
    status, _, err = run(url, "http://127.0.0.1:9", True)
    assert status == 1
    lines = [line for line in err.splitlines() if line.startswith("auditevt relay:")]
    assert len(lines) == 1 and "cannot use the outbox" in lines[0]
    assert "migrate" not in lines[0]  # an outage is not a missing schema
    assert "Traceback" not in err


def test_relay_command_says_to_migrate_when_the_tables_are_missing(sqlite_url: str) -> None:
    status, _, err = run(sqlite_url, "http://127.0.0.1:9", True)
    assert status == 1
    assert "run `auditevt migrate --database-url URL` first" in err


def test_relay_command_says_to_migrate_an_empty_postgresql_database(pg_url: str) -> None:
    status, _, err = run(pg_url, "http://127.0.0.1:9", True)
    assert status == 1
    (line,) = [line for line in err.splitlines() if line.startswith("auditevt relay:")]
    assert "UndefinedTable" in line and line.endswith(
        "(run `auditevt migrate --database-url URL` first)"
    )


def test_relay_command_needs_a_telemetry_url(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELEMETRY_INTERNAL_URL", raising=False)
    status, _, err = run(sqlite_url, None, True)
    assert status == 2
    assert err.startswith("auditevt relay: --telemetry-url:")
    assert "TELEMETRY_INTERNAL_URL" in err


def test_relay_command_reads_the_telemetry_url_from_the_environment(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_sync(sqlite_url)
    seed(sqlite_url, [9])
    standin = TelemetryStandIn()
    with standin.serve() as telemetry_url:
        monkeypatch.setenv("TELEMETRY_INTERNAL_URL", telemetry_url)
        status, _, err = run(sqlite_url, None, True, config=QUICK, retry=RetryPolicy.none())
    assert status == 0, err
    assert len(standin.event_ids()) == 1


def test_relay_command_checks_the_metrics_port() -> None:
    status, _, err = run("sqlite:///x.db", None, True, metrics_port=70000)
    assert status == 2
    assert "--metrics-port must be a port from 1 to 65535, got 70000" in err
