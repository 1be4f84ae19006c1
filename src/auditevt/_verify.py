"""``WebhookVerifier``: what Telemetry runs on every request before it reads the body.

It checks, in this order, and raises the first failure (see the tree in ``_signing``):

1. the three headers are there (``MissingHeaderError``) and readable (``MalformedHeaderError``);
2. the timestamp lies within ``tolerance`` seconds of the clock, either way (``TimestampError``);
3. a ``v1`` signature in ``webhook-signature`` matches the body under one of the keys, compared
   in constant time (``BadSignatureError``);
4. this ``webhook-id`` has not been verified with this timestamp before (``ReplayError``).

Why the replay check keys on the id *and* the timestamp: a sender retries one message under one
id with a fresh timestamp for each attempt (Standard Webhooks), so refusing a repeated id alone
would refuse the retry that follows a lost answer. A captured request sent again carries the same
id and timestamp, which the signature binds, so it is refused; and it is recorded only after its
signature matched, so nobody without the key can fill the store or block an id in advance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from auditevt import _signing
from auditevt._signing import (
    _MESSAGE_ID,
    _VERSION,
    DEFAULT_SIGNATURE_TOLERANCE,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
    SigningKey,
    signing_keys,
)

__all__ = [
    "DEFAULT_REPLAY_STORE_ENTRIES",
    "MemoryReplayStore",
    "ReplayStore",
    "VerifiedWebhook",
    "WebhookVerifier",
]

#: How many verified messages ``MemoryReplayStore`` remembers at most by default.
DEFAULT_REPLAY_STORE_ENTRIES = 100_000

#: A timestamp is at most 12 digits (year 33658): longer is no time, and no reason to parse it.
_MAX_TIMESTAMP_DIGITS = 12
#: Signatures looked at per request: a rotation needs two or three, a flood needs none.
_MAX_SIGNATURES = 16
_DIGEST_SIZE = hashlib.sha256().digest_size


class ReplayStore(Protocol):
    """Remembers verified messages until they expire; shared by every verifier that must agree.

    The default is :class:`MemoryReplayStore`, one per process. Telemetry running several
    processes plugs in a shared one (a Redis ``SET key 1 NX EXAT expires_at``, a table with a
    unique key) so that a request replayed to another process is refused too.
    """

    def add(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; False if it is already recorded and unexpired.

        ``now`` and ``expires_at`` are Unix seconds from the verifier's clock. Must be atomic:
        of two concurrent calls with one key, one gets False.
        """
        ...


class MemoryReplayStore:
    """An in-process :class:`ReplayStore` holding at most ``max_entries`` messages.

    Entries are dropped once expired (their timestamp is then outside the tolerance, so the
    timestamp check refuses the message anyway). When the store is full of live entries the one
    that would expire soonest goes first: the narrowest window a replay could use. Thread-safe.
    """

    __slots__ = ("_expiry", "_heap", "_lock", "_max_entries")

    def __init__(self, max_entries: int = DEFAULT_REPLAY_STORE_ENTRIES) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self._max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def add(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; False if it is already recorded and unexpired."""
        with self._lock:
            self._drop(lambda expiry: expiry <= now)
            if key in self._expiry:
                return False
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            if len(self._expiry) > self._max_entries:
                self._drop(lambda expiry: True, limit=len(self._expiry) - self._max_entries)
            return True

    def _drop(self, expired: Callable[[float], bool], limit: int | None = None) -> None:
        dropped = 0
        while self._heap and expired(self._heap[0][0]) and (limit is None or dropped < limit):
            expiry, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expiry:
                del self._expiry[key]
                dropped += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def __repr__(self) -> str:
        return f"MemoryReplayStore(max_entries={self._max_entries}, entries={len(self)})"


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """What a verified request proved."""

    message_id: str
    """Its ``webhook-id``: the same for every attempt to deliver the message."""
    timestamp: int
    """Its ``webhook-timestamp``, Unix seconds: when this attempt was signed."""
    key: SigningKey
    """The key whose signature matched (during a rotation: old or new?)."""


class WebhookVerifier:
    """Verifies Standard Webhooks signatures against one key, or any of several.

    ``tolerance`` is how many seconds a timestamp may be from ``clock()`` (Unix seconds, default
    ``time.time``) either way; ``replay_store`` remembers verified messages (default: a new
    :class:`MemoryReplayStore`). Pass the body exactly as received, before decompressing it.

    >>> from auditevt import SigningKey, WebhookSigner
    >>> key = SigningKey.generate()
    >>> headers = WebhookSigner(key).headers(b'{"events": []}')
    >>> WebhookVerifier(key).verify(headers, b'{"events": []}').key == key
    True
    """

    __slots__ = ("_clock", "_keys", "_replay_store", "_tolerance")

    def __init__(
        self,
        keys: SigningKey | str | Sequence[SigningKey | str],
        *,
        tolerance: float = DEFAULT_SIGNATURE_TOLERANCE,
        clock: Callable[[], float] = time.time,
        replay_store: ReplayStore | None = None,
    ) -> None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            raise TypeError(f"tolerance must be seconds as a number, got {tolerance!r}")
        if not (math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"tolerance must be > 0 seconds, got {tolerance!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {clock!r}")
        if replay_store is not None and not callable(getattr(replay_store, "add", None)):
            raise TypeError(f"replay_store must have an add() method, not {replay_store!r}")
        self._keys = signing_keys(keys)
        self._tolerance = float(tolerance)
        self._clock = clock
        self._replay_store: ReplayStore = (
            MemoryReplayStore() if replay_store is None else replay_store
        )

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """The keys a signature may match."""
        return self._keys

    @property
    def tolerance(self) -> float:
        """Seconds a timestamp may lie from the clock, either way."""
        return self._tolerance

    def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        """Check the signature headers against the raw ``body``; ``SignatureError`` if they fail.

        ``headers`` is any mapping of header names to values (Starlette's, httpx's, a dict);
        names are matched without regard to case.
        """
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"body must be bytes (the raw body), not {type(body).__name__}")
        message_id = _header(headers, WEBHOOK_ID_HEADER)
        timestamp_text = _header(headers, WEBHOOK_TIMESTAMP_HEADER)
        signature_text = _header(headers, WEBHOOK_SIGNATURE_HEADER)
        if _MESSAGE_ID.fullmatch(message_id) is None:
            raise _signing.MalformedHeaderError(
                f"{WEBHOOK_ID_HEADER} must be 1 to 256 printable ASCII characters without "
                f"spaces or dots (got {len(message_id)} characters)",
                header=WEBHOOK_ID_HEADER,
            )
        timestamp = self._check_timestamp(timestamp_text)
        candidates = _signatures(signature_text)
        key = self._matching_key(message_id, timestamp, bytes(body), candidates)
        expires_at = timestamp + self._tolerance
        if not self._replay_store.add(
            f"{message_id}.{timestamp}", expires_at=expires_at, now=self._clock()
        ):
            raise _signing.ReplayError(
                f"{WEBHOOK_ID_HEADER} {message_id!r} with {WEBHOOK_TIMESTAMP_HEADER} {timestamp} "
                "was already verified: a request is accepted once (a retry carries a new "
                "timestamp)",
                header=WEBHOOK_ID_HEADER,
            )
        return VerifiedWebhook(message_id=message_id, timestamp=timestamp, key=key)

    def _check_timestamp(self, text: str) -> int:
        if not (text.isascii() and text.isdigit() and len(text) <= _MAX_TIMESTAMP_DIGITS):
            shown = repr(text[:20]) + ("..." if len(text) > 20 else "")
            raise _signing.MalformedHeaderError(
                f"{WEBHOOK_TIMESTAMP_HEADER} {shown} is not whole Unix seconds",
                header=WEBHOOK_TIMESTAMP_HEADER,
            )
        timestamp = int(text)
        now = self._clock()
        if timestamp < now - self._tolerance:
            raise _signing.StaleTimestampError(
                f"{WEBHOOK_TIMESTAMP_HEADER} {timestamp} is {now - timestamp:.0f} s old; "
                f"at most {self._tolerance:g} s is accepted",
                header=WEBHOOK_TIMESTAMP_HEADER,
            )
        if timestamp > now + self._tolerance:
            raise _signing.FutureTimestampError(
                f"{WEBHOOK_TIMESTAMP_HEADER} {timestamp} is {timestamp - now:.0f} s ahead of "
                f"this clock; at most {self._tolerance:g} s is accepted",
                header=WEBHOOK_TIMESTAMP_HEADER,
            )
        return timestamp

    def _matching_key(
        self, message_id: str, timestamp: int, body: bytes, candidates: list[bytes]
    ) -> SigningKey:
        for key in self._keys:
            expected = key.digest(message_id, timestamp, body)
            # Every candidate is compared, matched or not, so the time taken says nothing.
            matched = False
            for candidate in candidates:
                matched |= hmac.compare_digest(expected, candidate)
            if matched:
                return key
        raise _signing.BadSignatureError(
            f"no signature in {WEBHOOK_SIGNATURE_HEADER} ({len(candidates)} given) matches the "
            f"body under any of the {len(self._keys)} key(s): the body, the id or the timestamp "
            "was altered, or it was signed with another key",
            header=WEBHOOK_SIGNATURE_HEADER,
        )

    def __repr__(self) -> str:
        return f"WebhookVerifier(keys={list(self._keys)!r}, tolerance={self._tolerance:g})"


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # A plain dict may spell the name in any case; Starlette's and httpx's headers do not care.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if value is None or not value.strip():
        raise _signing.MissingHeaderError(
            f"the {name} header is {'missing' if value is None else 'empty'}: the request is not "
            f"signed ({WEBHOOK_ID_HEADER}, {WEBHOOK_TIMESTAMP_HEADER} and "
            f"{WEBHOOK_SIGNATURE_HEADER} are required)",
            header=name,
        )
    return value.strip()


def _signatures(text: str) -> list[bytes]:
    """The decoded ``v1`` signatures; other versions are skipped, as Standard Webhooks asks."""
    found: list[bytes] = []
    entries = text.split()
    for entry in entries[:_MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version != _VERSION:
            continue
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(digest) == _DIGEST_SIZE:
            found.append(digest)
    if not found:
        raise _signing.MalformedHeaderError(
            f"{WEBHOOK_SIGNATURE_HEADER} holds no {_VERSION},<base64 of 32 bytes> signature among "
            f"its {min(len(entries), _MAX_SIGNATURES)} entr{'y' if len(entries) == 1 else 'ies'} "
            "looked at",
            header=WEBHOOK_SIGNATURE_HEADER,
        )
    return found
