"""Review: a mountable admin app over the audit log (JSON API, exports, web page, review trail).

``create_review_app(...)`` builds a Starlette app for the Core API to mount under a path of its
choice. The admin's organization always comes from the session (a resolver the app provides),
never from the query; PostgreSQL's row-level security enforces it. Every listing, view, export
and review is itself written to the audit log. Break-glass and impersonation events wait in a
review queue until a reviewer records a decision, kept append-only in ``audit_review``.
Needs the ``middleware`` extra (Jinja2 renders the page). See ``docs/review.md``.
"""

import importlib.util as _importlib_util

if _importlib_util.find_spec("jinja2") is None:
    raise ImportError(
        "audit_middleware.review needs jinja2: pip install 'auditevt[middleware]'", name="jinja2"
    )

from audit_middleware.review._app import DEFAULT_PAGE_SIZE, ReviewApp, create_review_app
from audit_middleware.review._audit import ACCESS_ENTITY, REVIEW_ENTITY, Admin
from audit_middleware.review._csrf import CSRF_TOKEN_TTL
from audit_middleware.review._export import CSV_COLUMNS
from audit_middleware.review._filter import STATUS_CLASSES, EventFilter
from audit_middleware.review._query import REVIEWABLE_CONTEXTS, EventPage, EventQuery
from audit_middleware.review._reviews import MAX_NOTE_LENGTH, Review, ReviewDecision, ReviewLog
from auditevt._public import report_public_module as _report_public_module

__all__ = [
    "ACCESS_ENTITY",
    "CSRF_TOKEN_TTL",
    "CSV_COLUMNS",
    "DEFAULT_PAGE_SIZE",
    "MAX_NOTE_LENGTH",
    "REVIEWABLE_CONTEXTS",
    "REVIEW_ENTITY",
    "STATUS_CLASSES",
    "Admin",
    "EventFilter",
    "EventPage",
    "EventQuery",
    "Review",
    "ReviewApp",
    "ReviewDecision",
    "ReviewLog",
    "create_review_app",
]

_report_public_module(__name__, globals(), __all__)
del _report_public_module, _importlib_util
