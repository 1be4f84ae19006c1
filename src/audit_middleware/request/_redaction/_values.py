"""Detectors for secrets inside string values, masked in place so the text keeps its shape.

One compiled regular expression, one left-to-right pass per string; what it finds:

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
_PATTERN = re.compile(
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
    # name=value / name: value, optionally quoted; the value quoted or up to a delimiter.
    r"|(?P<kvlead>(?:^|(?<=[?&;\s,{(\[]))(?P<q>[\"']?))(?P<name>[\w.\-]{1,64})(?P=q)"
    r"(?P<sep>\s*[:=]\s*)"
    r"(?:\"(?P<dq>(?:[^\"\\]|\\.)*)\"|'(?P<sq>[^']*)'"
    # An unquoted value runs to the next & ; or line end: a password may hold spaces, and
    # masking too much is the safe side (a query value stops at a space or #, in the code).
    rf"|(?P<vscheme>(?i:{_SCHEMES})\s+)?(?P<value>[^\s\"'&;][^&;\r\n]*))"
)

_QUERY_VALUE_END = re.compile(r"[\s#]")

SensitiveName = Callable[[str, bool], bool]
"""``(name, in_query) -> bool``: whether the value after ``name=`` or ``name:`` is a secret."""


def _looks_like_credential(token: str) -> bool:
    # "Basic information" is prose; a credential has a digit or token punctuation, or length.
    return len(token) >= 20 or any(ch.isdigit() or ch in "+/=._~-" for ch in token)


def mask_text(text: str, mask: str, sensitive_name: SensitiveName) -> str:
    """``text`` with each secret the detectors find replaced by ``mask``."""
    match = _PATTERN.search(text)
    if match is None:
        return text
    out: list[str] = []
    position = 0
    while match is not None:
        start, end = match.span()
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
                match = _PATTERN.search(text, position)
                continue
            replaced = group("scheme") + mask
        elif group("aws") is not None:
            replaced = group("aws") + mask
        elif group("kprefix") is not None:
            replaced = group("kprefix") + mask
        else:
            name_end = match.end("sep")
            in_query = start > 0 and text[start - 1] in "?&;"
            if not sensitive_name(group("name"), in_query):
                # Not a secret's name: go on right after the separator, so a token in the
                # value ("note: eyJ...") is still found.
                out.append(text[position:name_end])
                position = name_end
                match = _PATTERN.search(text, position)
                continue
            head = text[start:name_end]
            if group("dq") is not None:
                replaced = f'{head}"{mask}"'
            elif group("sq") is not None:
                replaced = f"{head}'{mask}'"
            else:
                replaced = head + (group("vscheme") or "") + mask
                if in_query:
                    value = group("value")
                    cut = _QUERY_VALUE_END.search(value)
                    if cut is not None:
                        end = match.start("value") + cut.start()
        out.append(text[position:start])
        out.append(replaced)
        position = end
        match = _PATTERN.search(text, position)
    out.append(text[position:])
    return "".join(out)
