"""Where storeops may send a store's status: URLs refused when they point inside the platform. Pure.

A store entry may name a callback URL, and the status reader POSTs to it from inside the cluster.
Without a check that is a way to make storeops call the cloud's metadata service, the API server,
or any Service in the cluster. Two checks, both here:

* :func:`url_problem`, at validation: no name is resolved (pull-request checks stay deterministic),
  so it refuses what the URL says literally: userinfo (a secret in Git), a scheme other than
  http(s), an address of a refused kind in any notation Python's or a resolver's parsers accept
  (``127.1``, ``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]``, ...), and
  names that only mean something inside a cluster or a host (``localhost``, ``*.svc``,
  ``*.cluster.local``, ``*.internal``, single-label names);
* :func:`address_problem`, at send time, on every address the name resolves to: the sender
  connects only to an address it checked (see ``webhook.status.callbacks``).

Operators who do want an internal receiver allow it explicitly (``STOREOPS_CALLBACK_ALLOW``: hosts
and networks), which both checks honour.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Allowed", "address_problem", "literal_address", "url_problem"]

#: Names that resolve to something inside a host or a cluster, never to a receiver on the internet.
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".svc", ".cluster.local", ".localdomain", ".home.arpa",
                      ".intranet", ".lan", ".corp")
_INTERNAL_NAMES = ("localhost", "localhost.localdomain", "metadata", "kubernetes", "instance-data")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


@dataclass(frozen=True)
class Allowed:
    """Exceptions an operator made: host names (exact) and networks that may be called."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> Allowed:
        """``127.0.0.1/32,receiver.internal`` -> networks and host names; raises ValueError naming a bad item."""
        hosts: set[str] = set()
        networks = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if not re.fullmatch(r"[A-Za-z0-9.-]+", item):
                    raise ValueError(f"{item!r} is neither a network (10.0.0.0/8) nor a host name") from None
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def permits_address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


NOTHING_ALLOWED = Allowed()


def literal_address(host: str) -> Address | None:
    """The address a host part spells, in every notation resolvers accept, or None for a name.

    Besides dotted quads and IPv6 (with brackets or a zone), inet_aton's forms: fewer parts
    (``127.1``), hexadecimal and octal parts, and a bare 32-bit number.
    """
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.fullmatch(p) for p in parts):
        return None
    try:
        packed = socket.inet_aton(text)
    except OSError:
        return None
    return ipaddress.IPv4Address(packed)


def address_problem(address: Address, allowed: Allowed = NOTHING_ALLOWED) -> str:
    """Why a receiver at ``address`` is refused ('' when it is not)."""
    if allowed.permits_address(address):
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            problem = address_problem(embedded, allowed)
            return f"{problem} (embedded in {address})" if problem else ""
    kinds = (("loopback", address.is_loopback), ("link-local", address.is_link_local),
             ("private", address.is_private), ("unspecified", address.is_unspecified),
             ("multicast", address.is_multicast), ("reserved", address.is_reserved),
             ("shared (carrier-grade NAT)", isinstance(address, ipaddress.IPv4Address)
              and address in ipaddress.IPv4Network("100.64.0.0/10")),
             ("not globally reachable", not address.is_global))
    for kind, applies in kinds:
        if applies:
            return f"{address} is a {kind} address"
    return ""


def url_problem(url: str, allowed: Allowed = NOTHING_ALLOWED) -> str:
    """Why the callback URL ``url`` is refused ('' when it is not). Resolves nothing."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - reading it checks it
    except ValueError as e:
        return f"is not a URL storeops can call: {e}"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if "@" in parts.netloc:
        return "must not carry a user name or password (they would sit in Git); use the callback secret"
    if not host:
        return "has no host"
    if allowed.permits_host(host):
        return ""
    address = literal_address(host)
    if address is not None:
        problem = address_problem(address, allowed)
        return f"points inside the platform: {problem}" if problem else ""
    name = host.rstrip(".").lower()
    if "." not in name or name in _INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES):
        return f"points inside the platform: {host!r} is a name only a cluster or a host resolves"
    return ""


def problems_of(urls: Sequence[str], allowed: Allowed = NOTHING_ALLOWED) -> list[tuple[str, str]]:
    return [(url, problem) for url in urls if (problem := url_problem(url, allowed))]
