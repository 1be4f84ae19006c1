"""``RedactionPolicy``: which parts of ``changes`` are secrets, and what replaces them.

Three rules, applied at any depth (objects inside lists inside objects are walked too):

1. **Sensitive keys.** A key is sensitive when, in its normalised words (see ``_keys``), some run
   of one to three adjacent words, joined, is one of the policy's ``keys`` (``clientSecret`` ->
   ``client``, ``secret``; ``API_KEY`` -> ``apikey``; ``x-auth-token`` -> ``token``), or the
   whole key with its separators removed contains one of the ``fragments`` (``newpassword``,
   ``db_password_hash``). Its value is replaced whole, whatever it holds.
2. **Name/value pairs.** An object with a name-like member (``name``, ``key``, ``field``,
   ``param``, ``header``, ...: ``pair_names``) whose text is a sensitive key has its value-like
   members (``value``, ``val``, ``data``, ...: ``pair_values``) replaced:
   ``{"name": "password", "value": "hunter2"}``.
3. **Secrets in text.** Every string is scanned by the value detectors (``_values``: JWTs,
   bearer/basic credentials, PEM private keys, URL userinfo, credential query parameters and
   ``name=value`` text, well-known API key formats), which mask only the secret and keep the
   rest. A string that holds a JSON object or array is parsed, redacted by these same rules and
   re-encoded (only when something in it was replaced).

Matching whole words keeps ordinary fields such as ``secretary``, ``classname`` or ``shipping``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from audit_middleware._exceptions import ConfigurationError
from audit_middleware.request._changes import MAX_CHANGES_DEPTH
from audit_middleware.request._redaction._keys import (
    DEFAULT_FRAGMENTS,
    DEFAULT_KEYS,
    normalise_key,
    words,
)
from audit_middleware.request._redaction._values import QUERY_WORDS, mask_text

__all__ = ["DEFAULT_PAIR_NAMES", "DEFAULT_PAIR_VALUES", "RedactionPolicy", "Redactor"]

Redactor: TypeAlias = Callable[[Any], Any]
"""Anything that takes ``changes`` and returns them redacted (a :class:`RedactionPolicy`)."""

DEFAULT_PAIR_NAMES: frozenset[str] = frozenset(
    {"name", "key", "field", "fieldname", "param", "parameter", "header", "headername",
     "attribute", "property", "variable", "var", "label", "setting", "option", "type"}
)  # fmt: skip
"""Members of an object that name another member's value (``{"name": ..., "value": ...}``)."""

DEFAULT_PAIR_VALUES: frozenset[str] = frozenset(
    {"value", "values", "val", "data", "content", "text", "default", "defaultvalue"}
)  # fmt: skip
"""Members replaced when the object's name-like member names a secret."""

_MAX_RUN = 3
_CACHE_SIZE = 4096
# Deeper than changes may nest (MAX_CHANGES_DEPTH): such a subtree cannot be written anyway, and
# is replaced rather than walked further.
_MAX_DEPTH = MAX_CHANGES_DEPTH
# JSON held in a string held in a string ...: parsed at most this many levels down.
_MAX_JSON_IN_STRING = 4
_SCALARS = frozenset({int, float, bool, type(None)})
# Key kinds, cached per key.
_PLAIN, _SENSITIVE, _NAME, _VALUE = 0, 1, 2, 3


def _normalised_set(names: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(names, str):
        raise ConfigurationError(
            f"{what} must be a collection of strings, not the string {names!r}"
        )
    result: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(f"{what} holds {name!r}, which is not a string")
        normalised = normalise_key(name)
        if not normalised:
            raise ConfigurationError(f"{what} holds {name!r}, which has no letters or digits")
        result.add(normalised)
    return frozenset(result)


@dataclass(frozen=True, slots=True, init=False)
class RedactionPolicy:
    """Which parts of ``changes`` are secrets, and what replaces them (see the module doc).

    Call it on ``changes`` to get a redacted copy (the input is never modified)::

        policy = RedactionPolicy()
        policy({"user": {"Pass-Word": "hunter2"}})  # {"user": {"Pass-Word": "[REDACTED]"}}

    Extend the defaults with :meth:`extend`, or build one from scratch with your own ``keys``.
    Any callable taking and returning ``changes`` can stand in for it in ``AuditConfig``.
    """

    keys: frozenset[str]
    """Sensitive words, normalised; matched against runs of up to three words of a key."""
    fragments: frozenset[str]
    """Substrings of the separator-free key that mark it sensitive."""
    replacement: Any
    """What a sensitive value becomes (a JSON value); ``"[REDACTED]"`` by default."""
    detect_values: bool
    """Scan strings for secrets (tokens, keys, credentials in URLs and text) and mask them."""
    pair_names: frozenset[str]
    """Name-like members of a ``{"name": ..., "value": ...}`` pair, normalised."""
    pair_values: frozenset[str]
    """Value-like members of such a pair, replaced when the name is sensitive."""
    _mask: str = field(repr=False, compare=False, hash=False)
    _fragment_pattern: re.Pattern[str] | None = field(repr=False, compare=False, hash=False)
    _cache: dict[str, int] = field(repr=False, compare=False, hash=False)

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_KEYS,
        *,
        fragments: Iterable[str] = DEFAULT_FRAGMENTS,
        replacement: Any = "[REDACTED]",
        detect_values: bool = True,
        pair_names: Iterable[str] = DEFAULT_PAIR_NAMES,
        pair_values: Iterable[str] = DEFAULT_PAIR_VALUES,
    ) -> None:
        if replacement is not None and not isinstance(replacement, str | int | float | bool):
            raise ConfigurationError(
                f"replacement={replacement!r} must be a string, number, bool or None"
            )
        if not isinstance(detect_values, bool):
            raise ConfigurationError(f"detect_values={detect_values!r} must be a bool")
        set_ = object.__setattr__
        set_(self, "keys", _normalised_set(keys, "keys"))
        set_(self, "fragments", _normalised_set(fragments, "fragments"))
        set_(self, "replacement", replacement)
        set_(self, "detect_values", detect_values)
        set_(self, "pair_names", _normalised_set(pair_names, "pair_names"))
        set_(self, "pair_values", _normalised_set(pair_values, "pair_values"))
        # Inside a string, a non-string replacement would change the string's meaning.
        set_(self, "_mask", replacement if isinstance(replacement, str) else "[REDACTED]")
        # One alternation of literals: cheaper than a substring test per fragment.
        set_(
            self,
            "_fragment_pattern",
            re.compile("|".join(map(re.escape, sorted(self.fragments))))
            if self.fragments
            else None,
        )
        set_(self, "_cache", {})

    def extend(self, keys: Iterable[str] = (), *, fragments: Iterable[str] = ()) -> RedactionPolicy:
        """A copy of this policy that also treats ``keys`` and ``fragments`` as sensitive."""
        return RedactionPolicy(
            self.keys | _normalised_set(keys, "keys"),
            fragments=self.fragments | _normalised_set(fragments, "fragments"),
            replacement=self.replacement,
            detect_values=self.detect_values,
            pair_names=self.pair_names,
            pair_values=self.pair_values,
        )

    def _sensitive_words(self, key_words: tuple[str, ...], extra: frozenset[str]) -> bool:
        keys = self.keys
        for start in range(len(key_words)):
            run = ""
            for word in key_words[start : start + _MAX_RUN]:
                run += word
                if run in keys or run in extra:
                    return True
        joined = "".join(key_words)
        if joined in keys:
            return True
        pattern = self._fragment_pattern
        return pattern is not None and pattern.search(joined) is not None

    def is_sensitive(self, key: str) -> bool:
        """Whether the value under ``key`` is replaced."""
        return self._kind(key) == _SENSITIVE

    def _kind(self, key: str) -> int:
        kind = self._cache.get(key)
        if kind is not None:
            return kind
        key_words = words(key)
        if self._sensitive_words(key_words, frozenset()):
            kind = _SENSITIVE
        else:
            joined = "".join(key_words)
            kind = (
                _NAME
                if joined in self.pair_names
                else _VALUE
                if joined in self.pair_values
                else _PLAIN
            )
        cache = self._cache
        if len(cache) >= _CACHE_SIZE:
            # Never let hostile keys grow it freely, nor keep it: an app's own keys come back.
            # (It maps str to int, which the garbage collector does not track: no churn there.)
            cache.clear()
        cache[key] = kind
        return kind

    def _sensitive_name(self, name: str, in_query: bool) -> bool:
        if self._kind(name) == _SENSITIVE:
            return True
        return in_query and self._sensitive_words(words(name), QUERY_WORDS)

    def __call__(self, changes: Any) -> Any:
        """``changes`` with every secret in it, at any depth, replaced or masked."""
        return self._redact(changes, 0, 0)

    def _redact(self, value: Any, depth: int, in_string: int) -> Any:
        kind = type(value)
        if kind is str:
            return self._redact_text(value, depth, in_string) if self.detect_values else value
        if kind in _SCALARS:
            return value
        if depth >= _MAX_DEPTH:
            return self.replacement
        if kind is dict or isinstance(value, dict):
            return self._redact_object(value, depth + 1, in_string)
        if kind is list or kind is tuple or isinstance(value, list | tuple):
            return [self._redact(item, depth + 1, in_string) for item in value]
        return value

    def _redact_object(self, value: dict[Any, Any], depth: int, in_string: int) -> Any:
        cache = self._cache
        result = {}
        names: list[Any] = []
        values: list[Any] = []
        for key, item in value.items():
            kind = cache.get(key)
            if kind is None:
                kind = self._kind(key) if type(key) is str else _PLAIN
            if kind == _SENSITIVE:
                result[key] = self.replacement
                continue
            if kind == _NAME:
                names.append(item)
            elif kind == _VALUE:
                values.append(key)
            item_kind = type(item)
            if item_kind is str:
                # The common case, inlined: a short word with no separator holds no secret
                # (the same test mask_text starts with).
                if (
                    (len(item) < 16 and " " not in item and ":" not in item and "=" not in item)
                    or not self.detect_values
                ):
                    result[key] = item
                else:
                    result[key] = self._redact_text(item, depth, in_string)
            elif item_kind in _SCALARS:
                result[key] = item
            else:
                result[key] = self._redact(item, depth, in_string)
        if names and values:
            for name in names:
                if type(name) is str and self._kind(name) == _SENSITIVE:
                    for key in values:
                        result[key] = self.replacement
                    break
        return result

    def _redact_text(self, text: str, depth: int, in_string: int) -> str:
        if len(text) < 4:
            return text
        head = text[0]
        if head.isspace():
            head = text.lstrip()[:1]
        if (head == "{" or head == "[") and in_string < _MAX_JSON_IN_STRING:
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                pass
            else:
                if type(parsed) is dict or type(parsed) is list:
                    redacted = self._redact(parsed, depth, in_string + 1)
                    if redacted == parsed:
                        return text
                    return json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))
        return mask_text(text, self._mask, self._sensitive_name)
