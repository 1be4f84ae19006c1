"""The content hash of one audit row, computed by the writer before the row is sent.

``row_hash = SHA-256("auditevt.row.v1" 0x00 || event_id (16 bytes) || event_json (UTF-8))``

Identity means the row's ``event_id``: minted before the write, unique, and the key Telemetry
deduplicates on. The sequence ``id`` is drawn by the database inside the write statement, so the
writer cannot know it without a round trip; it is bound later, in the Merkle leaf
(:func:`~audit_middleware.integrity._merkle.leaf_hash`), so moving a row to another id is caught
too. There is no link to the previous row: concurrent writers stay independent.

Migration 0003 computes the same hash in SQL (:data:`PG_ROW_HASH`) for rows written before it;
a test holds the two to each other. This module imports nothing but hashlib: the store's write
path imports it.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

__all__ = ["PG_ROW_HASH", "ROW_HASH_TAG", "row_hash", "row_hash_of_bytes"]

ROW_HASH_TAG = b"auditevt.row.v1\x00"
"""Domain separation: a row hash can never be mistaken for any other SHA-256 we compute."""

PG_ROW_HASH = (
    f"sha256('\\x{ROW_HASH_TAG.hex()}'::bytea || uuid_send(event_id)"
    " || convert_to(event_json, 'UTF8'))"
)
"""The same hash as a PostgreSQL expression over a row's ``event_id`` and ``event_json``."""


def row_hash(event_id: UUID, event_json: str) -> bytes:
    """The 32-byte content hash of the row holding ``event_json`` under ``event_id``."""
    return row_hash_of_bytes(event_id.bytes, event_json.encode("utf-8"))


def row_hash_of_bytes(event_id: bytes, event_json: bytes) -> bytes:
    """:func:`row_hash` of the id's 16 bytes and the JSON's UTF-8, for a writer holding both."""
    return hashlib.sha256(ROW_HASH_TAG + event_id + event_json).digest()
