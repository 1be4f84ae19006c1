"""Both clients sign every request when they hold a key: Standard Webhooks headers over the
body as sent (gzip included), one signature per key, one message id for all attempts and a
fresh timestamp for each. The scripted transport stands in for the retry path only; the real
round trip through a verifying stand-in on loopback is in ``test_standin_signing.py``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from test_client import (
    BASE_URL,
    Answer,
    ScriptedServer,
    Sleeps,
    answer_ingest,
    ingest_request,
    json_answer,
    status,
)

from auditevt import (
    BadSignatureError,
    MissingHeaderError,
    SigningKey,
    StaleTimestampError,
    VerifiedWebhook,
    WebhookSigner,
    WebhookVerifier,
)
from telemetry_client import (
    ENV_SIGNING_KEY,
    AsyncTelemetryClient,
    ConfigurationError,
    TelemetryClient,
)

KEY = SigningKey.generate()
HEALTHY = json_answer({"status": "ok"})


pytestmark = pytest.mark.usefixtures("no_env_key")


@dataclass
class Sent:
    """What one attempt carried, copied when it was sent (httpx reuses the request object)."""

    headers: dict[str, str]
    content: bytes


@dataclass
class Recorder:
    """Wraps scripted answers, copying each attempt's headers and body as it arrives."""

    answers: list[Answer]
    sent: list[Sent] = field(default_factory=list)

    def server(self) -> ScriptedServer:
        def recording(answer: Answer) -> Answer:
            if isinstance(answer, Exception):
                return answer

            def record(request: httpx.Request) -> httpx.Response:
                self.sent.append(Sent(dict(request.headers), request.content))
                return answer(request)

            return record

        return ScriptedServer([recording(answer) for answer in self.answers])


def verify(sent: Sent, keys: Any = KEY, **options: Any) -> VerifiedWebhook:
    return WebhookVerifier(keys, **options).verify(sent.headers, sent.content)


def sync_client(recorder: Recorder, sleeps: Sleeps | None = None, **options: Any) -> Any:
    sleeps = sleeps or Sleeps()
    options.setdefault("retry", sleeps.policy())
    return TelemetryClient(BASE_URL, transport=recorder.server().transport, **options)


def test_client_signs_every_request_with_its_key() -> None:
    recorder = Recorder([HEALTHY])
    with sync_client(recorder, signing_key=KEY) as client:
        client.health()
        client.health()
    first, second = recorder.sent
    assert verify(first).key == KEY
    assert verify(second).key == KEY
    assert first.headers["webhook-id"] != second.headers["webhook-id"]  # one id per message


def test_client_without_a_key_sends_no_signature_headers() -> None:
    recorder = Recorder([HEALTHY])
    with sync_client(recorder) as client:
        client.health()
        assert client.signing_keys == ()
    names = set(recorder.sent[0].headers)
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & names
    with pytest.raises(MissingHeaderError):
        verify(recorder.sent[0])


def test_client_signs_the_body_as_sent_after_gzip() -> None:
    request = ingest_request(40)  # well over the 1 KiB gzip threshold
    recorder = Recorder([answer_ingest])
    with sync_client(recorder, signing_key=KEY) as client:
        client.audit_ingest(request)
    (sent,) = recorder.sent
    assert sent.headers["content-encoding"] == "gzip"
    assert verify(sent).key == KEY  # over the compressed bytes
    assert gzip.decompress(sent.content).decode() == request.to_json()
    with pytest.raises(BadSignatureError):
        WebhookVerifier(KEY).verify(sent.headers, gzip.decompress(sent.content))


def test_client_signs_once_per_key_during_a_rotation() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    recorder = Recorder([HEALTHY])
    with sync_client(recorder, signing_key=[old, new.secret]) as client:
        client.health()
        assert client.signing_keys == (old, new)
    (sent,) = recorder.sent
    assert len(sent.headers["webhook-signature"].split(" ")) == 2
    assert verify(sent, old).key == old
    assert verify(sent, new).key == new


def test_client_retries_keep_the_message_id_and_take_a_fresh_timestamp() -> None:
    sleeps = Sleeps(now=1_764_583_872.0)
    # The signer's clock is the retry policy's: each backoff moves both.
    signer = WebhookSigner(KEY, clock=sleeps.clock)
    recorder = Recorder([status(503), status(503), answer_ingest])
    policy = sleeps.policy(initial_wait=40.0, max_wait=400.0, deadline=None, random=lambda: 1.0)
    with sync_client(recorder, sleeps, retry=policy, signing_key=signer) as client:
        client.audit_ingest(ingest_request(1))
    ids = {sent.headers["webhook-id"] for sent in recorder.sent}
    timestamps = [int(sent.headers["webhook-timestamp"]) for sent in recorder.sent]
    assert len(ids) == 1
    assert timestamps == [1_764_583_872, 1_764_583_912, 1_764_583_992]
    # Each attempt verifies at its own time, and one verifier takes all three (no replay).
    shared = WebhookVerifier(KEY, clock=lambda: timestamps[-1], tolerance=300)
    for sent in recorder.sent:
        shared.verify(sent.headers, sent.content)
    # The first attempt, signed 120 s earlier, is stale under a 60 s tolerance.
    with pytest.raises(StaleTimestampError, match="120 s old"):
        verify(recorder.sent[0], clock=lambda: timestamps[-1], tolerance=60)


def test_client_retries_within_one_second_get_increasing_timestamps() -> None:
    sleeps = Sleeps(now=1_764_583_872.0)
    signer = WebhookSigner(KEY, clock=lambda: 1_764_583_872.0)  # time stands still
    recorder = Recorder([status(503), status(503), HEALTHY])
    with sync_client(recorder, sleeps, signing_key=signer) as client:
        client.health()
    timestamps = [int(sent.headers["webhook-timestamp"]) for sent in recorder.sent]
    assert timestamps == [1_764_583_872, 1_764_583_873, 1_764_583_874]
    shared = WebhookVerifier(KEY, clock=lambda: 1_764_583_872.0)
    assert [shared.verify(s.headers, s.content).timestamp for s in recorder.sent] == timestamps


def test_client_reads_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    monkeypatch.setenv(ENV_SIGNING_KEY, f" {old.secret}  {new.secret}\n")
    recorder = Recorder([HEALTHY])
    with sync_client(recorder) as client:
        client.health()
        assert client.signing_keys == (old, new)
        assert old.secret not in repr(client) and old.fingerprint in repr(client)
    assert verify(recorder.sent[0], new).key == new
    # An argument wins over the environment.
    recorder = Recorder([HEALTHY])
    with sync_client(recorder, signing_key=KEY) as client:
        client.health()
    assert verify(recorder.sent[0]).key == KEY


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "signing_key: a signing key must start with"),
        ("whsec_not*base64", "signing_key: the part of the signing key after 'whsec_'"),
        ("whsec_c2hvcnQ=", "signing_key: a signing key of 5 bytes"),
        ([KEY, "whsec_c2hvcnQ="], "signing_key: signing key 2: a signing key of 5 bytes"),
        ([], "signing_key: no signing key given"),
    ],
)
def test_client_refuses_a_bad_key_naming_the_parameter(value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        TelemetryClient(BASE_URL, signing_key=value)
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str):
            assert text.removeprefix("whsec_") not in str(caught.value)


def test_client_refuses_a_bad_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SIGNING_KEY, "hunter2-hunter2-hunter2-hunter2")
    expected = f"^{ENV_SIGNING_KEY}: .*must start with"
    with pytest.raises(ConfigurationError, match=expected) as caught:
        TelemetryClient(BASE_URL)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigurationError, match=r"^signing_key: signing keys must be a"):
        TelemetryClient(BASE_URL, signing_key=42)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_client_signs_and_retries_like_the_sync_client() -> None:
    sleeps = Sleeps(now=1_764_583_872.0)
    signer = WebhookSigner(KEY, clock=sleeps.clock)
    recorder = Recorder([status(502), answer_ingest])
    policy = sleeps.policy(initial_wait=10.0, random=lambda: 1.0)
    request = ingest_request(40)
    async with AsyncTelemetryClient(
        BASE_URL, transport=recorder.server().transport, retry=policy, signing_key=signer
    ) as client:
        await client.audit_ingest(request)
    first, second = recorder.sent
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 10
    assert second.headers["content-encoding"] == "gzip"
    for sent in recorder.sent:
        assert verify(sent, clock=sleeps.clock).key == KEY
