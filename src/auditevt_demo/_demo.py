"""``auditevt demo``: the whole system in one command.

It migrates a database (a fresh SQLite file in the current directory by default), serves the
sample Core API of ``_demo_app`` with uvicorn on loopback (``AuditMiddleware``, the in-app
relay, an admin endpoint on ``AuditReader``), starts a Telemetry stand-in on loopback unless
``telemetry_url`` names one (that stand-in requires every request signed, with ``signing_key`` or
a key made up for the run), sends N mutating requests across four organizations, waits until
every event of the run has left the outbox, reads the audit log back, and prints a summary. The
audit review app is mounted at ``/admin/review`` and its URL printed; ``--serve`` keeps serving
it after the report until Ctrl-C. The last line of the report is always
``audited=N forwarded=N pending=N``:

- ``audited``: rows of this run in ``audit_log`` (read back through ``AuditReader``; a run is
  told apart by its User-Agent, so an existing database may hold other rows);
- ``pending``: rows of this run still in the outbox (dead letters included);
- ``forwarded``: rows of this run Telemetry answered ``accepted`` or ``duplicate`` for, i.e.
  gone from the outbox (0 with ``forward=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import AuditError
from audit_middleware.storage._migrate import migrate
from audit_middleware.storage._reader import AuditReader, AuditRecord
from audit_middleware.storage._store import AuditStore
from audit_middleware.storage._tables import AUDIT_OUTBOX, qualified
from auditevt import SigningKey, __version__, signing_keys
from auditevt_demo._app import DemoCoreApi, demo_token, review_sign_in_url
from auditevt_demo._load import ORGANIZATIONS, send_requests
from auditevt_demo._report import DemoReport
from telemetry_client import AsyncTelemetryClient, ConfigurationError, RetryPolicy, TelemetryError
from telemetry_client.testing import TelemetryStandIn, serve_asgi

__all__ = ["DEFAULT_DATABASE_FILE", "DemoError", "demo_command"]

#: The SQLite file the demo writes when no database URL is given (recreated on every run).
DEFAULT_DATABASE_FILE = "auditevt-demo.sqlite3"

_MAX_REQUESTS = 100_000
_IN_CHUNK = 500  # event ids per IN (...) query


class DemoError(Exception):
    """A problem the user can fix (bad URL, unreachable service): one line, no traceback."""


def demo_command(
    requests: int = 200,
    database_url: str | None = None,
    telemetry_url: str | None = None,
    forward: bool = True,
    out: TextIO | None = None,
    *,
    err: TextIO | None = None,
    seed: int | None = None,
    delivery_timeout: float = 300.0,
    signing_key: SigningKey | str | Sequence[SigningKey | str] | None = None,
    serve: bool = False,
) -> int:
    """Run ``auditevt demo``; returns the exit status (0 when everything was delivered).

    1: a service or database problem, or events not delivered within ``delivery_timeout``
    seconds; 2: bad arguments. Errors are one line on ``err``. ``signing_key`` signs every
    request to Telemetry (default ``TELEMETRY_SIGNING_KEY``; the demo's own stand-in requires
    it, and makes one up when there is none). With ``serve`` the Core API
    (and its audit review page) is served again after the report, on the same port when it is
    free, until Ctrl-C; the status is then the report's.
    """
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if err is None else err
    if isinstance(requests, bool) or not isinstance(requests, int):
        print(f"auditevt demo: error: requests={requests!r} must be an integer", file=stderr)
        return 2
    if not 1 <= requests <= _MAX_REQUESTS:
        print(
            f"auditevt demo: error: requests={requests} must be from 1 to {_MAX_REQUESTS}",
            file=stderr,
        )
        return 2
    try:
        keys = None if signing_key is None else signing_keys(signing_key)
    except (TypeError, ValueError) as exc:  # says what is wrong, never the key itself
        print(f"auditevt demo: error: signing key: {exc}", file=stderr)
        return 2
    demo = _Demo(
        requests, database_url, telemetry_url, forward, stdout, seed, delivery_timeout, keys, serve
    )
    try:
        return asyncio.run(demo.run())
    except DemoError as exc:
        print(f"auditevt demo: error: {exc}", file=stderr)
        return 1
    except KeyboardInterrupt:
        print("auditevt demo: interrupted", file=stderr)
        return 130


async def _until_interrupted() -> None:
    """Wait for Ctrl-C (SIGINT) or SIGTERM; either ends ``--serve`` normally."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        # Also where SIGINT is ignored (a background job of a non-interactive shell).
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclasses.dataclass(eq=False)
class _Demo:
    requests: int
    database_url: str | None
    telemetry_url: str | None
    forward: bool
    out: TextIO
    seed: int | None
    delivery_timeout: float
    signing_keys: tuple[SigningKey, ...] | None
    serve: bool = False
    run_id: str = dataclasses.field(init=False, default_factory=lambda: uuid.uuid4().hex[:12])
    user_agent: str = dataclasses.field(init=False)
    drained_after: float = dataclasses.field(init=False, default=0.0)
    #: The report's exit status, once it is printed.
    status: int | None = dataclasses.field(init=False, default=None)

    def __post_init__(self) -> None:
        self.user_agent = f"auditevt-demo/{__version__} (run {self.run_id})"

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    # --- set-up -------------------------------------------------------------------------------

    def _database(self) -> tuple[str, str]:
        """The URL to use, and how to describe it."""
        if self.database_url is not None:
            return self.database_url, self._safe(self.database_url)
        path = Path.cwd() / DEFAULT_DATABASE_FILE
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
        return f"sqlite+aiosqlite:///{path}", f"{path} (SQLite, recreated on every run)"

    async def _prepare_database(self, url: str) -> None:
        try:
            await migrate(url)
            async with AuditStore.from_url(url) as store:
                await store.check()  # warns (stderr) when the role bypasses row-level security
        except (AuditError, ValueError, sa.exc.ArgumentError) as exc:
            raise DemoError(f"database {self._safe(url)}: {_one_line(exc)}") from None

    @staticmethod
    def _safe(url: str) -> str:
        try:
            return sa.make_url(url).render_as_string(hide_password=True)
        except sa.exc.ArgumentError:
            return repr(url)

    async def _check_telemetry(self, url: str) -> None:
        try:
            client = AsyncTelemetryClient(
                url, timeout=5.0, retry=RetryPolicy(max_attempts=3, deadline=10.0)
            )
        except ConfigurationError as exc:
            raise DemoError(f"--telemetry-url {url!r}: {_one_line(exc)}") from None
        async with client:
            try:
                await client.health()
            except TelemetryError as exc:
                message = f"Telemetry at {url} did not answer /health: {_one_line(exc)}"
                raise DemoError(message) from None

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> int:
        url, described = self._database()
        await self._prepare_database(url)
        with contextlib.ExitStack() as stack:
            standin = None
            telemetry_url = self.telemetry_url
            keys = self.signing_keys
            if self.forward and telemetry_url is None:
                keys = keys or (SigningKey.generate(),)
                standin = TelemetryStandIn(signing_key=keys)
                telemetry_url = stack.enter_context(standin.serve())
                fingerprints = ", ".join(key.fingerprint for key in keys)
                telemetry_text = (
                    f"Telemetry stand-in on {telemetry_url} (signatures required: {fingerprints})"
                )
            elif self.forward and telemetry_url is not None:
                await self._check_telemetry(telemetry_url)
                telemetry_text = f"Telemetry at {telemetry_url}"
            else:
                telemetry_text = "not forwarding (--no-forward): events stay in the outbox"
            api = DemoCoreApi(
                url, telemetry_url=telemetry_url if self.forward else None, signing_key=keys
            )
            try:
                base_url = stack.enter_context(serve_asgi(api.app, lifespan="on"))
            except (OSError, RuntimeError, TimeoutError) as exc:
                raise DemoError(f"the sample Core API did not start: {_one_line(exc)}") from None
            self.say(f"auditevt demo {__version__}: {self.requests} requests, run {self.run_id}")
            self.say(f"  database:  {described}")
            self.say(f"  Telemetry: {telemetry_text}")
            self.say(f"  Core API:  {base_url} (Starlette + AuditMiddleware + in-app relay)")
            until = "until Ctrl-C" if self.serve else "while the demo runs; --serve keeps it"
            self.say(
                f"  review:    {review_sign_in_url(base_url, min(ORGANIZATIONS))} (the audit "
                f"review page as org {min(ORGANIZATIONS)}'s admin, {until})"
            )
            started = datetime.now(UTC) - timedelta(seconds=1)
            try:
                outcomes = await send_requests(
                    base_url,
                    self.requests,
                    user_agent=self.user_agent,
                    seed=self.seed,
                    progress=self._progress,
                )
            except httpx.HTTPError as exc:
                raise DemoError(f"the sample Core API failed: {_one_line(exc)}") from None
            last_request = time.monotonic()
            event_ids = api.event_ids()
            async with AuditReader(url) as reader:
                pending = await self._wait_for_delivery(reader.engine, event_ids, last_request)
                records = await self._read_back(reader, started)
            try:
                isolation = await self._check_isolation(base_url, records)
            except httpx.HTTPError as exc:
                raise DemoError(f"the admin endpoint failed: {_one_line(exc)}") from None
            # Stop the app (and its relay) before reading what the stand-in received.
            stack.close()
            report = DemoReport(self.say, forward=self.forward, drained_after=self.drained_after)
            self.status = report.summarise(
                outcomes, event_ids, records, pending, isolation, standin, api
            )
        if self.serve:
            await self._serve(url, int(base_url.rsplit(":", 1)[1]))
        return self.status

    async def _serve(self, url: str, port: int) -> None:
        """``--serve``: the Core API again, with its review page, until Ctrl-C."""
        with contextlib.ExitStack() as stack:
            telemetry_url = self.telemetry_url
            keys = self.signing_keys
            if self.forward and telemetry_url is None:
                keys = keys or (SigningKey.generate(),)
                telemetry_url = stack.enter_context(TelemetryStandIn(signing_key=keys).serve())
            # The review page's own reads are audited and forwarded like every other event.
            api = DemoCoreApi(
                url, telemetry_url=telemetry_url if self.forward else None, signing_key=keys
            )
            try:
                base_url = stack.enter_context(serve_asgi(api.app, lifespan="on", port=port))
            except OSError:  # the port was taken meanwhile: any free one
                base_url = stack.enter_context(serve_asgi(api.app, lifespan="on"))
            for org in sorted(ORGANIZATIONS):
                self.say(f"  review as org {org}'s admin: {review_sign_in_url(base_url, org)}")
            self.say(f"serving {base_url} until Ctrl-C")
            await _until_interrupted()
        self.say("auditevt demo: stopped serving")

    def _progress(self, done: int, total: int) -> None:
        step = max(1, total // 4)
        if done % step == 0 or done == total:
            self.say(f"  sent {done}/{total} requests")

    async def _outbox_rows(
        self, engine: AsyncEngine, event_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, bool]:
        """The given events still in the outbox, each with whether it is dead-lettered."""
        ids = list(event_ids)
        rows: dict[uuid.UUID, bool] = {}
        async with qualified(engine).connect() as conn:  # public.audit_outbox, never a look-alike
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                query = sa.select(AUDIT_OUTBOX.c.event_id, AUDIT_OUTBOX.c.dead_lettered_at).where(
                    AUDIT_OUTBOX.c.event_id.in_(chunk)
                )
                for event_id, dead_at in (await conn.execute(query)).all():
                    rows[event_id] = dead_at is not None
        return rows

    async def _wait_for_delivery(
        self, engine: AsyncEngine, event_ids: list[uuid.UUID], since: float
    ) -> dict[uuid.UUID, bool]:
        """Wait until no event of the run is deliverable; the run's rows left in the outbox."""
        try:
            rows = await self._outbox_rows(engine, event_ids)
            if not self.forward:
                return rows
            self.say(f"  waiting for the relay to deliver {len(rows)} events ...")
            shown = time.monotonic()
            while any(not dead for dead in rows.values()):
                now = time.monotonic()
                if now - since > self.delivery_timeout:
                    self.say(f"  gave up waiting after {self.delivery_timeout:g} s")
                    break
                if now - shown >= 2.0:
                    waiting = sum(not dead for dead in rows.values())
                    self.say(f"  ... {waiting} events still pending")
                    shown = now
                await asyncio.sleep(0.05)
                rows = await self._outbox_rows(engine, rows)
        except AuditError as exc:  # pragma: no cover - the database went away mid-run
            raise DemoError(f"reading the outbox failed: {_one_line(exc)}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise DemoError(f"reading the outbox failed: {_one_line(exc)}") from None
        self.drained_after = time.monotonic() - since
        return rows

    async def _read_back(self, reader: AuditReader, since: datetime) -> list[AuditRecord]:
        """This run's audit rows, organization by organization, through the org-scoped reader."""
        records: list[AuditRecord] = []
        try:
            for organization_id in (0, *ORGANIZATIONS):
                after: str | None = None
                while True:
                    page = await reader.list_events(
                        organization_id, since=since, limit=1000, after=after
                    )
                    records.extend(
                        r
                        for r in page.items
                        if isinstance(r, AuditRecord) and r.event.user_agent == self.user_agent
                    )
                    if page.next_cursor is None:
                        break
                    after = page.next_cursor
        except AuditError as exc:
            raise DemoError(f"reading audit_log failed: {_one_line(exc)}") from None
        return records

    async def _check_isolation(
        self, base_url: str, records: list[AuditRecord]
    ) -> list[tuple[int, int, int]]:
        """For two organizations, what their admin endpoint shows: (org, rows, foreign rows).

        Each asks with ``?organization_id=`` of the other as well: the endpoint must ignore it.
        """
        present = sorted({r.event.organization_id for r in records} - {0})[:2]
        results: list[tuple[int, int, int]] = []
        async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
            for org in present:
                other = next((o for o in ORGANIZATIONS if o != org), org)
                headers = {"authorization": f"Bearer {demo_token(org * 100 + 1, org)}"}
                seen = foreign = 0
                after = ""
                while True:
                    response = await http.get(
                        "/admin/audit-log",
                        params={"limit": 1000, "after": after, "organization_id": other},
                        headers=headers,
                    )
                    response.raise_for_status()
                    page = response.json()
                    for item in page["items"]:
                        seen += 1
                        foreign += item["event"]["organization_id"] != org
                    if page["next_cursor"] is None:
                        break
                    after = page["next_cursor"]
                results.append((org, seen, foreign))
        return results
