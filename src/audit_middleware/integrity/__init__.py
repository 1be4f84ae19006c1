"""Integrity: tamper evidence for ``audit_log``.

- a content hash per row (``row_hash``), written with the row;
- ``Sealer``: signed seals over id ranges, an RFC 6962 Merkle root each, chained to the previous
  seal, published to a ``SealSink`` outside the database;
- ``verify_database`` and ``verify_export``: recompute everything and name what differs;
- ``build_export``: an organization's rows with inclusion proofs, verifiable offline.

``docs/security.md`` explains what is detected, by whom and from what.
"""

from audit_middleware.integrity._export import build_export, verify_export
from audit_middleware.integrity._keys import (
    SigningKey,
    generate_key_files,
    load_public_keys,
    load_signing_key,
)
from audit_middleware.integrity._merkle import leaf_hash, merkle_root, root_from_inclusion_proof
from audit_middleware.integrity._metrics import IntegrityStats
from audit_middleware.integrity._report import Finding, VerifyReport
from audit_middleware.integrity._rowhash import row_hash
from audit_middleware.integrity._seal import Seal
from audit_middleware.integrity._sealer import Sealer, SealerConfig
from audit_middleware.integrity._sink import DirectorySink, SealSink
from audit_middleware.integrity._verify import verify_database

__all__ = [
    "DirectorySink",
    "Finding",
    "IntegrityStats",
    "Seal",
    "SealSink",
    "Sealer",
    "SealerConfig",
    "SigningKey",
    "VerifyReport",
    "build_export",
    "generate_key_files",
    "leaf_hash",
    "load_public_keys",
    "load_signing_key",
    "merkle_root",
    "root_from_inclusion_proof",
    "row_hash",
    "verify_database",
    "verify_export",
]
