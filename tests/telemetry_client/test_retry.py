"""RetryPolicy: backoff with full jitter, Retry-After, attempts and deadline, on tenacity."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import tenacity

from telemetry_client import (
    ClientError,
    ConnectError,
    DeadlineExceeded,
    RateLimitedError,
    RetriesExhausted,
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
    TelemetryError,
    parse_http_date,
    parse_retry_after,
)


class FakeTime:
    """A clock that only moves when the policy sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def make_policy(time: FakeTime, **changes: object) -> RetryPolicy:
    values: dict[str, object] = {
        "sleep": time.sleep,
        "async_sleep": time.async_sleep,
        "clock": time.clock,
        "random": lambda: 1.0,  # the top of the jitter range: waits are the ceilings
        **changes,
    }
    return RetryPolicy(**values)  # type: ignore[arg-type]


def unavailable(retry_after: float | None = None) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "503 Service Unavailable", status_code=503, body="busy", retry_after=retry_after
    )


def failing_then(
    errors: list[Exception], result: str = "ok", time: FakeTime | None = None, cost: float = 0.0
) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(len(calls) + 1)
        if time is not None:
            time.now += cost
        if errors:
            raise errors.pop(0)
        return result

    return attempt, calls


# compute_wait ------------------------------------------------------------------------------


def test_compute_wait_doubles_the_ceiling_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_wait=0.5, max_wait=5.0, random=lambda: 1.0)
    waits = [policy.compute_wait(n) for n in range(1, 8)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_compute_wait_full_jitter_spans_zero_to_the_ceiling() -> None:
    source = random.Random(1234)
    policy = RetryPolicy(initial_wait=1.0, max_wait=8.0, random=source.random)
    for attempt, ceiling in [(1, 1.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        draws = [policy.compute_wait(attempt) for _ in range(2000)]
        assert all(0.0 <= wait <= ceiling for wait in draws)
        # Full jitter uses the whole range, not a band near the ceiling.
        assert min(draws) < 0.05 * ceiling
        assert max(draws) > 0.95 * ceiling


def test_compute_wait_with_zero_draw_is_zero() -> None:
    assert RetryPolicy(random=lambda: 0.0).compute_wait(5) == 0.0


def test_compute_wait_retry_after_is_a_minimum() -> None:
    policy = RetryPolicy(initial_wait=1.0, max_wait=30.0, random=lambda: 0.0)
    assert policy.compute_wait(1, retry_after=7.0) == 7.0
    # A longer jittered wait is kept: Retry-After only raises the wait.
    longer = RetryPolicy(initial_wait=1.0, max_wait=30.0, random=lambda: 1.0)
    assert longer.compute_wait(5, retry_after=3.0) == 16.0


def test_compute_wait_retry_after_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=20.0, random=lambda: 0.0)
    assert policy.compute_wait(1, retry_after=3600.0) == 20.0
    assert policy.compute_wait(1, retry_after=-5.0) == 0.0


def test_compute_wait_huge_attempt_stays_finite() -> None:
    assert RetryPolicy(random=lambda: 1.0).compute_wait(100_000) == 30.0


@pytest.mark.parametrize("attempt", [0, -1, True, 1.5])
def test_compute_wait_rejects_bad_attempt(attempt: object) -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().compute_wait(attempt)  # type: ignore[arg-type]


# validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"initial_wait": -1}, "initial_wait"),
        ({"max_wait": 0.1, "initial_wait": 1.0}, "max_wait"),
        ({"max_retry_after": float("nan")}, "max_retry_after"),
        ({"retryable_statuses": frozenset({200})}, "200"),
        ({"retryable_statuses": frozenset({99})}, "99"),
    ],
)
def test_retry_policy_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**changes)  # type: ignore[arg-type]


def test_retry_policy_rejects_non_numeric_wait() -> None:
    with pytest.raises(TypeError, match="max_wait"):
        RetryPolicy(max_wait="10")  # type: ignore[arg-type]


def test_retry_policy_is_a_replaceable_value() -> None:
    policy = RetryPolicy()
    shorter = dataclasses.replace(policy, max_attempts=3, retryable_statuses={503})  # type: ignore[arg-type]
    assert shorter.max_attempts == 3
    assert shorter.retryable_statuses == frozenset({503})
    assert policy.max_attempts == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 2  # type: ignore[misc]
    assert RetryPolicy.none().max_attempts == 1


def test_retry_policy_default_retryable_statuses() -> None:
    assert RetryPolicy().retryable_statuses == {408, 425, 429, 500, 502, 503, 504}


def test_retry_policy_is_retryable_sorts_failures() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(ConnectError("refused"))
    assert policy.is_retryable(unavailable())
    assert not policy.is_retryable(ClientError("400", status_code=400, body=""))
    assert not policy.is_retryable(ServerError("501", status_code=501, body=""))
    assert not policy.is_retryable(KeyError("x"))


# call --------------------------------------------------------------------------------------


def test_call_retries_then_returns_with_the_computed_waits() -> None:
    time = FakeTime()
    policy = make_policy(time, initial_wait=0.25)
    attempt, calls = failing_then([unavailable(), ConnectError("refused")])
    assert policy.call(attempt) == "ok"
    assert calls == [1, 2, 3]
    assert time.sleeps == [0.25, 0.5]


def test_call_honours_retry_after_of_the_failed_attempt() -> None:
    time = FakeTime()
    policy = make_policy(time, random=lambda: 0.0)
    attempt, _ = failing_then([unavailable(retry_after=4.0)])
    assert policy.call(attempt) == "ok"
    assert time.sleeps == [4.0]


def test_call_raises_a_non_retryable_error_at_once() -> None:
    time = FakeTime()
    error = ClientError("400 Bad Request", status_code=400, body="bad")
    attempt, calls = failing_then([error])
    with pytest.raises(ClientError) as caught:
        make_policy(time).call(attempt)
    assert caught.value is error
    assert calls == [1]
    assert time.sleeps == []


def test_call_lets_foreign_errors_through_untouched() -> None:
    attempt, calls = failing_then([KeyError("bug")])
    with pytest.raises(KeyError):
        make_policy(FakeTime()).call(attempt)
    assert calls == [1]


def test_call_stops_after_max_attempts() -> None:
    time = FakeTime()
    policy = make_policy(time, max_attempts=4, deadline=None)
    errors: list[Exception] = [unavailable(retry_after=1.0) for _ in range(10)]
    last = errors[3]
    attempt, calls = failing_then(errors)
    with pytest.raises(RetriesExhausted) as caught:
        policy.call(attempt)
    exhausted = caught.value
    assert type(exhausted) is RetriesExhausted
    assert calls == [1, 2, 3, 4]
    assert len(time.sleeps) == 3
    assert exhausted.attempts == 4
    assert exhausted.last_error is last
    assert exhausted.__cause__ is last
    assert exhausted.retry_after == 1.0
    assert exhausted.status_code == 503
    assert not isinstance(exhausted, tenacity.RetryError)
    assert "4 attempt(s)" in str(exhausted)


def test_call_none_policy_tries_once_and_still_reports_retry_after() -> None:
    time = FakeTime()
    error = RateLimitedError("429", status_code=429, body="", retry_after=30.0)
    attempt, calls = failing_then([error])
    with pytest.raises(RetriesExhausted) as caught:
        dataclasses.replace(RetryPolicy.none(), sleep=time.sleep).call(attempt)
    assert calls == [1]
    assert time.sleeps == []
    assert caught.value.retry_after == 30.0
    assert caught.value.last_error is error


def test_call_transport_error_has_no_retry_after() -> None:
    attempt, _ = failing_then([ConnectError("refused") for _ in range(3)])
    with pytest.raises(RetriesExhausted) as caught:
        make_policy(FakeTime(), max_attempts=3).call(attempt)
    assert caught.value.retry_after is None
    assert caught.value.status_code is None
    assert isinstance(caught.value.last_error, ConnectError)


def test_call_deadline_stops_before_max_attempts() -> None:
    time = FakeTime()
    # Waits 0.5, 1, 2, 4 end at 7.5 s; the next (8 s) would end past the 10 s deadline.
    policy = make_policy(time, max_attempts=8, deadline=10.0, initial_wait=0.5)
    attempt, calls = failing_then([unavailable() for _ in range(8)])
    with pytest.raises(DeadlineExceeded) as caught:
        policy.call(attempt)
    assert calls == [1, 2, 3, 4, 5]
    assert time.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert caught.value.attempts == 5
    assert isinstance(caught.value, RetriesExhausted)
    assert time.now - 1000.0 < 10.0


def test_call_deadline_counts_the_time_attempts_take() -> None:
    time = FakeTime()
    policy = make_policy(time, deadline=10.0, initial_wait=0.5)
    attempt, calls = failing_then([unavailable() for _ in range(8)], time=time, cost=6.0)
    with pytest.raises(DeadlineExceeded):
        policy.call(attempt)
    assert calls == [1, 2]


def test_call_deadline_does_not_wait_out_a_retry_after_it_cannot_use() -> None:
    time = FakeTime()
    policy = make_policy(time, deadline=10.0, max_retry_after=60.0)
    attempt, calls = failing_then([unavailable(retry_after=45.0), unavailable()])
    with pytest.raises(DeadlineExceeded) as caught:
        policy.call(attempt)
    assert calls == [1]
    assert time.sleeps == []
    assert caught.value.retry_after == 45.0


@pytest.mark.anyio
async def test_acall_retries_with_the_async_sleep() -> None:
    time = FakeTime()
    policy = make_policy(time, sleep=None)  # the sync sleep must not be used
    errors: list[Exception] = [unavailable(), ConnectError("refused")]

    async def attempt() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    assert await policy.acall(attempt) == "ok"
    assert time.sleeps == [0.5, 1.0]


@pytest.mark.anyio
async def test_acall_raises_retries_exhausted() -> None:
    time = FakeTime()
    error = unavailable(retry_after=2.0)

    async def attempt() -> str:
        raise error

    with pytest.raises(RetriesExhausted) as caught:
        await make_policy(time, max_attempts=2).acall(attempt)
    assert caught.value.last_error is error
    assert caught.value.attempts == 2
    assert time.sleeps == [2.0]


def test_retries_exhausted_is_a_telemetry_error() -> None:
    assert issubclass(RetriesExhausted, TelemetryError)
    assert issubclass(DeadlineExceeded, RetriesExhausted)


# parse_retry_after -------------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),  # RFC 850
        ("Wed Oct 21 07:28:05 2015", 5.0),  # asctime
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past
        ("-1", None),
        ("soon", None),
        ("", None),
        ("inf", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_parse_retry_after_date_defaults_to_the_current_time() -> None:
    later = datetime.now(UTC) + timedelta(seconds=100)
    value = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = parse_retry_after(value)
    assert seconds is not None
    assert 95.0 <= seconds <= 100.0


def test_parse_retry_after_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=datetime(2015, 10, 21))


def test_parse_http_date() -> None:
    assert parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT") == NOW
    assert parse_http_date("Wed, 21 Oct 2015 07:28:00 -0000") == NOW
    assert parse_http_date("not a date") is None
    assert parse_http_date(None) is None
