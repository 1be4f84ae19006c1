"""Ed25519 seal keys: generate a pair, load the private key to sign, public keys to verify.

A key's id is the first 16 hex digits of SHA-256 over its raw 32-byte public key, so the id is
derived from the key itself, never taken from a file name: a verifier handed several public
keys (rotation) picks the one a seal names, and an attacker cannot claim a trusted id.
Files are PEM: PKCS#8 for the private key (mode 0600), SubjectPublicKeyInfo for the public one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit_middleware._exceptions import IntegrityError

__all__ = [
    "PublicKeys",
    "SigningKey",
    "generate_key_files",
    "key_id",
    "load_public_keys",
    "load_signing_key",
    "signature_valid",
]

logger = logging.getLogger("audit_middleware.integrity")

PublicKeys = Mapping[str, Ed25519PublicKey]
"""Trusted public keys by key id (see :func:`load_public_keys`)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id of ``public_key``: 16 hex digits of SHA-256 over its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private seal key and its id; signs seal bodies."""

    private_key: Ed25519PrivateKey
    """The Ed25519 private key."""

    @property
    def key_id(self) -> str:
        """The id seals signed with this key carry."""
        return key_id(self.private_key.public_key())

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, for verifiers."""
        return self.private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self.private_key.sign(message)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key (tests and ``auditevt keygen``)."""
        return cls(Ed25519PrivateKey.generate())

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"  # never the key itself


def signature_valid(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def generate_key_files(out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new key pair into ``out_dir``; return (private file, public file).

    Names: ``auditevt-seal-<keyid>.private.pem`` (created with mode 0600, never overwritten)
    and ``auditevt-seal-<keyid>.public.pem``. Raises ``IntegrityError`` naming the path when
    the directory cannot be written.
    """
    directory = Path(out_dir)
    key = SigningKey.generate()
    private_path = directory / f"auditevt-seal-{key.key_id}.private.pem"
    public_path = directory / f"auditevt-seal-{key.key_id}.public.pem"
    private_pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never replace a key; 0600 from the first byte, not chmod-ed afterwards.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise IntegrityError(f"cannot write keys to {directory}: {exc.strerror}") from exc
    return private_path, public_path


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise IntegrityError(f"cannot read the {what} {os.fspath(path)}: {exc.strerror}") from exc


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """The Ed25519 private key in the PEM file ``path`` (PKCS#8, unencrypted).

    Raises ``IntegrityError`` naming the file when it cannot be read or is not such a key; logs
    a warning when group or others may read it.
    """
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(
            f"{os.fspath(path)} is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IntegrityError(
            f"{os.fspath(path)} holds a {type(key).__name__}, not an Ed25519 private key"
        )
    if os.stat(path).st_mode & 0o077:
        logger.warning("seal key %s is readable by group or others: chmod 600 it", path)
    return SigningKey(key)


def _load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{os.fspath(path)} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError(
            f"{os.fspath(path)} holds a {type(key).__name__}, not an Ed25519 public key"
        )
    return key


def load_public_keys(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys in the PEM files ``paths``, by key id (every key you trust).

    Raises ``IntegrityError`` naming the first file that cannot be read or is not such a key.
    """
    keys = {}
    for path in paths:
        key = _load_public_key(path)
        keys[key_id(key)] = key
    if not keys:
        raise IntegrityError("no public key given")
    return keys
