"""The retry policy: a value the caller can replace, carried out by tenacity.

A failed attempt is retried when it is a ``TransportError`` (including timeouts) or an
``HTTPStatusError`` whose status is in ``retryable_statuses``. The wait before attempt n + 1 is
"full jitter" exponential backoff, ``uniform(0, min(max_wait, initial_wait * 2 ** (n - 1)))``,
raised to the server's ``Retry-After`` when it asked for more (itself capped by
``max_retry_after``). Trying stops after ``max_attempts`` attempts or when the next attempt
could not start before ``deadline``, whichever comes first, and then raises
``RetriesExhausted`` (or ``DeadlineExceeded``) carrying the last failure.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import tenacity

from auditevt._checks import check_seconds
from telemetry_client._exceptions import (
    ConfigurationError,
    DeadlineExceeded,
    HTTPStatusError,
    RetriesExhausted,
    TelemetryError,
    TransportError,
)

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_http_date", "parse_retry_after"]

T = TypeVar("T")

logger = logging.getLogger("telemetry_client")

#: The statuses retried by default: request timeout, too early, rate limited, and the 5xx that
#: mean "not now" rather than "never".
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """The seconds a ``Retry-After`` header value asks to wait, or None when it says nothing.

    ``value`` is either delay-seconds (``"120"``) or an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), which is measured from ``now`` (default: the
    current time; pass the answer's ``Date`` header to be immune to clock skew). A date in the
    past means 0. A value that is neither is ignored (None), as RFC 9110 asks.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    when = parse_http_date(text)
    if when is None:
        return None
    reference = now if now is not None else datetime.now(UTC)
    if reference.tzinfo is None:
        raise ConfigurationError(f"now must be timezone-aware, got {reference!r}")
    return max(0.0, (when - reference).total_seconds())


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``) as an aware datetime, or None."""
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    # "-0000" and the obsolete forms come back naive: HTTP dates are always UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class _PolicyWait(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        retry_after = error.retry_after if isinstance(error, HTTPStatusError) else None
        return self.policy.compute_wait(retry_state.attempt_number, retry_after)


class _StopBeforeDeadline(tenacity.stop.stop_base):
    """Stop when the upcoming sleep would end at or past the deadline.

    Unlike ``tenacity.stop_before_delay`` it reads the policy's clock, so that tests with an
    injected sleep can advance time without really waiting.
    """

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock
        self.start = clock()

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = self.clock() - self.start
        return elapsed + retry_state.upcoming_sleep >= self.deadline


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a client retries: attempts, deadline, backoff, and which failures to repeat.

    Replace any part with ``dataclasses.replace(policy, max_attempts=3)``, or pass
    ``RetryPolicy.none()`` to try once. ``sleep``, ``async_sleep``, ``random`` and ``clock``
    are injectable so that tests never really wait.
    """

    max_attempts: int = 8
    """Attempts in all, the first included (1 means no retries)."""
    deadline: float | None = 60.0
    """Seconds from the first attempt after which no new attempt starts (None: no deadline)."""
    initial_wait: float = 0.5
    """The backoff ceiling after the first failure; it doubles with every further failure."""
    max_wait: float = 30.0
    """The cap of the backoff ceiling, in seconds."""
    max_retry_after: float = 60.0
    """The most a server's ``Retry-After`` can make the client wait, in seconds."""
    retryable_statuses: frozenset[int] = RETRYABLE_STATUSES
    """HTTP statuses worth another attempt; any other non-2xx status raises at once."""
    sleep: Callable[[float], None] = time.sleep
    """How the synchronous client waits between attempts."""
    async_sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    """How the asynchronous client waits between attempts."""
    random: Callable[[], float] = _random.random
    """A source of uniform floats in [0, 1) for the jitter."""
    clock: Callable[[], float] = time.monotonic
    """A monotonic clock in seconds, for the deadline."""

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if self.deadline is not None:
            check_seconds("deadline", self.deadline, positive=True, error=ConfigurationError)
        check_seconds("initial_wait", self.initial_wait, error=ConfigurationError)
        check_seconds("max_wait", self.max_wait, error=ConfigurationError)
        check_seconds("max_retry_after", self.max_retry_after, error=ConfigurationError)
        if self.max_wait < self.initial_wait:
            raise ConfigurationError(
                f"max_wait ({self.max_wait!r}) must be >= initial_wait ({self.initial_wait!r})"
            )
        statuses = frozenset(self.retryable_statuses)
        for status in statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status < 600:
                raise ConfigurationError(f"retryable_statuses holds {status!r}, not an HTTP status")
            if 200 <= status < 300:
                raise ConfigurationError(f"retryable_statuses holds {status!r}, a success status")
        object.__setattr__(self, "retryable_statuses", statuses)

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1)

    def is_retryable(self, error: BaseException) -> bool:
        """Whether this policy makes another attempt after ``error``."""
        if isinstance(error, TransportError):
            return True
        if isinstance(error, HTTPStatusError):
            return error.status_code in self.retryable_statuses
        return False

    def compute_wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first).

        Full jitter: a uniform draw below ``min(max_wait, initial_wait * 2 ** (attempt - 1))``,
        raised to ``min(retry_after, max_retry_after)`` when the server sent a ``Retry-After``.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ConfigurationError(f"attempt must be an int >= 1, got {attempt!r}")
        # 2 ** 63 already dwarfs any cap; bounding the exponent keeps the float finite.
        ceiling = min(self.max_wait, self.initial_wait * 2.0 ** min(attempt - 1, 63))
        wait = self.random() * ceiling
        if retry_after is not None:
            wait = max(wait, min(max(retry_after, 0.0), self.max_retry_after))
        return wait

    def call(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it succeeds or this policy gives up (blocking)."""
        retrying = tenacity.Retrying(sleep=self.sleep, **self._tenacity_arguments())
        return retrying(attempt)

    async def acall(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Await ``attempt()`` until it succeeds or this policy gives up."""
        retrying = tenacity.AsyncRetrying(sleep=self.async_sleep, **self._tenacity_arguments())
        return await retrying(attempt)

    def _tenacity_arguments(self) -> dict[str, Any]:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.max_attempts)
        if self.deadline is not None:
            stop = stop | _StopBeforeDeadline(self.deadline, self.clock)
        return {
            "stop": stop,
            "wait": _PolicyWait(self),
            "retry": tenacity.retry_if_exception(self.is_retryable),
            "before_sleep": _log_retry,
            "retry_error_callback": self._give_up,
        }

    def _give_up(self, retry_state: tenacity.RetryCallState) -> None:
        # Called by tenacity instead of raising its RetryError: ours is the only one callers see.
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if not isinstance(error, TelemetryError):  # only our errors are ever retried
            raise TypeError(f"retry stopped without a TelemetryError, got {error!r}")
        attempts = retry_state.attempt_number
        if attempts >= self.max_attempts:
            raise RetriesExhausted(
                f"gave up after {attempts} attempt(s): {error}",
                last_error=error,
                attempts=attempts,
            ) from error
        raise DeadlineExceeded(
            f"gave up after {attempts} attempt(s): the next one could not start within the "
            f"{self.deadline} s deadline (waiting {retry_state.upcoming_sleep:.3f} s): {error}",
            last_error=error,
            attempts=attempts,
        ) from error


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome is not None else None
    logger.debug(
        "attempt %d failed (%s); retrying in %.3f s",
        retry_state.attempt_number,
        error,
        retry_state.upcoming_sleep,
    )
