"""``OutboxRelay``: the processor that drains the outbox through an exporter, losing nothing.

Split as OpenTelemetry splits its ``BatchSpanProcessor`` from its ``SpanExporter``:

* the **processor** (this class) decides what to send next and when: it claims batches from the
  :class:`Outbox` under a lease, runs ``max_in_flight`` batch loops, pauses after failures,
  settles each batch in the database, starts, drains and stops, and keeps the counts;
* the **exporter** (:class:`Exporter`; :class:`TelemetryExporter` for Telemetry) sends one
  batch and says what became of each event (``ExportResult``): how to send;
* the **policy** (:class:`DeliveryPolicy`, in ``RelayConfig.policy``) says what dead-letters,
  the attempt limit, and the one backoff, which the database applies to the rows.

A bug never dead-letters an event: an exporter that raises (``TypeError``, anything that is not
a classified outcome) or returns something that does not fit its batch has that batch given
back, rescheduled without counting an attempt, with the traceback logged at ERROR and counted.

Only the batches in flight are held in memory: the backlog waits in the database. Each batch is
exported within three quarters of its lease, so no other relay can claim its rows meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import AuditError, ConfigurationError
from audit_middleware._ratelimit_log import RateLimitedLog
from audit_middleware.delivery._config import RelayConfig, RelayStats, default_owner
from audit_middleware.delivery._exporter import Exporter, ExportResult
from audit_middleware.delivery._lifecycle import RelayLifecycle
from audit_middleware.delivery._metrics import RelayMetrics, metrics_for
from audit_middleware.delivery._settle import Settled, check_result, settle
from audit_middleware.delivery._telemetry import resolve_exporter
from audit_middleware.storage._outbox import Outbox, OutboxItem
from telemetry_client import AsyncTelemetryClient

__all__ = ["OutboxRelay", "RelayConfig", "RelayStats", "default_owner"]

logger = logging.getLogger("audit_middleware.relay")

#: The share of a lease a batch may spend being exported; the rest is a margin for clock drift.
_SEND_SHARE = 0.75

#: How long a relay that is being cancelled spends giving its claimed rows back.
_RELEASE_TIMEOUT = 2.0


class _HasEngine(Protocol):
    @property
    def engine(self) -> AsyncEngine: ...


class OutboxRelay(RelayLifecycle):
    """Delivers the outbox in batches through an exporter, in the app or in its own process.

    ``source`` is an ``AuditStore`` (or anything with an ``engine``), an ``AsyncEngine`` or an
    ``Outbox``. Give either ``client`` (an ``AsyncTelemetryClient``: the relay sends with a
    :class:`TelemetryExporter` on it) or ``exporter`` (anything with ``async export(batch)``).
    The caller keeps ownership of both: the relay never closes them.

    Nothing runs until :meth:`start`, :meth:`run_forever` or :meth:`run_until_empty`. Call
    :meth:`notify` after each committed audit write to have it sent at once. ``registry`` is
    the Prometheus registry for the relay's metrics (default: the global one), used only once
    the relay runs; ``sleep`` is how it pauses (injectable for tests); ``clock`` is monotonic.
    """

    def __init__(
        self,
        source: _HasEngine | AsyncEngine | Outbox,
        client: AsyncTelemetryClient | None = None,
        *,
        exporter: Exporter | None = None,
        config: RelayConfig | None = None,
        registry: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config is None:
            config = RelayConfig()
        elif not isinstance(config, RelayConfig):
            raise ConfigurationError(f"config must be a RelayConfig, got {type(config).__name__}")
        engine = source if isinstance(source, AsyncEngine) else getattr(source, "engine", None)
        if isinstance(source, Outbox):
            outbox = source
        elif isinstance(engine, AsyncEngine):
            outbox = Outbox(engine, backoff=config.policy.backoff)
        else:
            raise ConfigurationError(
                "source must be an AuditStore, an AsyncEngine or an Outbox, "
                f"got {type(source).__name__}"
            )
        exporter = resolve_exporter(
            client,
            exporter,
            max_batch_bytes=config.max_batch_bytes,
            max_split_requests=config.max_split_requests,
            send_budget=config.lease_seconds * _SEND_SHARE,
        )
        super().__init__(
            owner=config.owner or default_owner(), drain_timeout=config.drain_timeout, sleep=sleep
        )
        self._outbox = outbox
        self._exporter: Exporter = exporter
        self._config = config
        self._registry = registry
        self._clock = clock
        self._log = RateLimitedLog(logger, interval=config.log_interval, clock=clock)
        self._metrics: RelayMetrics | None = None
        # Counters since creation.
        self._delivered = 0
        self._retried = 0
        self._dead_lettered = 0
        self._batches = 0
        self._errors = 0
        self._consecutive_failures = 0
        self._resume_at = 0.0
        self._busy = 0

    # --- public API -------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """The lease owner id this relay claims rows under."""
        return self._owner

    @property
    def config(self) -> RelayConfig:
        """The relay's configuration."""
        return self._config

    @property
    def exporter(self) -> Exporter:
        """The exporter each batch is sent with."""
        return self._exporter

    @property
    def outbox(self) -> Outbox:
        """The outbox the relay drains (for stats, dead letters and re-drive)."""
        return self._outbox

    async def stats(self) -> RelayStats:
        """The outbox's counts from the database, with this relay's counters.

        Raises ``OutboxError`` when the database cannot be read.
        """
        outbox = await self._outbox.stats()
        if self._metrics is not None:
            self._metrics.set_gauges(
                outbox.pending, outbox.oldest_pending_age_s, outbox.dead_letters
            )
        return RelayStats(
            pending=outbox.pending,
            leased=outbox.leased,
            oldest_pending_age_s=outbox.oldest_pending_age_s,
            dead_letters=outbox.dead_letters,
            delivered=self._delivered,
            retried=self._retried,
            dead_lettered=self._dead_lettered,
            batches=self._batches,
            errors=self._errors,
        )

    async def run_until_empty(self) -> RelayStats:
        """Deliver until the outbox holds nothing deliverable, then return the stats.

        Dead letters do not count; rows that are backing off or leased to another relay do,
        and are waited for. With Telemetry down this waits until it is back (or until
        ``stop()``): wrap it in ``asyncio.timeout`` for a bound.
        """
        async with self._run():
            await self._work(until_empty=True)
        return await self.stats()

    async def run_forever(self) -> None:
        """Deliver until ``stop()`` is called or the task is cancelled."""
        async with self._run():
            refresher = None
            if self._metrics is not None:
                refresher = asyncio.create_task(self._refresh_gauges())
            try:
                await self._work(until_empty=False)
            finally:
                if refresher is not None:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher

    def _starting(self) -> None:
        self._resume_at = 0.0
        self._busy = 0
        if self._config.metrics and self._metrics is None:
            self._metrics = metrics_for(self._registry)

    def __repr__(self) -> str:
        return f"OutboxRelay(owner={self._owner!r}, exporter={self._exporter!r})"

    # --- the loop ---------------------------------------------------------------------------

    async def _work(self, *, until_empty: bool) -> None:
        """Run ``max_in_flight`` batch loops side by side (one on SQLite)."""
        count = self._config.max_in_flight if self._outbox.dialect == "postgresql" else 1
        if count == 1:
            await self._loop_batches(until_empty=until_empty)
            return
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(self._loop_batches(until_empty=until_empty))

    async def _loop_batches(self, *, until_empty: bool) -> None:
        wake = self._wake
        if wake is None:
            raise RuntimeError("the relay loop runs only inside _run()")
        paused_until = 0.0
        while not self._stop_after_batch:
            resume_at = self._resume_at
            if resume_at != paused_until and resume_at > self._clock():
                # Telemetry asked us (or a sibling loop) to back off: wait, once per request.
                paused_until = resume_at
                if self._draining:
                    return  # nothing can be delivered for now: leave the rest
                await self._pause(resume_at - self._clock())
                continue
            # Cleared before the claim: a notify() from here on makes the next wait return.
            wake.clear()
            try:
                async with self._outbox.exclusive():
                    items = await self._outbox.claim(
                        self._config.batch_size,
                        self._config.max_batch_bytes,
                        self._config.lease_seconds,
                        self._owner,
                    )
                    if items:
                        self._busy += 1
                        try:
                            pause = await self._deliver(items)
                        finally:
                            self._busy -= 1
                    else:
                        pause = 0.0
            except AuditError as exc:  # the database failed us (claim or settle)
                self._consecutive_failures += 1
                self._log.log(logging.ERROR, "database", "relay cannot use the outbox: %s", exc)
                pause = self._failure_pause(None)
                items = []
            except Exception as exc:
                # A bug of ours outside the exporter: keep the relay alive and say so. The rows
                # of the batch keep their lease and are claimable again once it expires.
                self._consecutive_failures += 1
                self._log_bug(exc)
                pause = self._failure_pause(None)
                items = []
            if pause > 0:
                # Sibling loops see _resume_at and wait for what is left of the pause.
                self._resume_at = paused_until = max(self._resume_at, self._clock() + pause)
                if self._draining:
                    return  # nothing can be delivered for now: leave the rest
                await self._pause(pause)
                continue
            if items:
                continue
            if self._draining:
                return
            if until_empty:
                if self._busy:
                    return  # a sibling loop has a batch in flight and will look again after it
                try:
                    due_in = await self._outbox.next_due_in()
                except AuditError as exc:
                    self._log.log(logging.ERROR, "database", "relay cannot use the outbox: %s", exc)
                    due_in = self._config.sweep_interval
                if due_in is None:
                    return
                await self._wait(min(max(due_in, 0.001), self._config.sweep_interval))
            else:
                await self._wait(self._config.sweep_interval)

    def _failure_pause(self, retry_after: float | None) -> float:
        return self._config.policy.pause(self._consecutive_failures, retry_after, random.random())

    def _log_bug(self, exc: BaseException) -> None:
        self._log.log(
            logging.ERROR,
            f"unexpected {type(exc).__name__}",
            "relay %s failed unexpectedly: %r (the batch stays in the outbox)",
            self._owner,
            exc,
            exc_info=True,
        )

    # --- one batch --------------------------------------------------------------------------

    async def _deliver(self, items: list[OutboxItem]) -> float:
        """Export one claimed batch and settle every row; returns how long to pause after it."""
        try:
            result = await self._export(items)
            if result is None:  # the exporter failed us: a bug, never the events' fault
                return await self._give_back(items)
            settled = await settle(
                self._outbox, self._owner, items, result, self._config.policy, self._log
            )
        except asyncio.CancelledError:
            # Abandoned mid-batch (stop() timed out): give back what we still hold, so the
            # next start need not wait for the lease to expire.
            release = asyncio.ensure_future(
                asyncio.wait_for(
                    self._outbox.release([item.id for item in items], owner=self._owner),
                    _RELEASE_TIMEOUT,
                )
            )
            with contextlib.suppress(BaseException):
                await asyncio.shield(release)
            raise
        return self._count(settled)

    async def _export(self, items: Sequence[OutboxItem]) -> ExportResult | None:
        """The exporter's result for ``items``, checked; None (logged) if the exporter failed."""
        budget = self._config.lease_seconds * _SEND_SHARE
        try:
            async with asyncio.timeout(budget):
                answer = await self._exporter.export(items)
            return check_result(items, answer)
        except TimeoutError:
            return ExportResult.failed(
                f"no answer within {budget:.1f} s (the batch's lease)", key="timeout"
            )
        except Exception as exc:
            self._log_bug(exc)
            return None

    async def _give_back(self, items: Sequence[OutboxItem]) -> float:
        """Reschedule a batch whose export failed unexpectedly, without counting an attempt."""
        self._errors += 1
        self._consecutive_failures += 1
        if self._metrics is not None:
            self._metrics.export_errors.inc()
        await self._outbox.retry_later(
            [item.id for item in items],
            "not sent: the exporter failed unexpectedly (see the relay's log)",
            owner=self._owner,
            backoff=self._config.policy.backoff,
            counted=False,
        )
        return self._failure_pause(None)

    def _count(self, settled: Settled) -> float:
        """Add one settlement to the counters and logs; returns how long to pause after it."""
        metrics = self._metrics
        if settled.delivered or settled.dead_lettered:
            self._batches += 1
        if settled.delivered:
            self._delivered += settled.delivered
            if metrics is not None:
                metrics.delivered.inc(settled.delivered)
        if settled.dead_lettered:
            self._dead_lettered += settled.dead_lettered
            if metrics is not None:
                metrics.dead_lettered.inc(settled.dead_lettered)
        failure = settled.failure
        if failure is None:
            if self._consecutive_failures and self._log.clear():
                logger.info("relay %s: delivery works again", self._owner)
            self._consecutive_failures = 0
            return 0.0
        self._retried += settled.retried
        if metrics is not None:
            metrics.retried.inc(settled.retried)
        self._consecutive_failures += 1
        pause = self._failure_pause(failure.retry_after)
        configuration = failure.kind == "configuration"
        self._log.log(
            logging.ERROR if configuration else logging.WARNING,
            failure.key or failure.reason,
            "relay %s: %d audit event(s) not delivered, will retry (pausing %.1f s): %s%s",
            self._owner,
            settled.retried,
            pause,
            failure.reason,
            " (a configuration problem: check the credentials, signing key and URL)"
            if configuration
            else "",
        )
        return pause

    # --- metrics ----------------------------------------------------------------------------

    async def _refresh_gauges(self) -> None:
        while True:
            try:
                await self.stats()
            except AuditError as exc:
                self._log.log(logging.ERROR, "database", "relay cannot read outbox stats: %s", exc)
            await asyncio.sleep(self._config.stats_interval)
