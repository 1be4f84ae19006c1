"""WebhookVerifier: what it accepts (one key, a rotation, a retry) and what it refuses, and why."""

from __future__ import annotations

import threading

import pytest

from auditevt import (
    BadSignatureError,
    FutureTimestampError,
    MalformedHeaderError,
    MemoryReplayStore,
    MissingHeaderError,
    ReplayError,
    SignatureError,
    SigningKey,
    StaleTimestampError,
    VerifiedWebhook,
    WebhookSigner,
    WebhookVerifier,
)

NOW = 1_764_583_872
BODY = b'{"events":[{"event_id":"00000000-0000-0000-0000-000000000001","event":{}}]}'
KEY = SigningKey.generate()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(
    body: bytes = BODY, *, keys: object = KEY, at: int = NOW, message_id: str = "msg_1"
) -> dict[str, str]:
    return WebhookSigner(keys).headers(body, message_id=message_id, timestamp=at)  # type: ignore[arg-type]


def verifier(keys: object = KEY, **options: object) -> WebhookVerifier:
    options.setdefault("clock", Clock())
    return WebhookVerifier(keys, **options)  # type: ignore[arg-type]


def test_verify_accepts_a_signed_request_and_says_what_it_proved() -> None:
    result = verifier().verify(signed(), BODY)
    assert result == VerifiedWebhook(message_id="msg_1", timestamp=NOW, key=KEY)


def test_verify_accepts_header_names_in_any_case() -> None:
    headers = {name.title(): value for name, value in signed().items()}
    assert verifier().verify(headers, BODY).message_id == "msg_1"


def test_verify_refuses_a_forged_body() -> None:
    headers = signed()
    forged = BODY.replace(b"0001", b"0002")
    with pytest.raises(BadSignatureError, match="no signature in webhook-signature") as caught:
        verifier().verify(headers, forged)
    assert caught.value.header == "webhook-signature"


def test_verify_refuses_a_request_signed_with_a_wrong_key() -> None:
    other = SigningKey.generate()
    with pytest.raises(BadSignatureError, match="under any of the 1 key"):
        verifier().verify(signed(keys=other), BODY)


def test_verify_refuses_an_id_or_timestamp_changed_after_signing() -> None:
    headers = signed()
    with pytest.raises(BadSignatureError):
        verifier().verify({**headers, "webhook-id": "msg_2"}, BODY)
    with pytest.raises(BadSignatureError):
        verifier().verify({**headers, "webhook-timestamp": str(NOW + 1)}, BODY)


def test_verify_error_never_shows_the_expected_signature() -> None:
    headers = signed(keys=SigningKey.generate())
    expected = KEY.sign("msg_1", NOW, BODY).removeprefix("v1,")
    with pytest.raises(BadSignatureError) as caught:
        verifier().verify(headers, BODY)
    assert expected not in str(caught.value)
    assert KEY.secret[6:] not in str(caught.value)


def test_verify_refuses_a_stale_timestamp() -> None:
    with pytest.raises(StaleTimestampError, match=r"is 301 s old; at most 300 s") as caught:
        verifier().verify(signed(at=NOW - 301), BODY)
    assert caught.value.header == "webhook-timestamp"
    # The edge of the window is inside it.
    assert verifier().verify(signed(at=NOW - 300), BODY).timestamp == NOW - 300


def test_verify_refuses_a_future_timestamp() -> None:
    with pytest.raises(FutureTimestampError, match=r"is 301 s ahead of this clock"):
        verifier().verify(signed(at=NOW + 301), BODY)
    assert verifier().verify(signed(at=NOW + 300), BODY).timestamp == NOW + 300


def test_verify_tolerance_and_clock_are_the_callers() -> None:
    clock = Clock()
    strict = verifier(tolerance=5, clock=clock)
    headers = signed()
    clock.now = NOW + 6
    with pytest.raises(StaleTimestampError, match="at most 5 s"):
        strict.verify(headers, BODY)
    clock.now = NOW + 5
    assert strict.verify(headers, BODY).timestamp == NOW


def test_verify_refuses_a_replayed_request() -> None:
    check = verifier()
    headers = signed()
    check.verify(headers, BODY)
    with pytest.raises(ReplayError, match=r"'msg_1' with webhook-timestamp .* already verified"):
        check.verify(headers, BODY)
    # Another verifier sharing the store refuses it too.
    store = MemoryReplayStore()
    verifier(replay_store=store).verify(signed(message_id="msg_9"), BODY)
    with pytest.raises(ReplayError):
        verifier(replay_store=store).verify(signed(message_id="msg_9"), BODY)


def test_verify_accepts_a_retry_of_one_message_with_a_fresh_timestamp() -> None:
    # Standard Webhooks: a retry keeps the webhook-id and carries the attempt's timestamp.
    check = verifier()
    check.verify(signed(at=NOW - 2), BODY)
    assert check.verify(signed(at=NOW - 1), BODY).message_id == "msg_1"


def test_verify_records_only_requests_whose_signature_matched() -> None:
    # Nobody without the key can block a message id in advance.
    store = MemoryReplayStore()
    check = verifier(replay_store=store)
    with pytest.raises(BadSignatureError):
        check.verify(signed(keys=SigningKey.generate()), BODY)
    assert len(store) == 0
    check.verify(signed(), BODY)
    assert len(store) == 1


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_refuses_a_request_without_a_signature_header(missing: str) -> None:
    headers = {name: value for name, value in signed().items() if name != missing}
    with pytest.raises(MissingHeaderError, match=f"the {missing} header is missing") as caught:
        verifier().verify(headers, BODY)
    assert caught.value.header == missing
    with pytest.raises(MissingHeaderError, match=f"the {missing} header is empty"):
        verifier().verify({**signed(), missing: " "}, BODY)


def test_verify_refuses_an_unsigned_request() -> None:
    with pytest.raises(MissingHeaderError, match="webhook-id header is missing"):
        verifier().verify({"content-type": "application/json"}, BODY)


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("webhook-timestamp", "1764583872.5", "is not whole Unix seconds"),
        ("webhook-timestamp", "-1764583872", "is not whole Unix seconds"),
        ("webhook-timestamp", "1_764_583_872", "is not whole Unix seconds"),
        ("webhook-timestamp", "١٧٦٤٥٨٣٨٧٢", "is not whole Unix seconds"),
        ("webhook-timestamp", "9" * 400, "is not whole Unix seconds"),
        ("webhook-signature", "v1a,abc v2,xyz", "holds no v1,<base64 of 32 bytes>"),
        ("webhook-signature", "v1,not-base64!", "holds no v1"),
        ("webhook-signature", "v1,AAAA", "holds no v1"),
        ("webhook-id", "msg.1", "webhook-id must be 1 to 256 printable ASCII"),
        ("webhook-id", "m" * 257, "webhook-id must be 1 to 256"),
    ],
)
def test_verify_refuses_a_malformed_header(header: str, value: str, message: str) -> None:
    with pytest.raises(MalformedHeaderError, match=message) as caught:
        verifier().verify({**signed(), header: value}, BODY)
    assert caught.value.header == header
    assert len(str(caught.value)) < 300


def test_verify_accepts_a_rotation_with_two_keys() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    # The sender signs with both; a receiver holding either key (or both) accepts.
    headers = signed(keys=[old, new])
    assert verifier(old).verify(headers, BODY).key == old
    assert verifier(new).verify(headers, BODY).key == new
    assert verifier([new, old]).verify(headers, BODY).key == new
    # A receiver already on both keys accepts a sender still on the old one alone, and one
    # already on the new one alone.
    assert verifier([old, new]).verify(signed(keys=old, message_id="a"), BODY).key == old
    assert verifier([old, new]).verify(signed(keys=new, message_id="b"), BODY).key == new
    with pytest.raises(BadSignatureError, match="under any of the 2 key"):
        verifier([old, new]).verify(signed(keys=SigningKey.generate()), BODY)


def test_verify_skips_unknown_signature_versions_among_good_ones() -> None:
    headers = signed()
    mixed = f"v1a,c29tZXRoaW5n {headers['webhook-signature']} v1,{'A' * 43}="
    assert verifier().verify({**headers, "webhook-signature": mixed}, BODY).key == KEY


def test_verify_takes_any_bytes_like_body_and_refuses_text() -> None:
    assert verifier().verify(signed(), bytearray(BODY)).key == KEY
    with pytest.raises(TypeError, match="body must be bytes"):
        verifier().verify(signed(), BODY.decode())  # type: ignore[arg-type]


def test_verifier_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        WebhookVerifier(KEY, tolerance=0)
    with pytest.raises(TypeError, match="tolerance must be seconds"):
        WebhookVerifier(KEY, tolerance="300")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be callable"):
        WebhookVerifier(KEY, clock=NOW)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="replay_store must have an add"):
        WebhookVerifier(KEY, replay_store=[])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must start with 'whsec_'"):
        WebhookVerifier(["secret"])
    assert KEY.secret[6:] not in repr(WebhookVerifier(KEY))


def test_signature_errors_share_one_root() -> None:
    for cls in (MissingHeaderError, MalformedHeaderError, StaleTimestampError, ReplayError):
        assert issubclass(cls, SignatureError)


# MemoryReplayStore ---------------------------------------------------------------------------


def test_replay_store_forgets_entries_once_they_expire() -> None:
    store = MemoryReplayStore()
    assert store.add("a", expires_at=10, now=0)
    assert not store.add("a", expires_at=10, now=9.9)
    assert store.add("b", expires_at=20, now=10)  # "a" expired at 10
    assert len(store) == 1
    assert store.add("a", expires_at=30, now=10)


def test_replay_store_is_bounded_and_drops_the_soonest_to_expire() -> None:
    store = MemoryReplayStore(max_entries=3)
    for key, expiry in [("late", 100), ("soon", 50), ("mid", 70), ("new", 90)]:
        assert store.add(key, expires_at=expiry, now=0)
    assert len(store) == 3
    assert store.add("soon", expires_at=50, now=0)  # it was the one dropped
    assert not store.add("late", expires_at=100, now=0)


def test_replay_store_lets_one_of_two_concurrent_adds_win() -> None:
    store = MemoryReplayStore()
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def add() -> None:
        barrier.wait()
        results.append(store.add("same", expires_at=10, now=0))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == [False] * 7 + [True]


def test_replay_store_checks_its_size() -> None:
    with pytest.raises(ValueError, match="max_entries must be an int >= 1, got 0"):
        MemoryReplayStore(0)
