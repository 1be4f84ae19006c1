"""What a handler tells the middleware about its request: ``record()`` and its per-request slot.

``AuditMiddleware`` puts one :class:`RequestAudit` in ``scope["state"]`` (so ``record(request)``
finds it) and in a context variable (so ``record()`` with no argument finds it from service code
called by the handler). The context variable is set with a token and reset when the request ends.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from audit_middleware.request._changes import ChangesLimits, prepare_weighed

if TYPE_CHECKING:
    from auditevt import Action, Timestamp

__all__ = ["STATE_KEY", "RequestAudit", "record"]

STATE_KEY = "audit_middleware.request"
"""The ``scope["state"]`` key holding the request's :class:`RequestAudit`."""

_DEFAULT_LIMITS = ChangesLimits()


class _Held:
    """What the context variable holds: the request's audit until the request ends, then
    nothing. The event loop keeps copies of a context for a while (a timer made during the
    request keeps the one it was made in), and those must not keep the request's values alive:
    held longer, they outlive two garbage collections and make the slow, full ones more
    frequent."""

    __slots__ = ("audit",)

    def __init__(self, audit: RequestAudit | None) -> None:
        self.audit = audit


_current: ContextVar[_Held | None] = ContextVar("audit_middleware.request", default=None)


class RequestAudit:
    """Per-request values a handler may set; read once, when the response starts."""

    __slots__ = (
        "action",
        "audited",
        "changes",
        "changes_light",
        "entity_id",
        "entity_type",
        "limits",
        "sealed",
        "skip",
        "timestamp",
    )

    def __init__(self, *, audited: bool, limits: ChangesLimits | None = None) -> None:
        self.audited = audited
        # How much of changes record() keeps (AuditConfig.changes_limits).
        self.limits = _DEFAULT_LIMITS if limits is None else limits
        self.entity_type: str | None = None
        self.entity_id: int | None = None
        self.changes: Any = None
        self.changes_light = False  # small enough to redact on the loop (prepare_weighed)
        self.skip = False
        # Set once the event is built: a later record() would be silently lost, so it raises.
        self.sealed = False
        # What the middleware knows on arrival of an audited request (set only for those).
        self.action: Action | None = None
        self.timestamp: Timestamp | None = None


def set_current(audit: RequestAudit) -> Token[_Held | None]:
    return _current.set(_Held(audit))


def reset_current(token: Token[_Held | None]) -> None:
    held = _current.get()
    if held is not None:
        held.audit = None
    _current.reset(token)


def _find(request_or_scope: Any) -> RequestAudit | None:
    if request_or_scope is None:
        held = _current.get()
        return None if held is None else held.audit
    scope = getattr(request_or_scope, "scope", request_or_scope)
    if not isinstance(scope, MutableMapping):
        raise TypeError(
            f"record() takes a Starlette/FastAPI Request or an ASGI scope, "
            f"not {type(request_or_scope).__name__}"
        )
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, MutableMapping) else None
    return found if isinstance(found, RequestAudit) else None


def record(
    request_or_scope: Any = None,
    /,
    *,
    entity_type: str | None = None,
    entity_id: int | None = None,
    changes: Any = None,
    skip: bool = False,
) -> bool:
    """Tell the audit middleware what this request did; call it from the handler.

    - ``entity_type`` / ``entity_id`` replace what the middleware derived from the route;
    - ``changes`` is any JSON value (dicts, lists, strings, numbers, bools, None), or values
      encoded as Go reads them (aware datetime and date as RFC 3339 text, UUID as text,
      Decimal as a number, enums by value, tuples and sets as arrays, bytes as base64); secrets
      in it are redacted by the configured policy before it is written, and past the
      configured ``ChangesLimits`` it is recorded as a summary (size, top-level keys, SHA-256);
    - ``skip=True`` leaves this request out of the audit log (for a mutating route that changes
      nothing worth auditing; prefer excluding the route in ``AuditConfig``).

    Arguments left as ``None`` keep their earlier value, so it may be called several times.
    Pass the ``Request`` (or its ASGI scope); with no argument the request is found through a
    context variable, which also works from code the handler calls.

    Returns ``True`` when the values were stored for an audited request and ``False`` when the
    middleware does not audit this request (a GET, an excluded path). Raises ``RuntimeError``
    when no ``AuditMiddleware`` handles the request, or when the response has already started
    (the event is written by then, so the values would be lost); ``ConfigurationError`` (a
    ``ValueError`` and a ``TypeError``) naming the path and the value when ``changes`` cannot
    be written (NaN, Infinity, a number beyond float64, a lone surrogate, a naive datetime,
    nesting deeper than ``MAX_CHANGES_DEPTH``, a type that is not JSON), so the error is in the
    handler's traceback.
    """
    audit = _find(request_or_scope)
    if audit is None:
        raise RuntimeError(
            "record() found no AuditMiddleware for this request: add the middleware to the app "
            "(or pass the request when calling from another task)"
        )
    if entity_type is not None and not isinstance(entity_type, str):
        raise TypeError(f"entity_type={entity_type!r} must be a str")
    if entity_id is not None and (type(entity_id) is not int):
        raise TypeError(f"entity_id={entity_id!r} must be an int")
    if not audit.audited:
        return False
    if audit.sealed:
        raise RuntimeError(
            "record() was called after the response started: the audit event is already "
            "written; call it before returning the response"
        )
    light = False
    if changes is not None:
        # Checked and encoded here, before anything is stored: a bad value fails the call.
        changes, light = prepare_weighed(changes, audit.limits)
    if entity_type is not None:
        audit.entity_type = entity_type
    if entity_id is not None:
        audit.entity_id = entity_id
    if changes is not None:
        audit.changes = changes
        audit.changes_light = light
    if skip:
        audit.skip = True
    return True
