"""``AuditConfig``: what ``AuditMiddleware`` audits, where it finds each field, how it fails."""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from audit_middleware.request._changes import ChangesLimits
from audit_middleware.request._client_ip import TrustedProxies
from audit_middleware.request._entity import EntityResolver, route_entity
from audit_middleware.request._redaction import RedactionPolicy, Redactor
from auditevt import Action

__all__ = ["DEFAULT_METHODS", "AuditConfig", "IdentityResolver"]

Scope: TypeAlias = MutableMapping[str, Any]
Identity: TypeAlias = tuple[int | None, int | None]
IdentityResolver: TypeAlias = Callable[[Scope], Identity | Awaitable[Identity]]
"""``(scope) -> (user_id, organization_id)``, sync or async; ``None`` for unknown."""

DEFAULT_METHODS: Mapping[str, Action] = MappingProxyType(
    {
        "POST": Action.CREATE,
        "PUT": Action.UPDATE,
        "PATCH": Action.UPDATE,
        "DELETE": Action.DELETE,
    }
)
"""Audited HTTP methods and the action each is recorded as; GET, HEAD, OPTIONS are not audited."""

_INT64_MAX = 2**63 - 1


def _check_prefixes(prefixes: tuple[str, ...] | None, name: str) -> None:
    if prefixes is None:
        return
    if isinstance(prefixes, str):
        raise TypeError(f"{name} must be a tuple of path prefixes, not the string {prefixes!r}")
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"{name} holds {prefix!r}: a path prefix must start with '/'")


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """How ``AuditMiddleware`` decides what to audit and where it finds each field."""

    methods: Mapping[str, Action] = field(default_factory=lambda: DEFAULT_METHODS)
    """Audited methods and their action; any method not listed passes through unaudited."""
    include_paths: tuple[str, ...] | None = None
    """If set, only paths equal to or under one of these prefixes are audited."""
    exclude_paths: tuple[str, ...] = ()
    """Paths equal to or under these prefixes are not audited (``/login`` excludes
    ``/login/sso``, not ``/login-help``)."""
    should_audit: Callable[[Scope], bool] | None = None
    """Called when the response starts (the route is known then); False leaves it out."""
    user_id_key: str = "audit_user_id"
    """``request.state`` attribute holding the actor's id (an int); missing means 0."""
    organization_id_key: str = "audit_organization_id"
    """``request.state`` attribute holding the authenticated organization's id (an int)."""
    action_context_key: str = "audit_action_context"
    """``request.state`` attribute holding an ``ActionContext`` (or its value); inferred from
    the two ids below when unset."""
    break_glass_id_key: str = "audit_break_glass_id"
    """``request.state`` attribute holding the break-glass grant id (an int)."""
    impersonation_id_key: str = "audit_impersonation_id"
    """``request.state`` attribute holding the impersonation session id (an int)."""
    identity_resolver: IdentityResolver | None = None
    """Replaces the two id keys: ``(scope) -> (user_id, organization_id)``, sync or async."""
    entity_resolver: EntityResolver = route_entity
    """``(scope) -> (entity_type, entity_id)`` from the matched route; handlers override it."""
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    """Which peers may speak for the client in X-Forwarded-For; the default trusts none."""
    redaction: Redactor = field(default_factory=RedactionPolicy)
    """Applied to ``changes`` before anything is written."""
    changes_limits: ChangesLimits = field(default_factory=ChangesLimits)
    """How much of ``changes`` a request may record; past it, a summary is recorded."""
    max_user_agent_length: int = 512
    """User-Agent is cut to this many characters."""
    on_missing_organization: Literal["audit", "skip"] = "audit"
    """No authenticated organization: ``"audit"`` writes the row under
    ``anonymous_organization_id`` (a mutation is never left out of the log); ``"skip"`` does
    not write it."""
    anonymous_organization_id: int = 0
    """The organization recorded for requests with none authenticated."""
    fail_open: bool = False
    """Separate-store mode only: if True, a failed write is logged at ERROR and counted, and the
    app's response goes out anyway. The default answers 503. (In transactional mode a failed
    write rolls the change back, so there is nothing to let through.)"""
    write_timeout: float | None = 10.0
    """Seconds a write may take before it counts as failed; None waits indefinitely."""
    startup_check: Literal["refuse", "warn"] = "refuse"
    """At lifespan start-up the store is checked (reachable, migrated, INSERT allowed on
    ``audit_log`` and ``audit_outbox``): ``"refuse"`` fails the start-up when it cannot write,
    ``"warn"`` logs the problem at ERROR and starts; audited requests then answer 503."""
    metrics: bool = True
    """Report the counters to Prometheus (read at scrape time) when ``prometheus_client`` is
    installed (the same switch as ``RelayConfig.metrics``)."""
    prometheus: bool | None = None
    """Deprecated name of ``metrics``; when given, it sets ``metrics``."""

    def __post_init__(self) -> None:
        if self.prometheus is not None:
            warnings.warn(
                "AuditConfig(prometheus=...) is deprecated: use AuditConfig(metrics=...)",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "metrics", bool(self.prometheus))
            object.__setattr__(self, "prometheus", None)
        for method, action in self.methods.items():
            if not isinstance(method, str) or method != method.upper():
                raise ValueError(f"methods key {method!r} must be an upper-case HTTP method")
            if not isinstance(action, Action):
                raise TypeError(f"methods[{method!r}]={action!r} must be an Action")
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))
        _check_prefixes(self.include_paths, "include_paths")
        _check_prefixes(self.exclude_paths, "exclude_paths")
        for name in (
            "user_id_key",
            "organization_id_key",
            "action_context_key",
            "break_glass_id_key",
            "impersonation_id_key",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}={value!r} must be a non-empty string")
        if not isinstance(self.trusted_proxies, TrustedProxies):
            raise TypeError(f"trusted_proxies={self.trusted_proxies!r} must be a TrustedProxies")
        if not callable(self.redaction):
            raise TypeError(f"redaction={self.redaction!r} must be callable")
        if not isinstance(self.changes_limits, ChangesLimits):
            raise TypeError(f"changes_limits={self.changes_limits!r} must be a ChangesLimits")
        if type(self.max_user_agent_length) is not int or self.max_user_agent_length < 0:
            raise ValueError(
                f"max_user_agent_length={self.max_user_agent_length!r} must be an int >= 0"
            )
        if self.on_missing_organization not in ("audit", "skip"):
            raise ValueError(
                f"on_missing_organization={self.on_missing_organization!r} must be "
                "'audit' or 'skip'"
            )
        if type(self.anonymous_organization_id) is not int or not (
            -(2**63) <= self.anonymous_organization_id <= _INT64_MAX
        ):
            raise ValueError(
                f"anonymous_organization_id={self.anonymous_organization_id!r} must be an int64"
            )
        if self.startup_check not in ("refuse", "warn"):
            raise ValueError(f"startup_check={self.startup_check!r} must be 'refuse' or 'warn'")
        if self.write_timeout is not None and not (
            isinstance(self.write_timeout, int | float) and self.write_timeout > 0
        ):
            raise ValueError(f"write_timeout={self.write_timeout!r} must be > 0 or None")


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """``path`` equals one of ``prefixes`` or lies under it (``/a`` holds ``/a/b``, not ``/ab``)."""
    for prefix in prefixes:
        if path.startswith(prefix):
            stem = prefix.rstrip("/")
            if len(path) == len(stem) or path[len(stem)] == "/" or prefix.endswith("/"):
                return True
    return False
