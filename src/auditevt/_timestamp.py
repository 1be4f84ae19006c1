"""``Timestamp``: a nanosecond instant with a fixed UTC offset, like Go's ``time.Time``.

Python's ``datetime`` keeps microseconds only, so a Go timestamp such as
``2026-11-27T10:11:12.123456789Z`` cannot survive a round trip through it. A ``Timestamp`` holds
the canonical RFC 3339 text Go writes (fraction without trailing zeros, ``Z`` for UTC, any other
offset as written): that text identifies the instant and the offset exactly, and keeping it makes
reading and re-writing events, the hot path of both services, cost almost nothing. The numbers are
computed when asked for.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import ConfigDict, GetCoreSchemaHandler, GetPydanticSchema, RootModel, WithJsonSchema
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["Timestamp"]

_NS_PER_SECOND = 1_000_000_000
_SECONDS_PER_DAY = 86_400
_MAX_OFFSET = 24 * 3600  # Go refuses to write an offset of 24 hours or more

# Any RFC 3339 text Go's time.Time.UnmarshalJSON reads; ranges are checked in parse(). Digits
# are ASCII only, as in Go: [0-9], never \d, which matches any Unicode digit (U+0661, U+FF19)
# in Python and in pydantic-core's regex engine alike.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))\Z"
)
# The canonical text Go writes, for days up to 28 (every month has those): such text is taken
# as is, in pydantic-core, without a call into Python. Anything else goes through parse().
_CANONICAL = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](?:\.[0-9]{0,8}[1-9])?(?:Z|[+-](?:(?:[01][0-9]|2[0-3]):(?:[0-5][1-9]|[1-5]0)"
    r"|(?:0[1-9]|1[0-9]|2[0-3]):00))$"
)
_INVALID = (
    "Input should be an RFC 3339 timestamp with a UTC offset that Go can read: ASCII digits, "
    "a real date, a "
    "time from 00:00:00 to 23:59:59, an optional fraction, then Z or +hh:mm/-hh:mm (offset "
    "below 24h), e.g. 2026-11-27T10:11:12.123456789Z"
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


def _parse(text: str) -> tuple[int, int]:
    """(unix_ns, offset_seconds) of RFC 3339 text, read as Go's ``time.Time`` reads it."""
    match = _RFC3339.match(text)
    if match is None:
        if not text.isascii() and any(c.isdigit() and not c.isascii() for c in text):
            raise ValueError(f"{text!r} holds a digit that is not ASCII 0-9, which Go refuses")
        raise ValueError(
            f"{text!r} is not an RFC 3339 timestamp with a UTC offset, "
            "such as 2026-11-27T10:11:12.123456789Z or 2026-11-27T10:11:12+05:30"
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    y, mo, d = int(year), int(month), int(day)
    h, mi, s = int(hour), int(minute), int(second)
    if not 1 <= mo <= 12:
        raise ValueError(f"{text!r}: month {mo} is out of range")
    days_in_month = 29 if mo == 2 and _is_leap(y) else _DAYS_IN_MONTH[mo]
    if not 1 <= d <= days_in_month:
        raise ValueError(f"{text!r}: day {d} is out of range for month {mo} of {y}")
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"{text!r}: the time of day is out of range")
    offset = 0
    if zulu is None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            raise ValueError(f"{text!r}: the UTC offset is out of range")
        offset = (oh * 3600 + om * 60) * (-1 if sign == "-" else 1)
    # Go reads at most nine fractional digits and drops the rest.
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    local = _days_from_civil(y, mo, d) * _SECONDS_PER_DAY + h * 3600 + mi * 60 + s
    return (local - offset) * _NS_PER_SECOND + nanos, offset


def _format(unix_ns: int, offset: int) -> str:
    """The canonical text Go writes (RFC 3339, trimmed fraction, ``Z`` for UTC)."""
    if type(unix_ns) is not int:
        raise TypeError(f"unix_ns must be an int, not {type(unix_ns).__name__}")
    if type(offset) is not int:
        raise TypeError(f"offset_seconds must be an int, not {type(offset).__name__}")
    if offset % 60 or not -_MAX_OFFSET < offset < _MAX_OFFSET:
        raise ValueError(f"offset_seconds={offset} must be whole minutes within ±23:59")
    seconds, nanos = divmod(unix_ns, _NS_PER_SECOND)
    days, second_of_day = divmod(seconds + offset, _SECONDS_PER_DAY)
    y, mo, d = _civil_from_days(days)
    if not 0 <= y <= 9999:
        raise ValueError(f"unix_ns={unix_ns} is in year {y}, outside the years Go writes, 0-9999")
    hh, rest = divmod(second_of_day, 3600)
    mm, ss = divmod(rest, 60)
    text = f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    if offset == 0:
        return text + "Z"
    oh, om = divmod(abs(offset) // 60, 60)
    return f"{text}{'-' if offset < 0 else '+'}{oh:02d}:{om:02d}"


def _text_from_python(value: Any) -> str:
    if isinstance(value, str):
        return _canonical_text(value)
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise PydanticCustomError(
                "timestamp",
                "datetime {value} has no UTC offset; pass an aware datetime",
                {"value": value.isoformat()},
            )
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        seconds = delta.days * _SECONDS_PER_DAY + delta.seconds
        unix_ns = seconds * _NS_PER_SECOND + delta.microseconds * 1000
        return _checked_format(unix_ns, int(offset.total_seconds()))
    raise PydanticCustomError(
        "timestamp",
        "expected an RFC 3339 string, an aware datetime or a Timestamp, got {type}",
        {"type": type(value).__name__},
    )


def _checked_format(unix_ns: int, offset: int) -> str:
    try:
        return _format(unix_ns, offset)
    except ValueError as exc:
        raise PydanticCustomError("timestamp", "{reason}", {"reason": str(exc)}) from None


def _canonical_text(value: str) -> str:
    try:
        return _format(*_parse(value))
    except ValueError as exc:
        raise PydanticCustomError("timestamp", "{reason}", {"reason": str(exc)}) from None


def _timestamp_text_schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    return core_schema.json_or_python_schema(
        # Canonical text is taken by pydantic-core alone; other valid text is rewritten.
        json_schema=core_schema.union_schema(
            [
                core_schema.str_schema(pattern=_CANONICAL, strict=True),
                core_schema.chain_schema(
                    [
                        core_schema.str_schema(strict=True),
                        core_schema.no_info_plain_validator_function(_canonical_text),
                    ]
                ),
            ],
            mode="left_to_right",
            custom_error_type="timestamp",
            custom_error_message=_INVALID,
        ),
        python_schema=core_schema.no_info_plain_validator_function(_text_from_python),
    )


_TimestampText = Annotated[
    str,
    GetPydanticSchema(_timestamp_text_schema),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": "^" + _RFC3339.pattern.replace("\\Z", "$"),
            "description": "RFC 3339 with up to 9 fractional digits and a UTC offset, as Go's "
            "time.Time writes it.",
        }
    ),
]


# The second Timestamp.now() last formatted, and its text (one tuple: threads swap it whole).
_last_second: tuple[int, str] = (-1, "")


class Timestamp(RootModel[_TimestampText]):
    """An instant in nanoseconds with the UTC offset it was written in (Go's ``time.Time``).

    Build one with ``Timestamp.now()``, ``Timestamp.from_unix_ns(ns, offset_seconds)``,
    ``Timestamp.from_datetime(dt)`` (aware only) or ``Timestamp.parse(text)``; a pydantic field
    of this type also takes an aware ``datetime`` or RFC 3339 text. ``str(ts)`` is the text Go
    writes. Equal timestamps have the same instant and offset; ordering is by instant, then
    offset.
    """

    model_config = ConfigDict(frozen=True)

    @classmethod
    def _of_text(cls, text: str) -> Timestamp:
        # What model_construct(text) builds for a root model, without its generic field loop
        # (a third of the cost of now()). text is canonical already.
        timestamp = object.__new__(cls)
        object.__setattr__(timestamp, "__dict__", {"root": text})
        object.__setattr__(timestamp, "__pydantic_fields_set__", {"root"})
        return timestamp

    @classmethod
    def now(cls) -> Timestamp:
        """The current time in UTC, to the nanosecond the clock gives."""
        global _last_second
        seconds, nanos = divmod(time.time_ns(), _NS_PER_SECOND)
        # Every audited request takes a timestamp: the date is formatted once a second.
        second, text = _last_second
        if second != seconds:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            _last_second = (seconds, text)
        if nanos:
            text += "." + f"{nanos:09d}".rstrip("0")
        return cls._of_text(text + "Z")

    @classmethod
    def from_unix_ns(cls, unix_ns: int, offset_seconds: int = 0) -> Timestamp:
        """Nanoseconds since the Unix epoch, written in the given UTC offset (whole minutes)."""
        return cls._of_text(_format(unix_ns, offset_seconds))

    @classmethod
    def from_datetime(cls, value: datetime) -> Timestamp:
        """Convert an aware ``datetime``; a naive one is refused (it names no instant)."""
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        return cls.model_validate(value)

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse RFC 3339 as Go's ``time.Time.UnmarshalJSON`` does (an offset is required)."""
        return cls._of_text(_format(*_parse(text)))

    @property
    def unix_ns(self) -> int:
        """Nanoseconds since 1970-01-01T00:00:00Z."""
        return _parse(self.root)[0]

    @property
    def offset_seconds(self) -> int:
        """The UTC offset the timestamp is written in, in seconds east of UTC."""
        return _parse(self.root)[1]

    @property
    def nanosecond(self) -> int:
        """Nanoseconds within the second, 0 to 999,999,999."""
        return self.unix_ns % _NS_PER_SECOND

    def to_datetime(self) -> datetime:
        """An aware ``datetime`` in the same offset; nanoseconds are truncated to microseconds.

        Year 0, which Go allows and ``datetime`` does not, raises ``ValueError``.
        """
        unix_ns, offset = _parse(self.root)
        tz = UTC if offset == 0 else timezone(timedelta(seconds=offset))
        seconds, nanos = divmod(unix_ns, _NS_PER_SECOND)
        try:
            base = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                seconds=seconds, microseconds=nanos // 1000
            )
            return base.astimezone(tz)
        except OverflowError:
            raise ValueError(f"{self.root} is outside the range of datetime") from None

    def isoformat(self) -> str:
        """RFC 3339 as Go writes it: trailing zeros of the fraction trimmed, ``Z`` for UTC."""
        return self.root

    def __str__(self) -> str:
        return self.root

    def __repr__(self) -> str:
        return f"Timestamp({self.root!r})"

    def _key(self) -> tuple[int, int]:
        return _parse(self.root)

    def __eq__(self, other: object) -> bool:
        # The canonical text names exactly one (instant, offset) pair.
        if isinstance(other, Timestamp):
            return self.root == other.root
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.root)

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
