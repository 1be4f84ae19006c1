"""Detectors for secrets inside string values, masked in place so the text keeps its shape.

Two left-to-right passes per string, each only when cheap checks say it may find something
(see ``mask_text``); what they find:

========================  ==========================================  =========================
what                      example                                     becomes
========================  ==========================================  =========================
PEM private key block     ``-----BEGIN RSA PRIVATE KEY-----...``       ``-----BEGIN RSA PRIVATE
                                                                      KEY-----[REDACTED]-----END
                                                                      RSA PRIVATE KEY-----``
JSON Web Token            ``eyJhbGciOi....eyJzdWIiOi....sig``          ``[REDACTED]``
URL userinfo              ``https://ann:pw@db.example/x``              ``https://ann:[REDACTED]@
                                                                      db.example/x``
HTTP credentials          ``Bearer abc.def-123``, ``Basic dXNl...``    ``Bearer [REDACTED]``
API key formats           ``AKIA...``, ``ghp_...``, ``github_pat_...``,  ``ghp_[REDACTED]``
                          ``xoxb-...``, ``sk_live_...``, ``AIza...``
name=value, name: value   ``/reset?token=abc``, ``password: hunter2``  ``/reset?token=[REDACTED]``
========================  ==========================================  =========================

A ``name=value`` or ``name: value`` (also quoted, as in JSON text, and ``;`` / ``&`` separated,
as in connection strings and query strings) is masked when ``name`` is a sensitive key by the
policy; in a query string (after ``?``, ``&`` or ``;``) the words ``sig``, ``signature``,
``key`` and ``code`` count as sensitive too (pre-signed URLs, ``?key=`` API keys, OAuth codes).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["QUERY_WORDS", "mask_text"]

QUERY_WORDS: frozenset[str] = frozenset({"sig", "signature", "key", "code"})
"""Words that make a query-string parameter sensitive, on top of the policy's keys."""

_SCHEMES = r"bearer|basic|token|digest|negotiate|apikey|api-key"
_TOKENS = re.compile(
    # PEM private key: the body up to the matching END line (or the end of the text).
    r"(?P<pem>-----BEGIN (?P<pemkind>[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?)-----)"
    r"(?P<pembody>(?s:.*?)(?P<pemend>-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)|(?s:.*))"
    # JWT (JWS: three parts; JWE: five): a base64url JSON header always starts "eyJ".
    r"|(?P<jwt>(?<![\w-])eyJ[\w-]{8,}\.[\w-]{8,}(?:\.[\w-]*){1,3})"
    # scheme://user:password@ (the user may be empty, as in redis://:pw@host).
    r"|(?P<url>[A-Za-z][A-Za-z0-9+.\-]{1,30}://[^:/?#@\s]*:)(?P<urlpw>[^/?#\s]*)@"
    # HTTP authorization schemes followed by a credential.
    rf"|(?P<scheme>(?<![\w-])(?i:{_SCHEMES})\s+)(?P<cred>[\w~+/=.\-]{{8,}})"
    # Well-known API key formats (AWS, GitHub, GitLab, Slack, Stripe, Google, npm, PyPI,
    # OpenAI/Anthropic, SendGrid): the prefix stays, it says what kind of key it was.
    r"|(?<![\w-])(?P<aws>(?:AKIA|ASIA|ABIA|ACCA))[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|(?<![\w-])(?P<kprefix>gh[pousr]_|github_pat_|glpat-|xox[abposr]-|(?:sk|rk)_(?:live|test)_"
    r"|whsec_|AIza|npm_|pypi-|sk-(?:proj-|ant-)?|SG\.)[\w\-.]{16,}"
)
# Each token detector needs one of these: a word of 16 characters or more, "://", a PEM header
# or an authorization scheme's name. str's own methods check them far faster than a regular
# expression scans text, so prose and short values skip _TOKENS altogether.
_LONG_WORD = 16
# RFC 3339 / ISO 8601 date and time text (what record() makes of a datetime): nothing to find.
_TIMESTAMP = re.compile(
    r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?)?\Z"
)

# name=value / name: value: found from each separator, the name read backwards (on the reversed
# text), so ordinary prose costs a str search, not a regular-expression scan of every word.
_SEPARATOR = re.compile(r"[:=]")
_NAME_REVERSED = re.compile(r"\s*(?P<q>[\"']?)(?P<name>[\w.\-]{1,64})(?P=q)")
_NAME_DELIMITERS = frozenset("?&;,{([ \t\r\n")
_VALUE = re.compile(
    r"\s*(?:\"(?P<dq>(?:[^\"\\]|\\.)*)\"|'(?P<sq>[^']*)'"
    # An unquoted value runs to the next & ; or line end: a password may hold spaces, and
    # masking too much is the safe side (a query value stops at a space or #).
    rf"|(?P<vscheme>(?i:{_SCHEMES})\s+)?(?P<value>[^\s\"'&;][^&;\r\n]*))"
)
_QUERY_VALUE_END = re.compile(r"[\s#]")

SensitiveName = Callable[[str, bool], bool]
"""``(name, in_query) -> bool``: whether the value after ``name=`` or ``name:`` is a secret."""


def _looks_like_credential(token: str) -> bool:
    # "Basic information" is prose; a credential has a digit or token punctuation, or length.
    return len(token) >= 20 or any(ch.isdigit() or ch in "+/=._~-" for ch in token)


def _mask_tokens(text: str, mask: str) -> str:
    match = _TOKENS.search(text)
    if match is None:
        return text
    out: list[str] = []
    position = 0
    while match is not None:
        group = match.group
        if group("pem") is not None:
            ending = group("pemend")
            replaced = group("pem") + mask + (ending if ending is not None else "")
        elif group("jwt") is not None:
            replaced = mask
        elif group("url") is not None:
            replaced = group("url") + mask + "@"
        elif group("scheme") is not None:
            if not _looks_like_credential(group("cred")):
                out.append(text[position : match.end("scheme")])
                position = match.end("scheme")
                match = _TOKENS.search(text, position)
                continue
            replaced = group("scheme") + mask
        elif group("aws") is not None:
            replaced = group("aws") + mask
        else:
            replaced = group("kprefix") + mask
        out.append(text[position : match.start()])
        out.append(replaced)
        position = match.end()
        match = _TOKENS.search(text, position)
    out.append(text[position:])
    return "".join(out)


def _mask_pairs(text: str, mask: str, sensitive_name: SensitiveName) -> str:
    reversed_text = text[::-1]
    length = len(text)
    out: list[str] = []
    position = 0  # text before this is in out
    separator = _SEPARATOR.search(text)
    while separator is not None:
        at = separator.start()
        named = _NAME_REVERSED.match(reversed_text, length - at)
        if named is not None:
            start = length - named.end()
            before = text[start - 1] if start > 0 else " "
            name = named.group("name")[::-1]
            in_query = before in "?&"
            if start >= position and before in _NAME_DELIMITERS and sensitive_name(name, in_query):
                value = _VALUE.match(text, at + 1)
                if value is not None:
                    if value.group("dq") is not None:
                        head_end, replaced, after = value.start("dq") - 1, f'"{mask}"', value.end()
                    elif value.group("sq") is not None:
                        head_end, replaced, after = value.start("sq") - 1, f"'{mask}'", value.end()
                    else:
                        scheme = value.group("vscheme") or ""
                        head_end = value.start("value") - len(scheme)
                        replaced, after = scheme + mask, value.end()
                        if in_query:
                            cut = _QUERY_VALUE_END.search(text, value.start("value"), after)
                            if cut is not None:
                                after = cut.start()
                    out.append(text[position:head_end])
                    out.append(replaced)
                    position = after
                    separator = _SEPARATOR.search(text, position)
                    continue
        separator = _SEPARATOR.search(text, at + 1)
    if not out:
        return text
    out.append(text[position:])
    return "".join(out)


def _may_hold_token(text: str) -> bool:
    if "://" in text or "-----BEGIN" in text:
        return True
    parts = text.split()
    if max(map(len, parts), default=0) >= _LONG_WORD:
        return True
    if len(parts) < 2:
        return False
    lowered = text.lower()
    return (  # _SCHEMES, unrolled: a str search each, far cheaper than a regex scan
        "bearer" in lowered
        or "basic" in lowered
        or "token" in lowered
        or "digest" in lowered
        or "negotiate" in lowered
        or "apikey" in lowered
        or "api-key" in lowered
    )


def mask_text(text: str, mask: str, sensitive_name: SensitiveName) -> str:
    """``text`` with each secret the detectors find replaced by ``mask``."""
    pairs = ":" in text or "=" in text
    if not pairs and len(text) < _LONG_WORD and " " not in text:
        return text  # the common case: a short value, no separator, no scheme and credential
    if pairs and text[:1].isdigit() and _TIMESTAMP.match(text) is not None:
        return text
    if _may_hold_token(text):
        text = _mask_tokens(text, mask)
        pairs = ":" in text or "=" in text
    if pairs:
        text = _mask_pairs(text, mask, sensitive_name)
    return text
