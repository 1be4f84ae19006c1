"""The stand-in enforces signatures when it holds keys, over real HTTP on loopback: the clients'
signed requests are accepted, and every bad or missing signature is a 401 whose JSON says
what failed. The ``auditevt telemetry --signing-key-file`` process does the same.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from test_standin import INGEST, envelope

from auditevt import (
    AnalyticsTrackRequest,
    BandwidthStatsQuery,
    IngestItem,
    IngestRequest,
    IngestStatus,
    Pseudonymizer,
    SigningKey,
    WebhookSigner,
    WebhookVerifier,
)
from auditevt._cli import main
from conftest import make_event
from telemetry_client import (
    ENV_SIGNING_KEY,
    AsyncTelemetryClient,
    ClientError,
    RetryPolicy,
    TelemetryClient,
)
from telemetry_client.testing import TelemetryStandIn

KEY = SigningKey.generate()


pytestmark = pytest.mark.usefixtures("no_env_key")


def ingest(count: int) -> IngestRequest:
    return IngestRequest(
        events=[IngestItem(event_id=uuid.uuid4(), event=make_event(n)) for n in range(count)]
    )


def refusal(response: httpx.Response) -> tuple[str, str]:
    """(type, field) of a 401 answer."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"].startswith("the request's webhook signature is not valid")
    (error,) = body["errors"]
    return error["type"], error["field"]


def test_standin_accepts_what_the_clients_sign_over_real_http() -> None:
    standin = TelemetryStandIn(signing_key=KEY)
    big, small = ingest(60), ingest(1)  # the big one travels gzip-compressed
    with standin.serve() as url, TelemetryClient(url, signing_key=KEY) as telemetry:
        assert [r.status for r in telemetry.audit_ingest(big).results] == [
            IngestStatus.ACCEPTED
        ] * 60
        assert telemetry.audit_ingest(small).results[0].status is IngestStatus.ACCEPTED
        stats = telemetry.bandwidth_stats(  # a signed GET
            BandwidthStatsQuery.model_validate({"organization_id": "3"})
        )
    assert stats.sessions == 0
    assert len(standin.event_ids()) == 61
    assert standin.signature_refusals() == {}


@pytest.mark.anyio
async def test_standin_accepts_what_the_async_client_signs_over_real_http() -> None:
    standin = TelemetryStandIn(signing_key=KEY)
    track = AnalyticsTrackRequest.model_validate(
        {
            "organization_id": 3,
            "actor": Pseudonymizer(bytes(32), key_id="k1").pseudonymize(7),
            "session_id": str(uuid.uuid4()),
            "sent_at": "2026-11-27T10:11:13Z",
            "events": [
                {
                    "type": "page_view",
                    "event_id": str(uuid.uuid4()),
                    "occurred_at": "2026-11-27T10:11:12Z",
                    "path": "/x",
                }
            ],
        }
    )
    with standin.serve() as url:
        async with AsyncTelemetryClient(url, signing_key=KEY) as telemetry:
            response = await telemetry.audit_ingest(ingest(3))
            tracked = await telemetry.track(track)
    assert all(r.delivered for r in response.results)
    assert tracked.accepted == 1


def test_standin_accepts_either_key_during_a_rotation() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    standin = TelemetryStandIn(signing_key=[old, new])
    with standin.serve() as url:
        for keys in (old, [old, new], new):
            with TelemetryClient(url, signing_key=keys) as telemetry:
                assert telemetry.audit_ingest(ingest(1)).results[0].delivered
    assert len(standin.event_ids()) == 3


def test_standin_refuses_an_unsigned_client_with_a_401_that_is_not_retried() -> None:
    standin = TelemetryStandIn(signing_key=KEY)
    with standin.serve() as url, TelemetryClient(url) as telemetry:
        with pytest.raises(ClientError) as caught:
            telemetry.audit_ingest(ingest(2))
        health = telemetry.health()  # the load balancer's probe is not signed
    assert caught.value.status_code == 401
    assert "missing_header" in caught.value.body
    assert standin.event_ids() == frozenset()
    assert standin.signature_refusals() == {"missing_header": 1}  # one attempt, no retry
    assert health.serving


def test_standin_refuses_a_client_with_a_wrong_key() -> None:
    standin = TelemetryStandIn(signing_key=KEY)
    with standin.serve() as url:
        with (
            TelemetryClient(url, signing_key=SigningKey.generate()) as telemetry,
            pytest.raises(ClientError) as caught,
        ):
            telemetry.audit_ingest(ingest(1))
        body = json.loads(caught.value.body)
    assert body["errors"][0] == {
        "field": "header webhook-signature",
        "type": "bad_signature",
        "message": body["errors"][0]["message"],
    }
    assert KEY.sign("x", 1, b"")[3:] not in caught.value.body
    assert standin.event_ids() == frozenset()


def test_standin_refuses_forged_stale_future_and_replayed_requests() -> None:
    standin = TelemetryStandIn(signing_key=KEY)
    signer = WebhookSigner(KEY)
    body = envelope(make_event(1)).encode()
    with standin.serve() as url, httpx.Client(base_url=url) as http:
        headers = signer.headers(body)
        assert http.post(INGEST, content=body, headers=headers).status_code == 200
        # The same request again, byte for byte: a replay.
        assert refusal(http.post(INGEST, content=body, headers=headers)) == (
            "replay",
            "header webhook-id",
        )
        forged = envelope(make_event(1, organization_id=4)).encode()
        assert refusal(http.post(INGEST, content=forged, headers=signer.headers(body)))[0] == (
            "bad_signature"
        )
        now = int(time.time())
        stale = signer.headers(body, timestamp=now - 600)
        assert refusal(http.post(INGEST, content=body, headers=stale)) == (
            "stale_timestamp",
            "header webhook-timestamp",
        )
        future = signer.headers(body, timestamp=now + 600)
        assert refusal(http.post(INGEST, content=body, headers=future))[0] == "future_timestamp"
        unsigned = http.post(INGEST, content=body)
        assert refusal(unsigned) == ("missing_header", "header webhook-id")
        # An unsigned request learns nothing else: not even that its type is wrong.
        typed = http.post(INGEST, content=body, headers={"content-type": "text/plain"})
        assert refusal(typed)[0] == "missing_header"
    assert len(standin.event_ids()) == 1
    assert standin.signature_refusals() == {
        "replay": 1,
        "bad_signature": 1,
        "stale_timestamp": 1,
        "future_timestamp": 1,
        "missing_header": 2,
    }


def test_standin_verifies_the_compressed_bytes_it_received() -> None:
    standin = TelemetryStandIn(signing_key=KEY)
    body = envelope(*[make_event(n) for n in range(20)]).encode()
    compressed = gzip.compress(body)
    signer = WebhookSigner(KEY)
    with standin.serve() as url, httpx.Client(base_url=url) as http:
        gzip_headers = {"content-encoding": "gzip"}
        over_plain = http.post(
            INGEST, content=compressed, headers={**signer.headers(body), **gzip_headers}
        )
        over_sent = http.post(
            INGEST, content=compressed, headers={**signer.headers(compressed), **gzip_headers}
        )
    assert refusal(over_plain)[0] == "bad_signature"
    assert over_sent.status_code == 200
    assert len(standin.event_ids()) == 20


def test_standin_takes_a_verifier_of_its_own() -> None:
    verifier = WebhookVerifier(KEY, tolerance=1, clock=lambda: 1_000_000.0)
    standin = TelemetryStandIn(signing_key=verifier)
    assert standin.verifier is verifier
    assert KEY.secret not in repr(standin) and KEY.fingerprint in repr(standin)
    with (
        standin.serve() as url,
        TelemetryClient(url, signing_key=KEY) as telemetry,
        pytest.raises(ClientError, match="future_timestamp"),
    ):
        telemetry.audit_ingest(ingest(1))
    with pytest.raises(ValueError, match="must start with 'whsec_'"):
        TelemetryStandIn(signing_key="secret")


# -- auditevt telemetry --signing-key-file ------------------------------------------------------


def test_telemetry_cli_refuses_a_bad_key_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = {
        "missing": (tmp_path / "nope", "cannot read --signing-key-file"),
        "empty": (tmp_path / "empty", "is empty: put a whsec_ secret in it"),
        "bad": (tmp_path / "bad", "must start with 'whsec_'"),
    }
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "bad").write_text("hunter2hunter2hunter2hunter2\n")
    for path, message in cases.values():
        assert main(["telemetry", "--port", "0", "--signing-key-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("auditevt: error: telemetry: ") and message in err, err
        assert err.count("\n") == 1 and "hunter2" not in err
    monkeypatch.setenv(ENV_SIGNING_KEY, "whsec_short")
    assert main(["telemetry", "--port", "0"]) == 2
    assert "$TELEMETRY_SIGNING_KEY: the part of the signing key" in capsys.readouterr().err


def test_telemetry_cli_serves_a_stand_in_that_enforces_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "telemetry.key"
    key_file.write_text(KEY.secret + "\n")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "auditevt", "telemetry",
            "--port", "0", "--signing-key-file", str(key_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.split()[3].rstrip(":")
        unsigned = httpx.post(f"{url}{INGEST}", content=envelope(make_event()), timeout=10)
        with TelemetryClient(url, signing_key=KEY, retry=RetryPolicy.none()) as telemetry:
            signed = telemetry.audit_ingest(ingest(1))
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert f"signatures required (keys {KEY.fingerprint})" in first
    assert KEY.secret not in first
    assert refusal(unsigned)[0] == "missing_header"
    assert signed.results[0].status is IngestStatus.ACCEPTED
    assert status == 0
