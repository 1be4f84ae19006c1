"""``build_event()``: the audit ``Event`` of one request, from the facts the middleware gathered.

Pure: it reads the ASGI scope, the handler's ``record()`` values and the configuration, and
touches no database and no global state, so both write modes (and tests) share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeAlias

from audit_middleware.request._client_ip import resolve_client_ip, server_rewrote_peer
from audit_middleware.request._config import AuditConfig
from audit_middleware.request._context import RequestAudit
from auditevt import Action, ActionContext, Event, Timestamp

__all__ = ["IdentityTypeError", "build_event"]

Scope: TypeAlias = MutableMapping[str, Any]


class IdentityTypeError(TypeError):
    """An identity value on ``request.state`` (or from the resolver) is not an int."""

    def __init__(self, where: str, value: object) -> None:
        super().__init__(
            f"{where} holds {value!r} of type {type(value).__name__}; expected an int (or None "
            "when unknown): convert it where your auth layer sets it, e.g. int(claims['sub'])"
        )
        self.where = where


def _state_int(state: Mapping[str, Any], key: str, lenient: bool) -> int | None:
    value = state.get(key)
    if value is None or type(value) is int:
        return value
    if lenient:
        return None
    raise IdentityTypeError(f"request.state.{key}", value)


def clean_text(value: str) -> str:
    """``value`` with lone surrogates (from undecodable bytes) replaced: they cannot be written."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def build_event(
    config: AuditConfig,
    scope: Scope,
    audit: RequestAudit,
    *,
    action: Action,
    path: str,
    timestamp: Timestamp,
    status: int,
    resolved: Any = None,
    attempt: bool = False,
    on_anonymous: Callable[[int], None] | None = None,
    on_rewritten_peer: Callable[[], None] | None = None,
) -> Event | None:
    """The request's event, or None when it is not to be written.

    ``audit.changes`` must be redacted already (``settle_changes``). ``resolved`` is what
    ``config.identity_resolver`` returned (None without one). ``attempt``
    builds the row of a failed attempt: without the handler's ``changes`` and with identity
    values of the wrong type left out, so that the attempt itself can still be recorded.
    ``on_anonymous(organization_id)`` is called when no organization was authenticated, and
    ``on_rewritten_peer()`` when the server replaced the peer with an X-Forwarded-For entry.
    Raises ``IdentityTypeError`` (and whatever ``Event`` refuses) otherwise.
    """
    if audit.skip or (config.should_audit is not None and not config.should_audit(scope)):
        return None
    state: Mapping[str, Any] = scope.get("state") or {}

    if config.identity_resolver is not None:
        user_id, organization_id = resolved if resolved is not None else (None, None)
        checked = []
        for name, value in (("user_id", user_id), ("organization_id", organization_id)):
            if value is not None and type(value) is not int:
                if not attempt:
                    raise IdentityTypeError(f"identity_resolver's {name}", value)
                value = None
            checked.append(value)
        user_id, organization_id = checked
    else:
        user_id = _state_int(state, config.user_id_key, attempt)
        organization_id = _state_int(state, config.organization_id_key, attempt)
    if organization_id is None:
        if config.on_missing_organization == "skip":
            return None
        organization_id = config.anonymous_organization_id
        if on_anonymous is not None:
            on_anonymous(organization_id)

    break_glass_id = _state_int(state, config.break_glass_id_key, attempt)
    impersonation_id = _state_int(state, config.impersonation_id_key, attempt)
    context = state.get(config.action_context_key)
    if context is None:
        if break_glass_id is not None:
            context = ActionContext.BREAK_GLASS
        elif impersonation_id is not None:
            context = ActionContext.IMPERSONATION
    elif not isinstance(context, ActionContext):
        context = ActionContext(context)

    entity_type, entity_id = audit.entity_type, audit.entity_id
    if entity_type is None or entity_id is None:
        route_type, route_id = config.entity_resolver(scope)
        entity_type = route_type if entity_type is None else entity_type
        entity_id = route_id if entity_id is None else entity_id

    user_agent = ""
    forwarded_for: list[str] = []
    for name, value in scope.get("headers") or ():
        if name == b"user-agent" and not user_agent:
            user_agent = value.decode("latin-1")[: config.max_user_agent_length]
        elif name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))

    changes = None if attempt else audit.changes  # redacted already (settle_changes)
    peer = scope.get("client")
    ip_address = resolve_client_ip(peer, forwarded_for, config.trusted_proxies)
    if (
        not ip_address
        and forwarded_for
        and on_rewritten_peer is not None
        and server_rewrote_peer(peer, forwarded_for)
    ):
        on_rewritten_peer()

    optional: dict[str, Any] = {}
    # Only what is set: a field left to its default skips its validators (most requests).
    if context is not None:
        optional["action_context"] = context
    if break_glass_id is not None:
        optional["break_glass_id"] = break_glass_id
    if impersonation_id is not None:
        optional["impersonation_id"] = impersonation_id
    return Event(
        action=action,
        entity_type=clean_text(entity_type),
        entity_id=entity_id,
        user_id=0 if user_id is None else user_id,
        organization_id=organization_id,
        ip_address=ip_address,
        user_agent=user_agent,
        request_path=clean_text(path),
        status_code=status,
        timestamp=timestamp,
        changes=changes,
        **optional,
    )
