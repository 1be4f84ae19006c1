"""The demo signs: its own stand-in requires a signature (with a key made up for the run, or
the one given), and an outside Telemetry gets requests signed with the key given.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from auditevt import SigningKey
from auditevt_demo._demo import demo_command
from telemetry_client import ENV_SIGNING_KEY
from telemetry_client.testing import TelemetryStandIn


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_SIGNING_KEY, raising=False)


def run_demo(**kwargs: object) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    status = demo_command(out=out, err=err, **kwargs)  # type: ignore[arg-type]
    return status, out.getvalue().splitlines(), err.getvalue()


def test_demo_stand_in_requires_the_signature_the_relay_makes() -> None:
    status, lines, err = run_demo(requests=12, seed=3)
    assert status == 0, err
    telemetry = next(line for line in lines if line.startswith("  Telemetry:"))
    assert "(signatures required: " in telemetry
    assert lines[-1] == "audited=12 forwarded=12 pending=0"


def test_demo_signs_for_an_outside_telemetry_with_the_key_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = SigningKey.generate()
    standin = TelemetryStandIn(signing_key=key)
    with standin.serve() as url:
        status, lines, err = run_demo(requests=8, telemetry_url=url, signing_key=key)
        monkeypatch.setenv(ENV_SIGNING_KEY, key.secret)  # the environment works as well
        again, lines_again, _ = run_demo(requests=4, telemetry_url=url)
    assert status == 0, err
    assert lines[-1] == "audited=8 forwarded=8 pending=0"
    assert again == 0 and lines_again[-1] == "audited=4 forwarded=4 pending=0"
    assert len(standin.event_ids()) == 12
    assert standin.signature_refusals() == {}


def test_demo_refuses_a_bad_key_in_one_line() -> None:
    status, lines, err = run_demo(requests=3, signing_key="whsec_!!")
    assert (status, lines) == (2, [])
    assert err.startswith("auditevt demo: error: signing key: the part of the signing key")
    assert err.count("\n") == 1
