"""Signing requests the Standard Webhooks way: keys, signatures and their errors.

The sender signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 under each of its
keys and sends three headers::

    webhook-id: msg_2f1c0a9e4b7d4c3e8a6b5d4c3b2a1f0e
    webhook-timestamp: 1764583872
    webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,...

``body`` is the request body exactly as it travels (gzip-compressed, when it is). A key is a
Standard Webhooks secret: ``whsec_`` and the base64 of 24 to 64 random bytes. During a rotation
the sender holds the old and the new key and sends one signature for each, separated by spaces;
the receiver accepts a request when any signature matches any of its keys.

The errors a receiver can meet, one tree (messages say what failed, never the expected value)::

    SignatureError
    ├── MissingHeaderError      webhook-id, webhook-timestamp or webhook-signature absent or empty
    ├── MalformedHeaderError    a header that cannot be read: no integer, no v1 signature, bad id
    ├── TimestampError          the timestamp is outside the tolerance
    │   ├── StaleTimestampError     ... too old
    │   └── FutureTimestampError    ... too far ahead
    ├── BadSignatureError       no signature matches the body under any key (forged, wrong key)
    └── ReplayError             this webhook-id and timestamp were verified before
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

__all__ = [
    "DEFAULT_SIGNATURE_TOLERANCE",
    "MAX_SIGNING_KEY_BYTES",
    "MIN_SIGNING_KEY_BYTES",
    "SIGNING_KEY_PREFIX",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "BadSignatureError",
    "FutureTimestampError",
    "MalformedHeaderError",
    "MissingHeaderError",
    "ReplayError",
    "SignatureError",
    "SigningKey",
    "StaleTimestampError",
    "TimestampError",
    "WebhookSigner",
    "check_message_id",
    "signing_keys",
]

#: The header carrying the message id: the same for every attempt to deliver one message.
WEBHOOK_ID_HEADER = "webhook-id"
#: The header carrying the attempt's time, in integer Unix seconds.
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
#: The header carrying ``v1,<base64>`` signatures, separated by spaces.
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
#: How far (seconds) a timestamp may lie from the receiver's clock, either way: five minutes.
DEFAULT_SIGNATURE_TOLERANCE = 300
#: What a serialized key starts with.
SIGNING_KEY_PREFIX = "whsec_"
#: The shortest key accepted, as Standard Webhooks asks: 24 bytes (192 bits).
MIN_SIGNING_KEY_BYTES = 24
#: The longest key accepted, as Standard Webhooks asks: 64 bytes (512 bits).
MAX_SIGNING_KEY_BYTES = 64

_VERSION = "v1"
#: A message id: 1 to 256 printable ASCII characters, no space and no dot (a dot in the id
#: would let id and timestamp trade characters inside the signed content).
_MESSAGE_ID = re.compile(r"[\x21-\x2d\x2f-\x7e]{1,256}")


class SignatureError(Exception):
    """A request's signature headers do not prove it came from a holder of the key."""

    #: A short name of what failed, for answers, logs and metrics (``bad_signature``, ...).
    code: ClassVar[str] = "signature"

    def __init_subclass__(cls, *, code: str | None = None, **kwargs: Any) -> None:
        # A subclass names its code in its class line, ``class X(SignatureError, code="x")``;
        # one that names none keeps its parent's.
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, header: str) -> None:
        super().__init__(message)
        #: The header at fault (``webhook-id``, ``webhook-timestamp`` or ``webhook-signature``).
        self.header = header


class MissingHeaderError(SignatureError, code="missing_header"):
    """A signature header is absent or empty: the request is not signed."""


class MalformedHeaderError(SignatureError, code="malformed_header"):
    """A signature header is present but unreadable (not an integer, no ``v1`` signature)."""


class TimestampError(SignatureError, code="timestamp"):
    """The signed timestamp is outside the tolerance around the receiver's clock."""


class StaleTimestampError(TimestampError, code="stale_timestamp"):
    """The signed timestamp is older than the tolerance allows: a late replay, or a slow clock."""


class FutureTimestampError(TimestampError, code="future_timestamp"):
    """The signed timestamp is further ahead than the tolerance allows: a sender's fast clock."""


class BadSignatureError(SignatureError, code="bad_signature"):
    """No signature matches the body under any key: a forged or altered body, or a wrong key."""


class ReplayError(SignatureError, code="replay"):
    """This ``webhook-id`` was already verified with this timestamp: a captured request resent."""


class SigningKey:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of 24 to 64 random bytes.

    Its ``repr`` shows a fingerprint, never the key. ``SigningKey.generate()`` makes a new one;
    ``key.secret`` is the text to store in the secret store and give to Telemetry.

    >>> key = SigningKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    >>> key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    """

    __slots__ = ("_key", "_mac")

    def __init__(self, secret: str) -> None:
        if not isinstance(secret, str):
            raise TypeError(f"a signing key must be a str, not {type(secret).__name__}")
        text = secret.strip()
        if not text.startswith(SIGNING_KEY_PREFIX):
            # Say what the value looks like without showing any of it.
            raise ValueError(
                f"a signing key must start with {SIGNING_KEY_PREFIX!r} followed by base64 "
                f"(got {len(text)} characters without that prefix)"
            )
        try:
            key = base64.b64decode(text[len(SIGNING_KEY_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"the part of the signing key after {SIGNING_KEY_PREFIX!r} is not standard "
                "base64 (A-Z a-z 0-9 + /, padded with =)"
            ) from None
        self._set(key)

    def _set(self, key: bytes) -> None:
        if not MIN_SIGNING_KEY_BYTES <= len(key) <= MAX_SIGNING_KEY_BYTES:
            raise ValueError(
                f"a signing key of {len(key)} bytes: it must be {MIN_SIGNING_KEY_BYTES} to "
                f"{MAX_SIGNING_KEY_BYTES} random bytes (SigningKey.generate() makes one)"
            )
        self._key = key
        # Keyed once: each signature then copies this state instead of hashing the key again.
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    @classmethod
    def from_bytes(cls, key: bytes) -> SigningKey:
        """The key made of these raw bytes (24 to 64 of them)."""
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        instance = cls.__new__(cls)
        instance._set(key)
        return instance

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key of 32 bytes."""
        return cls.from_bytes(secrets.token_bytes(32))

    @property
    def secret(self) -> str:
        """The key as Standard Webhooks writes it, ``whsec_...``: a secret, keep it out of logs."""
        return SIGNING_KEY_PREFIX + base64.b64encode(self._key).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """8 hex digits that tell keys apart in logs and reprs without revealing them."""
        return hashlib.sha256(b"auditevt signing key\0" + self._key).hexdigest()[:8]

    def digest(self, message_id: str, timestamp: int, body: bytes) -> bytes:
        """The raw HMAC-SHA256 of ``{message_id}.{timestamp}.{body}``."""
        mac = self._mac.copy()
        mac.update(f"{message_id}.{timestamp}.".encode())
        mac.update(body)
        return mac.digest()

    def sign(self, message_id: str, timestamp: int, body: bytes) -> str:
        """The signature ``v1,<base64>`` of one message under this key."""
        return f"{_VERSION},{base64.b64encode(self.digest(message_id, timestamp, body)).decode()}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SigningKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"SigningKey(fingerprint={self.fingerprint!r})"


def signing_keys(keys: SigningKey | str | Iterable[SigningKey | str]) -> tuple[SigningKey, ...]:
    """One key, a ``whsec_`` text, or several of either, as a tuple of at least one key.

    Several keys are the rotation: the sender signs with each, the receiver accepts any.
    """
    if isinstance(keys, SigningKey):
        return (keys,)
    if isinstance(keys, str):
        return (SigningKey(keys),)
    if not isinstance(keys, Iterable):
        raise TypeError(
            f"signing keys must be a SigningKey, a whsec_ str or a sequence of them, "
            f"not {type(keys).__name__}"
        )
    given = list(keys)
    result: list[SigningKey] = []
    for position, key in enumerate(given, start=1):
        # Number the key only when there are several to tell apart.
        which = f"signing key {position}" if len(given) > 1 else "the signing key"
        if isinstance(key, str):
            try:
                key = SigningKey(key)
            except ValueError as exc:
                raise ValueError(f"{which}: {exc}" if len(given) > 1 else str(exc)) from None
        elif not isinstance(key, SigningKey):
            raise TypeError(
                f"{which} must be a SigningKey or a whsec_ str, not {type(key).__name__}"
            )
        if key not in result:
            result.append(key)
    if not result:
        raise ValueError("no signing key given: pass at least one")
    return tuple(result)


def check_message_id(message_id: str) -> str:
    """``message_id`` if it is 1 to 256 printable ASCII characters without space or dot."""
    if not isinstance(message_id, str):
        raise TypeError(f"message_id must be a str, not {type(message_id).__name__}")
    if _MESSAGE_ID.fullmatch(message_id) is None:
        raise ValueError(
            f"message id {message_id[:80]!r} must be 1 to 256 printable ASCII characters "
            "without spaces or dots"
        )
    return message_id


class WebhookSigner:
    """Signs request bodies with one key, or with each of several during a rotation.

    ``clock`` gives the current Unix time in seconds (default ``time.time``).

    >>> signer = WebhookSigner(SigningKey.generate())
    >>> sorted(signer.headers(b"{}"))
    ['webhook-id', 'webhook-signature', 'webhook-timestamp']
    """

    __slots__ = ("_clock", "_keys")

    def __init__(
        self,
        keys: SigningKey | str | Sequence[SigningKey | str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {clock!r}")
        self._keys = signing_keys(keys)
        self._clock = clock

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """The keys signed with, in order."""
        return self._keys

    @staticmethod
    def new_message_id() -> str:
        """A fresh message id: ``msg_`` and 32 random hex digits."""
        return f"msg_{uuid.uuid4().hex}"

    def now(self) -> int:
        """The clock's time in whole Unix seconds, as ``webhook-timestamp`` carries it."""
        return int(self._clock())

    def signature(self, message_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value: one ``v1,<base64>`` per key, space-separated."""
        check_message_id(message_id)
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise ValueError(f"timestamp must be Unix seconds as an int >= 0, got {timestamp!r}")
        return " ".join(key.sign(message_id, timestamp, body) for key in self._keys)

    def headers(
        self, body: bytes, *, message_id: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """The three headers for ``body``: a new message id and the clock's time by default."""
        message_id = self.new_message_id() if message_id is None else message_id
        timestamp = self.now() if timestamp is None else timestamp
        return {
            WEBHOOK_ID_HEADER: message_id,
            WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
            WEBHOOK_SIGNATURE_HEADER: self.signature(message_id, timestamp, body),
        }

    def __repr__(self) -> str:
        return f"WebhookSigner(keys={list(self._keys)!r})"
