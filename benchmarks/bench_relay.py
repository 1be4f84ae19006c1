"""relay.events_per_s, relay.batch_speedup, relay.signed_ratio and relay.outage_rss_mib.

- **events_per_s**: a PostgreSQL outbox pre-filled with N events, drained by one ``OutboxRelay``
  (batches of 500, the client's defaults, gzip included) to the Telemetry stand-in served by
  uvicorn in a process of its own on loopback; the stand-in parses every event with the contract
  models (``parse_ingest_request``: the envelope, then ``Event.model_validate_json`` per event)
  and deduplicates by ``event_id``. Timed from the first claim until the outbox is empty.
- **batch_speedup**: the same, with batches of 1, in the same run, round for round; the ratio of
  the two rates.
- **signed_ratio**: the same drain with every request signed, divided by the drain unsigned,
  the two side by side (see ``relay_signed.py``).
- **outage_rss_mib**: a process running a Starlette app with ``AuditMiddleware`` and the relay in
  its lifespan, with Telemetry down (nothing listens on its port), audits N requests; the value
  is the largest growth of that process's VmRSS (``/proc/self/status``) over its level after a
  warm-up, sampled every 1,000 requests. Then Telemetry comes up on that port and the process
  waits until the stand-in holds every event.

``python benchmarks/bench_relay.py outage-child DATABASE_URL TELEMETRY_URL EVENTS`` is that
process; it speaks JSON lines on stdout and waits for a line on stdin before Telemetry is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _pg import bench_database

SRC = str(Path(__file__).resolve().parents[1] / "src")
#: Batches in flight at once: two keep the receiver busy while the relay claims and acknowledges.
IN_FLIGHT = 2
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"

# The receiver, in a process of its own: a minimal Telemetry that validates every request with
# the contract's IngestRequest (the envelope and every Event in it), deduplicates by event_id
# and answers item by item. Quiet (no access log), on a loopback port; the socket is made with
# IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections (with proto 0 it does
# not, and every answer then waits ~40 ms for a delayed ACK). Given a key (BENCH_SIGNING_KEY),
# it verifies the signature of every signed request with WebhookVerifier, as Telemetry does,
# and answers 401 to a bad one; an unsigned request has nothing to verify (relay_signed.py
# compares the two).
RECEIVER = """
import gzip, os, socket, sys, uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from auditevt import IngestRequest, IngestResponse, IngestResult, IngestStatus
from auditevt import SignatureError, WebhookVerifier

seen = set()
key = os.environ.get("BENCH_SIGNING_KEY")
verifier = WebhookVerifier(key) if key else None

async def ingest(request: Request) -> Response:
    body = await request.body()
    if verifier is not None and "webhook-signature" in request.headers:
        try:
            verifier.verify(request.headers, body)
        except SignatureError as exc:
            return Response(str(exc), 401)
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    try:
        envelope = IngestRequest.model_validate_json(body)
    except ValueError as exc:
        return Response(str(exc), 400)
    results = []
    for item in envelope.events:
        status = IngestStatus.DUPLICATE if item.event_id in seen else IngestStatus.ACCEPTED
        seen.add(item.event_id)
        results.append(IngestResult(event_id=item.event_id, status=status))
    return Response(IngestResponse(results=results).model_dump_json(exclude_none=True),
                    media_type="application/json")

async def health(request: Request) -> Response:
    return Response('{"status":"ok","received":%d}' % len(seen), media_type="application/json")

app = Starlette(routes=[Route("/v1/audit/ingest", ingest, methods=["POST"]),
                        Route("/health", health)])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(1024)
print("http://127.0.0.1:%d" % sock.getsockname()[1], flush=True)
config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
uvicorn.Server(config).run(sockets=[sock])
"""


# --- shared -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    with bench_database() as (url, _):
        yield url


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


@contextlib.contextmanager
def _receiver(port: int = 0, signing_key: str | None = None) -> Iterator[str]:
    """The stand-in under uvicorn in a subprocess (verifying with ``signing_key``); its URL."""
    env = _env()
    env.pop("BENCH_SIGNING_KEY", None)
    if signing_key is not None:
        env["BENCH_SIGNING_KEY"] = signing_key
    process = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the receiver did not start (said {url!r})")
        _wait_until_up(url)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1.0)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sample_payloads(count: int) -> list[str]:
    """Canonical Event JSON shaped like a Core API's (most with a small ``changes``)."""
    from auditevt import Action, Event, Timestamp

    actions = [Action.CREATE, Action.UPDATE, Action.UPDATE, Action.DELETE]
    entities = ["appointment", "patient", "form", "invoice", "exercise_plan"]
    base = Timestamp.now().unix_ns
    payloads = []
    for i in range(count):
        action = actions[i % 4]
        payloads.append(
            Event(
                action=action,
                entity_type=entities[i % 5],
                entity_id=1000 + i,
                user_id=10 + i % 97,
                organization_id=1 + i % 20,
                ip_address=f"10.{i % 250}.{i % 13}.{i % 7 + 1}",
                user_agent=USER_AGENT,
                request_path=f"/{entities[i % 5]}s/{1000 + i}",
                status_code=200 if action is Action.UPDATE else 201,
                timestamp=Timestamp.from_unix_ns(base + i * 1_000_003),
                changes=None
                if action is Action.DELETE
                else {
                    "before": {"status": "scheduled", "room": f"B-{i % 40}", "duration_min": 30},
                    "after": {"status": "confirmed", "room": f"C-{i % 17}", "duration_min": 45},
                },
            ).to_json()
        )
    return payloads


def _fill(dsn: str, count: int, payloads: list[str]) -> None:
    """Put ``count`` outbox rows (fresh event ids, cycling ``payloads``) in with COPY."""
    buffer = io.StringIO()
    for i in range(count):
        payload = payloads[i % len(payloads)].replace("\\", "\\\\").replace("\t", "\\t")
        buffer.write(f"{uuid.uuid4()}\t{i}\t{1 + i % 20}\t{payload}\n")
    with psycopg.connect(dsn) as conn:
        with conn.cursor().copy(
            "COPY audit_outbox (event_id, audit_id, organization_id, payload) FROM STDIN"
        ) as copy:
            copy.write(buffer.getvalue())
        conn.execute("ANALYZE audit_outbox")


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# --- throughput ---------------------------------------------------------------------------


async def _drain(
    url: str, telemetry_url: str, batch_size: int, in_flight: int = IN_FLIGHT
) -> tuple[float, int]:
    from audit_middleware import AuditStore, OutboxRelay, RelayConfig
    from telemetry_client import AsyncTelemetryClient

    config = RelayConfig(batch_size=batch_size, max_in_flight=in_flight, metrics=False)
    async with AuditStore.from_url(url) as store, AsyncTelemetryClient(telemetry_url) as client:
        relay = OutboxRelay(store, client, config=config)
        started = time.perf_counter()
        stats = await relay.run_until_empty()
        elapsed = time.perf_counter() - started
    if stats.pending or stats.dead_letters or stats.retried:
        raise RuntimeError(f"the relay did not deliver cleanly: {stats}")
    return elapsed, stats.delivered


def _throughput(quick: bool) -> list[dict[str, Any]]:
    big, small, rounds = (15_000, 300, 2) if quick else (100_000, 2_000, 3)
    payloads = _sample_payloads(1_000)
    rates: dict[int, list[float]] = {500: [], 1: []}
    with _database() as url, _receiver() as telemetry_url:
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        for round_number in range(rounds):
            # Alternate which goes first, so that drift over the run hits both alike.
            order = (500, 1) if round_number % 2 == 0 else (1, 500)
            for batch_size in order:
                count = big if batch_size == 500 else small
                _fill(dsn, count, payloads)
                elapsed, delivered = asyncio.run(_drain(url, telemetry_url, batch_size))
                if delivered != count:
                    raise RuntimeError(f"delivered {delivered} of {count} events")
                rates[batch_size].append(delivered / elapsed)
        # For the record: the same drain with one batch in flight (the default).
        _fill(dsn, big, payloads)
        elapsed, delivered = asyncio.run(_drain(url, telemetry_url, 500, in_flight=1))
        one_in_flight = delivered / elapsed
    batched = statistics.median(rates[500])
    single = statistics.median(rates[1])
    detail = {
        "events_per_round": big,
        "rounds": rounds,
        "rates_per_round": [round(rate) for rate in rates[500]],
        "batch_size": 500,
        "max_in_flight": IN_FLIGHT,
        "events_per_s_with_one_batch_in_flight": round(one_in_flight),
        "client": "AsyncTelemetryClient defaults (gzip over 1 KiB)",
        "receiver": "uvicorn, own process, validates every request with IngestRequest",
        "cpus": os.cpu_count(),
    }
    return [
        {
            "name": "relay.events_per_s",
            "value": round(batched),
            "unit": "events/s",
            "detail": detail,
        },
        {
            "name": "relay.batch_speedup",
            "value": round(batched / single, 1),
            "unit": "x",
            "detail": {
                "batch_500_events_per_s": round(batched),
                "batch_1_events_per_s": round(single),
                "batch_1_events_per_round": small,
                "rounds": rounds,
                "rates_batch_1": [round(rate) for rate in rates[1]],
            },
        },
    ]


# --- outage memory ------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def outage(events: int, *, quick: bool = False) -> dict[str, Any]:
    """Run the outage child against a fresh database; return the benchmark entry."""
    port = _free_port()
    telemetry_url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_database())
        log = stack.enter_context(tempfile.TemporaryFile("w+"))
        child = subprocess.Popen(
            [sys.executable, __file__, "outage-child", url, telemetry_url, str(events)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,  # the relay's (rate-limited) complaints about the outage
            text=True,
            env=_env(),
        )
        try:
            assert child.stdin is not None and child.stdout is not None
            audited = json.loads(child.stdout.readline() or "{}")
            if audited.get("phase") != "audited":
                raise RuntimeError(f"the app process failed: {_tail(child, log)}")
            with _receiver(port):
                back = time.perf_counter()
                child.stdin.write("telemetry is back\n")
                child.stdin.flush()
                delivered = json.loads(child.stdout.readline() or "{}")
                recovery = time.perf_counter() - back
            if delivered.get("phase") != "delivered":
                raise RuntimeError(f"the app process failed after the outage: {_tail(child, log)}")
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return {
        "name": "relay.outage_rss_mib",
        "value": round(audited["peak_growth_kib"] / 1024, 1),
        "unit": "MiB",
        "detail": {
            "events_audited_during_outage": audited["events"],
            "quick_mode_fewer_events": quick,
            "warmup_requests": audited["warmup"],
            "rss_after_warmup_mib": round(audited["rss_before_kib"] / 1024, 1),
            "rss_growth_at_end_mib": round(audited["end_growth_kib"] / 1024, 1),
            "pending_when_telemetry_came_back": audited["pending"],
            "audit_requests_per_s": audited["requests_per_s"],
            "delivered_after_recovery": delivered["delivered"],
            "all_delivered": delivered["delivered"] == audited["events"] + audited["warmup"],
            "pending_after_recovery": delivered["pending"],
            "recovery_s": round(recovery, 1),
        },
    }


def _tail(child: subprocess.Popen[str], log: Any) -> str:
    if child.poll() is None:
        child.kill()
    child.wait()
    log.seek(0)
    return log.read()[-2000:]


async def _outage_child(url: str, telemetry_url: str, events: int) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from audit_middleware import (
        AuditMiddleware,
        AuditStore,
        OutboxBackoff,
        OutboxRelay,
        RelayConfig,
        record,
    )
    from telemetry_client import AsyncTelemetryClient, RetryPolicy

    warmup, concurrency, sample_every = 1_000, 8, 1_000
    store = AuditStore.from_url(url, pool_size=concurrency + 2, max_overflow=0)
    # Brief client retries, and a short backoff cap so that recovery is quick to observe.
    client = AsyncTelemetryClient(
        telemetry_url, retry=RetryPolicy(max_attempts=3, deadline=5.0, max_wait=1.0)
    )
    relay = OutboxRelay(
        store,
        client,
        config=RelayConfig(
            backoff=OutboxBackoff(base=0.5, cap=2.0), sweep_interval=0.5, metrics=False
        ),
    )

    async def update(request: Request) -> Response:
        request.state.audit_user_id = 42
        request.state.audit_organization_id = 1 + request.path_params["item_id"] % 20
        record(request, changes=await request.json())
        return JSONResponse({"id": request.path_params["item_id"]})

    app = Starlette(
        routes=[Route("/appointments/{item_id:int}", update, methods=["PUT"])],
        middleware=[Middleware(AuditMiddleware, sink=relay.notifying(store))],
        lifespan=relay.lifespan,
    )
    body = {
        "before": {"status": "scheduled", "room": "B-12", "duration_min": 30},
        "after": {"status": "confirmed", "room": "C-4", "duration_min": 45},
    }
    headers = {"user-agent": USER_AGENT}

    async with (
        _lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://core-api"
        ) as http,
    ):
        next_id = 0

        async def audit(count: int) -> None:
            nonlocal next_id

            async def one_client(share: int) -> None:
                nonlocal next_id
                for _ in range(share):
                    next_id += 1
                    response = await http.put(
                        f"/appointments/{next_id}", json=body, headers=headers
                    )
                    if response.status_code != 200:
                        raise RuntimeError(f"request answered {response.status_code}")

            shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
            await asyncio.gather(*(one_client(share) for share in shares))

        await audit(warmup)
        gc.collect()
        before = _rss_kib()
        peak = 0
        started = time.perf_counter()
        done = 0
        while done < events:
            step = min(sample_every, events - done)
            await audit(step)
            done += step
            peak = max(peak, _rss_kib() - before)
        elapsed = time.perf_counter() - started
        gc.collect()
        end = _rss_kib() - before
        peak = max(peak, end)
        pending = (await relay.stats()).pending
        _say(
            phase="audited",
            events=events,
            warmup=warmup,
            rss_before_kib=before,
            peak_growth_kib=peak,
            end_growth_kib=end,
            pending=pending,
            requests_per_s=round(events / elapsed),
        )
        await asyncio.to_thread(sys.stdin.readline)  # Telemetry is back
        deadline = time.monotonic() + 300
        while (stats := await relay.stats()).pending and time.monotonic() < deadline:
            relay.notify()
            await asyncio.sleep(0.2)
        _say(phase="delivered", delivered=stats.delivered, pending=stats.pending)
    await client.aclose()
    await store.aclose()


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """Start and stop ``app`` through the ASGI lifespan protocol, as uvicorn does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    message = await from_app.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"app start-up failed: {message}")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


def _say(**values: Any) -> None:
    print(json.dumps(values), flush=True)


# --- entry points -------------------------------------------------------------------------


def run(quick: bool) -> list[dict[str, Any]]:
    from relay_signed import signed_ratio

    entries = _throughput(quick)
    entries.append(signed_ratio(quick))
    entries.append(outage(5_000 if quick else 50_000, quick=quick))
    return entries


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "outage-child":
        asyncio.run(_outage_child(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        for entry in run("--quick" in sys.argv):
            print(json.dumps(entry), flush=True)
