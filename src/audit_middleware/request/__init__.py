"""The request path: the ASGI middleware, its configuration, ``record()`` and what builds an event.

Client IP by a trusted-proxy rule, entity from the route, identity from request state or a
resolver, redaction of ``changes``; the request's unit of work (``audit_session``) in
transactional mode, whose database work the store does.
"""

from audit_middleware.request._changes import ChangesLimits
from audit_middleware.request._client_ip import TrustedProxies, resolve_client_ip
from audit_middleware.request._context import record
from audit_middleware.request._entity import EntityResolver, route_entity
from audit_middleware.request._metrics import AuditStats
from audit_middleware.request._middleware import (
    DEFAULT_METHODS,
    AuditConfig,
    AuditMiddleware,
    AuditSink,
    IdentityResolver,
)
from audit_middleware.request._redaction import RedactionPolicy, Redactor
from audit_middleware.request._unit_of_work import audit_connection, audit_session

__all__ = [
    "DEFAULT_METHODS",
    "AuditConfig",
    "AuditMiddleware",
    "AuditSink",
    "AuditStats",
    "ChangesLimits",
    "EntityResolver",
    "IdentityResolver",
    "RedactionPolicy",
    "Redactor",
    "TrustedProxies",
    "audit_connection",
    "audit_session",
    "record",
    "resolve_client_ip",
    "route_entity",
]
