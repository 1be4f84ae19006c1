"""``Timestamp``: an instant with nanosecond precision and a fixed UTC offset, like Go's ``time.Time``.

Python's ``datetime`` keeps microseconds only, so a Go timestamp such as
``2026-11-27T10:11:12.123456789Z`` cannot survive a round trip through it.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["Timestamp"]

_NS_PER_SECOND = 1_000_000_000
_SECONDS_PER_DAY = 86_400
# Go's encoder refuses years outside [0, 9999] and offsets of 24 hours or more.
_MIN_YEAR, _MAX_YEAR = 0, 9999
_MAX_OFFSET = 24 * 3600

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:(Z)|([+-])(\d\d):(\d\d))\Z"
)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


class Timestamp:
    """An instant in nanoseconds since the Unix epoch, with the UTC offset it was written in.

    Equality compares the instant and the offset, as the JSON text does; ordering is by instant
    first. Build one with :meth:`now`, :meth:`from_datetime` or :meth:`parse`.
    """

    __slots__ = ("_offset", "_text", "_unix_ns")

    # A timestamp read from canonical JSON text keeps just the text until a number is asked
    # for (see _from_canonical_text): reading and re-writing events is the hot path.
    _unix_ns: int | None
    _offset: int | None
    _text: str | None

    def __init__(self, unix_ns: int, offset_seconds: int = 0) -> None:
        if type(unix_ns) is not int:
            raise TypeError(f"unix_ns must be an int, not {type(unix_ns).__name__}")
        if type(offset_seconds) is not int:
            raise TypeError(f"offset_seconds must be an int, not {type(offset_seconds).__name__}")
        if offset_seconds % 60 or not -_MAX_OFFSET < offset_seconds < _MAX_OFFSET:
            raise ValueError(f"offset_seconds={offset_seconds} must be whole minutes within ±23:59")
        local_days = (unix_ns // _NS_PER_SECOND + offset_seconds) // _SECONDS_PER_DAY
        year = _civil_from_days(local_days)[0]
        if not _MIN_YEAR <= year <= _MAX_YEAR:
            raise ValueError(f"year {year} is outside the range Go can write, [0, 9999]")
        self._unix_ns = unix_ns
        self._offset = offset_seconds
        self._text = None

    @classmethod
    def now(cls) -> Timestamp:
        """The current time in UTC, to the nanosecond the clock gives."""
        return cls(time.time_ns())

    @classmethod
    def from_datetime(cls, value: datetime) -> Timestamp:
        """Convert an aware ``datetime``; a naive one is refused (it names no instant)."""
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(
                f"datetime {value.isoformat()!r} has no UTC offset; pass an aware datetime"
            )
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        delta = value - epoch
        unix_ns = (
            delta.days * _SECONDS_PER_DAY + delta.seconds
        ) * _NS_PER_SECOND + delta.microseconds * 1000
        return cls(unix_ns, int(offset.total_seconds()))

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse RFC 3339 as Go's ``time.Time.UnmarshalJSON`` does (an offset is required)."""
        match = _RFC3339.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not an RFC 3339 timestamp with an offset, "
                "such as 2026-11-27T10:11:12.123456789Z or 2026-11-27T10:11:12+05:30"
            )
        year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
        y, mo, d = int(year), int(month), int(day)
        h, mi, s = int(hour), int(minute), int(second)
        if not 1 <= mo <= 12:
            raise ValueError(f"{text!r}: month {mo} out of range")
        days_in_month = 29 if mo == 2 and _is_leap(y) else _DAYS_IN_MONTH[mo]
        if not 1 <= d <= days_in_month:
            raise ValueError(f"{text!r}: day {d} out of range for month {mo}")
        if h > 23 or mi > 59 or s > 59:
            raise ValueError(f"{text!r}: time of day out of range")
        offset = 0
        if zulu is None:
            oh, om = int(off_h), int(off_m)
            if oh > 23 or om > 59:
                raise ValueError(f"{text!r}: offset out of range")
            offset = (oh * 3600 + om * 60) * (-1 if sign == "-" else 1)
        nanos = 0
        if fraction:
            # Go reads at most nine digits and drops the rest.
            digits = fraction[:9].rstrip("0")
            nanos = int(digits.ljust(9, "0")) if digits else 0
        local = (_days_from_civil(y, mo, d) * _SECONDS_PER_DAY) + h * 3600 + mi * 60 + s
        self = object.__new__(cls)
        self._unix_ns = (local - offset) * _NS_PER_SECOND + nanos
        self._offset = offset
        # The canonical text is the input with the fraction trimmed and +00:00 spelled Z.
        canonical = text[:19]
        if nanos:
            canonical += "." + f"{nanos:09d}".rstrip("0")
        self._text = canonical + ("Z" if offset == 0 else text[-6:])
        return self

    @classmethod
    def _from_canonical_text(cls, text: str) -> Timestamp:
        self = object.__new__(cls)
        self._unix_ns = self._offset = None
        self._text = text
        return self

    def _numbers(self) -> tuple[int, int]:
        if self._unix_ns is None or self._offset is None:
            parsed = Timestamp.parse(cast(str, self._text))
            self._unix_ns, self._offset = parsed._unix_ns, parsed._offset
        return cast(int, self._unix_ns), cast(int, self._offset)

    @property
    def unix_ns(self) -> int:
        """Nanoseconds since 1970-01-01T00:00:00Z."""
        return self._numbers()[0]

    @property
    def offset_seconds(self) -> int:
        """The UTC offset the timestamp is written in, in seconds east of UTC."""
        return self._numbers()[1]

    @property
    def nanosecond(self) -> int:
        """Nanoseconds within the second, 0 to 999,999,999."""
        return self._numbers()[0] % _NS_PER_SECOND

    def to_datetime(self) -> datetime:
        """An aware ``datetime`` in the same offset; nanoseconds are truncated to microseconds."""
        unix_ns, offset = self._numbers()
        tz = UTC if offset == 0 else timezone(timedelta(seconds=offset))
        seconds, nanos = divmod(unix_ns, _NS_PER_SECOND)
        base = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            seconds=seconds, microseconds=nanos // 1000
        )
        return base.astimezone(tz)

    def isoformat(self) -> str:
        """RFC 3339 as Go writes it: trailing zeros of the fraction trimmed, ``Z`` for UTC."""
        text = self._text
        if text is None:
            unix_ns, offset = self._numbers()
            seconds, nanos = divmod(unix_ns, _NS_PER_SECOND)
            local = seconds + offset
            days, second_of_day = divmod(local, _SECONDS_PER_DAY)
            y, mo, d = _civil_from_days(days)
            hh, rest = divmod(second_of_day, 3600)
            mm, ss = divmod(rest, 60)
            text = f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}"
            if nanos:
                text += "." + f"{nanos:09d}".rstrip("0")
            if offset == 0:
                text += "Z"
            else:
                sign = "-" if offset < 0 else "+"
                oh, om = divmod(abs(offset) // 60, 60)
                text += f"{sign}{oh:02d}:{om:02d}"
            self._text = text
        return text

    __str__ = isoformat

    def __repr__(self) -> str:
        return f"Timestamp({self.isoformat()!r})"

    def _key(self) -> tuple[int, int]:
        return self._numbers()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Timestamp):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: Timestamp) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: Timestamp) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: Timestamp) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: Timestamp) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() >= other._key()

    def __copy__(self) -> Timestamp:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Timestamp:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Timestamp, self._numbers())

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.json_or_python_schema(
            json_schema=core_schema.no_info_plain_validator_function(_validate_json_timestamp),
            python_schema=core_schema.no_info_plain_validator_function(_validate_timestamp),
            serialization=core_schema.plain_serializer_function_ser_schema(
                Timestamp.isoformat, when_used="json-unless-none"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "date-time",
            "pattern": "^" + _RFC3339.pattern.replace("\\Z", "$"),
            "description": "RFC 3339 with up to 9 fractional digits and a UTC offset (Go's "
            "time.Time); trailing zeros of the fraction are trimmed and UTC is written Z.",
        }


def _validate_timestamp(value: Any) -> Timestamp:
    if type(value) is str:
        try:
            return Timestamp.parse(value)
        except ValueError as exc:
            raise PydanticCustomError("timestamp", "{reason}", {"reason": str(exc)}) from None
    if isinstance(value, Timestamp):
        return value
    if isinstance(value, datetime):
        try:
            return Timestamp.from_datetime(value)
        except ValueError as exc:
            raise PydanticCustomError("timestamp", "{reason}", {"reason": str(exc)}) from None
    raise PydanticCustomError(
        "timestamp",
        "expected an RFC 3339 string, an aware datetime or a Timestamp, got {type}",
        {"type": type(value).__name__},
    )


# Canonical RFC 3339 as Go writes it (fraction of 1-9 digits without trailing zero, non-zero
# offset or Z) with days up to 28: anything else goes through the full parser.
_CANONICAL = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{0,8}[1-9])?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)\Z"
)


def _validate_json_timestamp(value: Any) -> Timestamp:
    if (
        type(value) is str
        and _CANONICAL.match(value) is not None
        and not value.endswith(("+00:00", "-00:00"))
    ):
        return Timestamp._from_canonical_text(value)
    return _validate_timestamp(value)
