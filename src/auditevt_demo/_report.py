"""The summary ``auditevt demo`` prints once every request is answered and delivered."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

from audit_middleware.storage._reader import AuditRecord
from auditevt import ActionContext, Event
from auditevt_demo._app import DemoCoreApi
from auditevt_demo._load import ORGANIZATIONS, SPOOFED_IP, Outcome
from telemetry_client.testing import TelemetryStandIn

__all__ = ["DemoReport"]


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


class DemoReport:
    """Writes the report lines through ``say``; :meth:`summarise` returns the exit status."""

    def __init__(self, say: Callable[[str], None], *, forward: bool, drained_after: float) -> None:
        self.say = say
        self.forward = forward
        self.drained_after = drained_after

    def summarise(
        self,
        outcomes: list[Outcome],
        event_ids: list[uuid.UUID],
        records: list[AuditRecord],
        pending: dict[uuid.UUID, bool],
        isolation: list[tuple[int, int, int]],
        standin: TelemetryStandIn | None,
        api: DemoCoreApi,
    ) -> int:
        ok = True
        events = [r.event for r in records]
        audited = len(records)
        self.say("")
        self._by_organization(events)
        statuses = Counter(e.status_code for e in events)
        self.say(
            "  status codes: " + ", ".join(f"{code} x{n}" for code, n in sorted(statuses.items()))
        )
        latencies = [o.latency_s for o in outcomes]
        self.say(
            f"  audited latency: p50 {_ms(_percentile(latencies, 0.5))}, "
            f"p99 {_ms(_percentile(latencies, 0.99))} (client side; each answer waited for "
            "its audit row)"
        )
        spoofed = sum(o.spoofed for o in outcomes)
        believed = sum(e.ip_address == SPOOFED_IP for e in events)
        self.say(
            f"  client IP: {spoofed} requests forged X-Forwarded-For: {SPOOFED_IP}, "
            f"recorded {believed} times (the proxy's hop is kept)"
        )
        passwords = [
            e.changes["portal_password"]
            for e in events
            if isinstance(e.changes, dict) and "portal_password" in e.changes
        ]
        leaked = sum(p != "[REDACTED]" for p in passwords)
        self.say(
            f"  secrets: portal_password redacted in {len(passwords) - leaked} of "
            f"{len(passwords)} rows"
        )
        for org, seen, foreign in isolation:
            verdict = "all" if not foreign else f"{foreign} NOT"
            self.say(
                f"  tenant isolation: org {org}'s admin (asking for another org) sees "
                f"{seen} rows, {verdict} of org {org}"
            )
            ok = ok and not foreign
        if believed or leaked:
            ok = False
        if set(event_ids) != {r.event_id for r in records}:
            self.say(
                f"  MISMATCH: the middleware wrote {len(event_ids)} rows, "
                f"audit_log holds {audited} of this run"
            )
            ok = False
        dead = sum(pending.values())
        forwarded = 0
        if self.forward:
            forwarded = audited - len(pending)
            ok = self._report_delivery(records, pending, standin, api, forwarded) and ok
            ok = ok and not pending
        if dead:
            self.say(f"  {dead} events were dead-lettered (rejected by Telemetry); see the outbox")
        self.say(f"audited={audited} forwarded={forwarded} pending={len(pending)}")
        return 0 if ok else 1

    def _by_organization(self, events: list[Event]) -> None:
        self.say("  audit_log rows of this run, by organization:")
        self.say(
            f"    {'org':>3}  {'name':<22}{'rows':>5}{'CREATE':>8}{'UPDATE':>8}{'DELETE':>8}"
            f"{'2xx':>6}{'4xx':>6}{'5xx':>6}{'break-glass':>13}{'impersonation':>15}"
        )
        names = {0: "(not authenticated)", **ORGANIZATIONS}
        for org in sorted({e.organization_id for e in events}):
            mine = [e for e in events if e.organization_id == org]
            actions = Counter(str(e.action) for e in mine)
            classes = Counter(e.status_code // 100 for e in mine)
            contexts = Counter(e.action_context for e in mine)
            self.say(
                f"    {org:>3}  {names.get(org, '?'):<22}{len(mine):>5}{actions['CREATE']:>8}"
                f"{actions['UPDATE']:>8}{actions['DELETE']:>8}{classes[2]:>6}{classes[4]:>6}"
                f"{classes[5]:>6}{contexts[ActionContext.BREAK_GLASS]:>13}"
                f"{contexts[ActionContext.IMPERSONATION]:>15}"
            )

    def _report_delivery(
        self,
        records: list[AuditRecord],
        pending: dict[uuid.UUID, bool],
        standin: TelemetryStandIn | None,
        api: DemoCoreApi,
        forwarded: int,
    ) -> bool:
        ok = True
        if pending:
            self.say(f"  delivery: {len(pending)} events of this run are still in the outbox")
        else:
            self.say(
                f"  delivery: none of this run's events left in the outbox "
                f"{self.drained_after:.2f} s after the last request"
            )
        stats = api.relay_stats
        if stats is not None:
            self.say(
                f"  relay: {stats.batches} batches answered, {stats.delivered} events delivered, "
                f"{stats.retried} deliveries rescheduled, {stats.dead_lettered} dead-lettered"
            )
        if standin is not None:
            received = standin.received_at()
            delivered = [r for r in records if r.event_id not in pending]
            missing = [r for r in delivered if r.event_id not in received]
            lags = [
                (received[r.event_id].unix_ns - r.event.timestamp.unix_ns) / 1e9
                for r in delivered
                if r.event_id in received
            ]
            if lags:
                self.say(
                    f"  delivery lag (request to Telemetry): p50 {_ms(_percentile(lags, 0.5))}, "
                    f"p99 {_ms(_percentile(lags, 0.99))}, max {_ms(max(lags))}"
                )
            self.say(
                f"  Telemetry stand-in stored {len(standin.event_ids())} distinct events "
                f"({forwarded} of this run delivered)"
            )
            if missing:
                self.say(f"  MISMATCH: {len(missing)} delivered events are not in the stand-in")
                ok = False
        return ok
