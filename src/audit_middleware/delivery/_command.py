"""``auditevt relay``: the relay as a process of its own.

``relay_command()`` is what the command line runs::

    auditevt relay --database-url URL [--telemetry-url URL] [--signing-key-file FILE]
                   [--until-empty]

Every request is signed (Standard Webhooks) when a key is given (``signing_key``, or else the
``TELEMETRY_SIGNING_KEY`` environment variable); the start-up line says with which keys, by
fingerprint.

SIGTERM or SIGINT stops the relay after the batch in flight (exit status 0); a second one
abandons that batch too (its rows are given back). SIGKILL loses nothing either: the killed
relay's lease expires and any relay claims its rows again. ``--until-empty`` exits 0 once the
outbox holds nothing deliverable; dead-lettered events do not count, but are reported.

A user error (a bad URL, an unreachable database, no Telemetry URL) is one line on stderr and
a non-zero exit status, never a traceback: 2 for what the caller wrote, 1 for what it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from audit_middleware._exceptions import AuditError
from audit_middleware.delivery._relay import OutboxRelay, RelayConfig
from audit_middleware.storage._partitions import maintain_partitions
from audit_middleware.storage._store import AuditStore
from audit_middleware.storage._urls import async_url
from auditevt import SigningKey, signing_keys
from auditevt._cli_signing import read_signing_keys
from telemetry_client import AsyncTelemetryClient, RetryPolicy, TelemetryError

__all__ = ["RELAY_RETRY", "relay_command"]

#: The client's retries in a relay: brief (4 attempts within 15 s), because the outbox's own
#: backoff (in the database: ``DeliveryPolicy.backoff``) is the one that covers long outages,
#: and a batch must be answered well within three quarters of its lease (45 s by default).
RELAY_RETRY = RetryPolicy(max_attempts=4, deadline=15.0, initial_wait=0.5, max_wait=5.0)

_PROG = "auditevt relay"


def relay_command(
    database_url: str,
    telemetry_url: str | None,
    until_empty: bool,
    *,
    config: RelayConfig | None = None,
    retry: RetryPolicy | None = None,
    metrics_port: int | None = None,
    signing_key: SigningKey | str | Sequence[SigningKey | str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    handle_signals: bool = True,
) -> int:
    """Run a relay from ``database_url``'s outbox to Telemetry; return the exit status.

    ``telemetry_url`` defaults to ``TELEMETRY_INTERNAL_URL``. ``config`` tunes the relay
    (batch size, lease, backoff), ``retry`` the client's brief retries (default
    :data:`RELAY_RETRY`), and ``metrics_port`` serves Prometheus metrics over HTTP on that
    port; ``signing_key`` (default ``TELEMETRY_SIGNING_KEY``) signs every request. Returns 0
    when stopped by a signal or, with ``until_empty``, once nothing deliverable is left; 1 when
    the database cannot be used; 2 for bad arguments.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        async_url(database_url)
    except (TypeError, ValueError) as exc:
        return _fail(err, f"--database-url: {exc}", 2)
    if config is not None and not isinstance(config, RelayConfig):
        return _fail(err, f"config must be a RelayConfig, got {type(config).__name__}", 2)
    if metrics_port is not None and (
        isinstance(metrics_port, bool)
        or not isinstance(metrics_port, int)
        or not 0 < metrics_port < 65536
    ):
        return _fail(err, f"--metrics-port must be a port from 1 to 65535, got {metrics_port!r}", 2)
    try:
        keys = read_signing_keys(None) if signing_key is None else signing_keys(signing_key)
    except (TypeError, ValueError) as exc:  # says what is wrong, never the key itself
        return _fail(err, f"signing key: {exc}", 2)
    _configure_logging(err)
    try:
        return asyncio.run(
            _run(
                database_url,
                telemetry_url,
                until_empty,
                config=config or RelayConfig(),
                retry=retry or RELAY_RETRY,
                metrics_port=metrics_port,
                signing_key=keys,
                out=out,
                err=err,
                handle_signals=handle_signals,
            )
        )
    except KeyboardInterrupt:  # a SIGINT before our handler was installed
        return 0


async def _run(
    database_url: str,
    telemetry_url: str | None,
    until_empty: bool,
    *,
    config: RelayConfig,
    retry: RetryPolicy,
    metrics_port: int | None,
    signing_key: tuple[SigningKey, ...] | None,
    out: TextIO,
    err: TextIO,
    handle_signals: bool,
) -> int:
    try:
        client = AsyncTelemetryClient(telemetry_url, retry=retry, signing_key=signing_key)
    except TelemetryError as exc:
        return _fail(err, f"--telemetry-url: {exc}", 2)
    async with client, AuditStore.from_url(database_url) as store:
        relay = OutboxRelay(store, client, config=config)
        try:
            before = await relay.outbox.stats()  # connects, and checks the table is there
        except AuditError as exc:  # the message says what to do, e.g. run migrate first
            return _fail(err, f"cannot use the outbox at {_safe(store)}: {exc}", 1)
        if metrics_port is not None:
            try:
                _serve_metrics(metrics_port)
            except OSError as exc:
                return _fail(err, f"--metrics-port {metrics_port}: {exc}", 1)
        fingerprints = [key.fingerprint for key in client.signing_keys]
        logging.getLogger("audit_middleware.relay").info(
            "relay %s: %d pending event(s) in %s, sending to %s, %s",
            relay.owner,
            before.pending,
            _safe(store),
            client.base_url,
            f"signed with key(s) {', '.join(fingerprints)}" if fingerprints else "unsigned",
        )
        main = asyncio.current_task()
        # The relay process keeps audit_log's monthly partitions ahead (PostgreSQL, 0004+).
        maintenance = (
            asyncio.create_task(maintain_partitions(store.engine))
            if store.dialect_name == "postgresql" and not until_empty
            else None
        )
        with _signals(relay, main, enabled=handle_signals):
            try:
                if until_empty:
                    await relay.run_until_empty()
                else:
                    await relay.run_forever()
            except asyncio.CancelledError:
                pass  # a second signal: the batch in flight was given back
            finally:
                if maintenance is not None:
                    maintenance.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await maintenance
        try:
            stats = await relay.stats()
        except AuditError as exc:
            print(f"{_PROG}: stopped; cannot read the outbox: {exc}", file=err)
            return 0
    print(
        f"{_PROG}: delivered {stats.delivered} event(s); {stats.pending} pending, "
        f"{stats.dead_letters} dead-lettered",
        file=out,
    )
    if stats.dead_letters:
        print(
            f"{_PROG}: warning: {stats.dead_letters} dead-lettered event(s) remain in the "
            "outbox (Telemetry rejected them); see docs/operations.md to inspect and re-drive",
            file=err,
        )
    return 0


@contextlib.contextmanager
def _signals(
    relay: OutboxRelay, main: asyncio.Task[object] | None, *, enabled: bool
) -> Iterator[None]:
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def handle(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            logging.getLogger("audit_middleware.relay").info(
                "relay %s: %s received, stopping after the batch in flight",
                relay.owner,
                signal.Signals(signum).name,
            )
            relay.request_stop()
        elif main is not None:
            main.cancel()  # impatient: abandon the batch in flight too

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, handle, signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _serve_metrics(port: int) -> None:
    try:
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise OSError(
            "prometheus_client is not installed: pip install 'auditevt[metrics]'"
        ) from exc
    start_http_server(port)


def _configure_logging(err: TextIO) -> None:
    # A command owns its process: log to stderr unless the application configured logging.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _safe(store: AuditStore) -> str:
    return store.engine.url.render_as_string(hide_password=True)


def _fail(err: TextIO, message: str, status: int) -> int:
    print(f"{_PROG}: {message}", file=err)
    return status
