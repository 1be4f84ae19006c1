"""The client IP rule: the rightmost untrusted X-Forwarded-For hop, through trusted proxies only."""

from __future__ import annotations

import ipaddress

import pytest

from audit_middleware.request._client_ip import (
    TrustedProxies,
    forwarded_for_headers,
    parse_address,
    resolve_client_ip,
    server_rewrote_peer,
)

LB = TrustedProxies(["10.0.0.0/8", "fd00::/8"])
NONE = TrustedProxies()

# (case id, peer host, X-Forwarded-For headers, policy, expected client IP)
CASES: list[tuple[str, str | None, list[str], TrustedProxies, str]] = [
    ("no proxy trusted: peer wins, XFF ignored", "203.0.113.7", ["1.2.3.4"], NONE, "203.0.113.7"),
    ("untrusted peer: XFF ignored", "198.51.100.9", ["1.2.3.4"], LB, "198.51.100.9"),
    ("trusted peer, one hop", "10.0.0.1", ["1.2.3.4"], LB, "1.2.3.4"),
    ("trusted peer, no XFF: the proxy itself", "10.0.0.1", [], LB, "10.0.0.1"),
    (
        "spoofed leftmost entry is never used",
        "10.0.0.1",
        ["6.6.6.6, 203.0.113.50"],
        LB,
        "203.0.113.50",
    ),
    (
        "spoofed entries and trusted hops: rightmost untrusted",
        "10.0.0.1",
        ["6.6.6.6, 7.7.7.7, 203.0.113.50, 10.1.1.1, 10.2.2.2"],
        LB,
        "203.0.113.50",
    ),
    (
        "several headers are one list, in order",
        "10.0.0.1",
        ["6.6.6.6", "203.0.113.50, 10.9.9.9"],
        LB,
        "203.0.113.50",
    ),
    (
        "several headers: the last header's untrusted entry wins",
        "10.0.0.1",
        ["203.0.113.50", "6.6.6.6"],
        LB,
        "6.6.6.6",
    ),
    ("ip:port entry", "10.0.0.1", ["203.0.113.50:51234"], LB, "203.0.113.50"),
    ("bare IPv6 entry, normalised", "10.0.0.1", ["2001:DB8:0:0::1"], LB, "2001:db8::1"),
    ("[v6]:port entry", "10.0.0.1", ["[2001:db8::1]:443"], LB, "2001:db8::1"),
    ("[v6] without port", "10.0.0.1", ["[2001:db8::2]"], LB, "2001:db8::2"),
    ("IPv6 peer and proxy", "fd00::1", ["2001:db8::7, fd00::2"], LB, "2001:db8::7"),
    ("IPv4-mapped IPv6 entry becomes IPv4", "10.0.0.1", ["::ffff:203.0.113.5"], LB, "203.0.113.5"),
    ("IPv4-mapped peer is checked as IPv4", "::ffff:10.0.0.1", ["203.0.113.5"], LB, "203.0.113.5"),
    (
        "whitespace and empty entries",
        "10.0.0.1",
        ["  , 203.0.113.50 ,, 10.0.0.2 , "],
        LB,
        "203.0.113.50",
    ),
    (
        "garbage 'unknown' ends the walk at the last trusted hop",
        "10.0.0.1",
        ["1.2.3.4, unknown, 10.0.0.2"],
        LB,
        "10.0.0.2",
    ),
    (
        "garbage right of the client: fall back to the peer",
        "10.0.0.1",
        ["1.2.3.4, ;drop"],
        LB,
        "10.0.0.1",
    ),
    ("over-long entry is garbage", "10.0.0.1", ["1.2.3.4, " + "1" * 300], LB, "10.0.0.1"),
    ("hostname is garbage", "10.0.0.1", ["evil.example.com"], LB, "10.0.0.1"),
    ("bad port is garbage", "10.0.0.1", ["1.2.3.4:http"], LB, "10.0.0.1"),
    ("all hops trusted: the leftmost proxy", "10.0.0.1", ["10.0.0.3, 10.0.0.2"], LB, "10.0.0.3"),
    ("missing peer: nothing can be trusted", None, ["1.2.3.4"], LB, ""),
    ("peer with garbage host", "not-an-ip", ["1.2.3.4"], LB, ""),
    (
        "hops=1: the rightmost entry",
        "198.51.100.1",
        ["6.6.6.6, 203.0.113.50"],
        TrustedProxies(hops=1),
        "203.0.113.50",
    ),
    (
        "hops=2: one entry further left",
        "198.51.100.1",
        ["6.6.6.6, 203.0.113.50, 192.0.2.1"],
        TrustedProxies(hops=2),
        "203.0.113.50",
    ),
    (
        "hops=2 with too few entries: the last trusted hop",
        "198.51.100.1",
        ["192.0.2.1"],
        TrustedProxies(hops=2),
        "192.0.2.1",
    ),
    (
        "hops with garbage: the last trusted hop",
        "198.51.100.1",
        ["1.2.3.4, _hidden"],
        TrustedProxies(hops=1),
        "198.51.100.1",
    ),
    # Nothing forwarded: the peer, normalised, whatever the policy.
    ("no header, untrusted peer", "203.0.113.9", [], LB, "203.0.113.9"),
    ("no header, trusted peer", "10.0.0.1", [], LB, "10.0.0.1"),
    ("no header, hops", "198.51.100.1", [], TrustedProxies(hops=2), "198.51.100.1"),
    ("no header, no proxies", "2001:DB8::0:1", [], TrustedProxies(), "2001:db8::1"),
    ("no header, IPv4-mapped peer", "::ffff:10.0.0.1", [], LB, "10.0.0.1"),
    ("no header, garbage peer", "testclient", [], LB, ""),
    ("no header, missing peer", None, [], TrustedProxies(hops=1), ""),
]


@pytest.mark.parametrize(
    ("peer", "headers", "policy", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_client_ip_rule(
    peer: str | None, headers: list[str], policy: TrustedProxies, expected: str
) -> None:
    client = None if peer is None else (peer, 50000)
    assert resolve_client_ip(client, headers, policy) == expected


def test_client_ip_from_scope_reads_every_header_in_order() -> None:
    scope = {
        "type": "http",
        "client": ("10.0.0.1", 1234),
        "headers": [
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"user-agent", b"x"),
            (b"x-forwarded-for", b"203.0.113.9, 10.0.0.5"),
        ],
    }
    assert forwarded_for_headers(scope) == ["6.6.6.6", "203.0.113.9, 10.0.0.5"]
    assert LB.client_ip(scope) == "203.0.113.9"
    assert NONE.client_ip(scope) == "10.0.0.1"


def test_trusted_proxies_accepts_addresses_and_networks() -> None:
    policy = TrustedProxies(
        ["192.0.2.1", ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_address("::1")]
    )
    assert policy.trusts(ipaddress.ip_address("192.0.2.1"))
    assert not policy.trusts(ipaddress.ip_address("192.0.2.2"))
    assert policy.trusts(ipaddress.ip_address("198.51.100.77"))
    assert policy.trusts(ipaddress.ip_address("::1"))


def test_trusted_proxies_mapped_network_is_normalised_to_ipv4() -> None:
    policy = TrustedProxies(["::ffff:10.0.0.0/104"])
    assert policy.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert resolve_client_ip(("::ffff:10.1.2.3", 1), ["1.2.3.4"], policy) == "1.2.3.4"


@pytest.mark.parametrize(
    ("networks", "hops", "error"),
    [
        (["10.0.0.0/33"], 0, ValueError),
        (["10.0.0.1/8"], 0, ValueError),  # host bits set: almost certainly a typo
        (["example.com"], 0, ValueError),
        ([42], 0, TypeError),
        ("10.0.0.0/8", 0, TypeError),
        ([], -1, ValueError),
        (["10.0.0.0/8"], 1, ValueError),
    ],
)
def test_trusted_proxies_rejects_bad_values(
    networks: object, hops: int, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"networks|hops|trusted proxy"):
        TrustedProxies(networks, hops=hops)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4:8080 ", "1.2.3.4"),
        ("[::1]:80", "::1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:", None),
        ("1.2.3.4:123456", None),
        ("[::1", None),
        ("[::1]x", None),
        ("", None),
        ("unknown", None),
        ("999.1.1.1", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.parametrize(
    ("peer", "headers", "rewritten"),
    [
        pytest.param(("6.6.6.6", 0), ["6.6.6.6"], True, id="uvicorn: entry without port, port 0"),
        pytest.param(("6.6.6.6", 4444), ["6.6.6.6:4444"], True, id="uvicorn: entry with port"),
        pytest.param(("2001:db8::1", 443), ["[2001:db8::1]:443"], True, id="uvicorn: [v6]:port"),
        pytest.param(("2001:db8::1", 0), ["2001:db8::1, 10.0.0.1"], True, id="v6 left entry"),
        pytest.param(("6.6.6.6", 80), ["6.6.6.6:+80"], True, id="port as leniently parsed"),
        pytest.param(("6.6.6.6:99", 0), ["6.6.6.6:99"], True, id="old uvicorn: port 0"),
        pytest.param(("127.0.0.1", 51000), ["6.6.6.6"], False, id="real peer"),
        pytest.param(("127.0.0.1", 51000), ["127.0.0.1"], False, id="own address, other port"),
        pytest.param(("6.6.6.6", 0), [], False, id="no header"),
        pytest.param(("6.6.6.6", 0), [" "], False, id="empty header"),
        pytest.param(None, ["6.6.6.6"], False, id="no peer"),
    ],
)
def test_server_rewrote_peer(
    peer: tuple[str, int] | None, headers: list[str], rewritten: bool
) -> None:
    assert server_rewrote_peer(peer, headers) is rewritten


@pytest.mark.parametrize(
    "policy", [NONE, TrustedProxies(["127.0.0.1/32"]), LB, TrustedProxies(hops=1)]
)
@pytest.mark.parametrize(
    ("peer", "headers"),
    [
        (("6.6.6.6", 0), ["6.6.6.6"]),
        (("6.6.6.6", 4444), ["6.6.6.6:4444"]),
        (("10.0.0.9", 0), ["6.6.6.6, 10.0.0.9"]),  # all trusted by the server: its leftmost
    ],
)
def test_client_ip_peer_rewritten_by_the_server_is_unknown(
    peer: tuple[str, int], headers: list[str], policy: TrustedProxies
) -> None:
    # What uvicorn's default --proxy-headers hands over for a loopback client that sent
    # X-Forwarded-For: nothing the client wrote is recorded, whatever the policy.
    assert resolve_client_ip(peer, headers, policy) == ""
