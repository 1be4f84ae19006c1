"""Settling one exported batch in the outbox, as the delivery policy says.

An :class:`ExportResult` names what became of each event; here that becomes one ``ack`` (the
delivered and the duplicates), one ``dead_letter_many`` (the rejected, and with an attempt limit
the events that reached it) and one ``retry_later`` (everything else). Only the lease owner's
rows are touched. :func:`check_result` holds an exporter to its protocol: a result that does
not fit the batch is a bug, and bugs never dead-letter.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from audit_middleware._ratelimit_log import RateLimitedLog
from audit_middleware.delivery._exporter import ExportFailure, ExportResult
from audit_middleware.delivery._policy import DeliveryPolicy
from audit_middleware.storage._outbox import Outbox
from audit_middleware.storage._outbox_types import OutboxItem

__all__ = ["Settled", "check_result", "settle"]


@dataclasses.dataclass(frozen=True, slots=True)
class Settled:
    """What settling one batch did."""

    delivered: int
    """Rows acknowledged (delivered or duplicate) and deleted."""
    dead_lettered: int
    """Rows dead-lettered by this settlement."""
    retried: int
    """Rows rescheduled."""
    failure: ExportFailure | None
    """Why the rescheduled rows were not delivered (None when none was rescheduled)."""


def check_result(batch: Sequence[OutboxItem], result: object) -> ExportResult:
    """``result`` if it is an ``ExportResult`` that fits ``batch``; else TypeError/ValueError."""
    if not isinstance(result, ExportResult):
        raise TypeError(f"an exporter must return an ExportResult, got {type(result).__name__}")
    ids = {item.id for item in batch}
    named: set[int] = set()
    for part in (result.delivered, result.duplicates, result.rejected):
        for row_id in part:
            if row_id not in ids:
                raise ValueError(f"the ExportResult names row {row_id!r}, not in the batch")
            if row_id in named:
                raise ValueError(f"the ExportResult names row {row_id!r} twice")
            named.add(row_id)
    if len(named) < len(ids) and result.failure is None:
        raise ValueError(
            f"the ExportResult leaves {len(ids) - len(named)} event(s) unsettled without a failure"
        )
    return result


async def settle(
    outbox: Outbox,
    owner: str,
    batch: Sequence[OutboxItem],
    result: ExportResult,
    policy: DeliveryPolicy,
    log: RateLimitedLog,
) -> Settled:
    """Apply ``result`` (checked with :func:`check_result`) to the outbox rows of ``batch``."""
    by_id = {item.id: item for item in batch}
    done = [*result.delivered, *result.duplicates]
    dead: dict[int, str] = {}
    retry: list[int] = []
    for row_id, reason in result.rejected.items():
        if policy.dead_letter_rejected:
            dead[row_id] = reason
        else:
            retry.append(row_id)
    failure = result.failure
    named = set(done) | set(result.rejected)
    configuration = failure is not None and failure.kind == "configuration"
    for item in batch:
        if item.id in named:
            continue
        if not configuration and failure is not None and policy.gives_up(item.attempts):
            dead[item.id] = f"gave up after {item.attempts + 1} attempts: {failure.reason}"
        else:
            retry.append(item.id)
    if retry and failure is None:  # rejected events that the policy retries
        failure = ExportFailure(next(iter(result.rejected.values())), key="rejected")

    delivered = await outbox.ack(done, owner=owner) if done else 0
    dead_lettered = 0
    if dead:
        dead_lettered = await outbox.dead_letter_many(dead, owner=owner)
        for row_id, reason in dead.items():
            log.log(
                logging.WARNING,
                "dead-letter",
                "audit event %s dead-lettered (outbox row %d): %s",
                by_id[row_id].event_id,
                row_id,
                reason,
            )
    retried = 0
    if retry and failure is not None:
        min_delay = 0.0
        if failure.retry_after is not None:
            # The rows wait as long as the receiver asked too, so that no relay sharing this
            # outbox sends them sooner.
            min_delay = min(failure.retry_after, policy.max_pause)
        retried = await outbox.retry_later(
            retry,
            failure.reason,
            owner=owner,
            min_delay=min_delay,
            backoff=policy.backoff,
            counted=not configuration,
        )
    return Settled(
        delivered=delivered,
        dead_lettered=dead_lettered,
        retried=retried if retry else 0,
        failure=failure if retry else None,
    )
