"""``OutboxRelay``: drains the outbox to Telemetry's ``/v1/audit/ingest``, losing nothing.

Split as OpenTelemetry splits its batch span processor from its exporter: :class:`Outbox`
decides what to send next (claims, leases, backoff, all in the database), and the relay sends
one batch and settles each event by Telemetry's answer:

* ``accepted`` or ``duplicate``: delivered, the outbox row is deleted;
* ``rejected``: the row is dead-lettered with Telemetry's reason (kept, counted, logged);
* a failure worth retrying (no connection, a timeout, 408/425/429/5xx after the client's own
  brief retries, an answer that does not parse): the rows are rescheduled with backoff computed
  in database time, and this relay pauses, for the ``Retry-After`` Telemetry asked for if it
  did, else for the same backoff;
* the whole batch refused with 400, 413 or 422 (one bad event spoils a request): the batch is
  split in halves, recursively, so that the good events go through and each refusal is pinned
  to a single event; such an event is dead-lettered *only* when another request of the same
  batch was answered, proving that Telemetry works and the event itself is the problem (or it
  is bigger than a whole batch may be). When nothing got through, the refusal is taken to be
  Telemetry's (a contract mismatch, a bad deploy), and the batch is rescheduled instead, so a
  broken receiver cannot turn the whole outbox into dead letters. Splitting stops after a few
  requests without any answer for the same reason;
* any other 4xx (401, 403, 404, ...) is a configuration problem, never the events': the batch
  is rescheduled and the failure logged, once a minute;
* a row whose JSON no envelope can hold (not an object) is dead-lettered at once, unsent.

Only the batch in flight (``max_in_flight`` batches, one by default) is held in memory,
whatever the backlog: the backlog waits in the database. Each batch is sent within three
quarters of its lease, so no other relay can claim its rows while it is still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import AuditError
from audit_middleware._ratelimit_log import RateLimitedLog
from audit_middleware.delivery._config import RelayConfig, RelayStats, check_seconds, default_owner
from audit_middleware.delivery._metrics import RelayMetrics, metrics_for
from audit_middleware.storage._outbox import Outbox, OutboxItem
from auditevt import Event
from auditevt._ingest import IngestStatus
from telemetry_client import (
    AsyncTelemetryClient,
    HTTPStatusError,
    RetriesExhausted,
    TelemetryError,
)

__all__ = ["OutboxRelay", "RelayConfig", "RelayStats", "default_owner"]

logger = logging.getLogger("audit_middleware.relay")

#: Statuses that refuse a request for what is in it: worth splitting the batch to find out
#: which event is at fault.
SPLIT_STATUSES = frozenset({400, 413, 422})

#: The share of a lease a batch may spend being sent (and split); the rest is a safety margin
#: against clock drift between this process and the database.
_SEND_SHARE = 0.75

#: How long a relay that is being cancelled spends giving its claimed rows back.
_RELEASE_TIMEOUT = 2.0


class _HasEngine(Protocol):
    @property
    def engine(self) -> AsyncEngine: ...


class _Sink(Protocol):
    async def write(self, event: Event) -> uuid.UUID: ...


class _NotifyingSink:
    """An audit sink that wakes the relay once its write has committed."""

    def __init__(self, sink: _Sink, notify: Callable[[], None]) -> None:
        self._sink = sink
        self._notify = notify

    async def write(self, event: Event, **kwargs: Any) -> uuid.UUID:
        event_id = await self._sink.write(event, **kwargs)
        self._notify()
        return event_id

    def __getattr__(self, name: str) -> Any:
        # Everything else (engine, check(), aclose(), ...) is the wrapped sink's.
        return getattr(self._sink, name)

    def __repr__(self) -> str:
        return f"notifying({self._sink!r})"


@dataclasses.dataclass
class _Settlement:
    """What became of each event of one claimed batch."""

    delivered: list[int] = dataclasses.field(default_factory=list)
    rejected: dict[int, str] = dataclasses.field(default_factory=dict)
    refused: dict[int, str] = dataclasses.field(default_factory=dict)
    failed: list[int] = dataclasses.field(default_factory=list)
    failure: str | None = None
    failure_key: str | None = None
    retry_after: float | None = None
    answered: int = 0
    split_requests: int = 0


class OutboxRelay:
    """Delivers the outbox to Telemetry in batches, in the app or in a process of its own.

    ``source`` is an ``AuditStore`` (or anything with an ``engine``), an ``AsyncEngine`` or an
    ``Outbox``. ``client`` sends the batches; its retry policy covers brief glitches, while the
    outbox's backoff covers long outages. The caller keeps ownership of both.

    Nothing runs until :meth:`start`, :meth:`run_forever` or :meth:`run_until_empty`. Call
    :meth:`notify` after each committed audit write to have it sent at once. ``registry`` is
    the Prometheus registry for the relay's metrics (default: the global one), used only once
    the relay runs; ``sleep`` is how it pauses (injectable for tests); ``clock`` is monotonic.
    """

    def __init__(
        self,
        source: _HasEngine | AsyncEngine | Outbox,
        client: AsyncTelemetryClient,
        *,
        config: RelayConfig | None = None,
        registry: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config is None:
            config = RelayConfig()
        elif not isinstance(config, RelayConfig):
            raise TypeError(f"config must be a RelayConfig, got {type(config).__name__}")
        if isinstance(source, Outbox):
            outbox = source
        elif isinstance(source, AsyncEngine):
            outbox = Outbox(source, backoff=config.backoff)
        elif isinstance(getattr(source, "engine", None), AsyncEngine):
            outbox = Outbox(source.engine, backoff=config.backoff)
        else:
            raise TypeError(
                "source must be an AuditStore, an AsyncEngine or an Outbox, "
                f"got {type(source).__name__}"
            )
        if not isinstance(client, AsyncTelemetryClient):
            raise TypeError(f"client must be an AsyncTelemetryClient, got {type(client).__name__}")
        self._outbox = outbox
        self._client = client
        self._config = config
        self._owner = config.owner or default_owner()
        self._registry = registry
        self._sleep = sleep
        self._clock = clock
        self._log = RateLimitedLog(logger, interval=config.log_interval, clock=clock)
        self._metrics: RelayMetrics | None = None
        # Counters since creation.
        self._delivered = 0
        self._retried = 0
        self._dead_lettered = 0
        self._batches = 0
        self._consecutive_failures = 0
        self._resume_at = 0.0
        self._busy = 0
        # Run state: created when a run starts, in the running loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._draining = False
        self._stop_after_batch = False
        self._running = False
        self._task: asyncio.Task[None] | None = None

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
    def outbox(self) -> Outbox:
        """The outbox the relay drains (for stats, dead letters and re-drive)."""
        return self._outbox

    @property
    def running(self) -> bool:
        """Whether a run (``start``, ``run_forever`` or ``run_until_empty``) is in progress."""
        return self._running

    def notify(self) -> None:
        """Wake the relay at once: call it after each committed audit write.

        Cheap, never blocks, never raises; safe from any thread. Does nothing while the relay
        is not running (its first look at the outbox will find the row anyway).
        """
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
            return
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody to wake
            loop.call_soon_threadsafe(wake.set)

    def notifying(self, sink: _Sink) -> _Sink:
        """``sink`` (an ``AuditStore``) wrapped to call :meth:`notify` after each committed write.

        Give the result to ``AuditMiddleware(sink=...)``: a healthy Telemetry then sees each
        event within milliseconds, instead of at the next sweep.
        """
        if not callable(getattr(sink, "write", None)):
            raise TypeError(f"sink={sink!r} has no write(event) method")
        return _NotifyingSink(sink, self.notify)

    async def stats(self) -> RelayStats:
        """The outbox's counts from the database, with this relay's counters.

        Raises ``OutboxError`` when the database cannot be read.
        """
        outbox = await self._outbox.stats()
        self._update_gauges(outbox.pending, outbox.oldest_pending_age_s, outbox.dead_lettered)
        return RelayStats(
            pending=outbox.pending,
            leased=outbox.leased,
            oldest_pending_age_s=outbox.oldest_pending_age_s,
            dead_letters=outbox.dead_lettered,
            delivered=self._delivered,
            retried=self._retried,
            dead_lettered=self._dead_lettered,
            batches=self._batches,
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

    async def start(self) -> None:
        """Run the relay in a background task of the running loop (returns at once)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("this relay is already running")
        if self._running:
            raise RuntimeError("this relay is already running")
        self._task = asyncio.create_task(self.run_forever(), name=f"OutboxRelay({self._owner})")
        # Let the task set itself up, so that notify() right after start() is not lost.
        await asyncio.sleep(0)

    # The timeout bounds the drain before cancelling, which asyncio.timeout around it cannot do.
    async def stop(self, timeout: float | None = None, *, drain: bool = True) -> None:  # noqa: ASYNC109
        """Stop the background task within ``timeout`` seconds (default ``drain_timeout``).

        With ``drain`` (the default) the relay first keeps delivering whatever is due, then
        stops; without it, it stops after the batch in flight. When ``timeout`` runs out, the
        batch in flight is abandoned and its rows given back (due at once for the next start;
        Telemetry deduplicates any that did arrive). Never hangs: it returns within
        ``timeout`` plus a couple of seconds. Never raises either: an error that ended the
        relay is logged. Idempotent. (A relay run with ``run_forever()`` or
        ``run_until_empty()`` is stopped with ``request_stop()`` or by cancelling it.)
        """
        task = self._task
        if task is None:
            return
        if timeout is None:
            timeout = self._config.drain_timeout
        check_seconds("timeout", timeout, positive=False)
        self.request_stop(drain=drain)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            logger.warning(
                "relay %s did not finish within %.1f s; cancelling", self._owner, timeout
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            # Shutdown goes on: what the relay did not deliver waits in the outbox.
            logger.error("relay %s had stopped with an error", self._owner, exc_info=True)
        finally:
            self._task = None

    def request_stop(self, *, drain: bool = False) -> None:
        """Ask a running relay to stop after the batch in flight (or, with ``drain``, once
        nothing is due); returns at once. Signal handlers call this."""
        if drain:
            self._draining = True
        else:
            self._stop_after_batch = True
        if self._stopping is not None:
            self._stopping.set()
        self.notify()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the relay for the lifetime of an ASGI app: ``Starlette(lifespan=relay.lifespan)``.

        Starts it at start-up; at shutdown drains for ``drain_timeout`` seconds and stops.
        """
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"OutboxRelay(owner={self._owner!r}, base_url={str(self._client.base_url)!r})"

    # --- the loop ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        if self._running:
            raise RuntimeError("this relay is already running")
        self._running = True
        self._resume_at = 0.0
        self._busy = 0
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        if self._draining or self._stop_after_batch:
            self._stopping.set()  # stop() came before the task got going
        if self._config.metrics and self._metrics is None:
            self._metrics = metrics_for(self._registry)
        try:
            yield
        finally:
            self._running = False
            self._wake = None
            self._stopping = None
            self._loop = None
            self._draining = False
            self._stop_after_batch = False

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
                # A bug or a misuse (a closed client): keep the relay alive and say so. The
                # rows of the batch keep their lease and are claimable again once it expires.
                self._consecutive_failures += 1
                self._log.log(
                    logging.ERROR,
                    f"unexpected {type(exc).__name__}",
                    "relay %s failed unexpectedly: %r",
                    self._owner,
                    exc,
                    exc_info=True,
                )
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

    async def _wait(self, seconds: float) -> None:
        wake = self._wake
        if wake is None or wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (through the injectable sleep), cut short only by a stop."""
        stopping = self._stopping
        if stopping is None or stopping.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (sleeper, stopper):
                future.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    def _failure_pause(self, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self._config.max_pause)
        low, high = self._config.backoff.bounds(self._consecutive_failures)
        return low + (high - low) * random.random()

    # --- one batch --------------------------------------------------------------------------

    async def _deliver(self, items: list[OutboxItem]) -> float:
        """Send one claimed batch and settle every row; returns how long to pause after it."""
        settlement = _Settlement()
        try:
            deadline = self._clock() + self._config.lease_seconds * _SEND_SHARE
            await self._send(items, settlement, deadline)
            return await self._settle(items, settlement)
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

    async def _send(
        self, items: Sequence[OutboxItem], settlement: _Settlement, deadline: float
    ) -> None:
        if settlement.failure is not None:
            # An earlier part of this batch failed in a way worth retrying: do not hammer on.
            settlement.failed.extend(item.id for item in items)
            return
        remaining = deadline - self._clock()
        if remaining <= 0:
            self._fail(settlement, items, "lease", "no answer within the batch's lease", None)
            return
        try:
            async with asyncio.timeout(remaining):
                response = await self._client.audit_ingest_raw(
                    [(item.event_id, item.payload) for item in items]
                )
        except TimeoutError:
            self._fail(
                settlement, items, "timeout", f"no answer within {remaining:.1f} s (lease)", None
            )
            return
        except TelemetryError as exc:
            status = _status_of(exc)
            if status is not None and 400 <= status < 500 and not self._is_retryable(status):
                await self._refused(items, settlement, deadline, exc, status)
            else:
                key = f"HTTP {status}" if status is not None else _error_kind(exc)
                self._fail(settlement, items, key, str(exc), getattr(exc, "retry_after", None))
            return
        except (TypeError, ValueError) as exc:
            # The envelope could not even be built: a row whose JSON is not an object on its
            # face. That is the row's fault alone; find it and set it aside, send the rest.
            if len(items) == 1:
                settlement.rejected[items[0].id] = f"cannot be sent: {exc}"
                return
            middle = len(items) // 2
            for half in (items[:middle], items[middle:]):
                await self._send(half, settlement, deadline)
            return
        settlement.answered += 1
        self._batches += 1
        for item, result in zip(items, response.results, strict=True):
            if result.status is IngestStatus.REJECTED:
                settlement.rejected[item.id] = f"rejected by Telemetry: {result.error}"
            else:
                settlement.delivered.append(item.id)

    async def _refused(
        self,
        items: Sequence[OutboxItem],
        settlement: _Settlement,
        deadline: float,
        exc: TelemetryError,
        status: int,
    ) -> None:
        reason = f"refused by Telemetry: {exc}"
        if status not in SPLIT_STATUSES:
            # 401, 403, 404, 405, ...: about us or Telemetry's setup, never about the events.
            self._fail(settlement, items, f"HTTP {status}", reason, None)
            return
        if len(items) == 1:
            settlement.refused[items[0].id] = reason
            return
        budget = self._config.max_split_requests
        middle = len(items) // 2
        for half in (items[:middle], items[middle:]):
            if not settlement.answered and settlement.split_requests >= budget:
                # Nothing of this batch got through yet: most likely Telemetry refuses
                # everything, so stop looking for a broken event.
                self._fail(settlement, half, f"HTTP {status}", reason, None)
                continue
            settlement.split_requests += 1
            await self._send(half, settlement, deadline)

    def _fail(
        self,
        settlement: _Settlement,
        items: Sequence[OutboxItem],
        key: str,
        reason: str,
        retry_after: float | None,
    ) -> None:
        settlement.failed.extend(item.id for item in items)
        if settlement.failure is None:
            settlement.failure = reason
            settlement.failure_key = key
            settlement.retry_after = retry_after

    async def _settle(self, items: Sequence[OutboxItem], settlement: _Settlement) -> float:
        outbox, owner = self._outbox, self._owner
        by_id = {item.id: item for item in items}
        dead = dict(settlement.rejected)
        retry = list(settlement.failed)
        if settlement.refused:
            for row_id, reason in settlement.refused.items():
                # Pinned to one event: its fault if Telemetry took others from this batch, or
                # if it is bigger than any batch may be; otherwise Telemetry's.
                oversized = by_id[row_id].size > self._config.max_batch_bytes
                if settlement.answered or oversized:
                    dead[row_id] = reason
                else:
                    retry.append(row_id)
            if not settlement.answered and settlement.failure is None:
                settlement.failure = next(iter(settlement.refused.values()))
                settlement.failure_key = "refused"
        if settlement.delivered:
            await outbox.ack(settlement.delivered, owner=owner)
            self._delivered += len(settlement.delivered)
            if self._metrics is not None:
                self._metrics.delivered.inc(len(settlement.delivered))
        if dead:
            count = await outbox.dead_letter_many(dead, owner=owner)
            self._dead_lettered += count
            if self._metrics is not None:
                self._metrics.dead_lettered.inc(count)
            for row_id, reason in dead.items():
                self._log.log(
                    logging.WARNING,
                    "dead-letter",
                    "audit event %s dead-lettered (outbox row %d): %s",
                    by_id[row_id].event_id,
                    row_id,
                    reason,
                )
        if not retry:
            if self._consecutive_failures and self._log.clear():
                logger.info("relay %s: delivery to Telemetry works again", self._owner)
            self._consecutive_failures = 0
            return 0.0
        failure = settlement.failure or "delivery failed"
        await outbox.retry_later(retry, failure, owner=owner)
        self._retried += len(retry)
        if self._metrics is not None:
            self._metrics.retried.inc(len(retry))
        self._consecutive_failures += 1
        pause = self._failure_pause(settlement.retry_after)
        self._log.log(
            logging.WARNING,
            settlement.failure_key or "failure",
            "relay %s: %d audit event(s) not delivered, will retry (pausing %.1f s): %s",
            self._owner,
            len(retry),
            pause,
            failure,
        )
        return pause

    def _is_retryable(self, status: int) -> bool:
        return status in self._client.retry.retryable_statuses or status >= 500

    # --- metrics ----------------------------------------------------------------------------

    def _update_gauges(self, pending: int, oldest_age: float, dead_letters: int) -> None:
        if self._metrics is not None:
            self._metrics.pending.set(pending)
            self._metrics.oldest_age.set(oldest_age)
            self._metrics.dead_letters.set(dead_letters)

    async def _refresh_gauges(self) -> None:
        while True:
            try:
                await self.stats()
            except AuditError as exc:
                self._log.log(logging.ERROR, "database", "relay cannot read outbox stats: %s", exc)
            await asyncio.sleep(self._config.stats_interval)


def _status_of(exc: TelemetryError) -> int | None:
    if isinstance(exc, HTTPStatusError):
        return exc.status_code
    if isinstance(exc, RetriesExhausted):
        return exc.status_code
    return None


def _error_kind(exc: TelemetryError) -> str:
    if isinstance(exc, RetriesExhausted):
        return type(exc.last_error).__name__
    return type(exc).__name__
