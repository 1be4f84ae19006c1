"""A row whose event this version cannot read is listed, exported and shown, never hidden."""

from __future__ import annotations

import csv
import io
import json
import uuid

import httpx
import psycopg
import pytest

pytest.register_assert_rewrite("review_support")

from review_support import CUTOFF, MOUNT, ORG, PER_ORG, admin, collect  # noqa: E402

from conftest import libpq  # noqa: E402

pytest_plugins = ["review_support"]
pytestmark = pytest.mark.anyio

BAD_JSON = '{"action":"READ","entity_type":"patient"}'


def insert_unreadable(url: str) -> uuid.UUID:
    """A break-glass row of ORG at 09:30:30Z (between two seeded ones) with bad event_json."""
    event_id = uuid.uuid4()
    with psycopg.connect(libpq(url)) as conn:
        conn.execute(
            "INSERT INTO audit_log (event_id, action, entity_type, entity_id, user_id, "
            'organization_id, ip_address, user_agent, request_path, status_code, "timestamp", '
            "action_context, break_glass_id, event_json) VALUES (%s, 'UPDATE', 'patient', 1, 1, "
            "%s, '', '', '/patients/1', 200, '2024-05-01T09:30:30Z', 'break_glass', 1, %s)",
            (event_id, ORG, BAD_JSON),
        )
    return event_id


async def test_unreadable_row_is_listed_exported_and_shown(
    fresh_client: httpx.AsyncClient, fresh_review_db: str
) -> None:
    event_id = insert_unreadable(fresh_review_db)
    pages = await collect(fresh_client, "/api/events", {"until": CUTOFF, "limit": "7"}, admin())
    items = [item for page in pages for item in page]
    assert len(items) == PER_ORG[ORG] + 1  # paging went on past it
    [bad] = [item for item in items if "unreadable" in item]
    assert bad["event_id"] == str(event_id)
    assert bad["unreadable"]["event_json"] == BAD_JSON
    assert "timestamp: Field required" in bad["unreadable"]["error"]
    one = (await fresh_client.get(f"{MOUNT}/api/events/{event_id}", headers=admin())).json()
    assert one["unreadable"] == bad["unreadable"]

    lines = (
        await fresh_client.get(
            f"{MOUNT}/api/export.jsonl", params={"until": CUTOFF}, headers=admin()
        )
    ).text.splitlines()
    assert json.loads(lines[29]) == {"event_id": str(event_id), "unreadable": bad["unreadable"]}
    rows = list(
        csv.reader(
            io.StringIO(
                (
                    await fresh_client.get(
                        f"{MOUNT}/api/export.csv", params={"until": CUTOFF}, headers=admin()
                    )
                ).text
            )
        )
    )
    assert rows[30][0] == str(event_id) and rows[30][-1].startswith("unreadable event: ")

    for path in ("/", "/queue", f"/events/{event_id}"):
        page = await fresh_client.get(f"{MOUNT}{path}", params={}, headers=admin(reviewer=True))
        assert page.status_code == 200, path
        assert "This version cannot read this event" in page.text
    detail = await fresh_client.get(f"{MOUNT}/events/{event_id}", headers=admin())
    assert "&#34;action&#34;:&#34;READ&#34;" in detail.text  # the stored text, escaped
