"""A logger that says a persistent failure once a minute, not once a batch.

A relay that cannot reach Telemetry fails every few seconds for as long as the outage lasts;
logging each failure would bury everything else in the log. ``RateLimitedLog`` keeps, per
*reason* (a short key such as ``"HTTP 503"``), the time it last logged, logs again only once
``interval`` seconds have passed, and then says how many similar messages it held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimitedLog"]


@dataclass
class _Reason:
    last_logged: float
    suppressed: int = 0


class RateLimitedLog:
    """Log each reason at most once per ``interval`` seconds (the clock is injectable)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_reasons: int = 256,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval!r}")
        if max_reasons < 1:
            raise ValueError(f"max_reasons must be >= 1, got {max_reasons!r}")
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._max_reasons = max_reasons
        self._reasons: dict[str, _Reason] = {}

    def log(
        self, level: int, reason: str, message: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log ``message % args`` unless ``reason`` was logged less than ``interval`` ago.

        Returns whether it logged. A message that follows held-back ones ends with how many.
        ``exc_info`` adds the exception being handled, as ``logging`` does.
        """
        now = self._clock()
        seen = self._reasons.get(reason)
        if seen is not None and now - seen.last_logged < self._interval:
            seen.suppressed += 1
            return False
        suppressed = seen.suppressed if seen is not None else 0
        if seen is None and len(self._reasons) >= self._max_reasons:
            # Reasons carry server-supplied text; bound the table so it cannot grow forever.
            oldest = min(self._reasons, key=lambda key: self._reasons[key].last_logged)
            del self._reasons[oldest]
        self._reasons[reason] = _Reason(last_logged=now)
        if suppressed:
            message = f"{message} ({suppressed} similar message(s) suppressed)"
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True

    def clear(self, reason: str | None = None) -> bool:
        """Forget ``reason`` (or every reason), so the next failure is logged at once.

        Returns whether anything was being remembered, which tells a caller that a failure it
        logged has now ended (worth saying once).
        """
        if reason is None:
            had = bool(self._reasons)
            self._reasons.clear()
            return had
        return self._reasons.pop(reason, None) is not None

    @property
    def active_reasons(self) -> frozenset[str]:
        """The reasons logged (and not cleared) so far."""
        return frozenset(self._reasons)
