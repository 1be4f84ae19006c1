"""Redaction of secrets in the ``changes`` a handler reports, before anything is written.

``_keys`` normalises keys (case, separators, Unicode compatibility forms, confusable letters),
``_values`` finds secrets inside strings, ``_policy`` puts them together as ``RedactionPolicy``.
"""

from audit_middleware.request._redaction._keys import (
    CONFUSABLES,
    DEFAULT_FRAGMENTS,
    DEFAULT_KEYS,
    normalise_key,
)
from audit_middleware.request._redaction._policy import (
    DEFAULT_PAIR_NAMES,
    DEFAULT_PAIR_VALUES,
    RedactionPolicy,
    Redactor,
)
from audit_middleware.request._redaction._values import QUERY_WORDS, mask_text

__all__ = [
    "CONFUSABLES",
    "DEFAULT_FRAGMENTS",
    "DEFAULT_KEYS",
    "DEFAULT_PAIR_NAMES",
    "DEFAULT_PAIR_VALUES",
    "QUERY_WORDS",
    "RedactionPolicy",
    "Redactor",
    "mask_text",
    "normalise_key",
]
