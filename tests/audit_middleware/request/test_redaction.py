"""Redaction of secrets in ``changes``: matched by key words, at any depth, values replaced."""

from __future__ import annotations

import json
from typing import Any

import pytest

from audit_middleware.request._redaction import RedactionPolicy, normalise_key

SECRET = "s3cr3t-VALUE-9f2c"
R = "[REDACTED]"

# 24 shapes of ``changes`` holding SECRET under a sensitive key, and what each must become.
SHAPES: list[tuple[str, Any, Any]] = [
    ("flat password", {"password": SECRET, "name": "Ann"}, {"password": R, "name": "Ann"}),
    ("upper case", {"PASSWORD": SECRET}, {"PASSWORD": R}),
    ("separator inside the word", {"Pass-Word": SECRET}, {"Pass-Word": R}),
    ("snake api key", {"API_KEY": SECRET}, {"API_KEY": R}),
    ("camel api key", {"apiKey": SECRET}, {"apiKey": R}),
    ("dotted", {"client.secret": SECRET}, {"client.secret": R}),
    ("spaces", {"Access Token": SECRET}, {"Access Token": R}),
    ("header style", {"x-auth-token": SECRET}, {"x-auth-token": R}),
    ("authorization header", {"Authorization": f"Bearer {SECRET}"}, {"Authorization": R}),
    ("cookie", {"Cookie": f"sid={SECRET}"}, {"Cookie": R}),
    ("ssn nested", {"patient": {"ssn": SECRET, "age": 40}}, {"patient": {"ssn": R, "age": 40}}),
    ("prefixed ssn", {"patient_SSN": SECRET}, {"patient_SSN": R}),
    ("credit card", {"creditCardNumber": SECRET}, {"creditCardNumber": R}),
    ("no separators at all", {"newpassword": SECRET}, {"newpassword": R}),
    ("refresh token camel", {"refreshToken": SECRET}, {"refreshToken": R}),
    (
        "dict value replaced whole",
        {"password": {"old": SECRET, "new": SECRET}},
        {"password": R},
    ),
    ("list value replaced whole", {"tokens": [SECRET, SECRET]}, {"tokens": R}),
    (
        "dicts in lists in dicts",
        {"users": [{"name": "a", "secret": SECRET}, {"name": "b", "pwd": SECRET}]},
        {"users": [{"name": "a", "secret": R}, {"name": "b", "pwd": R}]},
    ),
    (
        "deep nesting",
        {"a": {"b": [{"c": [{"d": {"client_secret": SECRET}}]}]}},
        {"a": {"b": [{"c": [{"d": {"client_secret": R}}]}]}},
    ),
    ("top-level list", [{"token": SECRET}, {"id": 3}], [{"token": R}, {"id": 3}]),
    ("tuple becomes list", ({"passwd": SECRET},), [{"passwd": R}]),
    ("number value", {"pin": 1234, "cvv": 999}, {"pin": R, "cvv": R}),
    (
        "before/after diff",
        {"before": {"password_hash": SECRET}, "after": {"password_hash": SECRET + "2"}},
        {"before": {"password_hash": R}, "after": {"password_hash": R}},
    ),
    ("private key acronym", {"RSAPrivateKey": SECRET}, {"RSAPrivateKey": R}),
    ("set-cookie list", {"headers": {"set-cookie": [SECRET]}}, {"headers": {"set-cookie": R}}),
]


@pytest.mark.parametrize(("changes", "expected"), [pytest.param(*s[1:], id=s[0]) for s in SHAPES])
def test_redaction_policy_replaces_secrets(changes: Any, expected: Any) -> None:
    redacted = RedactionPolicy()(changes)
    assert redacted == expected
    assert SECRET not in json.dumps(redacted)


def test_redaction_shapes_count() -> None:
    assert len(SHAPES) >= 20


@pytest.mark.parametrize(
    "key",
    [
        "secretary",
        "classname",
        "shipping",
        "name",
        "tokenizer",
        "passport",
        "spinal_level",
        "compass",
        "description",
        "pinned",
        "pancreas",
    ],
)
def test_redaction_policy_keeps_ordinary_keys(key: str) -> None:
    assert RedactionPolicy()({key: "keep"}) == {key: "keep"}


def test_redaction_policy_does_not_modify_its_input() -> None:
    changes = {"user": {"password": SECRET}, "items": [{"token": SECRET}]}
    snapshot = json.dumps(changes)
    RedactionPolicy()(changes)
    assert json.dumps(changes) == snapshot


def test_redaction_policy_scalars_pass_through() -> None:
    policy = RedactionPolicy()
    for value in ("text", 1, 2.5, True, None, [], {}):
        assert policy(value) == value


def test_redaction_policy_custom_keys_and_replacement() -> None:
    policy = RedactionPolicy(["Date-Of-Birth"], fragments=(), replacement="***")
    assert policy.keys == frozenset({"dateofbirth"})
    assert policy({"date_of_birth": "1980-01-01", "password": "x"}) == {
        "date_of_birth": "***",
        "password": "x",
    }


def test_redaction_policy_extend_keeps_defaults() -> None:
    policy = RedactionPolicy().extend(["mrn"], fragments=["diagnosis"])
    assert policy({"patient_mrn": 1, "primaryDiagnosisCode": "x", "token": "t"}) == {
        "patient_mrn": R,
        "primaryDiagnosisCode": R,
        "token": R,
    }


def test_redaction_policy_null_replacement() -> None:
    assert RedactionPolicy(replacement=None)({"secret": 1}) == {"secret": None}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"keys": "password"}, TypeError),
        ({"keys": [1]}, TypeError),
        ({"keys": ["--"]}, ValueError),
        ({"replacement": object()}, TypeError),
        ({"fragments": "token"}, TypeError),
    ],
)
def test_redaction_policy_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        RedactionPolicy(**kwargs)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("X-Auth_Token", "xauthtoken"),
        ("apiKey", "apikey"),
        ("Pass Word", "password"),
        ("HTTPAuthorization", "httpauthorization"),
        ("oauth2Token", "oauth2token"),
    ],
)
def test_normalise_key(key: str, expected: str) -> None:
    assert normalise_key(key) == expected


def test_redaction_policy_is_a_comparable_value() -> None:
    assert RedactionPolicy() == RedactionPolicy()
    assert RedactionPolicy(replacement="x") != RedactionPolicy()
    assert hash(RedactionPolicy()) == hash(RedactionPolicy())
