"""RFC 6962 (Certificate Transparency) Merkle tree hashes and inclusion proofs.

For leaves ``d[0:n]``: ``MTH({}) = SHA-256()``, ``MTH({d0}) = SHA-256(0x00 || d0)`` and, for
``n > 1`` with ``k`` the largest power of two below ``n``,
``MTH(d[0:n]) = SHA-256(0x01 || MTH(d[0:k]) || MTH(d[k:n]))``. Computed bottom-up, pairing
neighbours and carrying an odd last node up unchanged, which gives the same root with one hash
call per node. Inclusion proofs are RFC 6962 audit paths, checked with RFC 9162 section 2.1.3.2.

A leaf of ours is one audit row: ``0x00 || id (8 bytes, big-endian) || row_hash``, so the root
binds each row's content hash to its position in the log.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "inclusion_proof",
    "leaf_hash",
    "merkle_levels",
    "merkle_root",
    "root_from_inclusion_proof",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The RFC 6962 hash of the empty tree."""

_ID = struct.Struct(">q")


def leaf_hash(row_id: int, row_hash: bytes) -> bytes:
    """The RFC 6962 leaf hash of the row ``row_id`` whose content hash is ``row_hash``."""
    return hashlib.sha256(b"\x00" + _ID.pack(row_id) + row_hash).digest()


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    sha256 = hashlib.sha256
    paired = [
        sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
    ]
    if len(level) % 2:
        paired.append(level[-1])  # promoted: RFC 6962 splits at the largest power of two
    return paired


def merkle_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``leaves`` (leaf hashes), from the leaves up to the root."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        levels.append(_next_level(levels[-1]))
    return levels


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle tree hash over ``leaves`` (leaf hashes, in order)."""
    if not leaves:
        return EMPTY_ROOT
    level: Sequence[bytes] = leaves
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def inclusion_proof(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree whose levels are ``levels``, leaf first."""
    size = len(levels[0])
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index >>= 1
    return proof


def root_from_inclusion_proof(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes | None:
    """The root that ``proof`` leads to from ``leaf`` at ``index`` of ``size``; None if malformed.

    RFC 9162, section 2.1.3.2: the proof verifies when the result equals the signed root.
    """
    if not 0 <= index < size:
        return None
    fn, sn, root = index, size - 1, leaf
    sha256 = hashlib.sha256
    for node in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            root = sha256(b"\x01" + node + root).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            root = sha256(b"\x01" + root + node).digest()
        fn >>= 1
        sn >>= 1
    return root if sn == 0 else None
