"""middleware.txn_overhead_ratio: an audited transactional request over the same request unaudited.

Two uvicorn processes serve the FastAPI apps of ``txn_apps.py`` on one PostgreSQL database this
benchmark creates and drops: **audited** (``AuditMiddleware(store=...)``: the handler's row, the
audit row and its outbox row in one transaction, the audit INSERT pipelined with the COMMIT) and
**plain** (the same handler and unit of work, no middleware). This process drives them over
loopback with CONCURRENCY keep-alive connections of a minimal HTTP/1.1 client (so the load costs
little CPU of the two cores it shares with the servers), alternately, round by round, the order
flipping each round. ``txn_overhead_ratio`` = audited requests/s over plain requests/s over all
rounds; the per-round ratios and their median are in ``detail``; goal >= 0.90.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

CONCURRENCY = 16
HERE = Path(__file__).resolve().parent
BODY = json.dumps(
    {
        "before": {"status": "scheduled", "room": "B-12", "duration_min": 30},
        "after": {"status": "confirmed", "room": "C-4", "duration_min": 45},
    }
).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(url: str, arm: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {**os.environ, "BENCH_DATABASE_URL": url, "BENCH_ARM": arm}
    command = [
        sys.executable, "-m", "uvicorn", "txn_apps:create_app", "--factory",
        "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn ({arm}) exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return process, port
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"uvicorn ({arm}) not ready within 60 s") from None
            time.sleep(0.05)


async def _connection(port: int, requests: list[int]) -> None:
    """One keep-alive connection sending PUTs for the item ids in ``requests``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "PUT /appointments/{} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        "user-agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0\r\n"
        f"content-length: {len(BODY)}\r\n\r\n"
    )
    try:
        while requests:
            item = requests.pop()
            writer.write(head.format(item).encode() + BODY)
            status_line = await reader.readline()
            if not status_line.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"item {item}: {status_line!r}")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
    finally:
        writer.close()


async def _drive(port: int, requests: int, first: int) -> float:
    pending = list(range(first, first + requests))
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, pending) for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


def _database() -> tuple[str, Any]:
    from bench_middleware import _database as make

    url, drop = make()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute(
            "CREATE TABLE bench_appointments (id bigserial PRIMARY KEY, item_id bigint NOT NULL, "
            "organization_id bigint NOT NULL, room text NOT NULL, changes jsonb NOT NULL)"
        )
    return url, drop


def run(quick: bool) -> list[dict[str, Any]]:
    # Short rounds, many of them: load from elsewhere on a shared machine comes and goes in
    # bursts of seconds, so fine alternation lets it fall on both arms alike.
    rounds, requests = (40, 100) if quick else (120, 150)
    url, drop = _database()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        ports = {}
        for arm in ("audited", "plain"):
            process, ports[arm] = _serve(url, arm)
            servers.append(process)
        seconds: dict[str, list[float]] = {"audited": [], "plain": []}
        item = 1

        async def measure() -> None:
            nonlocal item
            for arm in ("audited", "plain"):  # warm-up: fill the pools, prepare statements
                await _drive(ports[arm], CONCURRENCY * 20, item)
                item += CONCURRENCY * 20
            for round_ in range(rounds):
                order = ("audited", "plain") if round_ % 2 == 0 else ("plain", "audited")
                for arm in order:
                    seconds[arm].append(await _drive(ports[arm], requests, item))
                    item += requests

        asyncio.run(measure())
    finally:
        for process in servers:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        drop()
    rps = {arm: [requests / s for s in values] for arm, values in seconds.items()}
    audited_rps = rounds * requests / sum(seconds["audited"])
    plain_rps = rounds * requests / sum(seconds["plain"])
    ratios = [a / p for a, p in zip(rps["audited"], rps["plain"], strict=True)]
    detail = {
        "quick": quick,
        "rounds": rounds,
        "requests_per_round": requests,
        "concurrency": CONCURRENCY,
        "driver": "uvicorn processes, keep-alive HTTP/1.1 load from this process",
        "audited_rps": round(audited_rps, 1),
        "plain_rps": round(plain_rps, 1),
        "round_ratios": [round(r, 3) for r in ratios],
        "median_round_ratio": round(statistics.median(ratios), 3),
        "rounds_rps": {arm: [round(x, 1) for x in values] for arm, values in rps.items()},
        "goal": ">= 0.90",
    }
    return [
        {"name": "middleware.txn_overhead_ratio", "value": round(audited_rps / plain_rps, 3),
         "unit": "ratio", "detail": detail},
    ]  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    for entry in run(quick=True):
        print(json.dumps(entry))
