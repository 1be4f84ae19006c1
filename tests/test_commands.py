"""One exit-status rule for every ``auditevt`` command: 2 for a user error, 1 for a runtime
failure, each one line on stderr and never a traceback (see ``auditevt._cli``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from auditevt._cli import main

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schema", "NoSuchModel"], "NoSuchModel"),
        (["validate", "/no/such/file.jsonl"], "cannot read /no/such/file.jsonl"),
        (["migrate"], "--database-url"),
        (["migrate", "--database-url", "mysql://db/x"], "unsupported database URL scheme"),
        (["relay", "--database-url", "ftp://x"], "--database-url"),
        (["relay", "--database-url", "sqlite:///x.db", "--metrics-port", "0"], "--metrics-port"),
        (["demo", "--requests", "0"], "requests=0"),
        (["demo", "--requests", "many"], "invalid int value"),
        (["telemetry", "--failure-rate", "2"], "failure_rate"),
        (["telemetry", "--port", "http"], "invalid int value"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_commands_user_error_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    assert message in _one_line(capsys.readouterr().err)


def test_commands_runtime_failures_are_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], taken_port: int, tmp_path: object
) -> None:
    cases = [
        (["migrate", "--database-url", UNREACHABLE_PG], "port 1"),
        (
            ["relay", "--database-url", UNREACHABLE_PG, "--telemetry-url", "http://127.0.0.1:9"],
            "cannot use the outbox",
        ),
        (["telemetry", "--port", str(taken_port)], f"cannot listen on 127.0.0.1:{taken_port}"),
        (["demo", "--requests", "1", "--database-url", UNREACHABLE_PG], "port 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert message in _one_line(capsys.readouterr().err), argv
