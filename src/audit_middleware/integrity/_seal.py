"""A seal: a signed statement that the log held exactly these rows, chained to the previous one.

The signed body is canonical JSON (sorted keys, no spaces, ASCII)::

    {"count": 3, "first_id": 1, "key_id": "…", "last_id": 3, "prev": "<hex>", "root": "<hex>",
     "sealed_at": "2026-12-01T07:00:00.123456Z", "seq": 1, "v": 1}

``first_id``..``last_id`` is the id range the seal covers, inclusive: every row whose id is in it
is one of the ``count`` leaves of the RFC 6962 tree whose root is ``root``, in id order; a row
that appears later with an id in the range was inserted into a sealed range. Seal ``seq`` covers
the ids right after seal ``seq - 1`` and ``prev`` is that seal's :attr:`Seal.hash` (zeros for the
first), which is what CloudTrail's digests do with ``previousDigestSignature``. The signature is
Ed25519 over ``"auditevt.seal.v1" 0x00 || body``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from audit_middleware.integrity._keys import PublicKeys, SigningKey, signature_valid

__all__ = ["GENESIS", "SEAL_TAG", "Seal", "SealFormatError", "make_seal"]

SEAL_TAG = b"auditevt.seal.v1\x00"
"""What an Ed25519 seal signature signs before the body (domain separation)."""
GENESIS = bytes(32)
"""The ``prev`` of the first seal."""
_FIELDS = ("count", "first_id", "key_id", "last_id", "prev", "root", "sealed_at", "seq", "v")


class SealFormatError(ValueError):
    """A seal body or its signature is not what a sealer writes."""


@dataclass(frozen=True)
class Seal:
    """One seal: its signed body, the signature, and the fields read from the body."""

    body: str
    """The exact signed text (canonical JSON)."""
    signature: bytes
    """Ed25519 over ``SEAL_TAG + body``."""
    seq: int
    """1 for the first seal, then one more each."""
    first_id: int
    """Lowest row id of the covered range (inclusive)."""
    last_id: int
    """Highest row id of the covered range (inclusive)."""
    count: int
    """How many rows the range holds (the tree's size)."""
    root: bytes
    """RFC 6962 root over the rows' leaves, in id order."""
    prev: bytes
    """:attr:`hash` of the previous seal; :data:`GENESIS` for the first."""
    sealed_at: str
    """When it was made, RFC 3339 UTC."""
    key_id: str
    """Which key signed it."""

    @property
    def hash(self) -> bytes:
        """SHA-256 over body and signature: what the next seal's ``prev`` must be."""
        return hashlib.sha256(self.body.encode("ascii") + self.signature).digest()

    def signature_problem(self, keys: PublicKeys) -> str | None:
        """None when a key in ``keys`` signed this seal; otherwise what is wrong."""
        key = keys.get(self.key_id)
        if key is None:
            return f"signed by unknown key {self.key_id!r}"
        if not signature_valid(key, self.signature, SEAL_TAG + self.body.encode("ascii")):
            return f"signature does not verify with key {self.key_id!r}"
        return None

    def to_json(self) -> dict[str, str]:
        """``{"body": ..., "signature": base64}``: the published and exported form."""
        return {"body": self.body, "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, data: Any) -> Seal:
        """The seal in ``data`` (see :meth:`to_json`); raises ``SealFormatError``."""
        if not isinstance(data, dict) or not isinstance(data.get("body"), str):
            raise SealFormatError("a seal must be an object with a string 'body'")
        signature = data.get("signature")
        if not isinstance(signature, str):
            raise SealFormatError("a seal must have a base64 string 'signature'")
        try:
            raw = base64.b64decode(signature, validate=True)
        except binascii.Error as exc:
            raise SealFormatError(f"signature is not base64: {signature[:20]!r}") from exc
        return cls.parse(data["body"], raw)

    @classmethod
    def parse(cls, body: str, signature: bytes) -> Seal:
        """The seal whose signed body is ``body``; raises ``SealFormatError``."""
        try:
            fields = json.loads(body)
        except ValueError as exc:
            raise SealFormatError(f"seal body is not JSON: {exc}") from exc
        if not isinstance(fields, dict) or sorted(fields) != list(_FIELDS):
            raise SealFormatError(f"seal body must have exactly the fields {', '.join(_FIELDS)}")
        if fields["v"] != 1:
            raise SealFormatError(f"unknown seal version {fields['v']!r}")
        for name in ("seq", "first_id", "last_id", "count"):
            if type(fields[name]) is not int:
                raise SealFormatError(f"seal field {name} must be an integer, got {fields[name]!r}")
        for name in ("key_id", "sealed_at", "root", "prev"):
            if not isinstance(fields[name], str):
                raise SealFormatError(f"seal field {name} must be a string, got {fields[name]!r}")
        try:
            root, prev = bytes.fromhex(fields["root"]), bytes.fromhex(fields["prev"])
        except ValueError as exc:
            raise SealFormatError("seal fields root and prev must be hex") from exc
        if len(root) != 32 or len(prev) != 32:
            raise SealFormatError("seal fields root and prev must be 32 bytes")
        return cls(
            body=body,
            signature=bytes(signature),
            seq=fields["seq"],
            first_id=fields["first_id"],
            last_id=fields["last_id"],
            count=fields["count"],
            root=root,
            prev=prev,
            sealed_at=fields["sealed_at"],
            key_id=fields["key_id"],
        )


def canonical_body(fields: dict[str, Any]) -> str:
    """``fields`` as canonical JSON: the bytes that are signed."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def make_seal(
    key: SigningKey,
    *,
    seq: int,
    first_id: int,
    last_id: int,
    count: int,
    root: bytes,
    prev: bytes,
    sealed_at: str,
) -> Seal:
    """Sign a new seal with ``key``."""
    body = canonical_body(
        {
            "count": count,
            "first_id": first_id,
            "key_id": key.key_id,
            "last_id": last_id,
            "prev": prev.hex(),
            "root": root.hex(),
            "sealed_at": sealed_at,
            "seq": seq,
            "v": 1,
        }
    )
    return Seal.parse(body, key.sign(SEAL_TAG + body.encode("ascii")))
