"""The client IP address of a request: the ASGI peer, or X-Forwarded-For through trusted proxies.

``X-Forwarded-For`` is a list that every proxy *appends* its own peer to, so only its right-hand
end is written by machines we trust; anything to the left of the first untrusted hop was written
by whoever sent the request and may be forged. The rule, therefore:

1. Start from the ASGI peer (``scope["client"]``). If it is not a trusted proxy, it is the client
   and X-Forwarded-For is ignored entirely.
2. Otherwise walk X-Forwarded-For (every header, concatenated in order) from the right, skipping
   trusted proxies, and return the first untrusted address: the rightmost untrusted hop.
3. An entry that is not an IP address (``unknown``, ``_hidden``, ``;drop``, an over-long value)
   ends the walk: the answer is then the last address we trusted through, never anything to its
   left.

Addresses are normalised by :mod:`ipaddress`: ``ip:port`` and ``[v6]:port`` lose their port,
IPv6 is written compressed and lower-case, and an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``,
as dual-stack sockets report IPv4 peers) becomes plain IPv4.

The rule needs the real peer. A server that rewrites ``scope["client"]`` from X-Forwarded-For
itself (uvicorn and gunicorn's uvicorn workers do by default, for peers in
``forwarded_allow_ips``, which is loopback unless configured) hands over an address taken from
the header, and that address is whatever a local client wrote. Such a rewrite leaves a trace that
a real peer cannot produce by accident: the "peer" is one of the X-Forwarded-For entries, as the
server parsed it, or has port 0, which no TCP peer has. :func:`server_rewrote_peer` looks for
exactly that, and then the client is unknown (``""``): the real peer is gone, and every address
still in sight was written by someone we cannot vouch for. Only a client that writes its own
address and source port into the header can cause this for itself, and it only hides itself;
no client can make another address be recorded. Run the server with its own proxy handling off
(``proxy_headers=False``, ``--no-proxy-headers``) and let :class:`TrustedProxies` decide.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "TrustedProxies",
    "forwarded_for_headers",
    "parse_address",
    "resolve_client_ip",
    "server_rewrote_peer",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Longest legitimate entry: "[" + 39-char IPv6 + "%" + a short zone + "]:" + 5-digit port.
_MAX_ENTRY_LENGTH = 64


def _network(value: str | IPAddress | IPNetwork) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(value)
    if not isinstance(value, str):
        raise TypeError(
            f"trusted proxy {value!r} must be a CIDR string or an ipaddress network, "
            f"not {type(value).__name__}"
        )
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"trusted proxy {value!r} is not an IP network: {exc}") from None
    mapped = getattr(network.network_address, "ipv4_mapped", None)
    if mapped is not None and network.prefixlen >= 96:
        # Peers are normalised to IPv4, so the trust list must be too.
        return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


@dataclass(frozen=True, slots=True, init=False)
class TrustedProxies:
    """Which hops in front of the application may speak for the client.

    Either a list of ``networks`` (CIDR strings such as ``"10.0.0.0/8"``, single addresses, or
    :mod:`ipaddress` networks), or a number of ``hops`` for a fixed chain of proxies whose
    addresses are not known in advance. The default trusts nobody: the client is the ASGI peer.

    - ``TrustedProxies(["10.0.0.0/8"])``: a peer inside 10/8 is a proxy, and so is every
      X-Forwarded-For entry inside 10/8; the first address outside it, from the right, is the
      client.
    - ``TrustedProxies(hops=2)``: exactly two proxies stand in front of the app (a CDN, then a
      load balancer); the peer is the second, the rightmost X-Forwarded-For entry the first, and
      the entry left of it the client. Use this only when every request is known to cross all of
      them: a direct connection could then choose its own address.
    """

    networks: tuple[IPNetwork, ...] = ()
    """Trusted proxy networks; a peer outside them means X-Forwarded-For is ignored."""
    hops: int = 0
    """Number of proxies in front of the app, counting the peer (0: use ``networks``)."""
    _v4: tuple[ipaddress.IPv4Network, ...] = field(default=(), repr=False, compare=False)
    _v6: tuple[ipaddress.IPv6Network, ...] = field(default=(), repr=False, compare=False)

    def __init__(
        self, networks: Iterable[str | IPAddress | IPNetwork] = (), *, hops: int = 0
    ) -> None:
        if isinstance(networks, str):
            raise TypeError(
                f"networks must be a list of CIDR strings, not the single string {networks!r}"
            )
        parsed = tuple(_network(item) for item in networks)
        if type(hops) is not int or hops < 0:
            raise ValueError(f"hops={hops!r} must be an int >= 0")
        if hops and parsed:
            raise ValueError(
                f"give either networks or hops, not both (networks={[str(n) for n in parsed]}, "
                f"hops={hops})"
            )
        object.__setattr__(self, "networks", parsed)
        object.__setattr__(self, "hops", hops)
        object.__setattr__(
            self, "_v4", tuple(n for n in parsed if isinstance(n, ipaddress.IPv4Network))
        )
        object.__setattr__(
            self, "_v6", tuple(n for n in parsed if isinstance(n, ipaddress.IPv6Network))
        )

    def trusts(self, address: IPAddress) -> bool:
        """Whether ``address`` is inside one of the trusted networks."""
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in network for network in self._v4)
        return any(address in network for network in self._v6)

    def client_ip(self, scope: Any) -> str:
        """The client IP address of an ASGI HTTP ``scope`` under this policy."""
        return resolve_client_ip(scope.get("client"), forwarded_for_headers(scope), self)


def _normalise(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


@lru_cache(maxsize=8192)
def parse_address(text: str) -> IPAddress | None:
    """Parse one address as peers and proxies write it, or ``None`` when it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:443``, with surrounding whitespace; IPv4-mapped IPv6 becomes IPv4.
    Results are cached: the same peers and proxies come back request after request.
    """
    text = text.strip()
    if not text or len(text) > _MAX_ENTRY_LENGTH:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest[0] == ":" and rest[1:].isdigit() and len(rest) <= 6):
            return None
        host = text[1:end]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not (port.isdigit() and len(port) <= 5):
            return None
    else:
        host = text
    try:
        return _normalise(ipaddress.ip_address(host))
    except ValueError:
        return None


@lru_cache(maxsize=8192)
def _peer_text(host: str) -> str:
    address = parse_address(host)
    return "" if address is None else str(address)


def forwarded_for_headers(scope: Any) -> list[str]:
    """Every ``X-Forwarded-For`` header value of an ASGI scope, in the order received."""
    return [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"x-forwarded-for"
    ]


def _entries(forwarded_for: Sequence[str]) -> list[str]:
    # Several headers are one list, concatenated in order (RFC 9110, section 5.3).
    entries: list[str] = []
    for header in forwarded_for:
        entries.extend(header.split(","))
    return entries


def _server_parse(entry: str) -> tuple[str, int]:
    # What uvicorn's ProxyHeadersMiddleware makes of one entry (its _parse_host_port): the
    # comparison below must see the entry exactly as the server did, port 0 when none is given.
    value = entry.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, 0
        host, rest = value[1:end], value[end + 1 :]
        if not rest:
            return host, 0
        if not rest.startswith(":"):
            return value, 0
        return host, _server_port(rest[1:])
    if value.count(":") == 1:
        host, _, port = value.rpartition(":")
        try:
            return host, int(port)
        except ValueError:
            return value, 0
    return value, 0


def _server_port(text: str) -> int:
    try:
        return int(text)  # as lenient as the server: "+80", " 80" and "٨٠" are 80 too
    except ValueError:
        return 0


def server_rewrote_peer(peer: Sequence[Any] | None, forwarded_for: Sequence[str]) -> bool:
    """Whether the server already replaced the ASGI peer with an X-Forwarded-For entry.

    True when X-Forwarded-For is present and the peer ``(host, port)`` has port 0 (no TCP peer
    does) or equals one of its entries as a server parses them (``host`` alone is port 0), which
    is what uvicorn's ``--proxy-headers`` (on by default) leaves behind. See the module doc.
    """
    if not peer or not any(header.strip() for header in forwarded_for):
        return False
    host, port = peer[0], peer[1] if len(peer) > 1 else None
    if port == 0:
        return True
    if not isinstance(host, str):
        return False
    return any(_server_parse(entry) == (host, port) for entry in _entries(forwarded_for))


def resolve_client_ip(
    peer: Sequence[Any] | None, forwarded_for: Sequence[str], trusted: TrustedProxies
) -> str:
    """The client IP address: the rightmost untrusted hop, normalised (see the module doc).

    ``peer`` is the ASGI ``scope["client"]`` (``(host, port)`` or ``None``) and
    ``forwarded_for`` the X-Forwarded-For header values in order. Returns ``""`` when the peer
    is unknown: a Unix socket with no trusted proxy rule to go by, or a peer the server already
    rewrote from X-Forwarded-For (:func:`server_rewrote_peer`).
    """
    host = peer[0] if peer else None
    if not forwarded_for:
        # Nothing forwarded (the common case): the peer is the client, whatever is trusted.
        return _peer_text(host) if isinstance(host, str) else ""
    address = parse_address(host) if isinstance(host, str) else None
    if address is None or (forwarded_for and server_rewrote_peer(peer, forwarded_for)):
        # No peer to anchor the walk: nothing in X-Forwarded-For can be trusted.
        return ""
    if trusted.hops:
        # The peer is the nearest proxy; with one hop, the client is the rightmost entry.
        client_depth = trusted.hops - 1
        return _walk(address, forwarded_for, lambda _hop, depth: depth == client_depth)
    if not trusted.trusts(address):
        return str(address)
    return _walk(address, forwarded_for, lambda hop, _depth: not trusted.trusts(hop))


def _walk(
    peer: IPAddress, forwarded_for: Sequence[str], is_client: Callable[[IPAddress, int], bool]
) -> str:
    # Right to left from the peer; ``depth`` counts the hops passed before this one.
    current = peer
    entries = [entry for entry in reversed(_entries(forwarded_for)) if entry.strip()]
    for depth, entry in enumerate(entries):
        hop = parse_address(entry)
        if hop is None:
            return str(current)
        if is_client(hop, depth):
            return str(hop)
        current = hop
    # Every hop was a proxy: the leftmost of them is the best we know.
    return str(current)
