"""A listing position, ``(timestamp, event_id)``, as opaque URL-safe text.

The reader's cursors and the review app's share this form and differ in their prefix, so
neither takes the other's.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from uuid import UUID

__all__ = ["BAD_POSITION", "decode_position", "encode_position", "unix_micros"]

#: What :func:`decode_position` raises for text it did not write.
BAD_POSITION = (ValueError, UnicodeDecodeError, binascii.Error, OverflowError, OSError)


def unix_micros(value: datetime) -> int:
    """Microseconds since the epoch, in integers only (no float rounding)."""
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_position(prefix: str, moment: datetime, event_id: UUID) -> str:
    """``prefix:micros:event_hex``, base64url without padding."""
    raw = f"{prefix}:{unix_micros(moment)}:{event_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(prefix: str, value: str) -> tuple[datetime, UUID]:
    """Read what :func:`encode_position` wrote under ``prefix``; raises one of BAD_POSITION."""
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    found, micros, event_hex = raw.split(":")
    if found != prefix or len(event_hex) != 32:
        raise ValueError(found)
    seconds, micro = divmod(int(micros), 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micro)
    return moment, UUID(hex=event_hex)
