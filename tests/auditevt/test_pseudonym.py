from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import TypeAdapter, ValidationError

from auditevt import MIN_PSEUDONYM_KEY_BYTES, Pseudonym, Pseudonymizer

KEY = bytes(range(32))


def test_pseudonymizer_matches_an_independent_hmac() -> None:
    pseudonymizer = Pseudonymizer(KEY, key_id="k1")
    for actor_id in (0, 1, 42, -7, 2**63 - 1, -(2**63)):
        expected = hmac.new(KEY, str(actor_id).encode(), hashlib.sha256).hexdigest()
        assert pseudonymizer.pseudonymize(actor_id) == "k1:" + expected


@pytest.mark.parametrize(
    ("actor_id", "expected"),
    [
        (42, "k1:7df989924b2ebf8832c80802d1213a8a21a062a23877f0718effe501daee1703"),
    ],
)
def test_pseudonymizer_fixed_vectors_bytes_key(actor_id: int, expected: str) -> None:
    # Pinned outputs: any other implementation (the Go side) must produce exactly these.
    assert Pseudonymizer(KEY, key_id="k1").pseudonymize(actor_id) == expected


@pytest.mark.parametrize(
    ("actor_id", "expected"),
    [
        (1, "19c0dae98ec1aca3ccb1f264cb6bcf2edb89fbefb0214ccc774fec73cc82b646"),
        (-1, "b967e4583ff36d60730a85d4e4468dc588657b28f79ab4cf1ed60e755fa81425"),
        (2**63 - 1, "dd63cb241f201f3c9bf2a7829bccb17c32022cb5defc93efa716927b8d8cf6db"),
    ],
)
def test_pseudonymizer_fixed_vectors_text_key(actor_id: int, expected: str) -> None:
    pseudonymizer = Pseudonymizer(b"auditevt pseudonym test key 0001", key_id="test")
    assert pseudonymizer.pseudonymize(actor_id) == "test:" + expected


def test_pseudonymizer_is_deterministic_and_keyed() -> None:
    one = Pseudonymizer(KEY, key_id="k1")
    again = Pseudonymizer(KEY, key_id="k1")
    other_key = Pseudonymizer(bytes(reversed(KEY)), key_id="k1")
    assert one.pseudonymize(42) == again.pseudonymize(42)
    assert one.pseudonymize(42) != one.pseudonymize(43)
    assert one.pseudonymize(42) != other_key.pseudonymize(42)


def test_pseudonymizer_is_not_a_plain_hash() -> None:
    # Enumerating sha256 of small ids (salted or not with the key id) must not find it.
    pseudonym = Pseudonymizer(KEY, key_id="k1").pseudonymize(42)
    digest = pseudonym.split(":", 1)[1]
    assert digest != hashlib.sha256(b"42").hexdigest()
    assert digest != hashlib.sha256(b"k142").hexdigest()
    assert digest != hashlib.sha256(KEY + b"42").hexdigest()


def test_pseudonymizer_prefixes_the_key_id_for_rotation() -> None:
    old = Pseudonymizer(KEY, key_id="2025-q4")
    new = Pseudonymizer(KEY, key_id="2026-q1")
    assert old.pseudonymize(1).startswith("2025-q4:")
    assert new.pseudonymize(1).startswith("2026-q1:")
    assert new.key_id == "2026-q1"


def test_pseudonymizer_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="key is 15 bytes"):
        Pseudonymizer(b"x" * (MIN_PSEUDONYM_KEY_BYTES - 1), key_id="k1")
    Pseudonymizer(b"x" * MIN_PSEUDONYM_KEY_BYTES, key_id="k1")


def test_pseudonymizer_refuses_a_text_key() -> None:
    with pytest.raises(TypeError, match="key must be bytes, not str"):
        Pseudonymizer("0123456789abcdef0123", key_id="k1")  # type: ignore[arg-type]


@pytest.mark.parametrize("key_id", ["", "k:1", "k 1", "ключ", "k" * 33, "k1\n"])
def test_pseudonymizer_refuses_a_bad_key_id(key_id: str) -> None:
    with pytest.raises(ValueError, match="key_id="):
        Pseudonymizer(KEY, key_id=key_id)


@pytest.mark.parametrize("actor_id", [True, 1.0, "42", None])
def test_pseudonymize_refuses_a_non_int(actor_id: object) -> None:
    with pytest.raises(TypeError, match="actor_id must be an int"):
        Pseudonymizer(KEY, key_id="k1").pseudonymize(actor_id)  # type: ignore[arg-type]


def test_pseudonymize_refuses_an_id_outside_int64() -> None:
    with pytest.raises(ValueError, match="outside int64"):
        Pseudonymizer(KEY, key_id="k1").pseudonymize(2**63)


def test_pseudonymizer_repr_hides_the_key() -> None:
    text = repr(Pseudonymizer(KEY, key_id="k1"))
    assert text == "Pseudonymizer(key_id='k1')"
    assert KEY.hex() not in text


def test_pseudonym_type_accepts_what_the_pseudonymizer_writes() -> None:
    adapter = TypeAdapter(Pseudonym)
    text = Pseudonymizer(KEY, key_id="k_1-a").pseudonymize(5)
    assert adapter.validate_python(text) == text
    assert adapter.validate_json(f'"{text}"') == text


@pytest.mark.parametrize(
    "value",
    [
        "42",
        "k1:" + "0" * 63,
        "k1:" + "0" * 65,
        "k1:" + "A" * 64,
        ":" + "0" * 64,
        "k1" + "0" * 64,
        "k:1:" + "0" * 64,
        "k" * 33 + ":" + "0" * 64,
    ],
)
def test_pseudonym_type_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Pseudonym).validate_python(value)


def test_pseudonym_type_refuses_a_raw_integer() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Pseudonym).validate_json("42")
