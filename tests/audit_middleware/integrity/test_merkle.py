"""RFC 6962 tree hashes and audit paths: the Certificate Transparency vectors, and a reference."""

from __future__ import annotations

import hashlib

import pytest

from audit_middleware.integrity._merkle import (
    EMPTY_ROOT,
    inclusion_proof,
    leaf_hash,
    merkle_levels,
    merkle_root,
    root_from_inclusion_proof,
)

# RFC 6962's test data, as the Certificate Transparency implementations use it.
CT_ENTRIES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]  # fmt: skip
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip


def ct_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH as RFC 6962 section 2.1 writes it: split at the largest power of two below n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(
        b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])
    ).digest()


def reference_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 section 2.1.1."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return [*reference_path(index, leaves[:k]), reference_root(leaves[k:])]
    return [*reference_path(index - k, leaves[k:]), reference_root(leaves[:k])]


def test_merkle_roots_match_the_rfc6962_vectors() -> None:
    leaves = [ct_leaf(entry) for entry in CT_ENTRIES]
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    for size in range(len(leaves) + 1):
        assert merkle_root(leaves[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_merkle_inclusion_proofs_match_the_rfc6962_vectors(
    index: int, size: int, proof: list[str]
) -> None:
    leaves = [ct_leaf(entry) for entry in CT_ENTRIES[:size]]
    path = inclusion_proof(merkle_levels(leaves), index)
    assert [node.hex() for node in path] == proof
    root = root_from_inclusion_proof(leaves[index], index, size, path)
    assert root is not None and root.hex() == CT_ROOTS[size]


def test_merkle_every_proof_of_every_size_agrees_with_the_reference() -> None:
    for size in range(1, 42):
        leaves = [leaf_hash(i, hashlib.sha256(bytes([i])).digest()) for i in range(size)]
        levels = merkle_levels(leaves)
        root = merkle_root(leaves)
        assert root == reference_root(leaves) == levels[-1][0]
        for index in range(size):
            path = inclusion_proof(levels, index)
            assert path == reference_path(index, leaves)
            assert root_from_inclusion_proof(leaves[index], index, size, path) == root


def test_merkle_a_proof_fails_for_another_leaf_index_or_size() -> None:
    leaves = [leaf_hash(i, bytes(32)) for i in range(11)]
    levels, root = merkle_levels(leaves), merkle_root(leaves)
    path = inclusion_proof(levels, 6)
    assert root_from_inclusion_proof(leaves[6], 6, 11, path) == root
    assert root_from_inclusion_proof(leaves[5], 6, 11, path) != root  # another leaf
    assert root_from_inclusion_proof(leaves[6], 7, 11, path) != root  # another index
    last = inclusion_proof(levels, 10)
    assert root_from_inclusion_proof(leaves[10], 10, 11, last) == root
    assert root_from_inclusion_proof(leaves[10], 10, 12, last) != root  # another size
    assert root_from_inclusion_proof(leaves[6], 6, 11, path[:-1]) != root  # cut short
    assert root_from_inclusion_proof(leaves[6], 11, 11, path) is None  # outside the tree


def test_merkle_leaf_binds_the_row_id() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert leaf_hash(1, digest) != leaf_hash(2, digest)
    assert (
        leaf_hash(1, digest) == hashlib.sha256(b"\x00" + (1).to_bytes(8, "big") + digest).digest()
    )
    with pytest.raises(ValueError, match="leaf index 3 is outside a tree of 3 leaves"):
        inclusion_proof(merkle_levels(leaves=[digest] * 3), 3)


def test_merkle_sealer_split_puts_records_in_id_order() -> None:
    from audit_middleware.integrity._sealer import _split

    hashes = {i: hashlib.sha256(bytes([i])).digest() for i in (3, 1, 2)}
    ids = b"".join(i.to_bytes(8, "big") for i in hashes)
    ordered_ids, ordered_hashes, leaves = _split(ids, b"".join(hashes.values()))
    assert ordered_ids == b"".join(i.to_bytes(8, "big") for i in (1, 2, 3))
    assert ordered_hashes == b"".join(hashes[i] for i in (1, 2, 3))
    assert leaves == [leaf_hash(i, hashes[i]) for i in (1, 2, 3)]
