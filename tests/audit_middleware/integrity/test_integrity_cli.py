"""``auditevt keygen``, ``seal``, ``verify`` and ``prove``: files, output, exit statuses."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from audit_middleware import AuditStore, load_public_keys, load_signing_key
from auditevt._cli import main
from conftest import make_event


async def run(argv: list[str]) -> int:
    """``auditevt`` in a worker thread: it runs its own event loop."""
    return await asyncio.to_thread(main, argv)


UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def keygen(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    assert main(["keygen", "--out", str(directory)]) == 0
    out = capsys.readouterr().out
    private = Path(out.split("private key (keep secret, mode 0600): ", 1)[1].split("\n")[0])
    public = Path(out.split("public key (give to verifiers): ", 1)[1].split("\n")[0])
    return private, public


def test_cli_keygen_writes_a_named_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keygen(tmp_path / "keys", capsys)
    key = load_signing_key(private)
    assert private.name == f"auditevt-seal-{key.key_id}.private.pem"
    assert public.name == f"auditevt-seal-{key.key_id}.public.pem"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert list(load_public_keys([public])) == [key.key_id]
    again, _ = keygen(tmp_path / "keys", capsys)  # a second pair beside the first
    assert again != private and len(list((tmp_path / "keys").iterdir())) == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keygen", "--out", "/proc/no-such-dir/keys"], "keygen: --out: cannot write keys"),
        (["seal", "--database-url", "mysql://x/y", "--key", "k.pem"], "--database-url"),
        (["seal", "--database-url", "sqlite:///x.db", "--key", "/no/key.pem"], "cannot read"),
        (["verify", "--database-url", "sqlite:///x.db"], "--public-key"),
        (["verify", "--database-url", "sqlite:///x.db", "--public-key", "/no/k.pem"], "/no/k.pem"),
        (["prove", "--database-url", "sqlite:///x.db", "--organization", "x", "--out", "-"],
         "invalid int value"),
    ],
)  # fmt: skip
def test_cli_user_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in one_line(capsys.readouterr().err)


def test_cli_verify_rejects_a_file_that_is_no_key_or_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, public = keygen(tmp_path, capsys)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert main(["verify", "--export", str(junk), "--public-key", str(junk)]) == 2
    assert "junk.pem is not a PEM public key" in one_line(capsys.readouterr().err)
    assert main(["verify", "--export", str(junk), "--public-key", str(public)]) == 2
    assert "junk.pem is not JSON" in one_line(capsys.readouterr().err)
    junk.write_text('{"format": "other"}')
    assert main(["verify", "--export", str(junk), "--public-key", str(public)]) == 2
    assert "not an auditevt proofs export: 'format'" in one_line(capsys.readouterr().err)


def test_cli_unreachable_database_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = keygen(tmp_path, capsys)
    assert main(["seal", "--database-url", UNREACHABLE_PG, "--key", str(private)]) == 1
    assert "auditevt seal: error: could not seal audit_log" in one_line(capsys.readouterr().err)
    assert main(["verify", "--database-url", UNREACHABLE_PG, "--public-key", str(public)]) == 1
    assert "auditevt verify: error:" in one_line(capsys.readouterr().err)


@pytest.mark.anyio
async def test_cli_seal_verify_prove_and_key_rotation(
    pg_store: AuditStore, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_private, old_public = keygen(tmp_path / "old", capsys)
    new_private, new_public = keygen(tmp_path / "new", capsys)
    published = tmp_path / "published"
    for organization_id in (7, 8, 7):
        await pg_store.write(make_event(organization_id=organization_id))
    seal = ["seal", "--database-url", pg_url, "--publish", str(published), "--settle", "0.2"]
    assert await run([*seal, "--key", str(old_private)]) == 0
    assert capsys.readouterr().out.startswith("sealed 3 rows in 1 seal(s) (seal 1..1, ids up to 3)")
    for organization_id in (8, 7):
        await pg_store.write(make_event(organization_id=organization_id))
    assert await run([*seal, "--key", str(new_private)]) == 0  # the key rotated
    assert "sealed 2 rows" in capsys.readouterr().out
    assert await run([*seal, "--key", str(new_private)]) == 0
    assert capsys.readouterr().out.startswith("nothing to seal; every row sealed")

    verify = ["verify", "--database-url", pg_url, "--published", str(published)]
    both = ["--public-key", str(old_public), "--public-key", str(new_public)]
    assert await run([*verify, *both]) == 0
    assert capsys.readouterr().out.strip().startswith("OK: 5 rows and 2 seals checked")
    assert await run([*verify, "--public-key", str(old_public), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [(f["kind"], f["seal"]) for f in report["findings"] if f["problem"]] == [
        ("unknown_key", 2),
        ("bad_published_seal", 2),
    ]

    export = tmp_path / "org7.json"
    assert (
        await run(["prove", "--database-url", pg_url, "--organization", "7", "--out", str(export)])
        == 0
    )
    assert "wrote 3 rows and 2 seals" in capsys.readouterr().out
    assert await run(["verify", "--export", str(export), *both]) == 0
    assert "OK: 3 rows and 2 seals checked" in capsys.readouterr().out
    data = json.loads(export.read_text())
    assert {row["seal"] for row in data["rows"]} == {1, 2}
    data["rows"][1]["event_json"] = data["rows"][1]["event_json"].replace(
        '"status_code":200', '"status_code":500'
    )
    export.write_text(json.dumps(data))
    assert await run(["verify", "--export", str(export), *both]) == 1
    out = capsys.readouterr().out
    row_id = data["rows"][1]["id"]
    assert f"PROBLEM altered_row: row {row_id}: its inclusion proof does not lead" in out
