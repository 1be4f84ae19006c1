"""Timestamp: Go's time.Time in RFC 3339 with nanoseconds and the writer's offset."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ValidationError

from auditevt import Timestamp, _timestamp


class Holder(BaseModel):
    at: Timestamp


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("2026-11-27T10:11:12Z", "2026-11-27T10:11:12Z"),
        ("2026-11-27T10:11:12.120Z", "2026-11-27T10:11:12.12Z"),
        ("2026-11-27T10:11:12.000000000Z", "2026-11-27T10:11:12Z"),
        ("2026-11-27T10:11:12.1234567891Z", "2026-11-27T10:11:12.123456789Z"),
        ("2026-11-27T10:11:12+00:00", "2026-11-27T10:11:12Z"),
        ("2026-11-27T10:11:12-00:00", "2026-11-27T10:11:12Z"),
        ("2024-02-29T23:59:59.5+05:30", "2024-02-29T23:59:59.5+05:30"),
        ("2026-11-30T00:00:00-08:00", "2026-11-30T00:00:00-08:00"),
        ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59.999999999+23:59", "9999-12-31T23:59:59.999999999+23:59"),
    ],
)
def test_timestamp_reads_rfc3339_and_writes_go_canonical(text: str, canonical: str) -> None:
    assert Timestamp.parse(text).isoformat() == canonical
    assert Holder.model_validate_json(f'{{"at": "{text}"}}').at.isoformat() == canonical
    assert Holder(at=text).at.isoformat() == canonical  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T10:11:12",
        "2026-11-27t10:11:12Z",
        "2026-11-27T10:11:12z",
        "2025-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-27T10:60:00Z",
        "2026-11-27T10:11:60Z",
        "2026-11-27T10:11:12+05:60",
        "2026-11-27T10:11:12.Z",
        "2026-11-27T10:11:12,5Z",
        "26-11-27T10:11:12Z",
        "",
    ],
)
def test_timestamp_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Timestamp.parse(text)
    with pytest.raises(ValidationError) as info:
        Holder.model_validate_json(f'{{"at": "{text}"}}')
    assert info.value.errors()[0]["loc"] == ("at",)


def test_timestamp_numbers_are_exact_to_the_nanosecond() -> None:
    stamp = Timestamp.parse("2026-11-27T10:11:12.000000001-08:00")
    assert stamp.nanosecond == 1
    assert stamp.offset_seconds == -8 * 3600
    assert stamp.unix_ns == 1_795_803_072_000_000_001
    assert Timestamp.from_unix_ns(stamp.unix_ns, stamp.offset_seconds) == stamp


def test_timestamp_equality_is_instant_and_offset_ordering_by_instant() -> None:
    utc = Timestamp.parse("2026-11-27T10:00:00Z")
    india = Timestamp.parse("2026-11-27T15:30:00+05:30")
    later = Timestamp.parse("2026-11-27T10:00:00.000000001Z")
    assert utc.unix_ns == india.unix_ns
    assert utc != india  # same instant, written differently: Go writes different bytes
    assert utc < later and india < later
    assert sorted([later, utc]) == [utc, later]
    assert len({utc, Timestamp.parse("2026-11-27T10:00:00.000Z")}) == 1


def test_timestamp_from_datetime_keeps_offset_and_refuses_naive() -> None:
    tz = timezone(timedelta(hours=-3))
    stamp = Timestamp.from_datetime(datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=tz))
    assert stamp.isoformat() == "2026-01-02T03:04:05.0006-03:00"
    assert stamp.to_datetime() == datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=tz)
    with pytest.raises(ValidationError, match="no UTC offset"):
        Timestamp.from_datetime(datetime(2026, 1, 2))


def test_timestamp_now_is_utc_with_nanoseconds() -> None:
    before = datetime.now(UTC)
    stamp = Timestamp.now()
    after = datetime.now(UTC)
    assert stamp.isoformat().endswith("Z")
    assert before - timedelta(seconds=1) <= stamp.to_datetime() <= after + timedelta(seconds=1)


def test_timestamp_now_formats_each_second_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    # now() keeps the text of the second it last formatted: another second is not that text.
    monkeypatch.setattr(_timestamp, "_last_second", (0, "1970-01-01T00:00:00"))
    before = datetime.now(UTC)
    stamp = Timestamp.now()
    assert stamp.to_datetime() >= before - timedelta(seconds=1)
    again = Timestamp.now()
    assert again.isoformat()[:19] in (stamp.isoformat()[:19], _timestamp._last_second[1])
    assert Timestamp.parse(stamp.isoformat()) == stamp


@pytest.mark.parametrize(
    ("unix_ns", "offset", "message"),
    [
        (0, 30, "whole minutes"),
        (0, 24 * 3600, "within ±23:59"),
        (-62_167_219_200 * 10**9 - 1, 0, "outside the years Go writes"),
        (253_402_300_800 * 10**9, 0, "outside the years Go writes"),
    ],
)
def test_timestamp_from_unix_ns_rejects_what_go_cannot_write(
    unix_ns: int, offset: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Timestamp.from_unix_ns(unix_ns, offset)


def test_timestamp_pickles_and_serialises_as_text() -> None:
    stamp = Timestamp.parse("2026-11-27T10:11:12.5+05:30")
    assert pickle.loads(pickle.dumps(stamp)) == stamp
    assert Holder(at=stamp).model_dump_json() == '{"at":"2026-11-27T10:11:12.5+05:30"}'
    assert str(stamp) == repr(stamp)[11:-2]
