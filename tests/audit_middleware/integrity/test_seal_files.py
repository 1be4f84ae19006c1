"""Seals, keys and the directory sink without a database: formats, signatures, refusals."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from audit_middleware import (
    DirectorySink,
    IntegrityError,
    Seal,
    SigningKey,
    generate_key_files,
    load_public_keys,
    load_signing_key,
    row_hash,
    verify_export,
)
from audit_middleware.integrity._seal import GENESIS, SealFormatError, make_seal
from audit_middleware.integrity._sink import load_published
from conftest import make_event


def a_seal(key: SigningKey, seq: int = 1, prev: bytes = GENESIS) -> Seal:
    return make_seal(
        key, seq=seq, first_id=1, last_id=3, count=3, root=bytes(range(32)), prev=prev,
        sealed_at="2026-12-01T07:00:00.000000Z",
    )  # fmt: skip


def test_seal_round_trips_and_verifies_only_with_its_key() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    seal = a_seal(key)
    assert Seal.from_json(json.loads(json.dumps(seal.to_json()))) == seal
    assert seal.signature_problem({key.key_id: key.public_key}) is None
    assert seal.signature_problem({other.key_id: other.public_key}) == (
        f"signed by unknown key {key.key_id!r}"
    )
    # The right key id, the wrong key: the signature does not verify.
    assert "does not verify" in str(seal.signature_problem({key.key_id: other.public_key}))
    edited = Seal.parse(seal.body.replace('"count":3', '"count":4'), seal.signature)
    assert "does not verify" in str(edited.signature_problem({key.key_id: key.public_key}))
    following = a_seal(key, 2, seal.hash)
    assert following.prev == seal.hash != following.hash
    assert repr(key) == f"SigningKey(key_id={key.key_id!r})"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not JSON"),
        ('{"v": 1}', "exactly the fields"),
        (
            '{"count":"3","first_id":1,"key_id":"k","last_id":3,"prev":"00","root":"00",'
            '"sealed_at":"t","seq":1,"v":1}',
            "count must be an integer",
        ),
        (
            '{"count":3,"first_id":1,"key_id":"k","last_id":3,"prev":"00","root":"zz",'
            '"sealed_at":"t","seq":1,"v":1}',
            "must be hex",
        ),
    ],
)
def test_seal_parse_names_what_is_wrong(body: str, message: str) -> None:
    with pytest.raises(SealFormatError, match=message):
        Seal.parse(body, b"")


def test_keys_load_refuses_other_files(tmp_path: Path) -> None:
    private, public = generate_key_files(tmp_path)
    assert load_signing_key(private).key_id in private.name
    with pytest.raises(IntegrityError, match="is not an unencrypted PEM private key"):
        load_signing_key(public)
    x25519 = tmp_path / "x.pem"
    x25519.write_bytes(
        X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )  # fmt: skip
    with pytest.raises(IntegrityError, match="holds a X25519PrivateKey, not an Ed25519"):
        load_signing_key(x25519)
    with pytest.raises(IntegrityError, match="no public key given"):
        load_public_keys([])
    with pytest.raises(IntegrityError, match=r"cannot read the public key /nope\.pem"):
        load_public_keys(["/nope.pem"])


def test_sink_never_replaces_a_published_seal(tmp_path: Path) -> None:
    key = SigningKey.generate()
    sink = DirectorySink(tmp_path / "seals")
    seal = a_seal(key)
    sink.publish(seal)
    sink.publish(seal)  # the same again: fine
    with pytest.raises(IntegrityError, match="already holds a different seal 1"):
        sink.publish(a_seal(SigningKey.generate()))
    (tmp_path / "seals" / "seal-000000000002.json").write_text("{broken")
    found = load_published(tmp_path / "seals")
    assert found[1] == seal
    assert isinstance(found[2], str) and "seal-000000000002.json" in found[2]
    assert [p.name for p in (tmp_path / "seals").iterdir() if p.name.startswith(".")] == []


def test_export_verification_names_rows_of_another_organization() -> None:
    from audit_middleware import leaf_hash, merkle_root
    from audit_middleware.integrity._merkle import inclusion_proof, merkle_levels

    key = SigningKey.generate()
    events = [make_event(1, organization_id=7), make_event(2, organization_id=8)]
    event_ids = [uuid.uuid4(), uuid.uuid4()]
    leaves = [
        leaf_hash(i + 1, row_hash(event_ids[i], events[i].to_json())) for i in range(2)
    ]
    seal = make_seal(
        key, seq=1, first_id=1, last_id=2, count=2, root=merkle_root(leaves), prev=GENESIS,
        sealed_at="2026-12-01T07:00:00.000000Z",
    )  # fmt: skip
    levels = merkle_levels(leaves)
    rows = [
        {"id": i + 1, "event_id": str(event_ids[i]), "event_json": events[i].to_json(),
         "seal": 1, "index": i, "proof": [n.hex() for n in inclusion_proof(levels, i)]}
        for i in range(2)
    ]  # fmt: skip
    export = {"format": "auditevt-proofs/1", "organization_id": 7, "seals": [seal.to_json()]}
    keys = {key.key_id: key.public_key}
    assert verify_export({**export, "rows": rows[:1]}, keys).ok
    report = verify_export({**export, "rows": rows}, keys)
    assert [(f.kind, f.row_id) for f in report.problems] == [("altered_row", 2)]
    assert "organization 8, not 7" in report.problems[0].message
    with pytest.raises(IntegrityError, match="'organization_id' must be an integer"):
        verify_export({**export, "organization_id": "7", "rows": []}, keys)
