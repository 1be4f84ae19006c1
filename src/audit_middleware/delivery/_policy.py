"""``DeliveryPolicy``: what dead-letters, the attempt limit, and the one backoff.

There is one backoff, and it is the outbox's (:class:`OutboxBackoff`): computed by the database
from each row's ``attempts`` and written to its ``next_attempt_at``, so it survives restarts and
holds for every relay sharing the outbox. The relay's own pause after a failed batch follows the
same curve. The Telemetry client's ``RetryPolicy`` only bridges a glitch within one batch (a few
attempts within seconds, well inside the lease: see ``RELAY_RETRY``); it is not a second backoff.
"""

from __future__ import annotations

import dataclasses

from audit_middleware._exceptions import ConfigurationError
from audit_middleware.storage._outbox_types import OutboxBackoff, check_seconds

__all__ = ["DeliveryPolicy"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeliveryPolicy:
    """When an undelivered event is tried again, and when it is given up (dead-lettered).

    Only two things dead-letter an event: the receiver's explicit ``rejected`` answer (with
    ``dead_letter_rejected``), and, if ``max_attempts`` is set, that many retryable failures.
    A configuration failure (401, 403, a bad signature) or a bug in an exporter never does.
    """

    backoff: OutboxBackoff = dataclasses.field(default_factory=OutboxBackoff)
    """The one backoff: how long a row waits after its n-th failed delivery (in database time),
    and how long the relay pauses after a failure when the receiver did not say."""
    max_pause: float = 300.0
    """The longest a receiver's ``Retry-After`` can pause the relay (and delay the rows)."""
    max_attempts: int | None = None
    """Failed deliveries after which an event is dead-lettered; None (the default) retries
    for as long as it takes: an outage of any length loses nothing."""
    dead_letter_rejected: bool = True
    """Dead-letter an event the receiver answered ``rejected``; False reschedules it like a
    failure (for a receiver known to reject transiently)."""

    def __post_init__(self) -> None:
        if not isinstance(self.backoff, OutboxBackoff):
            raise ConfigurationError(
                f"DeliveryPolicy.backoff must be an OutboxBackoff, got {self.backoff!r}"
            )
        check_seconds("DeliveryPolicy.max_pause", self.max_pause)
        limit = self.max_attempts
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ConfigurationError(
                f"DeliveryPolicy.max_attempts must be an int >= 1 or None, got {limit!r}"
            )
        if not isinstance(self.dead_letter_rejected, bool):
            raise ConfigurationError(
                "DeliveryPolicy.dead_letter_rejected must be a bool, "
                f"got {self.dead_letter_rejected!r}"
            )

    def gives_up(self, attempts: int) -> bool:
        """Whether an event that has failed ``attempts`` times before this failure is given up."""
        return self.max_attempts is not None and attempts + 1 >= self.max_attempts

    def pause(self, failures: int, retry_after: float | None, unit: float) -> float:
        """The relay's pause after ``failures`` failures in a row: ``Retry-After`` (capped by
        ``max_pause``) when given, else a point of the backoff's range picked by ``unit``
        (a uniform draw from [0, 1))."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_pause)
        low, high = self.backoff.bounds(failures)
        return low + (high - low) * unit
