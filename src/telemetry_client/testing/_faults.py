"""``FaultInjection``: how badly the Telemetry stand-in behaves, as one immutable value."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable

__all__ = ["Fault", "FaultInjection"]


class Fault(enum.StrEnum):
    """One way a request can fail on purpose."""

    #: 503 Service Unavailable with ``Retry-After``; nothing is stored.
    UNAVAILABLE = "unavailable"
    #: 429 Too Many Requests with ``Retry-After``; nothing is stored.
    RATE_LIMITED = "rate_limited"
    #: 500 Internal Server Error; nothing is stored.
    SERVER_ERROR = "server_error"
    #: The request is handled normally, after ``FaultInjection.slow_latency`` seconds.
    SLOW = "slow"
    #: The request is handled and stored, then the connection is closed half-way through the
    #: answer: the sender sees a protocol error although the batch arrived.
    STORED_THEN_CLOSED = "stored_then_closed"


_ALL_FAULTS = tuple(Fault)


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite number of seconds >= 0")
    return float(value)


@dataclasses.dataclass(frozen=True, slots=True)
class FaultInjection:
    """What the stand-in does wrong, and how often.

    Each request to a faulty endpoint fails with probability ``failure_rate``; the fault is
    drawn uniformly from ``failures``. The draws come from a ``random.Random`` seeded with
    ``seed``, so a run is repeatable for a given order of requests. Give the stand-in a new
    value at any time (``standin.faults = ...``) to change its behaviour while it runs.
    """

    #: Probability from 0 to 1 that a request fails on purpose.
    failure_rate: float = 0.0
    #: The faults to draw from, uniformly (every kind by default).
    failures: tuple[Fault, ...] = _ALL_FAULTS
    #: Seconds added to every answer of a faulty endpoint, failing or not.
    latency: float = 0.0
    #: Seconds the ``SLOW`` fault waits before answering.
    slow_latency: float = 1.0
    #: Whole seconds sent in ``Retry-After`` with 429 and 503; None sends no header.
    retry_after: int | None = 1
    #: Seed of the random draws; None seeds from the operating system.
    seed: int | None = None
    #: The paths faults apply to; None means every endpoint except ``/health``.
    paths: frozenset[str] | None = None

    def __post_init__(self) -> None:
        rate = self.failure_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"failure_rate must be a number from 0 to 1, not {rate!r}")
        if not 0.0 <= rate <= 1.0:  # also false for NaN
            raise ValueError(f"failure_rate={rate!r} must be from 0 to 1")
        object.__setattr__(self, "failure_rate", float(rate))
        object.__setattr__(self, "failures", _faults(self.failures))
        object.__setattr__(self, "latency", _seconds("latency", self.latency))
        object.__setattr__(self, "slow_latency", _seconds("slow_latency", self.slow_latency))
        retry_after = self.retry_after
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0
        ):
            raise ValueError(f"retry_after={retry_after!r} must be whole seconds >= 0, or None")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, not {self.seed!r}")
        if self.paths is not None:
            paths = frozenset(self.paths)
            bad = sorted(p for p in paths if not isinstance(p, str) or not p.startswith("/"))
            if bad:
                raise ValueError(f"paths must be URL paths starting with '/', not {bad[0]!r}")
            object.__setattr__(self, "paths", paths)

    def describe(self) -> str:
        """One line for people: ``failing 33% of requests (unavailable, ...), latency 0 s``."""
        if not self.failure_rate:
            text = "no injected failures"
        else:
            kinds = ", ".join(dict.fromkeys(fault.value for fault in self.failures))
            text = f"failing {self.failure_rate:.0%} of requests ({kinds})"
            if Fault.SLOW in self.failures:
                text += f", slow answers after {self.slow_latency:g} s"
            if self.retry_after is not None:
                text += f", Retry-After {self.retry_after} s"
        if self.latency:
            text += f", {self.latency:g} s latency on every answer"
        return text

    def applies_to(self, path: str) -> bool:
        """Whether requests to ``path`` are subject to these faults."""
        if self.paths is None:
            return path != "/health"
        return path in self.paths


def _faults(values: Iterable[Fault | str]) -> tuple[Fault, ...]:
    if isinstance(values, str):
        raise TypeError(f"failures must be a sequence of Fault values, not the string {values!r}")
    faults: list[Fault] = []
    for value in values:
        try:
            faults.append(Fault(value))
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise ValueError(f"failures holds {value!r}, which is not one of: {known}") from None
    if not faults:
        raise ValueError("failures must name at least one Fault")
    return tuple(faults)
