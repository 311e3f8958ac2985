"""Which destinations a managed-network task may reach: the proxy's allow/deny decision.

Pure functions, no sockets: the proxy (:mod:`.netproxy`) asks :meth:`HostPolicy.decide` about the
host and port a client named, and :func:`destination_problem` about the addresses it is about to
connect to. Decisions, and why:

* **Names are normalised before matching**: lower-cased, one trailing dot dropped
  (``Example.ORG.`` is ``example.org``). A name must be ASCII: dot-separated labels of letters,
  digits, ``-`` and ``_`` (1-63 characters, 253 in all). Anything else (non-ASCII, spaces, ``%``
  escapes, empty labels, ``..``) is denied as invalid rather than guessed at: clients send the
  punycode (``xn--``) form, and a name we cannot parse is a name two parsers could read differently.
* **Rules**: ``example.org`` matches exactly that name; ``*.example.org`` matches every subdomain
  *and the apex* ``example.org`` (as Codex's proxy does). **Deny wins** over allow. Rules carry
  ports: an allow rule ``name`` opens ports 443 and 80 only, ``name:8443`` that port, ``name:*``
  every port (an allowed name must not open every service on its address); a deny rule without
  a port denies every port.
* **IP literals** are denied unless listed themselves (``10.1.2.3`` in ``allow``); a wildcard never
  matches an address. Every spelling ``inet_aton`` accepts counts as an address, so ``127.1``,
  ``2130706433`` and ``0x7f.0.0.1`` are all ``127.0.0.1``: a name that the resolver would read as
  an address is treated as that address. IPv6 literals come bracketed (``[::1]``); zone ids are
  invalid.
* **Non-public addresses** (loopback, private, link-local such as cloud metadata, CGNAT, ...) are
  reachable only through the operator's resolve map (:func:`parse_resolve`, the inventory's
  ``sandfleet_network_resolve``): a playbook's allow list, written by a possibly untrusted author,
  must not open the agent host's own services or its LAN, whether by listing ``127.0.0.1`` or by
  allowing a public name whose DNS answer points inward.
* The resolve map only says *where* a name is; it never allows anything by itself.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_MAX_SHOWN = 80  # longest host name echoed back in a decision


class InvalidHost(ValueError):
    """A destination that is neither a valid host name nor an IP literal."""


@dataclass(frozen=True)
class Host:
    """A destination as matched: ``name`` is canonical (lower-case name, dotted quad, or bracket-less
    compressed IPv6); ``address`` is set for IP literals."""

    name: str
    address: Optional[IpAddress] = None

    @property
    def shown(self) -> str:
        return f"[{self.name}]" if isinstance(self.address, ipaddress.IPv6Address) else self.name


@dataclass(frozen=True)
class Verdict:
    """``host`` is what the decision shows (canonical when it parsed, else the raw text cut short);
    ``target`` the parsed destination, set whenever the host was valid."""

    allowed: bool
    host: str
    port: int
    reason: str
    target: Optional[Host] = None


def shown_raw(text: str) -> str:
    """A raw, possibly hostile host string made safe to echo: printable ASCII, bounded length."""
    safe = "".join(c if 32 < ord(c) < 127 else "?" for c in text)
    return safe if len(safe) <= _MAX_SHOWN else safe[:_MAX_SHOWN] + "..."


def parse_host(text: str) -> Host:
    """The canonical form of a destination host, or :class:`InvalidHost` saying why not."""
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if "%" in inner:
            raise InvalidHost("IPv6 zone ids are not allowed")
        try:
            return Host(str(ipaddress.IPv6Address(inner)), ipaddress.IPv6Address(inner))
        except ValueError:
            raise InvalidHost("not a valid IPv6 address") from None
    if not text.isascii():
        raise InvalidHost("not an ASCII host name (send the punycode xn-- form)")
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if ":" in name:
        raise InvalidHost("an IPv6 address must be written in brackets")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidHost("not a valid host name")
    if all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        try:
            packed = socket.inet_aton(name)
        except OSError:
            raise InvalidHost("not a valid IPv4 address") from None
        address = ipaddress.IPv4Address(packed)
        return Host(str(address), address)
    return Host(name)


def parse_authority(text: str, default_port: Optional[int] = None) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) split into the raw host and the port; the port must be plain
    decimal digits. Without a port, ``default_port`` (or :class:`InvalidHost` when there is none)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidHost("unclosed '[' in the address")
        host, rest = text[: end + 1], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise InvalidHost("junk after the IPv6 address")
        port_text = rest[1:] if rest else None
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
    else:
        host, port_text = text, None
    if port_text is None:
        if default_port is None:
            raise InvalidHost("a port is required (host:port)")
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise InvalidHost("the port must be a decimal number")
    return host, int(port_text)


#: The ports an allow rule without one opens: HTTPS and HTTP.
DEFAULT_PORTS = (443, 80)


@dataclass(frozen=True)
class _Rule:
    """One allow or deny entry, parsed: the name it matches and on which ports."""

    text: str  # as written, for the decision's reason
    name: str  # canonical, wildcard stripped
    wildcard: bool
    ports: Optional[tuple[int, ...]]  # None: every port

    def matches(self, host: Host, port: int) -> bool:
        if self.ports is not None and port not in self.ports:
            return False
        if host.address is not None:
            return not self.wildcard and self.name == host.name
        return host.name == self.name or (self.wildcard and host.name.endswith("." + self.name))


def _rule(text: str, default_ports: Optional[tuple[int, ...]]) -> Optional[_Rule]:
    name, sep, port = text.rpartition(":") if ":" in text and not text.endswith("]") else (text, "", "")
    ports = default_ports
    if sep:
        if port == "*":
            ports = None
        elif port.isdigit() and 1 <= int(port) <= 65535:
            ports = (int(port),)
        else:
            return None
    wildcard = name.startswith("*.")
    try:
        host = parse_host(name[2:] if wildcard else name)
    except InvalidHost:
        return None  # the controller validates rules; one that cannot parse cannot match a valid host
    if wildcard and host.address is not None:
        return None
    return _Rule(text, host.name, wildcard, ports)


class HostPolicy:
    """A task's allow and deny lists, ready to decide about destinations."""

    def __init__(self, allow: Sequence[str], deny: Sequence[str] = ()) -> None:
        self.allow = [r for r in (_rule(t, DEFAULT_PORTS) for t in allow) if r is not None]
        self.deny = [r for r in (_rule(t, None) for t in deny) if r is not None]

    def decide(self, raw_host: str, port: int) -> Verdict:
        try:
            host = parse_host(raw_host)
        except InvalidHost as exc:
            return Verdict(False, shown_raw(raw_host), port, f"invalid destination: {exc}")
        if not 1 <= port <= 65535:
            return Verdict(False, host.shown, port, "invalid port", host)
        denied = next((r for r in self.deny if r.matches(host, port)), None)
        if denied is not None:
            return Verdict(False, host.shown, port, f"matches deny rule {denied.text}", host)
        allowed = next((r for r in self.allow if r.matches(host, port)), None)
        if allowed is not None:
            return Verdict(True, host.shown, port, f"matches allow rule {allowed.text}", host)
        if any(r.matches(host, r.ports[0] if r.ports else port) for r in self.allow):
            shown = ", ".join(str(p) for p in next(r.ports for r in self.allow if r.ports and
                                                    r.matches(host, r.ports[0])))
            return Verdict(False, host.shown, port, f"port {port} is not allowed for this name (allowed: {shown}; "
                           f"write name:{port} or name:* to allow it)", host)
        if host.address is not None:
            return Verdict(False, host.shown, port, "IP address literal not in the allow list", host)
        return Verdict(False, host.shown, port, "not in the allow list", host)


def destination_problem(address: IpAddress, from_operator: bool) -> Optional[str]:
    """Why the proxy must not connect to ``address`` (``None`` when it may). Addresses the
    operator's resolve map named are trusted; any other must be globally routable."""
    if from_operator:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_global and not address.is_multicast:
        return None
    return (f"{address} is not a public address; only the operator's sandfleet_network_resolve "
            "can point a name at a loopback, private or link-local address")


def parse_resolve(value: object) -> dict[str, str]:
    """The operator's name → address map, checked: names as :func:`parse_host` accepts them (not
    IP literals), values single IPv4/IPv6 addresses. Raises ``ValueError`` saying what is wrong."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of host name to IP address")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or key.startswith("["):
            raise ValueError(f"{key!r} is not a host name")
        try:
            host = parse_host(key)
        except InvalidHost as exc:
            raise ValueError(f"{key!r}: {exc}") from None
        if host.address is not None:
            raise ValueError(f"{key!r} is an IP address; map host names only")
        if not isinstance(item, str):
            raise ValueError(f"{key!r} must map to an IP address string, not {type(item).__name__}")
        try:
            address = ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            raise ValueError(f"{key!r} maps to {item!r}, which is not an IPv4 or IPv6 address") from None
        out[host.name] = str(address)
    return out
