"""What a handler tells the middleware about its request: ``record()`` and its per-request slot.

``AuditMiddleware`` puts one :class:`RequestAudit` in ``scope["state"]`` (so ``record(request)``
finds it) and in a context variable (so ``record()`` with no argument finds it from service code
called by the handler). The context variable is set with a token and reset when the request ends.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["STATE_KEY", "RequestAudit", "record"]

STATE_KEY = "audit_middleware.request"
"""The ``scope["state"]`` key holding the request's :class:`RequestAudit`."""

_current: ContextVar[RequestAudit | None] = ContextVar("audit_middleware.request", default=None)


class RequestAudit:
    """Per-request values a handler may set; read once, when the response starts."""

    __slots__ = ("audited", "changes", "entity_id", "entity_type", "sealed", "skip")

    def __init__(self, *, audited: bool) -> None:
        self.audited = audited
        self.entity_type: str | None = None
        self.entity_id: int | None = None
        self.changes: Any = None
        self.skip = False
        # Set once the event is built: a later record() would be silently lost, so it raises.
        self.sealed = False


def set_current(audit: RequestAudit) -> Token[RequestAudit | None]:
    return _current.set(audit)


def reset_current(token: Token[RequestAudit | None]) -> None:
    _current.reset(token)


def _find(request_or_scope: Any) -> RequestAudit | None:
    if request_or_scope is None:
        return _current.get()
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
    - ``changes`` is any JSON value (dicts, lists, strings, numbers, bools); secrets in it are
      redacted by the configured policy before it is written;
    - ``skip=True`` leaves this request out of the audit log (for a mutating route that changes
      nothing worth auditing; prefer excluding the route in ``AuditConfig``).

    Arguments left as ``None`` keep their earlier value, so it may be called several times.
    Pass the ``Request`` (or its ASGI scope); with no argument the request is found through a
    context variable, which also works from code the handler calls.

    Returns ``True`` when the values were stored for an audited request and ``False`` when the
    middleware does not audit this request (a GET, an excluded path). Raises ``RuntimeError``
    when no ``AuditMiddleware`` handles the request, or when the response has already started
    (the event is written by then, so the values would be lost).
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
    if entity_type is not None:
        audit.entity_type = entity_type
    if entity_id is not None:
        audit.entity_id = entity_id
    if changes is not None:
        audit.changes = changes
    if skip:
        audit.skip = True
    return True
