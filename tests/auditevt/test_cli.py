from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from auditevt import CONTRACT_VERSION, MODELS, __version__, json_schema
from auditevt._cli import build_parser, find_commands, main

GOLDEN = Path(__file__).parent / "data" / "go-golden.jsonl"


def golden_lines() -> list[str]:
    with GOLDEN.open(encoding="utf-8") as stream:
        return [json.loads(line)["json"] for line in stream if line.strip()]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_schema_prints_the_event_schema_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["schema"], capsys)
    assert (status, err) == (0, "")
    assert json.loads(out) == json_schema("Event")


@pytest.mark.parametrize("name", ["IngestRequest", "PoseFramesRequest", "HealthResponse"])
def test_cli_schema_prints_a_named_model(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["schema", name], capsys)
    assert status == 0
    assert json.loads(out) == json_schema(name)


def test_cli_schema_output_validates_golden_and_rejects_bad_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(["schema"], capsys)
    check = jsonschema.Draft202012Validator(json.loads(out))
    for line in golden_lines():
        assert check.is_valid(json.loads(line))
    bad = json.loads(golden_lines()[0]) | {"user_id": "42"}
    assert not check.is_valid(bad)


def test_cli_schema_unknown_model_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(["schema", "Evnt"], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("auditevt: error: schema: unknown model 'Evnt'; known models: ")
    assert all(name in err for name in MODELS)


def test_cli_schema_write_writes_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["schema", "--write", str(tmp_path)], capsys)
    assert status == 0
    assert out == f"wrote {len(MODELS)} schema files to {tmp_path}\n"
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(MODELS)
    assert json.loads((tmp_path / "Event.json").read_text()) == json_schema("Event")


def test_cli_schema_write_with_a_model_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["schema", "Event", "--write", str(tmp_path)], capsys)
    assert status == 2
    assert err == "auditevt: error: schema: give either MODEL or --write, not both\n"


def test_cli_schema_write_to_an_unwritable_place_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = run(["schema", "--write", str(blocker / "sub")], capsys)
    assert status == 2
    assert err.startswith("auditevt: error: schema: cannot write to ") and err.count("\n") == 1


def test_cli_validate_accepts_every_golden_vector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(golden_lines()) + "\n\n", encoding="utf-8")
    status, out, err = run(["validate", str(path)], capsys)
    assert (status, out, err) == (0, "valid=24 invalid=0\n", "")


def test_cli_validate_reports_each_invalid_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = golden_lines()[0]
    event = json.loads(good)
    lines = [
        good,
        json.dumps(event | {"user_id": "42"}),
        "",
        json.dumps(event | {"timestamp": "2026-11-27T10:11:12"}),
        "{not json",
        good,
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    status, out, _ = run(["validate", str(path)], capsys)
    assert status == 1
    report = out.splitlines()
    assert report[-1] == "valid=2 invalid=3"
    assert report[0].startswith("line 2: user_id: ")
    assert report[0].endswith("(got '42')")
    assert report[1].startswith("line 4: timestamp: ")
    assert report[1].endswith("(got '2026-11-27T10:11:12')")
    assert report[2].startswith("line 5: (root): Invalid JSON")
    assert len(report) == 4


def test_cli_validate_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "\n".join(golden_lines()[:3]) + '\n{"action":"CREATE"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    status, out, _ = run(["validate", "-"], capsys)
    assert status == 1
    assert out.splitlines()[-1] == "valid=3 invalid=1"
    assert all(line.startswith("line 4: ") for line in out.splitlines()[:-1])


def test_cli_validate_empty_input_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert run(["validate", str(path)], capsys) == (0, "valid=0 invalid=0\n", "")


def test_cli_validate_missing_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["validate", str(tmp_path / "nope.jsonl")], capsys)
    assert status == 2 and out == ""
    assert err.startswith("auditevt: error: validate: cannot read ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["schema", "--bogus"], "unrecognized arguments: --bogus"),
        (["validate", "a", "b"], "unrecognized arguments: b"),
    ],
)
def test_cli_usage_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert status == 2 and out == ""
    assert err.startswith("auditevt: error: ") and message in err
    assert err.count("\n") == 1


def test_cli_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["--version"], capsys)
    assert status == 0
    assert out == f"auditevt {__version__} (contract {CONTRACT_VERSION})\n"
    status, out, _ = run(["--help"], capsys)
    assert status == 0
    assert "schema" in out and "validate" in out


def test_cli_finds_the_commands_of_every_installed_package() -> None:
    names = [command.name for command in find_commands()]
    assert names == [
        "schema", "validate", "demo", "keygen", "migrate", "partitions", "prove", "relay",
        "retention", "seal", "telemetry", "verify",
    ]  # fmt: skip
    parser = build_parser()
    args = parser.parse_args(["relay", "--database-url", "sqlite:///x", "--until-empty"])
    assert (args.database_url, args.until_empty, args.telemetry_url) == ("sqlite:///x", True, None)


def test_cli_command_whose_package_cannot_be_imported_names_the_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.metadata import EntryPoint

    import auditevt._cli as cli

    broken = EntryPoint("seal", "auditevt_no_such_package._command:SEAL", cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken])
    assert [command.name for command in cli.find_commands()] == ["schema", "validate", "seal"]
    assert main(["seal", "--anything", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "seal: No module named 'auditevt_no_such_package'" in err


def test_cli_entry_point_that_is_not_a_command_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import auditevt._cli as cli

    wrong = EntryPoint("schema2", "auditevt._cli:main", cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [wrong])
    with pytest.raises(TypeError, match=r"must be an auditevt\._cli\.Command named 'schema2'"):
        cli.find_commands()


def test_cli_runs_as_a_program(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(golden_lines()[0] + '\n{"user_id": 1.5}\n', encoding="utf-8")
    program = Path(sys.executable).with_name("auditevt")
    command = [str(program)] if program.exists() else [sys.executable, "-m", "auditevt"]
    done = subprocess.run(
        [*command, "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[-1] == "valid=1 invalid=1"
    assert "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "auditevt", "schema", "Nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
