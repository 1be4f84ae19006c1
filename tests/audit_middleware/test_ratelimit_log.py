"""RateLimitedLog: one message per reason per interval, with an injected clock."""

from __future__ import annotations

import logging

import pytest

from audit_middleware._ratelimit_log import RateLimitedLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ratelimitedlog_logs_each_reason_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), interval=60.0, clock=clock)
    caplog.set_level(logging.WARNING, "test.ratelimit")

    assert log.log(logging.WARNING, "HTTP 503", "down: %s", "first")
    for second in range(1, 60):
        clock.now = 1000.0 + second
        assert not log.log(logging.WARNING, "HTTP 503", "down: %s", "again")
    assert log.log(logging.WARNING, "HTTP 429", "slow down")  # another reason is not held back
    clock.now = 1060.0
    assert log.log(logging.WARNING, "HTTP 503", "down: %s", "still")

    assert [record.getMessage() for record in caplog.records] == [
        "down: first",
        "slow down",
        "down: still (59 similar message(s) suppressed)",
    ]


def test_ratelimitedlog_clear_reports_whether_a_failure_was_active() -> None:
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), clock=clock)
    assert not log.clear()
    log.log(logging.ERROR, "database", "db down")
    assert log.active_reasons == {"database"}
    assert log.clear("database")
    assert log.log(logging.ERROR, "database", "db down")  # logged at once after clearing
    assert log.clear()
    assert log.active_reasons == frozenset()


def test_ratelimitedlog_bounds_the_reasons_it_remembers() -> None:
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), clock=clock, max_reasons=3)
    for number in range(10):
        clock.now += 1
        log.log(logging.INFO, f"reason {number}", "x")
    assert log.active_reasons == {"reason 7", "reason 8", "reason 9"}


def test_ratelimitedlog_checks_its_arguments() -> None:
    logger = logging.getLogger("test.ratelimit")
    with pytest.raises(ValueError, match="interval must be >= 0, got -1"):
        RateLimitedLog(logger, interval=-1)
    with pytest.raises(ValueError, match="max_reasons must be >= 1, got 0"):
        RateLimitedLog(logger, max_reasons=0)
