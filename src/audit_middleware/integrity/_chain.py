"""Checks shared by the database and the export verifiers: the seal chain and sealed leaves."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audit_middleware.integrity._keys import PublicKeys
from audit_middleware.integrity._merkle import leaf_hash, merkle_root
from audit_middleware.integrity._report import Finding, FindingKind
from audit_middleware.integrity._seal import GENESIS, Seal
from audit_middleware.integrity._sink import load_published

__all__ = ["StoredSeal", "check_chain", "check_published", "sealed_leaves"]

_ID = struct.Struct(">q")


@dataclass
class StoredSeal:
    """A seal as found (in the database or an export), before it is trusted."""

    seq: int
    """The seq it is stored under."""
    body: str
    """The stored body."""
    signature: bytes
    """The stored signature."""
    columns: Mapping[str, object] | None = None
    """The database columns copied from the body (None in an export)."""
    seal: Seal | None = None
    """The parsed body (set by :func:`check_chain` when it parses)."""
    trusted: bool = False
    """Parsed, signed by a trusted key, and its columns match the body."""


def check_chain(stored: Sequence[StoredSeal], keys: PublicKeys) -> list[Finding]:
    """Parse, authenticate and link ``stored`` (in seq order); mark each one ``trusted``."""
    findings: list[Finding] = []
    previous: StoredSeal | None = None
    expected_seq, expected_first = 1, 1
    for item in stored:
        try:
            seal = Seal.parse(item.body, item.signature)
        except ValueError as exc:
            findings.append(Finding("altered_seal", f"seal {item.seq}: {exc}", seal=item.seq))
            previous = item
            expected_seq = item.seq + 1
            continue
        item.seal = seal
        trusted = True
        if item.columns is not None:
            for column, value in (
                ("seq", seal.seq),
                ("first_id", seal.first_id),
                ("last_id", seal.last_id),
                ("row_count", seal.count),
                ("key_id", seal.key_id),
            ):
                if item.columns[column] != value:
                    trusted = False
                    findings.append(
                        Finding(
                            "altered_seal",
                            f"seal {item.seq}: column {column} is {item.columns[column]!r} but "
                            f"the signed body says {value!r}",
                            seal=item.seq,
                        )
                    )
        problem = seal.signature_problem(keys)
        if problem is not None:
            trusted = False
            kind: FindingKind = (
                "unknown_key" if problem.startswith("signed by unknown") else "bad_signature"
            )
            findings.append(Finding(kind, f"seal {seal.seq}: {problem}", seal=seal.seq))
        if seal.seq != expected_seq:
            missing = range(expected_seq, seal.seq)
            text = (
                f"seal(s) {', '.join(map(str, missing))} missing before seal {seal.seq}"
                if seal.seq > expected_seq
                else f"seal {seal.seq} appears after seal {expected_seq - 1}: seals reordered"
            )
            findings.append(Finding("broken_chain", text, seal=seal.seq))
        prev_hash = GENESIS if previous is None else _hash(previous)
        if seal.prev != prev_hash:
            findings.append(
                Finding(
                    "broken_chain",
                    f"seal {seal.seq} does not chain to the seal before it "
                    f"(prev {seal.prev.hex()[:16]}…, expected {prev_hash.hex()[:16]}…)",
                    seal=seal.seq,
                )
            )
        if seal.first_id != expected_first:
            findings.append(
                Finding(
                    "broken_chain",
                    f"seal {seal.seq} covers ids from {seal.first_id}, expected {expected_first}",
                    seal=seal.seq,
                )
            )
        item.trusted = trusted
        previous = item
        expected_seq, expected_first = seal.seq + 1, seal.last_id + 1
    return findings


def _hash(item: StoredSeal) -> bytes:
    return Seal(item.body, item.signature, 0, 0, 0, 0, b"", b"", "", "").hash


def sealed_leaves(
    item: StoredSeal, ids_blob: bytes, hashes_blob: bytes
) -> tuple[dict[int, bytes] | None, Finding | None]:
    """The ``{id: row_hash}`` a trusted seal sealed, checked against its root; or a finding."""
    seal = item.seal
    if seal is None:
        raise ValueError(f"seal {item.seq} was not parsed: call check_chain first")
    count = len(ids_blob) // 8
    if len(ids_blob) != 8 * count or len(hashes_blob) != 32 * count or count != seal.count:
        return None, Finding(
            "altered_seal",
            f"seal {seal.seq}: its stored leaves are not {seal.count} ids and hashes",
            seal=seal.seq,
        )
    ids = [value for (value,) in _ID.iter_unpack(ids_blob)]
    hashes = [hashes_blob[i : i + 32] for i in range(0, len(hashes_blob), 32)]
    leaves = [leaf_hash(i, h) for i, h in zip(ids, hashes, strict=True)]
    ordered = all(a < b for a, b in itertools.pairwise(ids))
    inside = not ids or (seal.first_id <= ids[0] and ids[-1] <= seal.last_id)
    if not (ordered and inside) or merkle_root(leaves) != seal.root:
        return None, Finding(
            "altered_seal",
            f"seal {seal.seq}: its stored leaves do not match its signed root",
            seal=seal.seq,
        )
    return dict(zip(ids, hashes, strict=True)), None


def check_published(
    stored: Sequence[StoredSeal], directory: str, keys: PublicKeys
) -> list[Finding]:
    """Compare the seals with the copies published in ``directory`` (a ``DirectorySink``)."""
    findings: list[Finding] = []
    published = load_published(directory)
    by_seq = {item.seq: item for item in stored}
    latest = max(by_seq, default=0)
    for seq, copy in sorted(published.items()):
        if isinstance(copy, str):
            findings.append(
                Finding("bad_published_seal", f"published seal {seq}: {copy}", seal=seq)
            )
            continue
        problem = copy.signature_problem(keys)
        if problem is not None or copy.seq != seq:
            why = problem or f"the file of seal {seq} holds seal {copy.seq}"
            findings.append(Finding("bad_published_seal", f"published seal {seq}: {why}", seal=seq))
            continue
        item = by_seq.get(seq)
        if item is None:
            findings.append(
                Finding(
                    "missing_seal",
                    f"seal {seq} was published but is not in the database",
                    seal=seq,
                )
            )
        elif (item.body, item.signature) != (copy.body, copy.signature):
            findings.append(
                Finding(
                    "published_mismatch",
                    f"seal {seq} in the database differs from its published copy",
                    seal=seq,
                )
            )
    for seq in sorted(set(by_seq) - set(published)):
        # The newest seal may be between its commit and its publication.
        findings.append(
            Finding(
                "unpublished_seal",
                f"seal {seq} is in the database but was never published",
                seal=seq,
                problem=seq != latest,
            )
        )
    return findings
