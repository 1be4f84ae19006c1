"""contract.dump_ratio and contract.parse_ratio: Go-exact Event versus a plain pydantic model.

Both sides handle the same events in the same run, interleaved round by round, so machine noise
hits both alike. A ratio of 1.0 means "as fast as plain pydantic"; higher is faster.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from auditevt import Action, ActionContext, Event, Timestamp


class PlainEvent(BaseModel):
    """The same fields as a plain pydantic model would declare them (no Go rules)."""

    action: str
    entity_type: str
    entity_id: int = 0
    user_id: int
    organization_id: int
    ip_address: str
    user_agent: str
    request_path: str
    status_code: int
    timestamp: datetime
    changes: Any = None
    action_context: str | None = None
    break_glass_id: int | None = None
    impersonation_id: int | None = None


def sample_events(count: int, seed: int = 7) -> list[Event]:
    """Events shaped like a Core API's: most carry a small before/after ``changes``."""
    rng = random.Random(seed)
    entities = ["appointment", "patient", "form", "invoice", "exercise_plan"]
    agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15",
        "okhttp/4.12.0",
    ]
    events = []
    base = 1_795_000_000_000_000_000
    for i in range(count):
        entity = rng.choice(entities)
        action = rng.choice([Action.CREATE, Action.UPDATE, Action.UPDATE, Action.DELETE])
        entity_id = rng.randrange(1, 10**7)
        changes: Any = None
        if action is not Action.DELETE:
            changes = {
                "before": {"status": "scheduled", "room": f"B-{i % 40}", "duration_min": 30},
                "after": {
                    "status": rng.choice(["confirmed", "cancelled"]),
                    "room": f"C-{i % 17}",
                    "duration_min": rng.choice([30, 45, 60]),
                    "notes": "patient called" if i % 3 else None,
                    "tags": ["follow-up", "knee"],
                },
            }
            if i % 5 == 0:
                changes["after"]["pain_score"] = round(rng.uniform(0, 10), 1)
        context: dict[str, Any] = {}
        if i % 50 == 0:
            context = {"action_context": ActionContext.BREAK_GLASS, "break_glass_id": i}
        events.append(
            Event(
                action=action,
                entity_type=entity,
                entity_id=entity_id,
                user_id=rng.randrange(1, 5000),
                organization_id=rng.randrange(1, 40),
                ip_address=f"203.0.113.{rng.randrange(1, 255)}",
                user_agent=rng.choice(agents),
                request_path=f"/api/v1/{entity}s/{entity_id}",
                status_code=rng.choice([200, 200, 201, 204, 400, 404]),
                timestamp=Timestamp.from_unix_ns(
                    base + i * 1_000_003_007, rng.choice([0, 0, 3600, -28800])
                ),
                changes=changes,
                **context,
            )
        )
    return events


def _best_of(fn: Any, rounds: int) -> list[float]:
    # CPU time of this process: on a shared machine, time spent descheduled is not ours.
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return times


def run(quick: bool) -> list[dict[str, Any]]:
    count = 500 if quick else 2000
    rounds = 40 if quick else 100
    events = sample_events(count)
    texts = [event.to_json() for event in events]
    plain = [PlainEvent.model_validate_json(text) for text in texts]

    def ours_dump() -> None:
        for event in events:
            event.to_json()

    def plain_dump() -> None:
        for model in plain:
            model.model_dump_json(exclude_none=True)

    def ours_parse() -> None:
        for text in texts:
            Event.model_validate_json(text)

    def plain_parse() -> None:
        for text in texts:
            PlainEvent.model_validate_json(text)

    results: dict[str, list[float]] = {"od": [], "pd": [], "op": [], "pp": []}
    for _ in range(rounds):  # alternate so both sides see the same machine
        results["od"] += _best_of(ours_dump, 1)
        results["pd"] += _best_of(plain_dump, 1)
        results["op"] += _best_of(ours_parse, 1)
        results["pp"] += _best_of(plain_parse, 1)
    best = {key: min(values) for key, values in results.items()}
    median = {key: statistics.median(values) for key, values in results.items()}
    per_s = {key: count / value for key, value in best.items()}
    return [
        {
            "name": "contract.dump_ratio",
            "value": round(best["pd"] / best["od"], 3),
            "unit": "ratio",
            "detail": {
                "goal": ">= 0.5",
                "events": count,
                "rounds": rounds,
                "to_json_per_s": round(per_s["od"]),
                "plain_model_dump_json_per_s": round(per_s["pd"]),
                "median_ratio": round(median["pd"] / median["od"], 3),
            },
        },
        {
            "name": "contract.parse_ratio",
            "value": round(best["pp"] / best["op"], 3),
            "unit": "ratio",
            "detail": {
                "goal": ">= 0.7",
                "events": count,
                "rounds": rounds,
                "model_validate_json_per_s": round(per_s["op"]),
                "plain_model_validate_json_per_s": round(per_s["pp"]),
                "median_ratio": round(median["pp"] / median["op"], 3),
            },
        },
    ]
