"""The seam between the relay and whatever it delivers to: ``Exporter.export(batch)``.

Modelled on OpenTelemetry's ``SpanExporter``: the processor (``OutboxRelay``) decides what to
send and when (claims, leases, scheduling, the delivery policy); an exporter sends *one* batch
and says what became of each event, as an :class:`ExportResult`:

* ``delivered`` (the receiver took it) or ``duplicate`` (it already had it): the row is deleted;
* ``rejected`` with a reason: the event itself is bad, the row is dead-lettered (kept);
* any event named by neither: not delivered, rescheduled with the database backoff, for the
  reason given by ``failure`` (an :class:`ExportFailure`, with an optional ``retry_after``).

An ``ExportFailure`` of kind ``"configuration"`` (bad credentials, a wrong URL) says the fault
is ours or the receiver's setup, never the events': they wait in the outbox, the relay logs an
ERROR, and no attempt limit ever dead-letters them.

Anything else an exporter does (raising ``TypeError``, returning something that is not an
``ExportResult``) is a bug, and a bug never dead-letters an event: the relay gives the batch
back, logs the traceback and counts it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from audit_middleware._exceptions import ConfigurationError
from audit_middleware.storage._outbox_types import OutboxItem, check_seconds

__all__ = ["ExportFailure", "ExportResult", "Exporter", "FailureKind"]

FailureKind = Literal["retryable", "configuration"]


@dataclasses.dataclass(frozen=True, slots=True)
class ExportFailure:
    """Why (some of) a batch was not delivered this time; its events are tried again later."""

    reason: str
    """What went wrong, for the log and the rows' ``last_error`` (e.g. ``"HTTP 503: ..."``)."""
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (``Retry-After``), if it did."""
    kind: FailureKind = "retryable"
    """``"retryable"``: the receiver or the network failed; ``"configuration"``: our setup
    (credentials, signature, URL) is wrong, so no attempt limit applies and it logs at ERROR."""
    key: str | None = None
    """A short, stable name of the failure (``"HTTP 503"``) that rate-limits its log line;
    None uses ``reason``."""

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ConfigurationError(
                f"ExportFailure.reason must be a non-empty str, got {self.reason!r}"
            )
        if self.kind not in ("retryable", "configuration"):
            raise ConfigurationError(
                f"ExportFailure.kind must be 'retryable' or 'configuration', got {self.kind!r}"
            )
        if self.retry_after is not None:
            check_seconds("ExportFailure.retry_after", self.retry_after)


@dataclasses.dataclass(frozen=True, slots=True)
class ExportResult:
    """What became of each event of one batch, by outbox row id (``OutboxItem.id``)."""

    delivered: Collection[int] = ()
    """Rows the receiver accepted."""
    duplicates: Collection[int] = ()
    """Rows the receiver already had (delivered before, deduplicated by ``event_id``)."""
    rejected: Mapping[int, str] = dataclasses.field(default_factory=dict)
    """Rows the receiver refused for what they hold, with its reason: dead-lettered."""
    failure: ExportFailure | None = None
    """Why the rows named above by none of the three were not delivered; required when any
    row of the batch is left unnamed."""

    @classmethod
    def success(cls, batch: Sequence[OutboxItem]) -> ExportResult:
        """Every event of ``batch`` delivered."""
        return cls(delivered=[item.id for item in batch])

    @classmethod
    def failed(
        cls,
        reason: str,
        *,
        retry_after: float | None = None,
        kind: FailureKind = "retryable",
        key: str | None = None,
    ) -> ExportResult:
        """Nothing of the batch delivered, for ``reason``: all of it is tried again later."""
        return cls(failure=ExportFailure(reason, retry_after=retry_after, kind=kind, key=key))


@runtime_checkable
class Exporter(Protocol):
    """Sends one batch of outbox items somewhere and reports each event's outcome.

    ``export`` is called with at most ``RelayConfig.batch_size`` items (at most
    ``max_batch_bytes`` of event JSON, or one larger item alone), one call at a time per
    batch loop, each bounded by three quarters of the batch's lease (a call still running
    then is cancelled and its batch rescheduled). It may split the batch into several
    requests. It must not raise for a failure it can classify: return
    ``ExportResult.failed(...)`` instead. The caller keeps ownership of the exporter (and of
    any client it wraps): the relay neither opens nor closes it.
    """

    async def export(self, batch: Sequence[OutboxItem]) -> ExportResult:
        """Send ``batch`` (oldest first) and say what became of each of its events."""
        ...
