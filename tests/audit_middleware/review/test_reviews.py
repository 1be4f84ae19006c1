"""Break-glass and impersonation review: the queue, decisions, CSRF, the append-only table."""

from __future__ import annotations

import re
from typing import Any

import httpx
import psycopg
import pytest

pytest.register_assert_rewrite("review_support")

from review_support import (  # noqa: E402
    CUTOFF,
    MOUNT,
    ORG,
    OTHER_ORG,
    PER_ORG,
    admin,
    collect,
    seed_event,
    seed_numbers,
)

from audit_middleware.review import ReviewDecision  # noqa: E402
from auditevt import ActionContext  # noqa: E402
from conftest import app_role, libpq  # noqa: E402

pytest_plugins = ["review_support"]
pytestmark = pytest.mark.anyio

REVIEWER = admin(reviewer=True)


def reviewable(org: int) -> list[int]:
    contexts = (ActionContext.BREAK_GLASS, ActionContext.IMPERSONATION)
    return [
        n for n in reversed(range(PER_ORG[org])) if seed_event(org, n).action_context in contexts
    ]


async def queue_numbers(client: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    pages = await collect(client, "/api/queue", {"limit": "10"}, headers)
    return [n for page in pages for n in seed_numbers(page)]


async def event_id_of(client: httpx.AsyncClient, n: int, org: int = ORG) -> str:
    path = f"/patients/{n}" if n % 2 else f"/appointments/{n}"
    body = (
        await client.get(
            f"{MOUNT}/api/events",
            params={"path_prefix": path, "until": CUTOFF},
            headers=admin(org),
        )
    ).json()
    [item] = [i for i in body["items"] if i["event"]["request_path"] == path]
    return str(item["event_id"])


async def post_review(
    client: httpx.AsyncClient, event_id: str, body: Any, headers: dict[str, str] = REVIEWER
) -> httpx.Response:
    return await client.post(f"{MOUNT}/api/events/{event_id}/reviews", json=body, headers=headers)


async def test_review_queue_holds_unreviewed_break_glass_and_impersonation_events(
    fresh_client: httpx.AsyncClient, fresh_review_db: str
) -> None:
    assert await queue_numbers(fresh_client, REVIEWER) == reviewable(ORG)
    assert await queue_numbers(fresh_client, admin(OTHER_ORG)) == reviewable(OTHER_ORG)
    target = reviewable(ORG)[3]
    event_id = await event_id_of(fresh_client, target)
    response = await post_review(
        fresh_client, event_id, {"decision": "justified", "note": "ER, patient unconscious"}
    )
    assert response.status_code == 201, response.text
    review = response.json()
    assert (review["event_id"], review["reviewer_id"], review["decision"], review["note"]) == (
        event_id,
        41,
        "justified",
        "ER, patient unconscious",
    )
    # Out of the queue; shown next to the event, in the listing and on its own.
    assert await queue_numbers(fresh_client, REVIEWER) == [
        n for n in reviewable(ORG) if n != target
    ]
    one = (await fresh_client.get(f"{MOUNT}/api/events/{event_id}", headers=admin())).json()
    assert [r["decision"] for r in one["reviews"]] == ["justified"]
    listed = await collect(fresh_client, "/api/events", {"until": CUTOFF}, admin())
    shown = {i["event_id"]: i["reviews"] for page in listed for i in page}
    assert [r["id"] for r in shown[event_id]] == [review["id"]]
    assert sum(bool(r) for r in shown.values()) == 1
    # A changed mind is a second review; both are kept, the newest last.
    again = await post_review(fresh_client, event_id, {"decision": "needs_follow_up", "note": ""})
    assert again.status_code == 201
    one = (await fresh_client.get(f"{MOUNT}/api/events/{event_id}", headers=admin())).json()
    assert [r["decision"] for r in one["reviews"]] == ["justified", "needs_follow_up"]
    # The review is itself audited, as the CREATE of an audit_review entity.
    with psycopg.connect(libpq(fresh_review_db)) as conn:
        rows = conn.execute(
            "SELECT l.entity_id, l.user_id, l.organization_id, l.status_code, l.changes, "
            "o.id IS NOT NULL FROM audit_log l JOIN audit_outbox o ON o.event_id = l.event_id "
            "WHERE l.entity_type = 'audit_review' ORDER BY l.id"
        ).fetchall()
    assert rows == [
        (
            review["id"],
            41,
            ORG,
            201,
            {
                "operation": "review",
                "event_id": event_id,
                "decision": "justified",
                "note": "ER, patient unconscious",
            },
            True,
        ),
        (
            again.json()["id"],
            41,
            ORG,
            201,
            {
                "operation": "review",
                "event_id": event_id,
                "decision": "needs_follow_up",
                "note": "",
            },
            True,
        ),
    ]


async def test_review_refusals_name_the_reason(fresh_client: httpx.AsyncClient) -> None:
    target = await event_id_of(fresh_client, reviewable(ORG)[0])
    ordinary = await event_id_of(fresh_client, 1)  # n=1: action_context normal
    cases = [
        (target, {"decision": "fine"}, REVIEWER, 400, "decision='fine' must be one of justified"),
        (target, {"decision": "justified", "note": "x" * 4001}, REVIEWER, 400, "at most 4000"),
        (target, {"decision": "justified", "note": 5}, REVIEWER, 400, "note=5 must be text"),
        (target, ["justified"], REVIEWER, 400, "must be a JSON object"),
        (ordinary, {"decision": "justified"}, REVIEWER, 400, "action_context='normal'"),
        (target, {"decision": "justified"}, admin(), 403, "not record reviews"),
        (target, {"decision": "justified"}, admin(OTHER_ORG, reviewer=True), 404, "no audit event"),
    ]
    for event_id, body, headers, status, message in cases:
        response = await post_review(fresh_client, event_id, body, headers)
        assert (response.status_code, message in response.json()["error"]) == (status, True), body
    assert await queue_numbers(fresh_client, REVIEWER) == reviewable(ORG)  # nothing recorded


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"content-type": "text/plain"}, 415, "Content-Type: application/json"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        (
            {"content-type": "application/json", "origin": "https://evil.example"},
            403,
            "Origin 'https://evil.example' is not this host 'core-api'",
        ),
        (
            {"content-type": "application/json", "sec-fetch-site": "cross-site"},
            403,
            "Sec-Fetch-Site is 'cross-site'",
        ),
    ],
)
async def test_review_json_post_refuses_what_another_site_could_send(
    fresh_client: httpx.AsyncClient, headers: dict[str, str], status: int, message: str
) -> None:
    target = await event_id_of(fresh_client, reviewable(ORG)[0])
    response = await fresh_client.post(
        f"{MOUNT}/api/events/{target}/reviews",
        content=b'{"decision": "justified", "note": ""}',
        headers={**REVIEWER, **headers},
    )
    assert response.status_code == status
    assert message in response.json()["error"]
    same_origin = await fresh_client.post(
        f"{MOUNT}/api/events/{target}/reviews",
        content=b'{"decision": "justified", "note": ""}',
        headers={**REVIEWER, "content-type": "application/json", "origin": "http://core-api"},
    )
    assert same_origin.status_code == 201


async def test_review_form_needs_the_token_the_page_issued(fresh_client: httpx.AsyncClient) -> None:
    target = await event_id_of(fresh_client, reviewable(ORG)[1])
    page = await fresh_client.get(f"{MOUNT}/events/{target}", headers=REVIEWER)
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"decision": "unjustified", "note": "no emergency on record", "next": "event"}
    url = f"{MOUNT}/events/{target}/review"
    for bad, headers in [
        ({}, REVIEWER),
        ({"csrf_token": "garbage"}, REVIEWER),
        ({"csrf_token": token[1]}, admin(user=99, reviewer=True)),  # issued to someone else
        ({"csrf_token": token[1]}, {**REVIEWER, "origin": "https://evil.example"}),
    ]:
        refused = await fresh_client.post(url, data={**form, **bad}, headers=headers)
        assert refused.status_code == 403, bad
    assert await queue_numbers(fresh_client, REVIEWER) == reviewable(ORG)
    done = await fresh_client.post(url, data={**form, "csrf_token": token[1]}, headers=REVIEWER)
    assert done.status_code == 303
    assert done.headers["location"] == f"{MOUNT}/events/{target}?reviewed=1"
    shown = await fresh_client.get(done.headers["location"], headers=REVIEWER)
    assert "Review recorded." in shown.text
    assert "no emergency on record" in shown.text
    assert target not in (await fresh_client.get(f"{MOUNT}/queue", headers=REVIEWER)).text


# --- the table itself -----------------------------------------------------------------------


def app_connection(url: str, organization: str | None) -> psycopg.Connection[Any]:
    conn = psycopg.connect(libpq(url), options=f"-c role={app_role(url)}")
    if organization is not None:
        conn.execute("SELECT set_config('auditevt.organization_id', %s, false)", (organization,))
    return conn


async def test_review_rows_are_append_only_and_org_scoped(
    fresh_client: httpx.AsyncClient, fresh_review_db: str
) -> None:
    target = await event_id_of(fresh_client, reviewable(ORG)[0])
    assert (await post_review(fresh_client, target, {"decision": "justified"})).status_code == 201
    with app_connection(fresh_review_db, str(ORG)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_review").fetchone() == (1,)
    for organization in (None, "", str(OTHER_ORG)):
        with app_connection(fresh_review_db, organization) as conn:
            assert conn.execute("SELECT count(*) FROM audit_review").fetchone() == (0,)
    # No role may change or remove a review: not the app role, not the superuser.
    for role in (app_role(fresh_review_db), None):
        for statement in (
            "UPDATE audit_review SET decision = 'unjustified'",
            "DELETE FROM audit_review",
            "TRUNCATE audit_review",
        ):
            options = {} if role is None else {"options": f"-c role={role}"}
            with psycopg.connect(libpq(fresh_review_db), **options) as conn:  # type: ignore[arg-type]
                conn.execute(
                    "SELECT set_config('auditevt.organization_id', %s, false)", (str(ORG),)
                )
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    # Inserting another organization's review, or one with no organization set, is refused.
    for organization in (str(OTHER_ORG), None):
        with (
            app_connection(fresh_review_db, organization) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(
                "INSERT INTO audit_review (organization_id, event_id, audit_id, reviewer_id, "
                "decision, note) VALUES (%s, %s, 1, 1, 'justified', '')",
                (ORG, target),
            )
    with psycopg.connect(libpq(fresh_review_db)) as conn:
        assert conn.execute("SELECT decision FROM audit_review").fetchall() == [("justified",)]


def test_review_decisions_are_the_documented_three() -> None:
    assert [d.value for d in ReviewDecision] == ["justified", "unjustified", "needs_follow_up"]
