"""Proofs that leave the database: one organization's rows with RFC 6962 inclusion proofs.

``build_export`` writes, for organization N, every seal (the whole chain: it is small) and every
sealed row of N with its leaf index and audit path in its seal's tree. ``verify_export`` needs
nothing but that file and the public keys: it checks the chain and each signature, recomputes
each row's hash from its ``event_id`` and ``event_json``, and walks its proof up to the signed
root. What it cannot show is a row of N that was left out of the file (the seals count rows,
not rows per organization); ``auditevt verify`` against the database catches deletions.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy.exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from audit_middleware._exceptions import IntegrityError, map_database_error
from audit_middleware.integrity._chain import (
    StoredSeal,
    check_chain,
    check_published,
    sealed_leaves,
)
from audit_middleware.integrity._columns import parse_event
from audit_middleware.integrity._keys import PublicKeys
from audit_middleware.integrity._merkle import (
    inclusion_proof,
    leaf_hash,
    merkle_levels,
    root_from_inclusion_proof,
)
from audit_middleware.integrity._report import Finding, VerifyReport
from audit_middleware.integrity._rowhash import row_hash
from audit_middleware.integrity._seal import Seal, SealFormatError
from audit_middleware.storage._tables import AUDIT_LOG, AUDIT_SEALS, qualified

__all__ = ["EXPORT_FORMAT", "build_export", "verify_export"]

EXPORT_FORMAT = "auditevt-proofs/1"
"""The ``format`` field of an export."""


async def build_export(engine: AsyncEngine, organization: int) -> dict[str, Any]:
    """Organization ``organization``'s sealed rows, their inclusion proofs and every seal.

    Raises ``IntegrityError`` when the database cannot be read or a seal's stored leaves do not
    match its root (run ``auditevt verify`` to see why).
    """
    rows_out: list[dict[str, Any]] = []
    seals_out: list[dict[str, str]] = []
    try:
        async with qualified(engine).connect() as conn:
            seals = await conn.execute(select(AUDIT_SEALS).order_by(AUDIT_SEALS.c.seq))
            for stored in seals:
                seal = Seal.parse(stored.body, bytes(stored.signature))
                seals_out.append(seal.to_json())
                item = StoredSeal(seal.seq, seal.body, seal.signature, seal=seal, trusted=True)
                leaves, finding = sealed_leaves(item, bytes(stored.ids), bytes(stored.row_hashes))
                if leaves is None:
                    raise IntegrityError(finding.message if finding else f"seal {seal.seq}")
                rows = (
                    await conn.execute(
                        select(AUDIT_LOG.c.id, AUDIT_LOG.c.event_id, AUDIT_LOG.c.event_json)
                        .where(
                            AUDIT_LOG.c.organization_id == organization,
                            AUDIT_LOG.c.id.between(seal.first_id, seal.last_id),
                        )
                        .order_by(AUDIT_LOG.c.id)
                    )
                ).all()
                if not rows:
                    continue
                order = list(leaves)
                position = {row_id: index for index, row_id in enumerate(order)}
                levels = merkle_levels([leaf_hash(i, leaves[i]) for i in order])
                for row in rows:
                    index = position.get(row.id)
                    if index is None:
                        continue  # not sealed: verify reports it as inserted
                    rows_out.append(
                        {
                            "id": row.id,
                            "event_id": str(row.event_id),
                            "event_json": row.event_json,
                            "seal": seal.seq,
                            "index": index,
                            "proof": [node.hex() for node in inclusion_proof(levels, index)],
                        }
                    )
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise map_database_error(exc, IntegrityError, "export proofs") from exc
    except SealFormatError as exc:
        raise IntegrityError(f"a stored seal is damaged ({exc}): run auditevt verify") from exc
    return {
        "format": EXPORT_FORMAT,
        "organization_id": organization,
        "seals": seals_out,
        "rows": rows_out,
    }


def _export_error(message: str) -> IntegrityError:
    return IntegrityError(f"not an auditevt proofs export: {message}")


def verify_export(data: Any, keys: PublicKeys, *, published: str | None = None) -> VerifyReport:
    """Verify an export offline against the trusted ``keys`` (and a published copy, if given).

    Raises ``IntegrityError`` naming the field when ``data`` is not an export at all.
    """
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise _export_error(f"'format' must be {EXPORT_FORMAT!r}")
    organization = data.get("organization_id")
    if type(organization) is not int:
        raise _export_error(f"'organization_id' must be an integer, got {organization!r}")
    if not isinstance(data.get("seals"), list) or not isinstance(data.get("rows"), list):
        raise _export_error("'seals' and 'rows' must be lists")
    findings: list[Finding] = []
    stored: list[StoredSeal] = []
    for number, entry in enumerate(data["seals"], start=1):
        try:
            seal = Seal.from_json(entry)
        except SealFormatError as exc:
            findings.append(Finding("altered_seal", f"seal entry {number}: {exc}"))
            continue
        stored.append(StoredSeal(seal.seq, seal.body, seal.signature))
    findings.extend(check_chain(stored, keys))
    if published is not None:
        findings.extend(check_published(stored, published, keys))
    by_seq = {item.seq: item for item in stored if item.seal is not None}
    for row in data["rows"]:
        findings.extend(_check_exported_row(row, by_seq, organization))
    return VerifyReport(
        findings=tuple(findings), rows_checked=len(data["rows"]), seals_checked=len(stored)
    )


def _check_exported_row(row: Any, seals: dict[int, StoredSeal], organization: int) -> list[Finding]:
    if not isinstance(row, dict):
        return [Finding("altered_row", f"row entry {row!r:.40} is not an object")]
    row_id = row.get("id")
    try:
        event_id = uuid.UUID(str(row["event_id"]))
        event_json, index, proof = row["event_json"], row["index"], row["proof"]
        nodes = [bytes.fromhex(node) for node in proof]
        if type(row_id) is not int or type(index) is not int or not isinstance(event_json, str):
            raise TypeError("id, index and event_json")
    except (KeyError, TypeError, ValueError) as exc:
        return [Finding("altered_row", f"row {row_id!r}: malformed entry ({exc})")]
    item = seals.get(row.get("seal"))  # type: ignore[arg-type]
    if item is None or item.seal is None:
        return [
            Finding(
                "altered_row",
                f"row {row_id}: its seal {row.get('seal')!r} is not in the export",
                row_id=row_id,
            )
        ]
    seal = item.seal
    found = []
    event = parse_event(event_json)
    if isinstance(event, str):
        found.append(event)
    elif event.organization_id != organization:
        found.append(f"its event is of organization {event.organization_id}, not {organization}")
    if not seal.first_id <= row_id <= seal.last_id:
        found.append(f"its id is outside seal {seal.seq}'s range {seal.first_id}..{seal.last_id}")
    leaf = leaf_hash(row_id, row_hash(event_id, event_json))
    if root_from_inclusion_proof(leaf, index, seal.count, nodes) != seal.root:
        found.append(f"its inclusion proof does not lead to seal {seal.seq}'s signed root")
    if not found:
        return []
    return [
        Finding("altered_row", f"row {row_id}: {'; '.join(found)}", row_id=row_id, seal=seal.seq)
    ]
