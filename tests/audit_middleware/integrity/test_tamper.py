"""The tamper suite: a superuser (triggers disabled) changes the log; verify names what changed.

The log: seal 1 covers ids 1..10, seal 2 ids 11..21 (id 13 was drawn and never used), seal 3
ids 22..31; rows 32 and 33 are not sealed yet. Every seal is published to a directory. Each
scenario tampers as an attacker holding the database would, then ``verify_database`` (with the
published copy) must report a problem naming the row or the seal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from audit_middleware import (
    AuditStore,
    DirectorySink,
    Sealer,
    SigningKey,
    row_hash,
    verify_database,
)
from audit_middleware.integrity._seal import SEAL_TAG, Seal, canonical_body
from conftest import make_event

from .integrity_helpers import FAST

pytestmark = pytest.mark.anyio

# Nanoseconds in the timestamp: its column copy keeps microseconds, the JSON all nine digits.
EXACT_TIME = "2026-12-01T07:08:09.123456789Z"

SQL = Callable[..., list[tuple[Any, ...]]]


@dataclass
class Log:
    sql: SQL
    key: SigningKey
    attacker: SigningKey
    published: Path


async def build_log(store: AuditStore, sealer: Sealer, sql: SQL) -> None:
    number = 0

    async def write(count: int) -> None:
        nonlocal number
        for _ in range(count):
            number += 1
            organization_id = 7 if number % 2 else 8
            # Changes and nanoseconds: the columns verify compares with the JSON are all set.
            changes = {"status": {"from": "booked", "to": "cancelled"}, "n": number}
            await store.write(
                make_event(
                    number, organization_id=organization_id, changes=changes, timestamp=EXACT_TIME
                )
            )

    await write(10)
    assert (await sealer.run_once()) is not None
    await write(2)
    sql("SELECT nextval('audit_log_id_seq')")  # id 13: drawn, never written (a rollback)
    await write(8)
    assert (await sealer.run_once()) is not None
    await write(10)
    assert (await sealer.run_once()) is not None
    await write(2)


@pytest.fixture
async def log(pg_store: AuditStore, key: SigningKey, published: Path, superuser: SQL) -> Log:
    sealer = Sealer(pg_store.engine, key, sink=DirectorySink(published), config=FAST)
    await build_log(pg_store, sealer, superuser)
    rows = superuser("SELECT id FROM audit_log ORDER BY id")
    assert [r[0] for r in rows] == [*range(1, 13), *range(14, 34)]
    seals = superuser("SELECT seq, first_id, last_id, row_count FROM audit_seals ORDER BY seq")
    assert seals == [(1, 1, 10, 10), (2, 11, 21, 10), (3, 22, 31, 10)]
    return Log(superuser, key, SigningKey.generate(), published)


def event_json(log: Log, row_id: int) -> str:
    return str(log.sql(f"SELECT event_json FROM audit_log WHERE id = {row_id}")[0][0])


def rewrite_event(log: Log, row_id: int, *, keep_hash: bool, **changes: Any) -> None:
    """Change fields inside event_json; with ``keep_hash=False`` the attacker fixes row_hash too."""
    data = json.loads(event_json(log, row_id))
    data.update(changes)
    text = json.dumps(data, separators=(",", ":"))
    event_id = log.sql(f"SELECT event_id FROM audit_log WHERE id = {row_id}")[0][0]
    if keep_hash:
        log.sql(f"UPDATE audit_log SET event_json = %s WHERE id = {row_id}", params=[text])
    else:
        log.sql(
            f"UPDATE audit_log SET event_json = %s, row_hash = %s WHERE id = {row_id}",
            params=[text, row_hash(event_id, text)],
        )


def seal_row(log: Log, seq: int) -> Seal:
    body, signature = log.sql(f"SELECT body, signature FROM audit_seals WHERE seq = {seq}")[0]
    return Seal.parse(body, bytes(signature))


def forge_seal(log: Log, seq: int, signer: SigningKey, **fields: Any) -> None:
    """Replace seal ``seq``'s body (with ``fields`` changed) and sign it with ``signer``."""
    current = json.loads(seal_row(log, seq).body)
    current["key_id"] = signer.key_id
    current.update(fields)
    body = canonical_body(current)
    signature = signer.sign(SEAL_TAG + body.encode())
    log.sql(
        "UPDATE audit_seals SET body = %s, signature = %s, key_id = %s, row_count = %s "
        f"WHERE seq = {seq}",
        params=[body, signature, current["key_id"], current["count"]],
    )


# --- the scenarios: each tampers, and says what must be named -----------------------------


def alter_a_field(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("UPDATE audit_log SET user_id = 999 WHERE id = 5")
    return [("altered_row", 5, None)]


def move_a_row_to_another_organization(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("UPDATE audit_log SET organization_id = 8 WHERE id = 3")
    return [("altered_row", 3, None)]


def alter_changes_column(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("""UPDATE audit_log SET changes = '{"status": "erased"}' WHERE id = 15""")
    return [("altered_row", 15, None)]


def alter_event_json_only(log: Log) -> list[tuple[str, int | None, int | None]]:
    rewrite_event(log, 6, keep_hash=True, status_code=404)
    return [("altered_row", 6, None)]


def alter_event_json_and_its_hash(log: Log) -> list[tuple[str, int | None, int | None]]:
    rewrite_event(log, 24, keep_hash=False, request_path="/nothing/to/see")
    return [("altered_row", 24, 3)]


def alter_an_unsealed_row(log: Log) -> list[tuple[str, int | None, int | None]]:
    rewrite_event(log, 32, keep_hash=True, user_id=1)
    return [("altered_row", 32, None)]


def delete_a_row(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("DELETE FROM audit_log WHERE id = 8")
    return [("deleted_row", 8, 1)]


def delete_every_row_of_a_seal(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("DELETE FROM audit_log WHERE id BETWEEN 11 AND 21")
    return [("deleted_row", 11, 2), ("deleted_row", 21, 2)]


def insert_a_forged_row_into_a_sealed_range(log: Log) -> list[tuple[str, int | None, int | None]]:
    text = event_json(log, 12).replace('"user_id":', '"user_id":1', 1)
    forged = uuid.uuid4()
    log.sql(
        "INSERT INTO audit_log SELECT 13, %s, action, entity_type, entity_id, user_id,"
        " organization_id, ip_address, user_agent, request_path, status_code, timestamp,"
        " changes, action_context, break_glass_id, impersonation_id, %s, inserted_at, %s"
        " FROM audit_log WHERE id = 12",
        params=[forged, text, row_hash(forged, text)],
    )
    return [("inserted_row", 13, 2)]


def swap_two_rows(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql(
        "UPDATE audit_log SET id = -3 WHERE id = 3",
        "UPDATE audit_log SET id = 3 WHERE id = 4",
        "UPDATE audit_log SET id = 4 WHERE id = -3",
    )
    return [("altered_row", 3, 1), ("altered_row", 4, 1)]


def truncate_and_replay(log: Log) -> list[tuple[str, int | None, int | None]]:
    # Everything re-inserted but row 17, and row 18 "corrected" with a matching hash.
    event_id = log.sql("SELECT event_id FROM audit_log WHERE id = 18")[0][0]
    text = event_json(log, 18).replace('"status_code":200', '"status_code":201')
    log.sql(
        "CREATE TEMP TABLE copy AS SELECT * FROM audit_log WHERE id <> 17",
        "UPDATE copy SET event_json = %(text)s, row_hash = %(hash)s, status_code = 201"
        " WHERE id = 18",
        "TRUNCATE audit_log",
        "INSERT INTO audit_log SELECT * FROM copy",
        params={"text": text, "hash": row_hash(event_id, text)},
    )
    return [("deleted_row", 17, 2), ("altered_row", 18, 2)]


def edit_a_seal_column(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("UPDATE audit_seals SET row_count = 9 WHERE seq = 2")
    return [("altered_seal", None, 2)]


def edit_a_seal_body(log: Log) -> list[tuple[str, int | None, int | None]]:
    body = seal_row(log, 2).body.replace('"count":10', '"count":9')
    log.sql("UPDATE audit_seals SET body = %s, row_count = 9 WHERE seq = 2", params=[body])
    return [("bad_signature", None, 2)]


def rewrite_a_sealed_hash_in_the_seal(log: Log) -> list[tuple[str, int | None, int | None]]:
    # Row 5 altered with its hash, and seal 1's stored leaf for it patched to match.
    rewrite_event(log, 5, keep_hash=False, user_id=1)
    new_hash = bytes(log.sql("SELECT row_hash FROM audit_log WHERE id = 5")[0][0])
    log.sql(
        "UPDATE audit_seals SET row_hashes = overlay(row_hashes placing %s from 129 for 32)"
        " WHERE seq = 1",
        params=[new_hash],
    )
    return [("altered_seal", None, 1)]


def drop_the_latest_seal(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("DELETE FROM audit_seals WHERE seq = 3")
    return [("missing_seal", None, 3)]


def drop_a_seal_in_the_middle(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("DELETE FROM audit_seals WHERE seq = 2")
    return [("broken_chain", None, 3), ("missing_seal", None, 2)]


def drop_every_seal(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql("DELETE FROM audit_seals")
    return [("missing_seal", None, 1), ("missing_seal", None, 3)]


def resign_with_a_foreign_key(log: Log) -> list[tuple[str, int | None, int | None]]:
    rewrite_event(log, 25, keep_hash=False, user_id=1)
    forge_seal(log, 3, log.attacker)
    return [("unknown_key", None, 3), ("published_mismatch", None, 3)]


def claim_the_trusted_key_id(log: Log) -> list[tuple[str, int | None, int | None]]:
    forge_seal(log, 2, log.attacker, key_id=log.key.key_id, sealed_at="2020-01-01T00:00:00Z")
    return [("bad_signature", None, 2)]


async def reseal_everything_with_a_foreign_key(
    log: Log, store: AuditStore
) -> list[tuple[str, int | None, int | None]]:
    rewrite_event(log, 2, keep_hash=False, user_id=1)
    log.sql("DELETE FROM audit_seals")
    async with Sealer(store.engine, log.attacker, config=FAST) as forger:
        assert await forger.run_once() is not None
    return [("unknown_key", None, 1), ("published_mismatch", None, 1)]


def reorder_seals(log: Log) -> list[tuple[str, int | None, int | None]]:
    log.sql(
        "UPDATE audit_seals SET seq = -1 WHERE seq = 1",
        "UPDATE audit_seals SET seq = 1 WHERE seq = 2",
        "UPDATE audit_seals SET seq = 2 WHERE seq = -1",
    )
    return [("altered_seal", None, 1), ("altered_seal", None, 2)]


def edit_the_published_copy(log: Log) -> list[tuple[str, int | None, int | None]]:
    path = log.published / "seal-000000000002.json"
    data = json.loads(path.read_text())
    data["body"] = data["body"].replace('"count":10', '"count":11')
    path.write_text(json.dumps(data))
    return [("bad_published_seal", None, 2)]


def delete_a_published_seal(log: Log) -> list[tuple[str, int | None, int | None]]:
    (log.published / "seal-000000000001.json").unlink()
    return [("unpublished_seal", None, 1)]


SCENARIOS = [
    alter_a_field,
    move_a_row_to_another_organization,
    alter_changes_column,
    alter_event_json_only,
    alter_event_json_and_its_hash,
    alter_an_unsealed_row,
    delete_a_row,
    delete_every_row_of_a_seal,
    insert_a_forged_row_into_a_sealed_range,
    swap_two_rows,
    truncate_and_replay,
    edit_a_seal_column,
    edit_a_seal_body,
    rewrite_a_sealed_hash_in_the_seal,
    drop_the_latest_seal,
    drop_a_seal_in_the_middle,
    drop_every_seal,
    resign_with_a_foreign_key,
    claim_the_trusted_key_id,
    reseal_everything_with_a_foreign_key,
    reorder_seals,
    edit_the_published_copy,
    delete_a_published_seal,
]


async def test_tamper_clean_log_has_no_finding_but_the_unsealed_tail(
    log: Log, pg_store: AuditStore
) -> None:
    report = await verify_database(
        pg_store.engine, {log.key.key_id: log.key.public_key}, published=str(log.published)
    )
    assert report.ok, report.problems
    assert [(f.kind, f.row_id, f.problem) for f in report.findings] == [
        ("unsealed_rows", 32, False)
    ]
    assert (report.rows_checked, report.seals_checked, report.unsealed_rows) == (32, 3, 2)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_tamper_is_detected_and_named(
    log: Log, pg_store: AuditStore, scenario: Callable[..., Any]
) -> None:
    if scenario is reseal_everything_with_a_foreign_key:
        expected = await scenario(log, pg_store)
    else:
        expected = scenario(log)
    report = await verify_database(
        pg_store.engine, {log.key.key_id: log.key.public_key}, published=str(log.published)
    )
    assert not report.ok
    named = {(f.kind, f.row_id, f.seal) for f in report.problems}
    for kind, row_id, seal in expected:
        assert any(
            k == kind and (row_id is None or r == row_id) and (seal is None or s == seal)
            for k, r, s in named
        ), (kind, row_id, seal, report.problems)
    for finding in report.problems:  # each one names its row or its seal
        subject = f"row {finding.row_id}" if finding.row_id is not None else f"seal {finding.seal}"
        assert subject in finding.message, finding
