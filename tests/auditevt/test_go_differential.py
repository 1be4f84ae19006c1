"""Go's encoding/json and ``auditevt.Event`` read the same bytes the same way.

A generated corpus of Event JSON (case variants and Unicode folds of every key, duplicates,
nulls, non-ASCII digits, ``-0``, deep nesting, every number form, open action strings) goes
through the Go program of tests/gocheck and through Python. For each input both refuse, or
both accept and mean the same thing: Go reading Python's output gets what Go got from the
input, and Python reads Go's output back byte for byte. Python may refuse what Go accepts only
where the contract says so (docs/contract.md): a required field missing or null, ``changes``
deeper than ``MAX_CHANGES_DEPTH``, RFC 3339 forms Go's parser tolerates but never writes, text
that is not valid Unicode.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from auditevt import MAX_CHANGES_DEPTH, Event

if TYPE_CHECKING:
    from conftest import GoCheck

HERE = Path(__file__).parent
GOLDEN = [
    json.loads(line)["json"]
    for line in (HERE / "data" / "go-golden.jsonl").read_text().splitlines()
]
FIELDS = [
    "action",
    "entity_type",
    "entity_id",
    "user_id",
    "organization_id",
    "ip_address",
    "user_agent",
    "request_path",
    "status_code",
    "timestamp",
    "changes",
    "action_context",
    "break_glass_id",
    "impersonation_id",
]
# The only runes outside ASCII that strings.EqualFold matches with an ASCII letter.
KELVIN, LONG_S = "\u212a", "\u017f"
BASE_MEMBERS = {
    "action": '"UPDATE"',
    "entity_type": '"patient"',
    "entity_id": "1001",
    "user_id": "42",
    "organization_id": "7",
    "ip_address": '"203.0.113.9"',
    "user_agent": '"Mozilla/5.0"',
    "request_path": '"/api/v1/patients/1001"',
    "status_code": "200",
    "timestamp": '"2026-11-27T10:11:12.5+05:30"',
}
BASE = ",".join(f'"{name}":{raw}' for name, raw in BASE_MEMBERS.items())
SAMPLE = {
    "action": '"DELETE"',
    "entity_type": '"form"',
    "entity_id": "9",
    "user_id": "43",
    "organization_id": "8",
    "ip_address": '"2001:db8::1"',
    "user_agent": '"curl/8"',
    "request_path": '"/x"',
    "status_code": "500",
    "timestamp": '"2026-11-28T00:00:00Z"',
    "changes": '{"b":1,"a":[true,null]}',
    "action_context": '"break_glass"',
    "break_glass_id": "5",
    "impersonation_id": "0",
}

# Why Python may refuse an input Go accepts (docs/contract.md, "Reading what Go reads").
STRICTER = {"missing-or-null", "deep", "loose-time", "not-unicode"}


def event(*members: str, base: str = BASE) -> str:
    return "{" + ",".join([base, *members] if base else list(members)) + "}"


def member(key: str, raw: str) -> str:
    return json.dumps(key) + ":" + raw


def key_variants(name: str, rng: random.Random) -> list[tuple[str, bool]]:
    """Other spellings of a field name, each with whether Go matches it to the field."""
    folds = {name.upper(), name.title(), name.capitalize(), name.swapcase()}
    folds.add("".join(c.upper() if rng.random() < 0.5 else c for c in name))
    if "k" in name:
        folds.add(name.replace("k", KELVIN))
        folds.add(name.upper().replace("K", KELVIN))
    if "s" in name:
        folds.add(name.replace("s", LONG_S))
        folds.add(name.replace("s", LONG_S, 1).upper().replace("S", "s"))
    folds.add("\\u00" + format(ord(name[0]), "02x") + name[1:])  # an escaped exact key
    others = {
        name.replace("_", "-"),  # v1 semantics: delimiters count
        name.replace("_", ""),
        name + "\u0307",  # a combining dot above
        name.replace("i", "\u0130", 1) if "i" in name else name + "\u0131",  # dotted/dotless i
    }
    folds.discard(name)
    others -= folds | {name}
    return sorted([(variant, True) for variant in folds] + [(variant, False) for variant in others])


def key_corpus(rng: random.Random) -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for name in FIELDS:
        raw = SAMPLE[name]
        for variant, folds in key_variants(name, rng):
            key = json.loads(f'"{variant}"') if variant.startswith("\\u") else variant
            spelled = member(key, raw) if not variant.startswith("\\u") else f'"{variant}":{raw}'
            extra = [member("action_context", '"break_glass"')] if name == "break_glass_id" else []
            cases.append(("keys", event(*extra, spelled)))  # after the exact key
            cases.append(("keys", "{" + ",".join([spelled, BASE, *extra]) + "}"))  # before it
            alone = (
                BASE.replace(f'"{name}":', spelled[: -len(raw)]) if name in BASE_MEMBERS else None
            )
            if alone is not None:
                # Instead of the exact key: a spelling that does not fold leaves it missing.
                cases.append(("keys" if folds else "missing-or-null", "{" + alone + "}"))
                cases.append(("keys", "{" + alone + "," + member(name, raw) + "}"))
                cases.append(("keys", "{" + alone + "," + member(name, raw) + "," + spelled + "}"))
        # Duplicates of the exact key, and nulls, in every order.
        cases.append(("keys", event(member(name, raw), member(name, raw))))
        cases.append(("null", event(member(name, raw), member(name, "null"))))
        cases.append(("null", event(member(name, "null"), member(name.upper(), raw))))
        cases.append(("null", event(member(name.upper(), "null"))))
        if name in BASE_MEMBERS:
            others = [f'"{other}":{raw}' for other, raw in BASE_MEMBERS.items() if other != name]
            cases.append(("missing-or-null", "{" + ",".join(others) + "}"))
            cases.append(("missing-or-null", "{" + ",".join([*others, member(name, "null")]) + "}"))
    cases.append(("missing-or-null", "{}"))
    # Keys no field matches: ignored, alone or beside others (a newer writer's fields).
    for unknown in ("severity", "user", "timestamps", "changes_v2", "\u212a", "organization"):
        cases.append(("keys", event(member(unknown, '"x"'))))
        cases.append(("keys", event(member(unknown, "-0"), member("changes", "[-0]"))))
        cases.append(("keys", event(member(unknown, "1"), member("action_context", "null"))))
    cases.append(("keys", event(member("Changes", '{"a":1}'), member("CHANGES", '{"b":2}'))))
    cases.append(("keys", event(member("changes", '{"b":1,"a":2,"b":3}'))))
    return cases


DIGITS = {
    "arabic-indic": "\u0660",
    "extended-arabic-indic": "\u06f0",
    "devanagari": "\u0966",
    "fullwidth": "\uff10",
    "bengali": "\u09e6",
    "mathematical-bold": "\U0001d7ce",
}


def time_corpus() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    canonical = "2026-11-27T10:11:12.123456789+05:30"
    for zero in DIGITS.values():
        for position, char in enumerate(canonical):
            if char.isdigit():
                text = canonical[:position] + chr(ord(zero) + int(char)) + canonical[position + 1 :]
                cases.append(("time", event(member("timestamp", json.dumps(text)))))
                cases.append(
                    ("time", event(member("timestamp", json.dumps(text, ensure_ascii=False))))
                )
    for text in [
        "2026-11-27T10:11:12Z",
        "2026-11-27T10:11:12.000Z",
        "2026-11-27T10:11:12.1234567891Z",
        "2026-11-27T10:11:12-00:00",
        "2026-11-27T10:11:12+23:59",
        "2026-11-27T10:11:12+24:00",
        "2024-02-29T23:59:59Z",
        "2025-02-29T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999-23:59",
        "2026-11-27t10:11:12Z",
        "2026-11-27T10:11:12z",
        "2026-11-27 10:11:12Z",
        "2026-11-27T10:11:12",
        "2026-11-27T10:11:12.Z",
        "+2026-11-27T10:11:12Z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T10:11:60Z",
    ]:
        cases.append(("time", event(member("timestamp", json.dumps(text)))))
    cases.append(("time", event(member("timestamp", '"2026-11-27T10:11:12\\u005a"'))))
    cases.append(("time", event(member("timestamp", '"2026\\u002d11-27T10:11:12Z"'))))
    cases.append(("time", event(member("timestamp", "1764238272"))))
    # Forms Go's parser tolerates (its strict RFC 3339 check is switched off) but never writes.
    for text in ["2026-11-27T10:11:12,5Z", "2026-11-27T1:11:12Z", "2026-11-27T10:11:12+05:60"]:
        cases.append(("loose-time", event(member("timestamp", json.dumps(text)))))
    return cases


def number_tokens(rng: random.Random, count: int) -> list[str]:
    fixed = [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "-0e0",
        "-0E+5",
        "0e-7",
        "1",
        "-1",
        "1.0",
        "1.5",
        "100",
        "1e2",
        "1E2",
        "1e+2",
        "1E-2",
        "1.25e-7",
        "1e-6",
        "1e-7",
        "1e20",
        "1e21",
        "1e+21",
        "123456789012345678901234567890",
        "9007199254740992",
        "9007199254740993",
        "-9223372036854775808",
        "9223372036854775807",
        "18446744073709551616",
        "1e308",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "1e309",
        "-1e400",
        "1e-400",
        "-1e-400",
        "5e-324",
        "2.5e-324",
        "0.1",
        "0.30000000000000004",
        "1e0000000001",
        "0.000001",
        "0.0000001",
        "1" + "0" * 308,
        "1" + "0" * 309,
        "1" * 400,
        "NaN",
        "Infinity",
        "-Infinity",
        "01",
        "1.",
        ".5",
        "+1",
        "1e",
        "-",
        "0x10",
        "1_000",
    ]
    tokens = list(fixed)
    for _ in range(count):
        sign = rng.choice(["", "-"])
        whole = rng.choice(
            [
                "0",
                str(rng.randrange(1, 10))
                + "".join(rng.choice("0123456789") for _ in range(rng.randrange(25))),
            ]
        )
        fraction = rng.choice(
            ["", "." + "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 20)))]
        )
        exponent = rng.choice(
            ["", rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randrange(0, 330))]
        )
        tokens.append(sign + whole + fraction + exponent)
    return tokens


def number_corpus(rng: random.Random) -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for token in number_tokens(rng, 150):
        cases.append(("number", event(member("changes", "[" + token + "]"))))
        cases.append(("number", event(member("changes", '{"n":' + token + ',"s":"-0"}'))))
        for field in ("user_id", "entity_id", "status_code", "break_glass_id"):
            if rng.random() < 0.3 or token in ("-0", "1.0", "1e2", "9223372036854775808"):
                cases.append(("number", event(member(field, token))))
    cases.append(("number", event(member("changes", "-0"))))
    cases.append(("number", event(member("changes", '[-0, -0 ,[-0],{"a": -0}, "-0", "a\\"-0"]'))))
    cases.append(("number", event(member("user_id", "9223372036854775808"))))
    return cases


def depth_corpus() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for depth in (1, 2, 63, 64, 65, 66, 100, 150, 198, 199, 200, 201, 253, 254, 500, 1000, 5000):
        kind = "deep" if depth > MAX_CHANGES_DEPTH else "depth"
        cases.append((kind, event(member("changes", "[" * depth + "]" * depth))))
        cases.append((kind, event(member("changes", '{"a":' * depth + "1" + "}" * depth))))
        cases.append(("depth", event(member("unknown", "[" * depth + "]" * depth))))
        cases.append(("depth", event(member("user_id", "[" * depth + "]" * depth))))
    return cases


def action_corpus() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for value in [
        "READ",
        "update",
        "",
        "CREATE ",
        "Ünïcode",
        "<&>",
        "a\\u2028b",
        "\\u0000",
        "UPDATE\\n",
    ]:
        cases.append(("open", event(member("action", '"' + value + '"'))))
        cases.append(("open", event(member("action_context", '"' + value + '"'))))
    cases.append(("open", event(member("action", "5"))))
    cases.append(("open", event(member("action_context", "true"))))
    return cases


def text_corpus() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = [
        ("not-unicode", event(member("user_agent", '"\\ud800"'))),
        ("not-unicode", event(member("changes", '["\\udc00x"]'))),
        ("text", event(member("user_agent", '"a\\u003cb\\/c\\"d\\\\"'))),
        ("text", event(member("user_agent", '"\u2028\u2029<>&"'))),
        ("text", event(member("user_agent", '"tab\there"'))),
        ("text", event(member("user_agent", '"\U0001f680 \\ud83d\\ude80"'))),
        ("text", "[]"),
        ("missing-or-null", "null"),  # Go leaves the struct as it was: all zero
        ("text", event() + " x"),
        ("text", event() + "   "),
        ("text", " \t" + event()),
        ("text", event(member("x", "1")) + "}"),
        ("text", "{" + BASE + ",}"),
        ("text", "{" + BASE.replace(":", " : ") + "}"),
    ]
    return cases


def corpus() -> list[tuple[str, str]]:
    rng = random.Random(20261201)
    cases = key_corpus(rng) + time_corpus() + number_corpus(rng) + depth_corpus()
    cases += action_corpus() + text_corpus()
    cases += [("golden", text) for text in GOLDEN]
    return cases


def python_json(text: str) -> str | None:
    try:
        return Event.model_validate_json(text).to_json()
    except ValidationError:
        return None


def test_go_and_python_read_every_input_alike(gocheck: GoCheck) -> None:
    cases = corpus()
    go_out = gocheck([text for _, text in cases])
    ours = [python_json(text) for _, text in cases]
    accepted = [
        (kind, text, go, py)
        for (kind, text), go, py in zip(cases, go_out, ours, strict=True)
        if py is not None
    ]
    # Go reading what Python wrote: the same as Go reading the input.
    go_of_ours = gocheck([py for _, _, _, py in accepted])
    tally: Counter[str] = Counter()
    problems: list[str] = []
    for (kind, text), go, py in zip(cases, go_out, ours, strict=True):
        go_accepts = not go.startswith("ERROR")
        if py is None and not go_accepts:
            tally["both refuse"] += 1
        elif py is None:
            tally[f"only Go accepts ({kind})"] += 1
            if kind not in STRICTER:
                problems.append(f"Python refuses what Go reads: {text[:300]!r} -> {go[:200]}")
        elif not go_accepts:
            tally["only Python accepts"] += 1
            problems.append(f"Python reads what Go refuses: {text[:300]!r} ({go[:200]})")
    for (_, text, go, _), go_py in zip(accepted, go_of_ours, strict=True):
        if go.startswith("ERROR"):
            continue
        if go_py != go:
            tally["both accept, differ"] += 1
            problems.append(
                f"differ: {text[:300]!r}\n  Go:       {go[:300]}\n  Go(ours): {go_py[:300]}"
            )
            continue
        # Python reads Go's own output back byte for byte.
        if python_json(go) != go:
            tally["both accept, differ"] += 1
            problems.append(f"Go's output not read back: {go[:300]!r}")
            continue
        tally["both accept, same"] += 1
    for (_, _, _, py), go_py in zip(accepted, go_of_ours, strict=True):
        # Everything Python writes, Go and Python read.
        if go_py.startswith("ERROR") or python_json(py) != py:
            tally["Python wrote unreadable"] += 1
            problems.append(f"unreadable output {py[:300]!r}: {go_py[:200]}")
    print(f"\ncorpus of {len(cases)} inputs: {dict(sorted(tally.items()))}")
    assert not problems, "\n".join(problems[:20])
    assert tally["both accept, differ"] == 0
    assert tally["both accept, same"] > 500
    assert tally["both refuse"] > 100


# Numbers: every JSON number form, spelled in changes exactly as Go spells a float64.

_digits = st.text("0123456789", min_size=1, max_size=22)
json_numbers = st.one_of(
    st.builds(
        lambda sign, whole, fraction, exponent: sign + whole + fraction + exponent,
        st.sampled_from(["", "-"]),
        st.one_of(
            st.just("0"),
            st.builds(
                lambda d, rest: d + rest,
                st.sampled_from("123456789"),
                st.text("0123456789", max_size=24),
            ),
        ),
        st.one_of(st.just(""), _digits.map(lambda d: "." + d)),
        st.one_of(
            st.just(""),
            st.builds(
                lambda e, sign, n: e + sign + n,
                st.sampled_from("eE"),
                st.sampled_from(["", "+", "-"]),
                st.integers(0, 400).map(str)
                | st.text("0", min_size=1, max_size=3).map(lambda z: z + "7"),
            ),
        ),
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**80), 2**80).map(str),
    st.sampled_from(["-0", "-0.0", "0e0", "-0E-0", "1e21", "1e-7", "5e-324", "1e308", "1e309"]),
)


def _changes_of(text: str) -> str:
    return text[text.index(',"changes":') + len(',"changes":') : -1]


@settings(max_examples=40, deadline=None)
@given(st.lists(json_numbers, min_size=1, max_size=30))
def test_numbers_in_changes_are_spelled_as_go_marshals_them(
    gocheck: GoCheck, tokens: list[str]
) -> None:
    arrays = [f'[{token},{{"n":{token}}}]' for token in tokens]
    go_spelled = gocheck(arrays, into_any=True)
    for token, array, go in zip(tokens, arrays, go_spelled, strict=True):
        ours = python_json(event(member("changes", array)))
        if go.startswith("ERROR"):
            assert ours is None, (token, go)
            continue
        assert ours is not None, (token, go)
        spelled = _changes_of(ours)
        if any(c in token for c in ".eE") or token == "-0":
            assert spelled == go, token  # a float64, written as Go writes it
        else:
            # An integer token is kept exact (what a Go producer's int64 wrote); Go's any holds
            # a float64, which is the same number.
            assert spelled == f'[{int(token)},{{"n":{int(token)}}}]', token
            as_float = json.loads(go, parse_int=float)
            assert [float(int(token))] * 2 == [as_float[0], as_float[1]["n"]]
        # And Go's own spelling reads back byte for byte.
        back = python_json(event(member("changes", go)))
        assert back is not None and _changes_of(back) == go, token


def test_differential_field_lists_are_the_models() -> None:
    # Key matching (_gokeys.EVENT_FIELDS) and this corpus keep their own lists of the struct's
    # fields; both must follow the model when a field is added.
    from auditevt import Event
    from auditevt._gokeys import EVENT_FIELDS

    assert list(Event.model_fields) == FIELDS
    assert set(FIELDS) == EVENT_FIELDS
