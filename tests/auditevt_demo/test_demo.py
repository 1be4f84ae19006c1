from __future__ import annotations

import io
import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest

from audit_middleware.delivery._command import relay_command
from auditevt_demo._demo import DEFAULT_DATABASE_FILE, demo_command
from telemetry_client.testing import FaultInjection, TelemetryStandIn


def run_demo(**kwargs: object) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    status = demo_command(out=out, err=err, **kwargs)  # type: ignore[arg-type]
    return status, out.getvalue().splitlines(), err.getvalue()


def sqlite_event_ids(path: Path, table: str) -> set[uuid.UUID]:
    with sqlite3.connect(path) as conn:
        return {uuid.UUID(row[0]) for row in conn.execute(f"SELECT event_id FROM {table}")}


def test_demo_on_sqlite_in_the_current_directory_ends_with_the_exact_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    status, lines, err = run_demo(requests=30, seed=1)
    again, lines_again, _ = run_demo(requests=12, seed=2)  # the file is recreated

    assert status == 0, err
    assert lines[-1] == "audited=30 forwarded=30 pending=0"
    assert "Traceback" not in err
    assert any("tenant isolation" in line and "all of org" in line for line in lines)
    assert any("recorded 0 times" in line for line in lines)
    assert again == 0
    assert lines_again[-1] == "audited=12 forwarded=12 pending=0"
    database = tmp_path / DEFAULT_DATABASE_FILE
    assert len(sqlite_event_ids(database, "audit_log")) == 12
    assert sqlite_event_ids(database, "audit_outbox") == set()


def test_demo_no_forward_then_relay_until_empty_delivers_everything(
    sqlite_url: str, tmp_path: Path
) -> None:
    status, lines, err = run_demo(requests=25, database_url=sqlite_url, forward=False)

    assert status == 0, err
    assert lines[-1] == "audited=25 forwarded=0 pending=25"
    written = sqlite_event_ids(tmp_path / "audit.sqlite3", "audit_log")
    assert sqlite_event_ids(tmp_path / "audit.sqlite3", "audit_outbox") == written

    standin = TelemetryStandIn()
    with standin.serve() as url:
        relayed = relay_command(
            sqlite_url,
            url,
            until_empty=True,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
            handle_signals=False,
        )

    assert relayed == 0
    assert standin.event_ids() == written
    assert sqlite_event_ids(tmp_path / "audit.sqlite3", "audit_outbox") == set()


def test_demo_on_postgresql_writes_its_audit_log(pg_url: str) -> None:
    status, lines, err = run_demo(requests=30, database_url=pg_url)

    assert status == 0, err
    assert lines[-1] == "audited=30 forwarded=30 pending=0"
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:  # the superuser bypasses row-level security
        rows = conn.execute("SELECT organization_id FROM audit_log").fetchall()
        assert len(rows) == 30
        assert {0, 1, 2, 3, 4} >= {org for (org,) in rows} > {0}
        assert conn.execute("SELECT count(*) FROM audit_outbox").fetchone() == (0,)


def test_demo_delivers_every_event_to_a_telemetry_failing_a_third_of_requests(
    sqlite_url: str, tmp_path: Path
) -> None:
    faults = FaultInjection(failure_rate=1 / 3, slow_latency=0.2, retry_after=0, seed=5)
    standin = TelemetryStandIn(faults)

    with standin.serve() as url:
        status, lines, err = run_demo(requests=40, database_url=sqlite_url, telemetry_url=url)

    assert status == 0, err
    assert lines[-1] == "audited=40 forwarded=40 pending=0"
    written = sqlite_event_ids(tmp_path / "audit.sqlite3", "audit_log")
    assert written <= standin.event_ids()
    assert sum(standin.fault_counts().values()) > 0  # it did fail, and nothing was lost


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"database_url": "mysql://db/audit"}, "unsupported database URL scheme 'mysql'"),
        ({"database_url": "not a url"}, "not a database URL"),
        ({"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/x"}, "Connection refused"),
        ({"telemetry_url": "http://telemetry.example.com"}, "HTTPS"),
        ({"telemetry_url": "http://127.0.0.1:1"}, "did not answer /health"),
    ],
)
def test_demo_user_errors_are_one_line_without_traceback(
    arguments: dict[str, str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    status, lines, err = run_demo(requests=5, **arguments)

    assert status == 1
    assert lines == []
    assert err.startswith("auditevt demo: error: ")
    assert expected in err
    assert err.count("\n") == 1


def test_demo_refuses_a_bad_request_count() -> None:
    status, lines, err = run_demo(requests=0)

    assert (status, lines) == (2, [])
    assert err == "auditevt demo: error: requests=0 must be from 1 to 100000\n"


def test_demo_serve_keeps_the_review_page_up_until_ctrl_c(tmp_path: Path) -> None:
    import os
    import queue
    import signal
    import subprocess
    import sys
    import threading
    import time

    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "auditevt", "demo", "--requests", "24", "--serve"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None and process.stderr is not None
    received: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [received.put(line) for line in process.stdout])
    reader.start()
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while not (lines and lines[-1].startswith("serving ")):
            remaining = deadline - time.monotonic()
            assert remaining > 0 and process.poll() is None, lines
            try:
                lines.append(received.get(timeout=min(remaining, 5)).rstrip("\n"))
            except queue.Empty:
                continue
        # The mounted review app's URL, printed during the run and while serving.
        assert any(line.startswith("  review:    http://127.0.0.1:") for line in lines)
        assert "audited=24 forwarded=24 pending=0" in lines
        sign_in = next(line for line in lines if "review as org 1's admin" in line).split()[-1]
        with httpx.Client(follow_redirects=True, timeout=30) as http:
            page = http.get(sign_in)
            assert page.status_code == 200
            assert "organization 1 · admin 101" in page.text
            other = http.get(sign_in.replace("organization=1", "organization=2"))
            assert "organization 2 · admin 201" in other.text
            assert '<td class="path">/' in other.text  # the demo's rows are in the table
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=30)
    err = process.stderr.read()
    while not received.empty():
        lines.append(received.get().rstrip("\n"))
    assert process.returncode == 0, err
    assert lines[-1] == "auditevt demo: stopped serving"
    assert "Traceback" not in err
