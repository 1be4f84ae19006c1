"""The keys-only redaction policy as it was before issue 11: a frozen copy, for bench_loop only.

The benchmark times it side by side with today's ``RedactionPolicy``. What it said of itself:

Redaction of secrets in the ``changes`` a handler reports, before anything is written.

A key is *sensitive* when, after splitting it into words, either

- some run of one to three adjacent words, joined, is one of the policy's ``keys``
  (``clientSecret`` -> ``client``, ``secret``; ``API_KEY`` -> ``apikey``;
  ``x-auth-token`` -> ``token``; ``Pass-Word`` -> ``password``), or
- the whole key with its separators removed contains one of the policy's ``fragments``
  (``newpassword``, ``db_password_hash``, ``XAccessTokenV2``).

Words are split at ``_``, ``-``, ``.``, spaces and any other non-alphanumeric character, at
camelCase humps and between letters and digits, then lower-cased. Matching whole words keeps
ordinary fields such as ``secretary``, ``classname`` or ``shipping`` intact, while the
substring ``fragments`` (long, unambiguous words only) catch keys written without any
separator. The value of a sensitive key is replaced whole, whatever it holds (a string, a number,
an object, a list), at any depth: objects inside lists inside objects are walked too.

Only keys are inspected, never values: a handler that puts a secret in a free-text value, or in
a ``{"name": "password", "value": ...}`` pair, must redact it itself or pass a custom policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeAlias

__all__ = [
    "DEFAULT_FRAGMENTS",
    "DEFAULT_KEYS",
    "Redactor",
    "RedactionPolicy",
]

Redactor: TypeAlias = Callable[[Any], Any]
"""Anything that takes ``changes`` and returns them redacted (a :class:`RedactionPolicy`)."""

DEFAULT_KEYS: frozenset[str] = frozenset(
    {
        # passwords
        "password", "passwords", "passwd", "pwd", "passphrase", "passcode",
        # secrets and keys
        "secret", "secrets", "apikey", "apikeys", "apisecret", "clientsecret", "privatekey",
        "secretkey", "signingkey", "encryptionkey", "masterkey", "credential", "credentials",
        # tokens and sessions
        "token", "tokens", "jwt", "bearer", "authorization", "proxyauthorization", "cookie",
        "cookies", "setcookie", "sessionid", "sessionkey", "csrf", "xsrf", "otp", "totp",
        "mfacode", "recoverycode", "recoverycodes",
        # identity numbers and payment cards
        "ssn", "socialsecurity", "socialsecuritynumber", "creditcard", "creditcards",
        "cardnumber", "ccnumber", "pan", "cvv", "cvv2", "cvc", "pin", "iban", "accountnumber",
        "routingnumber",
    }
)  # fmt: skip
"""Words (and runs of up to three words, joined) whose values are always redacted."""

DEFAULT_FRAGMENTS: frozenset[str] = frozenset(
    {
        "password", "passwd", "passphrase", "secretkey", "clientsecret", "apikey", "accesstoken",
        "refreshtoken", "authtoken", "idtoken", "sessiontoken", "bearertoken", "privatekey",
        "authorization", "creditcard", "cardnumber", "socialsecurity",
    }
)  # fmt: skip
"""Substrings of a separator-free key that mark it sensitive (long, unambiguous words only)."""

_SEPARATORS = re.compile(r"[^0-9A-Za-z]+")
# camelCase humps ("apiKey"), acronym ends ("HTTPAuthorization"), letter/digit boundaries.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_MAX_RUN = 3
_SCALARS = frozenset({str, int, float, bool, type(None)})


@lru_cache(maxsize=4096)
def _words(key: str) -> tuple[str, ...]:
    words: list[str] = []
    for part in _SEPARATORS.split(key):
        words.extend(word.lower() for word in _WORD.findall(part))
    return tuple(words)


def normalise_key(key: str) -> str:
    """``key`` lower-cased with every separator removed: ``"X-Auth_Token"`` -> ``"xauthtoken"``."""
    return "".join(_words(key))


def _normalised_set(names: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(names, str):
        raise TypeError(f"{what} must be a collection of strings, not the string {names!r}")
    result: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} holds {name!r}, which is not a string")
        normalised = normalise_key(name)
        if not normalised:
            raise ValueError(f"{what} holds {name!r}, which has no letters or digits")
        result.add(normalised)
    return frozenset(result)


@dataclass(frozen=True, slots=True, init=False)
class RedactionPolicy:
    """Which keys of ``changes`` are secrets, and what replaces their values.

    Call it on ``changes`` to get a redacted copy (the input is never modified)::

        policy = RedactionPolicy()
        policy({"user": {"Pass-Word": "hunter2"}})  # {"user": {"Pass-Word": "[REDACTED]"}}

    Extend the defaults with :meth:`extend`, or build one from scratch with your own ``keys``.
    Any callable taking and returning ``changes`` can stand in for it in ``AuditConfig``.
    """

    keys: frozenset[str]
    """Sensitive words, normalised (see the module doc); matched against runs of words."""
    fragments: frozenset[str]
    """Substrings of the separator-free key that mark it sensitive."""
    replacement: Any
    """What a sensitive value becomes (a JSON value); ``"[REDACTED]"`` by default."""
    _cache: dict[str, bool] = field(repr=False, compare=False, hash=False)

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_KEYS,
        *,
        fragments: Iterable[str] = DEFAULT_FRAGMENTS,
        replacement: Any = "[REDACTED]",
    ) -> None:
        if replacement is not None and not isinstance(replacement, str | int | float | bool):
            raise TypeError(f"replacement={replacement!r} must be a string, number, bool or None")
        object.__setattr__(self, "keys", _normalised_set(keys, "keys"))
        object.__setattr__(self, "fragments", _normalised_set(fragments, "fragments"))
        object.__setattr__(self, "replacement", replacement)
        object.__setattr__(self, "_cache", {})

    def extend(self, keys: Iterable[str] = (), *, fragments: Iterable[str] = ()) -> RedactionPolicy:
        """A copy of this policy that also treats ``keys`` and ``fragments`` as sensitive."""
        return RedactionPolicy(
            self.keys | _normalised_set(keys, "keys"),
            fragments=self.fragments | _normalised_set(fragments, "fragments"),
            replacement=self.replacement,
        )

    def is_sensitive(self, key: str) -> bool:
        """Whether the value under ``key`` is replaced."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        words = _words(key)
        keys = self.keys
        sensitive = False
        for start in range(len(words)):
            run = ""
            for word in words[start : start + _MAX_RUN]:
                run += word
                if run in keys:
                    sensitive = True
                    break
            if sensitive:
                break
        if not sensitive:
            joined = "".join(words)
            sensitive = joined in keys or any(part in joined for part in self.fragments)
        if len(self._cache) < 4096:  # keys come from code, but never let the cache grow freely
            self._cache[key] = sensitive
        return sensitive

    def __call__(self, changes: Any) -> Any:
        """``changes`` with the value of every sensitive key, at any depth, replaced."""
        return self._redact(changes)

    def _redact(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict or isinstance(value, dict):
            cache = self._cache
            result = {}
            for key, item in value.items():
                sensitive = cache.get(key)
                if sensitive is None:
                    sensitive = isinstance(key, str) and self.is_sensitive(key)
                if sensitive:
                    result[key] = self.replacement
                elif type(item) in _SCALARS:
                    result[key] = item
                else:
                    result[key] = self._redact(item)
            return result
        if kind is list or kind is tuple or isinstance(value, list | tuple):
            return [item if type(item) in _SCALARS else self._redact(item) for item in value]
        return value
