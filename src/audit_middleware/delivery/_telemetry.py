"""``TelemetryExporter``: one batch to Telemetry's ``/v1/audit/ingest``, each answer classified.

How Telemetry's answers map to outcomes:

* 200 with one result per event: ``accepted`` is delivered, ``duplicate`` a duplicate,
  ``rejected`` is rejected with Telemetry's reason (dead-lettered);
* no connection, a timeout, 408/425/429/5xx (after the client's own brief retries), an answer
  that does not parse: a retryable failure, with Telemetry's ``Retry-After`` if it sent one;
* 400, 413 or 422 (the whole request refused: one bad event spoils it): the batch is split in
  halves, recursively, so the good events go through and each refusal is pinned to one event.
  Such an event is rejected *only* when another request of the same batch was answered (proof
  that Telemetry works and the event is the problem) or when it is bigger than a whole batch
  may be; otherwise the refusal is taken to be Telemetry's (a contract mismatch, a bad
  deploy) and the event is retried, so a broken receiver cannot turn the outbox into dead
  letters. Splitting stops after ``max_split_requests`` requests without any answer;
* any other 4xx (401, 403, 404, ...): a configuration failure (credentials, signature, URL),
  never the events' fault: they stay in the outbox;
* a row whose JSON no envelope can hold (not an object) is rejected at once, unsent.

Anything else (a closed client, a bug) is raised, and the relay leaves the batch in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from audit_middleware._exceptions import ConfigurationError
from audit_middleware.delivery._exporter import Exporter, ExportFailure, ExportResult, FailureKind
from audit_middleware.storage._outbox_types import DEFAULT_MAX_BATCH_BYTES, OutboxItem
from auditevt._ingest import IngestStatus, ingest_envelope_json
from telemetry_client import (
    AsyncTelemetryClient,
    HTTPStatusError,
    RetriesExhausted,
    TelemetryError,
)

__all__ = ["SPLIT_STATUSES", "TelemetryExporter", "resolve_exporter"]

logger = logging.getLogger("audit_middleware.relay")

#: Statuses that refuse a request for what is in it: worth splitting the batch to find out
#: which event is at fault.
SPLIT_STATUSES = frozenset({400, 413, 422})


class TelemetryExporter:
    """Exports outbox batches with an ``AsyncTelemetryClient`` (which the caller owns).

    ``max_batch_bytes`` is the most a batch may hold (an event bigger than that which
    Telemetry refuses is rejected even when nothing else got through); ``max_split_requests``
    bounds the requests a refused batch may spend on splitting before any is answered.
    """

    def __init__(
        self,
        client: AsyncTelemetryClient,
        *,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_split_requests: int = 20,
    ) -> None:
        if not isinstance(client, AsyncTelemetryClient):
            raise ConfigurationError(
                f"client must be an AsyncTelemetryClient, got {type(client).__name__}"
            )
        if isinstance(max_batch_bytes, bool) or not isinstance(max_batch_bytes, int):
            raise ConfigurationError(f"max_batch_bytes must be an int, got {max_batch_bytes!r}")
        splits = max_split_requests
        if isinstance(splits, bool) or not isinstance(splits, int) or splits < 0:
            raise ConfigurationError(f"max_split_requests must be an int >= 0, got {splits!r}")
        self._client = client
        self._max_batch_bytes = max_batch_bytes
        self._max_split_requests = max_split_requests

    @property
    def client(self) -> AsyncTelemetryClient:
        """The client the batches are sent with."""
        return self._client

    async def export(self, batch: Sequence[OutboxItem]) -> ExportResult:
        """Send ``batch`` (split as Telemetry's answers require) and classify every event."""
        export = _Export(self)
        await export.send(batch)
        return export.result()

    def __repr__(self) -> str:
        return f"TelemetryExporter(base_url={str(self._client.base_url)!r})"

    def _is_retryable(self, status: int) -> bool:
        return status in self._client.retry.retryable_statuses or status >= 500


def resolve_exporter(
    client: AsyncTelemetryClient | None,
    exporter: Exporter | None,
    *,
    max_batch_bytes: int,
    max_split_requests: int,
    send_budget: float,
) -> Exporter:
    """``exporter``, or a :class:`TelemetryExporter` on ``client``: exactly one must be given.

    A client whose retries may outlast ``send_budget`` (the seconds a batch may take) is
    logged once: the outbox's backoff, not the client's, is the one meant for long outages.
    """
    if (client is None) == (exporter is None):
        raise ConfigurationError(
            "give OutboxRelay either client= or exporter=, not both nor neither"
        )
    if client is not None:
        telemetry = TelemetryExporter(
            client, max_batch_bytes=max_batch_bytes, max_split_requests=max_split_requests
        )
        deadline = client.retry.deadline
        if deadline is None or deadline > send_budget:
            logger.warning(
                "the relay's client may retry for %s, longer than the %.0f s a batch may take: "
                "give it a brief RetryPolicy (auditevt relay uses 4 attempts within 15 s); "
                "the outbox's backoff covers long outages",
                "ever" if deadline is None else f"{deadline:.0f} s",
                send_budget,
            )
        return telemetry
    if exporter is None or not callable(getattr(exporter, "export", None)):
        raise ConfigurationError(f"exporter={exporter!r} has no export(batch) method")
    return exporter


class _Export:
    """The state of one ``export()`` call: what each request of the batch came to."""

    def __init__(self, exporter: TelemetryExporter) -> None:
        self.exporter = exporter
        self.delivered: list[int] = []
        self.duplicates: list[int] = []
        self.rejected: dict[int, str] = {}
        self.refused: dict[int, tuple[str, bool]] = {}  # row id -> (reason, oversized)
        self.failure: ExportFailure | None = None
        self.answered = 0
        self.split_requests = 0

    def result(self) -> ExportResult:
        failure = self.failure
        for row_id, (reason, oversized) in self.refused.items():
            # Pinned to one event: its fault if Telemetry took others of this batch, or if it
            # is bigger than any batch may be; otherwise Telemetry's, and retried.
            if self.answered or oversized:
                self.rejected[row_id] = reason
            elif failure is None:
                failure = ExportFailure(reason, key="refused")
        return ExportResult(
            delivered=self.delivered,
            duplicates=self.duplicates,
            rejected=self.rejected,
            failure=failure,
        )

    def fail(
        self,
        reason: str,
        key: str,
        *,
        retry_after: float | None = None,
        kind: FailureKind = "retryable",
    ) -> None:
        if self.failure is None:
            self.failure = ExportFailure(reason, retry_after=retry_after, kind=kind, key=key)

    async def send(self, items: Sequence[OutboxItem]) -> None:
        if self.failure is not None:
            return  # an earlier part of this batch failed in a way worth retrying: stop here
        exporter = self.exporter
        try:
            response = await exporter.client.audit_ingest_raw(
                [(item.event_id, item.payload) for item in items]
            )
        except TelemetryError as exc:
            await self._failed(items, exc)
            return
        except (TypeError, ValueError):
            # The envelope could not be built. If a row's JSON is not an object on its face,
            # that is the row's fault alone: set it aside and send the rest. If no row is at
            # fault on its own, this is a bug, and bugs never dead-letter: raise.
            unsendable = _unsendable(items)
            if not unsendable:
                raise
            self.rejected.update(unsendable)
            rest = [item for item in items if item.id not in unsendable]
            if rest:
                await self.send(rest)
            return
        self.answered += 1
        for item, answer in zip(items, response.results, strict=True):
            if answer.status is IngestStatus.ACCEPTED:
                self.delivered.append(item.id)
            elif answer.status is IngestStatus.DUPLICATE:
                self.duplicates.append(item.id)
            else:
                self.rejected[item.id] = f"rejected by Telemetry: {answer.error}"

    async def _failed(self, items: Sequence[OutboxItem], exc: TelemetryError) -> None:
        exporter = self.exporter
        status = _status_of(exc)
        retry_after = getattr(exc, "retry_after", None)
        if status is None or not 400 <= status < 500 or exporter._is_retryable(status):
            key = f"HTTP {status}" if status is not None else _error_kind(exc)
            self.fail(str(exc), key, retry_after=retry_after)
            return
        reason = f"refused by Telemetry: {exc}"
        if status not in SPLIT_STATUSES:
            # 401, 403, 404, 405, ...: about our setup or Telemetry's, never about the events.
            self.fail(reason, f"HTTP {status}", kind="configuration")
            return
        if len(items) == 1:
            (item,) = items
            self.refused[item.id] = (reason, item.size > exporter._max_batch_bytes)
            return
        middle = len(items) // 2
        for half in (items[:middle], items[middle:]):
            if not self.answered and self.split_requests >= exporter._max_split_requests:
                # Nothing of this batch got through yet: most likely Telemetry refuses
                # everything, so stop looking for a broken event.
                self.fail(reason, f"HTTP {status}")
                return
            self.split_requests += 1
            await self.send(half)


def _unsendable(items: Sequence[OutboxItem]) -> dict[int, str]:
    """The rows that no envelope can hold, each with the envelope's complaint."""
    found: dict[int, str] = {}
    for item in items:
        try:
            ingest_envelope_json([(item.event_id, item.payload)])
        except (TypeError, ValueError) as exc:
            found[item.id] = f"cannot be sent: {exc}"
    return found


def _status_of(exc: TelemetryError) -> int | None:
    if isinstance(exc, HTTPStatusError | RetriesExhausted):
        return exc.status_code
    return None


def _error_kind(exc: TelemetryError) -> str:
    if isinstance(exc, RetriesExhausted):
        return type(exc.last_error).__name__
    return type(exc).__name__
