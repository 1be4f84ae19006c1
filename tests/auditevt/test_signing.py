"""Signing keys and the signer: the Standard Webhooks vector, rotation, keys that never show."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

import auditevt
from auditevt import (
    MAX_SIGNING_KEY_BYTES,
    MIN_SIGNING_KEY_BYTES,
    BadSignatureError,
    FutureTimestampError,
    MalformedHeaderError,
    MissingHeaderError,
    ReplayError,
    SignatureError,
    SigningKey,
    StaleTimestampError,
    TimestampError,
    WebhookSigner,
    signing_keys,
)

# The test vector every Standard Webhooks library reproduces.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signing_key_reproduces_the_standard_webhooks_vector() -> None:
    key = SigningKey(VECTOR_SECRET)
    assert key.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    assert key.secret == VECTOR_SECRET


def test_signing_key_round_trips_through_its_secret() -> None:
    key = SigningKey.generate()
    assert SigningKey(key.secret) == key
    assert SigningKey(f"  {key.secret}\n") == key  # as read from a file
    assert SigningKey.from_bytes(base64.b64decode(key.secret[6:])) == key
    assert SigningKey.generate() != key
    assert len({key, SigningKey(key.secret)}) == 1


def test_signing_key_repr_shows_a_fingerprint_never_the_secret() -> None:
    key = SigningKey(VECTOR_SECRET)
    text = repr(key) + repr(WebhookSigner(key)) + str(key)
    assert VECTOR_SECRET[6:] not in text and "MfKQ" not in text
    assert re.fullmatch(r"SigningKey\(fingerprint='[0-9a-f]{8}'\)", repr(key))
    assert key.fingerprint != SigningKey.generate().fingerprint


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec-MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", "not standard base64"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "not standard base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "16 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "65 bytes"),
        ("whsec_", "0 bytes"),
    ],
)
def test_signing_key_refuses_a_bad_secret_without_showing_it(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        SigningKey(secret)
    body = secret.removeprefix("whsec_").removeprefix("whsec-")
    assert not body or body not in str(caught.value)


def test_signing_key_length_bounds_are_those_of_standard_webhooks() -> None:
    assert (MIN_SIGNING_KEY_BYTES, MAX_SIGNING_KEY_BYTES) == (24, 64)
    SigningKey.from_bytes(bytes(24))
    SigningKey.from_bytes(bytes(64))
    with pytest.raises(TypeError, match="must be a str, not bytes"):
        SigningKey(b"whsec_abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes, not str"):
        SigningKey.from_bytes("x" * 32)  # type: ignore[arg-type]


def test_signing_keys_takes_one_several_or_texts_and_drops_repeats() -> None:
    one, two = SigningKey.generate(), SigningKey.generate()
    assert signing_keys(one) == (one,)
    assert signing_keys(one.secret) == (one,)
    assert signing_keys([one, two.secret, one]) == (one, two)
    with pytest.raises(ValueError, match="no signing key given"):
        signing_keys([])
    with pytest.raises(ValueError, match=r"signing key 2: .*must start with 'whsec_'"):
        signing_keys([one, "nope"])
    with pytest.raises(TypeError, match="the signing key must be a SigningKey"):
        signing_keys([b"whsec_"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not int"):
        signing_keys(3)  # type: ignore[arg-type]


def test_signer_headers_are_standard_webhooks_headers() -> None:
    signer = WebhookSigner(VECTOR_SECRET, clock=lambda: VECTOR_TIMESTAMP + 0.9)
    headers = signer.headers(VECTOR_BODY, message_id=VECTOR_ID)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),  # whole seconds, rounded down
        "webhook-signature": VECTOR_SIGNATURE,
    }
    fresh = signer.headers(b"{}")
    assert re.fullmatch(r"msg_[0-9a-f]{32}", fresh["webhook-id"])
    assert fresh["webhook-id"] != signer.headers(b"{}")["webhook-id"]


def test_signer_signs_once_per_key_during_a_rotation() -> None:
    old, new = SigningKey(VECTOR_SECRET), SigningKey.generate()
    value = WebhookSigner([old, new]).signature(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert value.split(" ") == [
        VECTOR_SIGNATURE,
        new.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
    ]


@pytest.mark.parametrize("message_id", ["", "msg.1", "msg 1", "é", "x" * 257, "a\nb"])
def test_signer_refuses_a_message_id_a_receiver_could_misread(message_id: str) -> None:
    with pytest.raises(ValueError, match="message id"):
        WebhookSigner(SigningKey.generate()).headers(b"{}", message_id=message_id)


@pytest.mark.parametrize("timestamp", [-1, 1.5, True, "1"])
def test_signer_refuses_a_timestamp_that_is_not_unix_seconds(timestamp: object) -> None:
    with pytest.raises(ValueError, match="timestamp must be Unix seconds"):
        WebhookSigner(SigningKey.generate()).signature("msg_1", timestamp, b"")  # type: ignore[arg-type]


def test_signature_errors_form_the_tree_the_docstring_draws() -> None:
    tree = {
        MissingHeaderError: SignatureError,
        MalformedHeaderError: SignatureError,
        TimestampError: SignatureError,
        StaleTimestampError: TimestampError,
        FutureTimestampError: TimestampError,
        BadSignatureError: SignatureError,
        ReplayError: SignatureError,
    }
    for cls, parent in tree.items():
        assert cls.__bases__ == (parent,), cls
    doc = Path(auditevt._signing.__file__).read_text(encoding="utf-8")
    drawn = re.findall(r"[├└]── (\w+)", doc)
    assert sorted(drawn) == sorted(cls.__name__ for cls in tree)
    assert SignatureError.__bases__ == (Exception,)
