"""The demo's traffic: N mutating requests across organizations, as real clients would send.

Each request goes through "the load balancer" (the demo itself, on loopback, the app's one
trusted proxy), which appends the client's address to X-Forwarded-For; a quarter of the
clients forge a leftmost hop of their own, which the audit log must not believe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from auditevt_demo._app import demo_token

__all__ = ["KINDS", "ORGANIZATIONS", "SPOOFED_IP", "Outcome", "send_requests"]

#: The demo's tenants.
ORGANIZATIONS: dict[int, str] = {
    1: "Northside Rehab",
    2: "Lakeview Physio",
    3: "Harbor Sports Clinic",
    4: "Hillcrest Home Care",
}

#: The address a spoofing client puts leftmost in X-Forwarded-For.
SPOOFED_IP = "6.6.6.6"

#: Request kinds and their weights; the first requests cover every kind once.
KINDS: dict[str, int] = {
    "create_patient": 30,
    "update_patient": 20,
    "delete_patient": 8,
    "create_appointment": 15,
    "break_glass_update": 5,
    "impersonated_update": 5,
    "not_found": 5,
    "invalid_body": 5,
    "server_error": 3,
    "unauthenticated": 4,
}

_CONCURRENCY = 8
_CHANGES = ("update_patient", "break_glass_update", "impersonated_update")


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it."""

    kind: str
    organization_id: int
    """The tenant of the caller's session (0: not authenticated)."""
    status: int
    latency_s: float
    client_ip: str
    """The address the load balancer appended to X-Forwarded-For."""
    spoofed: bool
    """Whether the client forged a leftmost X-Forwarded-For hop."""


def _plan(count: int, rng: random.Random) -> list[str]:
    kinds = list(KINDS)
    first = kinds[:count]
    rng.shuffle(first)
    rest = rng.choices(kinds, weights=list(KINDS.values()), k=max(0, count - len(kinds)))
    return first + rest


class _Traffic:
    def __init__(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        self.http = http
        self.rng = rng
        self.patients: dict[int, list[int]] = {org: [] for org in ORGANIZATIONS}

    async def send(self, index: int, kind: str) -> Outcome:
        rng = self.rng
        org = rng.choice(list(ORGANIZATIONS))
        user = org * 100 + rng.randrange(1, 6)
        client_ip = f"203.0.113.{user % 250 + 1}"
        spoofed = rng.random() < 0.25
        headers = {
            "authorization": f"Bearer {demo_token(user, org)}",
            "x-forwarded-for": f"{SPOOFED_IP}, {client_ip}" if spoofed else client_ip,
        }
        known = self.patients[org]
        target = rng.choice(known) if known else None
        # With no patient to change yet, a change becomes a creation (in the same context).
        method, path, body = "POST", "/patients", None
        json_body: Any = {"portal_password": f"hunter2-{index}"}
        if kind in _CHANGES and target is not None:
            method, path = "PATCH", f"/patients/{target}"
            json_body = {"status": rng.choice(["active", "discharged", "on_hold"])}
        elif kind == "delete_patient" and target is not None:
            known.remove(target)
            method, path, json_body = "DELETE", f"/patients/{target}", None
        elif kind == "create_appointment":
            path = "/appointments"
            json_body = {"patient_id": target, "at": "2026-12-01T09:30:00+01:00"}
        elif kind == "not_found":
            method, path, json_body = "PATCH", "/patients/999999999", {"status": "active"}
        elif kind == "invalid_body":
            json_body, body = None, b"[]"
        elif kind == "server_error":
            path, json_body = "/reports/export", {"format": "csv"}
        elif kind == "unauthenticated":
            del headers["authorization"]
            org = 0
        if kind == "break_glass_update":
            headers["x-break-glass"] = str(9000 + index)
        elif kind == "impersonated_update":
            # A support engineer (user x99) acting in a user's session.
            headers["authorization"] = f"Bearer {demo_token(org * 100 + 99, org)}"
            headers["x-impersonation"] = str(7000 + index)
        started = time.perf_counter()
        response = await self.http.request(
            method, path, json=json_body, content=body, headers=headers
        )
        latency = time.perf_counter() - started
        if (method, path, response.status_code) == ("POST", "/patients", 201):
            self.patients[org].append(response.json()["id"])
        return Outcome(kind, org, response.status_code, latency, client_ip, spoofed)


async def send_requests(
    base_url: str,
    count: int,
    *,
    user_agent: str,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """Send ``count`` mutating requests, ``_CONCURRENCY`` at a time; their outcomes in order."""
    rng = random.Random(seed)
    plan = _plan(count, rng)
    outcomes: list[Outcome | None] = [None] * count
    done = 0
    gate = asyncio.Semaphore(_CONCURRENCY)
    limits = httpx.Limits(max_connections=_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"user-agent": user_agent}, timeout=60.0, limits=limits
    ) as http:
        traffic = _Traffic(http, rng)

        async def one(index: int, kind: str) -> None:
            nonlocal done
            async with gate:
                outcomes[index] = await traffic.send(index, kind)
            done += 1
            if progress is not None:
                progress(done, count)

        try:
            async with asyncio.TaskGroup() as group:
                for index, kind in enumerate(plan):
                    group.create_task(one(index, kind))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first failure says enough
    return [outcome for outcome in outcomes if outcome is not None]
