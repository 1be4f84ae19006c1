"""Keyed pseudonyms of actor ids, computed identically by the Core API and Telemetry.

A pseudonym is ``<key_id>:<hex>``, where ``<hex>`` is the 64 lowercase hex digits of
``HMAC-SHA256(key, str(actor_id))``: the key is the secret, the message is the actor id in
decimal ASCII (``b"42"``, ``b"-7"``), and the key id names the key so keys can rotate (a
pseudonym made under ``k1`` is never confused with one made under ``k2``).

Why a key and not a salted hash: actor ids are small integers. Whoever holds
``sha256(salt + str(actor_id))`` and the salt (it is stored next to the data, or it is the
same everywhere) hashes ``0, 1, 2, ...`` until a digest matches; ten million ids take seconds
on a laptop, so the "anonymous" id is the user id. An HMAC key that never leaves the two services
makes that enumeration impossible without the key, and rotating the key (a new key id) unlinks
future pseudonyms from past ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Annotated

from pydantic import Strict, StringConstraints

from auditevt._event import INT64_MAX, INT64_MIN

__all__ = [
    "MIN_PSEUDONYM_KEY_BYTES",
    "PSEUDONYM_PATTERN",
    "Pseudonym",
    "Pseudonymizer",
]

#: The shortest key accepted: 16 bytes (128 bits). Use 32 random bytes (``secrets.token_bytes``).
MIN_PSEUDONYM_KEY_BYTES = 16

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")

#: A pseudonym: a key id of 1 to 32 characters ``A-Z a-z 0-9 _ -``, a colon, 64 lowercase hex.
PSEUDONYM_PATTERN = r"^[A-Za-z0-9_-]{1,32}:[0-9a-f]{64}$"

Pseudonym = Annotated[str, Strict(), StringConstraints(pattern=PSEUDONYM_PATTERN, max_length=97)]
"""A pseudonymised actor, as :meth:`Pseudonymizer.pseudonymize` writes it: ``k1:3f9a...``."""


class Pseudonymizer:
    """Turns actor ids into pseudonyms with one secret key.

    >>> p = Pseudonymizer(b"0123456789abcdef0123456789abcdef", key_id="k1")
    >>> p.pseudonymize(42)[:3]
    'k1:'
    """

    __slots__ = ("_key", "_key_id")

    def __init__(self, key: bytes, key_id: str) -> None:
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if len(key) < MIN_PSEUDONYM_KEY_BYTES:
            raise ValueError(
                f"key is {len(key)} bytes; a pseudonym key needs at least "
                f"{MIN_PSEUDONYM_KEY_BYTES} (use secrets.token_bytes(32))"
            )
        if not isinstance(key_id, str):
            raise TypeError(f"key_id must be a str, not {type(key_id).__name__}")
        if _KEY_ID.fullmatch(key_id) is None:
            raise ValueError(f"key_id={key_id!r} must be 1 to 32 characters of A-Z a-z 0-9 _ -")
        self._key = key
        self._key_id = key_id

    @property
    def key_id(self) -> str:
        """The id written in front of every pseudonym this key makes."""
        return self._key_id

    def pseudonymize(self, actor_id: int) -> str:
        """``<key_id>:<hex HMAC-SHA256 of the decimal id>``; one id always gives one text."""
        if type(actor_id) is not int:
            raise TypeError(f"actor_id must be an int, not {type(actor_id).__name__}")
        if not INT64_MIN <= actor_id <= INT64_MAX:
            raise ValueError(f"actor_id={actor_id} is outside int64")
        digest = hmac.new(self._key, str(actor_id).encode("ascii"), hashlib.sha256).hexdigest()
        return f"{self._key_id}:{digest}"

    def __repr__(self) -> str:
        # Never show the key.
        return f"Pseudonymizer(key_id={self._key_id!r})"
