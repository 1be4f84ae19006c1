"""relay.signed_ratio: relay throughput with every request signed, divided by without.

Two pipelines run **at the same time**, each a relay process of its own draining a PostgreSQL
outbox of its own (batches of 500, the client's defaults, gzip included) to a receiver process
of its own (the uvicorn receiver of ``bench_relay``, which validates every event and verifies
every signed request with ``WebhookVerifier``). In each round one pipeline signs (one
``whsec_`` key, HMAC-SHA256 over the gzip body) and the other does not; the next round swaps
them, so that whatever differs between the two pipelines cancels out. Running the two side by
side, rather than one after the other, makes them share whatever else the machine is doing at
that moment: on a shared machine a round drained alone can be twice as slow as the one before
it, and a one-per-cent cost would drown in that. Each round gives (signed events/s) /
(unsigned events/s); two consecutive rounds, one with each pipeline signing, give their
geometric mean, in which any difference between the pipelines themselves cancels exactly; the
value is the median of those, so that a round disturbed by something else does not decide it.

``python benchmarks/relay_signed.py child DATABASE_URL TELEMETRY_URL`` is one relay process:
it reads ``signed`` or ``plain`` lines on stdin, drains its outbox each time (signing or not),
and answers one JSON line per round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

#: The environment variable carrying the key to the child relays and the receivers.
KEY_VARIABLE = "BENCH_SIGNING_KEY"


def signed_ratio(quick: bool) -> dict[str, Any]:
    import bench_relay

    from auditevt import SigningKey

    count, rounds = (5_000, 14) if quick else (20_000, 20)
    key = SigningKey.generate().secret
    payloads = bench_relay._sample_payloads(1_000)
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"signed": [], "plain": []}
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(bench_relay._database()) for _ in range(2)]
        receivers = [
            stack.enter_context(bench_relay._receiver(signing_key=key)) for _ in range(2)
        ]
        children = [
            stack.enter_context(_child(url, receiver, key))
            for url, receiver in zip(urls, receivers, strict=True)
        ]
        dsns = [url.replace("postgresql+psycopg://", "postgresql://", 1) for url in urls]
        # Two rounds warm both pipelines up on both paths; they are not counted.
        swapped = [("signed", "plain"), ("plain", "signed")]
        for number in range(-2, rounds):
            kinds = swapped[number % 2]
            for dsn in dsns:
                bench_relay._fill(dsn, count, payloads)
            results = _round(children, kinds, count)
            if number < 0:
                continue
            for kind, result in zip(kinds, results, strict=True):
                rates[kind].append(result["delivered"] / result["elapsed"])
            ratios.append(rates["signed"][-1] / rates["plain"][-1])
    sign_us, verify_us = _signing_cost(key, payloads)
    pairs = [math.sqrt(a * b) for a, b in zip(ratios[::2], ratios[1::2], strict=True)]
    return {
        "name": "relay.signed_ratio",
        "value": round(statistics.median(pairs), 3),
        "unit": "x",
        "detail": {
            "value_is": "median over pairs of rounds of signed/unsigned events per s, the two "
            "drained side by side and swapping pipelines between the rounds of a pair",
            "pair_ratios": [round(pair, 3) for pair in pairs],
            "round_ratios": [round(ratio, 3) for ratio in ratios],
            "signed_events_per_s": round(statistics.median(rates["signed"])),
            "unsigned_events_per_s": round(statistics.median(rates["plain"])),
            "events_per_round_and_side": count,
            "rounds": rounds,
            "batch_size": 500,
            "signing": "one whsec_ key, HMAC-SHA256 over the gzip body; the receiver verifies",
            "processes": "2 relays, 2 receivers, 2 databases; the signing side swaps each round",
            # What the rounds cannot resolve on a busy machine, measured alone: the CPU that
            # signing and verifying one full batch cost, against the time a batch takes.
            "sign_us_per_batch": round(sign_us, 1),
            "verify_us_per_batch": round(verify_us, 1),
            "unsigned_ms_per_batch": round(500_000 / statistics.median(rates["plain"]), 2),
            "signing_share_of_batch_time": round(
                (sign_us + verify_us) / 1e6 / (500 / statistics.median(rates["plain"])), 5
            ),
        },
    }


def _signing_cost(key: str, payloads: list[str]) -> tuple[float, float]:
    """Microseconds of CPU to sign, and to verify, one gzip-compressed batch of 500 events."""
    import gzip
    import uuid

    from auditevt import WebhookSigner, WebhookVerifier, ingest_envelope_json

    items = [(uuid.uuid4(), payloads[i % len(payloads)]) for i in range(500)]
    body = gzip.compress(ingest_envelope_json(items).encode(), compresslevel=1, mtime=0)
    signer, verifier = WebhookSigner(key), WebhookVerifier(key)
    repeat = 500
    headers = [signer.headers(body) for _ in range(repeat)]  # warm-up, and what to verify
    started = time.process_time()
    for _ in range(repeat):
        signer.headers(body)
    signed = time.process_time()
    for each in headers:
        verifier.verify(each, body)
    verified = time.process_time()
    return (signed - started) / repeat * 1e6, (verified - signed) / repeat * 1e6


def _round(
    children: list[subprocess.Popen[str]], kinds: tuple[str, str], count: int
) -> list[dict[str, Any]]:
    """Start both relays at once, one signing and one not; wait for both to drain."""
    for child, kind in zip(children, kinds, strict=True):
        assert child.stdin is not None
        child.stdin.write(kind + "\n")
        child.stdin.flush()
    results = []
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("a relay process died during the round")
        result = json.loads(line)
        if result["delivered"] != count:
            raise RuntimeError(f"a relay delivered {result['delivered']} of {count} events")
        results.append(result)
    return results


@contextlib.contextmanager
def _child(database_url: str, telemetry_url: str, key: str) -> Iterator[subprocess.Popen[str]]:
    import bench_relay

    env = {**bench_relay._env(), KEY_VARIABLE: key}
    env.pop("TELEMETRY_SIGNING_KEY", None)  # the unsigned client must stay unsigned
    process = subprocess.Popen(
        [sys.executable, __file__, "child", database_url, telemetry_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield process
    finally:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _serve_rounds(database_url: str, telemetry_url: str) -> None:
    from audit_middleware import AuditStore, OutboxRelay, RelayConfig
    from telemetry_client import AsyncTelemetryClient, RetryPolicy

    # A short sweep: at the end of a drain the relay may wait one sweep for rows leased to its
    # other batch in flight, and a 2 s pause would make a round of 0.4 s worth nothing.
    config = RelayConfig(batch_size=500, max_in_flight=2, sweep_interval=0.02, metrics=False)
    retry = RetryPolicy(max_attempts=4, deadline=15.0, initial_wait=0.5, max_wait=5.0)
    async with (
        AuditStore.from_url(database_url) as store,
        AsyncTelemetryClient(
            telemetry_url, retry=retry, signing_key=os.environ[KEY_VARIABLE]
        ) as signed,
        AsyncTelemetryClient(telemetry_url, retry=retry) as plain,
    ):
        relays = {
            "signed": OutboxRelay(store, signed, config=config),
            "plain": OutboxRelay(store, plain, config=config),
        }
        delivered = {"signed": 0, "plain": 0}
        while kind := (await asyncio.to_thread(sys.stdin.readline)).strip():
            relay = relays[kind]
            started = time.perf_counter()
            stats = await relay.run_until_empty()
            elapsed = time.perf_counter() - started
            if stats.retried or stats.dead_lettered:
                raise RuntimeError(f"the relay did not deliver cleanly: {stats}")
            print(
                json.dumps({"elapsed": elapsed, "delivered": stats.delivered - delivered[kind]}),
                flush=True,
            )
            delivered[kind] = stats.delivered


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        asyncio.run(_serve_rounds(sys.argv[2], sys.argv[3]))
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        print(json.dumps(signed_ratio("--quick" in sys.argv)), flush=True)
