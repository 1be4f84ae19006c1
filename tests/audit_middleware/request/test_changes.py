"""``record(changes=...)``: refused at the call when unwritable, natural values encoded, limits."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import random
import uuid
from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from audit_middleware import AuditConfig, ConfigurationError, record
from audit_middleware.request._changes import (
    _NOT_PLAIN,
    MAX_CHANGES_DEPTH,
    ChangesLimits,
    Oversized,
    _plain_copy,
    _Walk,
    _walk_weighed,
    prepare_weighed,
)
from audit_middleware.request._context import STATE_KEY, RequestAudit
from audit_middleware.request._redaction import RedactionPolicy
from audit_middleware.request._summary import _INLINE, _weight, settle_changes


def prepare_changes(changes: Any, limits: ChangesLimits) -> Any:
    return prepare_weighed(changes, limits)[0]


def scope_for(audit: RequestAudit) -> dict[str, Any]:
    return {"type": "http", "state": {STATE_KEY: audit}}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# (what, changes, error type, text the message must hold: the path and the value)
REFUSED: list[tuple[str, Any, type[Exception], str]] = [
    ("NaN", {"weight": float("nan")}, ValueError, "changes.weight = nan"),
    ("Infinity", {"a": [1, {"b": float("inf")}]}, ValueError, "changes.a[1].b = inf"),
    ("1e400 parses as inf", {"n": float("1e400")}, ValueError, "changes.n = inf"),
    ("400-digit integer", {"n": 10**400}, ValueError, "changes.n = 1000"),
    ("Decimal beyond float64", {"d": Decimal("1e400")}, ValueError, "d = Decimal('1E+400')"),
    ("Decimal NaN", {"d": Decimal("NaN")}, ValueError, "changes.d = Decimal('NaN')"),
    ("lone surrogate", {"name": "Ann\ud800"}, ValueError, "changes.name = 'Ann\\ud800'"),
    ("lone surrogate in a key", {"k\udfff": 1}, ValueError, "lone surrogate"),
    ("300-deep nesting", {"x": nested(300)}, ValueError, "deeper than 64"),
    ("naive datetime", {"at": dt.datetime(2026, 12, 1, 9, 30)}, ValueError, "changes.at = "),
    ("not JSON", {"o": object()}, TypeError, "changes.o = <object object"),
    ("tuple key", {"k": {(1, 2): 3}}, TypeError, "changes.k[(1, 2)]"),
    ("keys colliding", {1: "a", "1": "b"}, ValueError, "both read '1'"),
    ("odd key spelled", {"we ird": {"x": float("nan")}}, ValueError, "changes['we ird'].x = nan"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "error", "message"), [pytest.param(*c[1:], id=c[0]) for c in REFUSED]
)
def test_record_refuses_what_cannot_be_written(
    changes: Any, error: type[Exception], message: str
) -> None:
    audit = RequestAudit(audited=True)
    with pytest.raises(error) as raised:
        record(scope_for(audit), changes=changes)
    assert message in str(raised.value)
    assert str(raised.value).startswith("record(changes=...): changes")
    assert audit.changes is None  # nothing kept


def test_depth_limit_is_exact() -> None:
    assert MAX_CHANGES_DEPTH == 64
    prepare_changes(nested(64), ChangesLimits())  # {} is 1: 64 objects deep is allowed
    with pytest.raises(ValueError, match="deeper than 64"):
        prepare_changes(nested(65), ChangesLimits())
    with pytest.raises(ValueError, match="deeper than 64"):
        prepare_changes({"b": [nested(63)]}, ChangesLimits())  # 1 + 1 + 63


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    L = 3


def test_natural_values_are_encoded_as_go_reads_them() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    changes = {
        "at": dt.datetime(2026, 12, 1, 9, 30, 0, 500000, tzinfo=paris),
        "utc": dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC),
        "west": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(-dt.timedelta(hours=5))),
        "day": dt.date(2026, 12, 1),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "price": Decimal("12.50"),
        "count": Decimal("12"),
        "colour": Colour.RED,
        "size": Size.L,
        "pair": (1, "a"),
        "tags": {"b", "a", "c"},
        "mixed": frozenset({1}),
        "raw": b"\x00\xffhi",
        7: "int key",
        Colour.RED: "enum key",
    }
    assert prepare_changes(changes, ChangesLimits()) == {
        "at": "2026-12-01T09:30:00.5+01:00",
        "utc": "2026-12-01T08:30:00Z",
        "west": "2026-01-02T03:04:05.000006-05:00",
        "day": "2026-12-01",
        "id": "12345678-1234-5678-1234-567812345678",
        "price": 12.5,
        "count": 12,
        "colour": "red",
        "size": 3,
        "pair": [1, "a"],
        "tags": ["a", "b", "c"],
        "mixed": [1],
        "raw": "AP9oaQ==",
        "7": "int key",
        "red": "enum key",
    }
    # Unsortable set items keep their order; the result is still an array.
    assert sorted(map(str, prepare_changes({1, "a"}, ChangesLimits()))) == ["1", "a"]


def test_record_keeps_the_encoded_value() -> None:
    audit = RequestAudit(audited=True)
    record(scope_for(audit), changes={"day": dt.date(2026, 1, 1)})
    assert audit.changes == {"day": "2026-01-01"}
    # A request the middleware does not audit: nothing checked, nothing kept.
    quiet = RequestAudit(audited=False)
    assert record(scope_for(quiet), changes={"n": float("nan")}) is False


def test_limits_make_a_summary_not_an_error() -> None:
    limits = ChangesLimits(max_elements=100, max_bytes=10_000, max_summary_keys=3)
    small = prepare_changes({"k": list(range(50))}, limits)
    assert small == {"k": list(range(50))}
    many = prepare_changes({f"k{i}": i for i in range(1000)}, limits)
    assert isinstance(many, Oversized)
    assert many.reason == "more than 100 elements (max_elements)"
    big = prepare_changes({"note": "x" * 20_000}, limits)
    assert isinstance(big, Oversized) and big.reason == "more than 10000 bytes (max_bytes)"
    nested_many = prepare_changes([{"a": list(range(60))}, {"b": list(range(60))}], limits)
    assert isinstance(nested_many, Oversized)


@pytest.mark.anyio
async def test_summary_holds_size_keys_and_digest_of_the_redacted_content() -> None:
    value = {"password": "hunter2", **{f"k{i}": f"v{i}" for i in range(500)}, "note": "x"}
    oversized = prepare_changes(value, ChangesLimits(max_elements=100, max_summary_keys=3))
    assert isinstance(oversized, Oversized)
    summary = await settle_changes(oversized, RedactionPolicy())
    info = summary["$oversized"]
    redacted = RedactionPolicy()(value)
    encoded = json.dumps(redacted, ensure_ascii=False, separators=(",", ":")).encode()
    assert info == {
        "reason": "more than 100 elements (max_elements)",
        "type": "object",
        "length": 502,
        "keys": ["password", "k0", "k1"],
        "bytes": len(encoded),
        "sha256": hashlib.sha256(encoded).hexdigest(),
    }
    assert "hunter2" not in json.dumps(summary)


@pytest.mark.anyio
async def test_summary_never_fails() -> None:
    # Past the limit nothing was checked: NaN, sets and naive datetimes still get a digest.
    value = [float("nan"), {3, 1}, dt.datetime(2026, 1, 1)] * 100
    oversized = prepare_changes(value, ChangesLimits(max_elements=10))
    assert isinstance(oversized, Oversized)
    info = (await settle_changes(oversized, RedactionPolicy()))["$oversized"]
    assert info["type"] == "array" and info["length"] == 300 and len(info["sha256"]) == 64

    def broken(changes: Any) -> Any:
        raise RuntimeError("redactor bug")

    info = (await settle_changes(oversized, broken))["$oversized"]
    assert info["sha256"] is None and info["error"] == "RuntimeError: redactor bug"


@pytest.mark.anyio
async def test_a_big_summary_yields_to_the_event_loop_while_it_works() -> None:
    policy = RedactionPolicy()
    small = prepare_changes({"a": 1}, ChangesLimits())
    assert await settle_changes(small, policy) == {"a": 1}
    value = {f"key{i}": {"n": i, "password": "x"} for i in range(100_000)}
    oversized = prepare_changes(value, ChangesLimits())
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        before = ticks
        settled = await settle_changes(oversized, policy)
        done = True
    # Without slices the ticker could not have run while the summary was computed.
    assert ticks - before >= 2
    encoded = json.dumps(policy(value), separators=(",", ":")).encode()
    assert settled["$oversized"]["sha256"] == hashlib.sha256(encoded).hexdigest()


@pytest.mark.anyio
async def test_summary_of_huge_members_and_strings() -> None:
    policy = RedactionPolicy()
    value = {
        "password": list(range(5000)),  # big, under a sensitive key: replaced whole
        "rows": [{"token": "t", "n": i} for i in range(3000)],
        "note": "abc " * 50_000,  # a long string: redacted piece by piece
    }
    oversized = prepare_changes(value, ChangesLimits(max_elements=100))
    settled = await settle_changes(oversized, policy)
    encoded = json.dumps(policy(value), ensure_ascii=False, separators=(",", ":")).encode()
    assert settled["$oversized"]["bytes"] == len(encoded)
    assert settled["$oversized"]["sha256"] == hashlib.sha256(encoded).hexdigest()


def test_the_walk_at_the_call_stops_at_the_limit() -> None:
    # A million keys: the walk stops after max_elements (one len() says so), long before the end.
    class Counting(dict[str, int]):
        seen = 0

        def items(self) -> Any:
            for item in super().items():
                Counting.seen += 1
                yield item

    huge = Counting({f"k{i}": i for i in range(1_000_000)})
    assert isinstance(prepare_changes(huge, ChangesLimits()), Oversized)
    assert Counting.seen == 0
    wide = {"a": Counting({f"k{i}": i for i in range(5000)}), "b": list(range(20_000))}
    assert isinstance(prepare_changes(wide, ChangesLimits(max_elements=10_000)), Oversized)
    assert Counting.seen <= 5000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": -1}, "max_bytes=-1"),
        ({"max_elements": 1.5}, "max_elements=1.5"),
        ({"max_summary_keys": None}, "max_summary_keys=None"),
    ],
)
def test_limits_refuse_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChangesLimits(**kwargs)


def test_config_takes_limits() -> None:
    assert AuditConfig().changes_limits == ChangesLimits()
    with pytest.raises(TypeError, match="changes_limits"):
        AuditConfig(changes_limits={"max_bytes": 1})  # type: ignore[arg-type]


def test_refusals_are_configuration_errors() -> None:
    from audit_middleware import AuditError, ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        prepare_changes({"n": float("nan")}, ChangesLimits())
    assert isinstance(raised.value, AuditError | ValueError | TypeError)
    with pytest.raises(ConfigurationError):
        prepare_changes({"o": object()}, ChangesLimits())
    with pytest.raises(ConfigurationError):
        ChangesLimits(max_bytes=-1)


@pytest.mark.anyio
async def test_small_changes_are_redacted_inline_larger_ones_in_a_worker_thread() -> None:
    import threading

    threads: list[threading.Thread] = []
    policy = RedactionPolicy()

    def redaction(changes: Any) -> Any:
        threads.append(threading.current_thread())
        return policy(changes)

    small = prepare_changes({"password": "x", "n": list(range(20))}, ChangesLimits())
    assert await settle_changes(small, redaction) == {
        "password": "[REDACTED]",
        "n": list(range(20)),
    }
    larger = prepare_changes({"password": "x", "n": list(range(3000))}, ChangesLimits())
    assert await settle_changes(larger, redaction) == {
        "password": "[REDACTED]",
        "n": list(range(3000)),
    }
    assert threads[0] is threading.current_thread()
    assert threads[1] is not threading.current_thread()


def _random_changes(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth > 4 or pick < 0.45:
        return rng.choice(
            [rng.randrange(-5, 10**6), "s" * rng.randrange(0, 300), "é" * rng.randrange(0, 90),
             None, True, 0.5, dt.date(2026, 12, 1), uuid.UUID(int=rng.getrandbits(128))]
        )  # fmt: skip
    if pick < 0.7:
        return [_random_changes(rng, depth + 1) for _ in range(rng.randrange(0, 12))]
    return {f"k{i}" * rng.randrange(1, 40): _random_changes(rng, depth + 1) for i in range(12)}


def test_light_changes_are_never_heavier_than_settle_changes_measures() -> None:
    # prepare_weighed's "light" skips settle_changes' own weighing: it must never call light
    # what that weighing would send to a thread.
    rng = random.Random(11)
    light_seen = heavy_seen = 0
    for _ in range(2000):
        prepared, light = prepare_weighed(_random_changes(rng), ChangesLimits())
        if isinstance(prepared, Oversized):
            assert not light
            continue
        if light:
            light_seen += 1
            assert _weight(prepared, _INLINE) >= 0, prepared
        else:
            heavy_seen += 1
    assert light_seen > 500 and heavy_seen > 50  # both sides of the line were exercised


def _random_plain(rng: random.Random, depth: int = 0) -> Any:
    """Mostly plain JSON (the fast path), with now and then what only the walk takes."""
    pick = rng.random()
    if depth > 5 or pick < 0.5:
        if rng.random() < 0.03:
            return rng.choice(
                [2**1024, -(2**1024), float("nan"), float("inf"), "é", "\ud800", (1, 2),
                 dt.date(2026, 12, 1)]
            )  # fmt: skip
        return rng.choice(
            [rng.randrange(-(10**6), 10**6), 0.5, -0.0, "s" * rng.randrange(0, 40), None, False]
        )
    if pick < 0.75:
        return [_random_plain(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    keys = ["a", "bb", "k" * rng.randrange(1, 9)] + (["é", 3] if rng.random() < 0.03 else [])
    return {rng.choice(keys): _random_plain(rng, depth + 1) for _ in range(rng.randrange(0, 6))}


def _weighed_or_error(weigh: Any, changes: Any, limits: ChangesLimits) -> Any:
    try:
        return weigh(changes, limits)
    except ConfigurationError as exc:
        return str(exc)


@pytest.mark.parametrize(
    "limits",
    [ChangesLimits(), ChangesLimits(max_elements=6), ChangesLimits(max_bytes=60)],
    ids=["default", "few_elements", "few_bytes"],
)
def test_the_plain_fast_path_gives_what_the_walk_gives(limits: ChangesLimits) -> None:
    rng = random.Random(7)
    written = fast = 0
    for _ in range(3000):
        changes = _random_plain(rng)
        fast += _plain_copy(changes, 0, [limits.max_elements, limits.max_bytes]) is not _NOT_PLAIN
        got = _weighed_or_error(prepare_weighed, changes, limits)
        assert got == _weighed_or_error(_walk_weighed, changes, limits), changes
        written += isinstance(got, tuple) and not isinstance(got[0], Oversized)
    assert written > 1000 and 500 < fast < 2900  # both paths were taken


def test_the_plain_fast_path_counts_bytes_and_elements_as_the_walk_does() -> None:
    # The counts decide "light" and the limits: they must be the walk's own, to the byte.
    rng = random.Random(8)
    limits = ChangesLimits()
    compared = 0
    for _ in range(2000):
        changes = _random_plain(rng)
        left = [limits.max_elements, limits.max_bytes]
        plain = _plain_copy(changes, 0, left)
        if plain is _NOT_PLAIN:
            continue
        walk = _Walk(limits)
        assert walk.value(changes, (), 0) == plain
        assert left == [walk.elements_left, walk.bytes_left], changes
        compared += 1
    assert compared > 500


def test_the_plain_fast_path_stops_at_a_limit_as_the_walk_does() -> None:
    # A million plain keys: one len() and the value is past max_elements, without a copy.
    huge = dict.fromkeys((f"k{i}" for i in range(1_000_000)), 1)
    left = [ChangesLimits().max_elements, ChangesLimits().max_bytes]
    assert _plain_copy(huge, 0, left) is _NOT_PLAIN
    assert left[0] == ChangesLimits().max_elements - 1_000_000  # counted, nothing walked
    wide = ["x" * 1000] * 200  # 200 kB of text: stops once max_bytes (128 KiB) is passed
    left = [ChangesLimits().max_elements, ChangesLimits().max_bytes]
    assert _plain_copy(wide, 0, left) is _NOT_PLAIN
    assert -1002 < left[1] < 0
    prepared, light = prepare_weighed(huge, ChangesLimits())
    assert isinstance(prepared, Oversized) and not light
