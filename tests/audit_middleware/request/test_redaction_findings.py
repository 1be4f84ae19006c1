"""Issue 11's redaction findings, one case each: key words, look-alikes, secrets in values.

Each case failed on the keys-only policy (the secret came back verbatim) and must not now.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from audit_middleware.request._redaction import DEFAULT_KEYS, RedactionPolicy, normalise_key

SECRET = "Zq8-s3cr3t-VALUE-77f"
R = "[REDACTED]"
POLICY = RedactionPolicy()

# Keys the issue found kept verbatim (and the other languages' and look-alikes' spellings).
FOUND_KEYS = [
    "session", "sid", "auth", "auth_code", "pass", "pw", "ssh_key", "security_answer", "dsn",
    "connection_string", "database_url", "Passwort", "contraseña", "mot_de_passe",
    "p\u0430ssword",  # with a Cyrillic a (U+0430)
    "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44",  # "password" in fullwidth letters
]  # fmt: skip
MORE_KEYS = [
    "\u03c1\u03b1ssword",  # Greek rho and alpha
    "PASS\u200bWORD",  # a zero-width space inside
    "Pa\u00dfwort",  # ß
    "CONTRASE\u00d1A",
    "sessionToken", "X-Session", "JSESSIONID", "connectionString", "DATABASE_URL", "sshKey",
    "securityAnswer", "\u043f\u0430\u0440\u043e\u043b\u044c",  # пароль
    "Kennwort", "senha", "wachtwoord", "has\u0142o", "\u5bc6\u7801",
]  # fmt: skip


@pytest.mark.parametrize("key", FOUND_KEYS + MORE_KEYS)
def test_found_key_is_redacted_in_every_shape(key: str) -> None:
    shapes: list[tuple[Any, Any]] = [
        ({key: SECRET}, {key: R}),
        ({"user": {key: SECRET}}, {"user": {key: R}}),
        ([{key: SECRET}], [{key: R}]),
        ({key: {"nested": SECRET}}, {key: R}),
        ({key: [SECRET]}, {key: R}),
        ({"a": [{"b": {key: 12345}}]}, {"a": [{"b": {key: R}}]}),
    ]
    for changes, expected in shapes:
        assert POLICY(changes) == expected


def test_every_issue_key_is_a_default_word_or_caught() -> None:
    for key in FOUND_KEYS:
        assert POLICY.is_sensitive(key), key
    assert normalise_key("\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44") == "password"
    assert normalise_key("p\u0430ssword") == "password"
    assert normalise_key("contraseña") == "contrasena"
    assert normalise_key("mot_de_passe") == "motdepasse" and "motdepasse" in DEFAULT_KEYS


@pytest.mark.parametrize(
    "key",
    ["secretary", "author", "authority", "passenger", "shipping", "classname", "compass",
     "sidebar", "pinned", "description", "id", "name"],
)  # fmt: skip
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not POLICY.is_sensitive(key), key
    # Whole words mark a key, by design on the safe side: "session_count" is redacted.
    assert POLICY.is_sensitive(f"session_{key}")


JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFubiJ9."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA" + SECRET + "\n7s9f\n"
    "-----END RSA PRIVATE KEY-----"
)

# (finding, text under an innocent key, what it must become)
VALUE_CASES: list[tuple[str, str, str]] = [
    ("JWT in a note", f"token was {JWT} at login", f"token was {R} at login"),
    ("bare JWT", JWT, R),
    ("Bearer", f"Bearer {SECRET}", f"Bearer {R}"),
    ("bearer lower case", f"bearer {SECRET}", f"bearer {R}"),
    ("Basic", "Basic dXNlcjpodW50ZXIy", f"Basic {R}"),
    ("Authorization header text", f"Authorization: Bearer {SECRET}", f"Authorization: Bearer {R}"),
    ("PEM private key", PEM, f"-----BEGIN RSA PRIVATE KEY-----{R}-----END RSA PRIVATE KEY-----"),
    ("PEM cut short", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn" + SECRET,
     f"-----BEGIN OPENSSH PRIVATE KEY-----{R}"),
    ("URL userinfo", f"https://ann:{SECRET}@db.example.org/x", f"https://ann:{R}@db.example.org/x"),
    ("DSN", f"postgresql://app:{SECRET}@db:5432/app", f"postgresql://app:{R}@db:5432/app"),
    ("userinfo with no user", f"redis://:{SECRET}@cache:6379/0", f"redis://:{R}@cache:6379/0"),
    ("reset link", f"/reset?token={SECRET}", f"/reset?token={R}"),
    ("query parameters", f"https://x.example/cb?state=1&access_token={SECRET}&b=2",
     f"https://x.example/cb?state=1&access_token={R}&b=2"),
    ("password parameter", f"/login?user=ann&password={SECRET}", f"/login?user=ann&password={R}"),
    ("api_key parameter", f"/v1?api_key={SECRET}", f"/v1?api_key={R}"),
    ("pre-signed URL", f"https://b.s3.example/o?X-Amz-Signature={SECRET}&X-Amz-Expires=60",
     f"https://b.s3.example/o?X-Amz-Signature={R}&X-Amz-Expires=60"),
    ("sig parameter", f"https://a.example/f?sv=1&sig={SECRET}", f"https://a.example/f?sv=1&sig={R}"),
    ("form body", f"password={SECRET}&user=ann", f"password={R}&user=ann"),
    ("prose", f"new password: {SECRET}", f"new password: {R}"),
    ("connection string", f"Server=db;User Id=app;Password={SECRET};",
     f"Server=db;User Id=app;Password={R};"),
    ("JSON-like text", f'sent {{"password": "{SECRET}"}} twice',
     f'sent {{"password": "{R}"}} twice'),
    ("AWS access key id", "key AKIAIOSFODNN7EXAMPLE here", f"key AKIA{R} here"),
    ("GitHub token", "ghp_" + "A1b2" * 9, f"ghp_{R}"),
    ("GitHub OAuth token", "gho_" + "Z9y8" * 9, f"gho_{R}"),
    ("GitHub fine-grained", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv",
     f"github_pat_{R}"),
    ("Slack", "xoxb-123456789012-123456789012-abcdefghijABCDEFGHIJ", f"xoxb-{R}"),
    ("Stripe live", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", f"sk_live_{R}"),
    ("Stripe restricted", "rk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", f"rk_live_{R}"),
    ("Google API key", "AIzaSyA-1234567890abcdefghijklmnopqrst", f"AIza{R}"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [pytest.param(*c[1:], id=c[0]) for c in VALUE_CASES])
def test_secret_in_a_value_is_masked_keeping_the_shape(text: str, expected: str) -> None:
    assert POLICY({"note": text}) == {"note": expected}
    assert POLICY([text]) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "Patient asked to move the appointment to the afternoon.",
        "Basic information about the clinic",
        "Time: 10:30, room: B-12",
        "2026-12-01T09:30:00.5+01:00",
        "https://clinic.example/patients/12?tab=notes",
        "ftp://files.example:21/pub",
        "a token of appreciation",
        "mailto:ann@example.org",
        "x" * 5000,
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert POLICY({"note": text}) == {"note": text}


def test_json_string_is_redacted_inside_and_reencoded() -> None:
    inner = {"user": "ann", "password": SECRET, "list": [{"token": SECRET}], "ok": 1}
    redacted = POLICY({"payload": json.dumps(inner)})
    assert SECRET not in json.dumps(redacted)
    assert json.loads(redacted["payload"]) == {
        "user": "ann",
        "password": R,
        "list": [{"token": R}],
        "ok": 1,
    }
    # JSON in a string in a string: still found.
    twice = json.dumps({"body": json.dumps({"secret": SECRET})})
    assert SECRET not in json.dumps(POLICY({"raw": twice}))
    # Nothing to redact: the string is kept byte for byte (no re-encoding).
    plain = '{ "a" : 1 }'
    assert POLICY({"raw": plain}) == {"raw": plain}


@pytest.mark.parametrize(
    "pair",
    [
        {"name": "password", "value": SECRET},
        {"Name": "X-Api-Key", "Value": SECRET},
        {"key": "client_secret", "val": SECRET},
        {"field": "ssn", "value": SECRET},
        {"header": "Authorization", "value": SECRET},
        {"type": "password", "value": SECRET},
        {"param": "p\u0430ssword", "data": SECRET},
    ],
)
def test_name_value_pairs(pair: dict[str, str]) -> None:
    changes = {"fields": [{"name": "colour", "value": "red"}, pair]}
    redacted = POLICY(changes)
    assert SECRET not in json.dumps(redacted)
    assert redacted["fields"][0] == {"name": "colour", "value": "red"}


def test_detect_values_can_be_turned_off_and_replacement_used_in_text() -> None:
    assert RedactionPolicy(detect_values=False)({"n": f"Bearer {SECRET}"}) == {
        "n": f"Bearer {SECRET}"
    }
    assert RedactionPolicy(replacement="***")({"n": f"Bearer {SECRET}", "pw": 1}) == {
        "n": "Bearer ***",
        "pw": "***",
    }
    # A non-string replacement replaces whole values; inside text the mask stays a string.
    assert RedactionPolicy(replacement=None)({"n": f"Bearer {SECRET}", "pw": 1}) == {
        "n": f"Bearer {R}",
        "pw": None,
    }


def test_too_deep_subtrees_are_replaced_not_walked() -> None:
    deep: Any = SECRET
    for _ in range(200):
        deep = {"a": deep}
    assert SECRET not in json.dumps(POLICY(deep))


def test_hostile_keys_do_not_grow_the_cache() -> None:
    policy = RedactionPolicy()
    policy({f"k{i}": i for i in range(10_000)})
    assert len(policy._cache) <= 4096


def test_security_doc_lists_exactly_the_default_words() -> None:
    import re
    from pathlib import Path

    from audit_middleware.request._redaction import DEFAULT_FRAGMENTS

    doc = (Path(__file__).parents[3] / "docs" / "security.md").read_text(encoding="utf-8")
    for marker, expected in (("keys", DEFAULT_KEYS), ("fragments", DEFAULT_FRAGMENTS)):
        block = doc.split(f"<!-- redaction-{marker} -->", 1)[1].split("<!--", 1)[0]
        assert re.findall(r"`([^`]+)`", block) == sorted(expected)
