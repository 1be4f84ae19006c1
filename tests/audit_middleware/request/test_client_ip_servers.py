"""The client IP under real servers: a spoofed X-Forwarded-For is never what gets recorded.

uvicorn, by default (``--proxy-headers``, ``forwarded_allow_ips`` = loopback), replaces the ASGI
peer with an X-Forwarded-For entry before the middleware sees it; a loopback client can then
choose the address audited. These tests run uvicorn as a separate process, once with its
defaults and once with the documented setting (``--no-proxy-headers``), plus the library's own
``serve_asgi`` helper, and read back what was stored.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apps.audited_app import create_app

from audit_middleware import migrate_sync
from conftest import free_port
from telemetry_client.testing import serve_asgi

TESTS_DIR = Path(__file__).parent
SPOOFED = "6.6.6.6"


@contextlib.contextmanager
def uvicorn_process(database: str, trusted: str, *options: str) -> Iterator[str]:
    """``uvicorn apps.audited_app:create_app`` in its own process; yields its base URL."""
    port = free_port()
    env = {**os.environ, "AUDIT_TEST_DATABASE_URL": database, "AUDIT_TEST_TRUSTED_PROXIES": trusted}
    env.pop("FORWARDED_ALLOW_IPS", None)  # uvicorn's own default, as shipped
    command = [
        sys.executable, "-m", "uvicorn", "apps.audited_app:create_app", "--factory",
        "--app-dir", str(TESTS_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", *options,
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not answer within 60 s")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.sqlite3'}"
    migrate_sync(url)
    return url


def _ips(database: str) -> dict[int, str]:
    path = database.split("///", 1)[1]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT entity_id, ip_address FROM audit_log"))


# The X-Forwarded-For values a local client sends, numbered by entity id.
FORGED = {
    1: SPOOFED,
    2: f"{SPOOFED}:4444",
    3: "[2001:db8::66]:443",
    4: f"{SPOOFED}, 198.51.100.7",
    5: f"{SPOOFED}, 127.0.0.1",
}


def _send_forged(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        for entity_id, forwarded_for in FORGED.items():
            response = http.post(
                "/patients",
                json={"id": entity_id},
                headers={"x-test-org": "1", "x-test-user": "1", "x-forwarded-for": forwarded_for},
            )
            assert response.status_code == 201
        assert (
            http.post("/patients", json={"id": 99}, headers={"x-test-org": "1"}).status_code == 201
        )


@pytest.mark.parametrize("trusted", ["", "127.0.0.1/32"], ids=["TrustedProxies()", "loopback"])
def test_client_ip_uvicorn_defaults_never_record_a_spoofed_address(
    database: str, trusted: str
) -> None:
    with uvicorn_process(database, trusted) as base:
        _send_forged(base)
    ips = _ips(database)
    assert ips[99] == "127.0.0.1"  # no header: the real peer
    for entity_id in FORGED:
        # uvicorn dropped the real peer; the middleware noticed and records no address rather
        # than one the client chose.
        assert ips[entity_id] == "", (FORGED[entity_id], ips[entity_id])


def test_client_ip_uvicorn_documented_settings_default_policy_records_the_peer(
    database: str,
) -> None:
    with uvicorn_process(database, "", "--no-proxy-headers") as base:
        _send_forged(base)
    assert _ips(database) == {entity_id: "127.0.0.1" for entity_id in [*FORGED, 99]}


def test_client_ip_uvicorn_documented_settings_behind_a_proxy(database: str) -> None:
    # A proxy on loopback (trusted) forwards; only the hop it appended is believed.
    with uvicorn_process(database, "127.0.0.1/32", "--no-proxy-headers") as base:
        _send_forged(base)
    assert _ips(database) == {
        1: SPOOFED,  # the trusted proxy itself says so: the rule's answer, not a spoof
        2: SPOOFED,
        3: "2001:db8::66",
        4: "198.51.100.7",  # never the leftmost entry
        5: SPOOFED,  # 127.0.0.1 is a trusted hop, skipped
        99: "127.0.0.1",
    }


def test_client_ip_serve_asgi_helper_gives_the_middleware_the_real_peer(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_TEST_DATABASE_URL", database)
    monkeypatch.setenv("AUDIT_TEST_TRUSTED_PROXIES", "")  # TrustedProxies(): the peer is the client
    with serve_asgi(create_app(), lifespan="on") as base:
        _send_forged(base)
    assert _ips(database) == {entity_id: "127.0.0.1" for entity_id in [*FORGED, 99]}


@pytest.mark.anyio
async def test_client_ip_rewritten_peer_is_recorded_unknown_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What a rewriting server hands over (peer from X-Forwarded-For, port 0), in process.
    from apps.audited_app import build_starlette
    from test_middleware import ListSink

    sink = ListSink()
    app = build_starlette(sink)
    transport = httpx.ASGITransport(app=app, client=(SPOOFED, 0))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with caplog.at_level("WARNING", logger="audit_middleware"):
            for entity_id in (1, 2, 3):
                response = await http.post(
                    "/patients",
                    json={"id": entity_id},
                    headers={"x-test-org": "1", "x-forwarded-for": SPOOFED},
                )
                assert response.status_code == 201
    assert [event.ip_address for event in sink.events] == ["", "", ""]
    warnings = [r for r in caplog.records if "replaced the client address" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not once a request
    assert "proxy_headers=False" in warnings[0].getMessage()
