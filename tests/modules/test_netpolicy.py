"""The managed-network matcher: which destinations a task may reach (no sockets, no sandbox)."""

from __future__ import annotations

import ipaddress

import pytest

from sandfleet_agent.network.netpolicy import (
    HostPolicy,
    InvalidHost,
    destination_problem,
    parse_authority,
    parse_host,
    parse_resolve,
)

POLICY = HostPolicy(allow=["pypi.org", "*.pythonhosted.org", "*.example.org", "203.0.113.7", "10.1.2.3"],
                    deny=["evil.example.org", "*.ads.example.org"])


@pytest.mark.parametrize(("host", "allowed", "reason"), [
    ("pypi.org", True, "matches allow rule pypi.org"),
    ("www.pypi.org", False, "not in the allow list"),  # no wildcard: exact only
    ("files.pythonhosted.org", True, "matches allow rule *.pythonhosted.org"),
    ("a.b.c.pythonhosted.org", True, "matches allow rule *.pythonhosted.org"),
    ("pythonhosted.org", True, "matches allow rule *.pythonhosted.org"),  # the apex, as Codex does
    ("evilpythonhosted.org", False, "not in the allow list"),  # a suffix is not a subdomain
    ("pythonhosted.org.evil.net", False, "not in the allow list"),
    ("evil.example.org", False, "matches deny rule evil.example.org"),  # deny wins over *.example.org
    ("sub.evil.example.org", True, "matches allow rule *.example.org"),  # exact deny: only that name
    ("ads.example.org", False, "matches deny rule *.ads.example.org"),  # deny wildcard covers its apex
    ("x.y.ads.example.org", False, "matches deny rule *.ads.example.org"),
    ("unlisted.net", False, "not in the allow list"),
])
def test_wildcards_apex_and_deny_wins(host: str, allowed: bool, reason: str) -> None:
    verdict = POLICY.decide(host, 443)
    assert (verdict.allowed, verdict.reason) == (allowed, reason)


@pytest.mark.parametrize("spelling", ["PyPI.org", "PYPI.ORG", "pypi.org.", "Files.PythonHosted.Org."])
def test_case_and_one_trailing_dot_are_normalised(spelling: str) -> None:
    verdict = POLICY.decide(spelling, 443)
    assert verdict.allowed
    assert verdict.host == spelling.lower().rstrip(".")


@pytest.mark.parametrize(("host", "why"), [
    ("pypi.org..", "not a valid host name"),
    ("..pypi.org", "not a valid host name"),
    ("pypi..org", "not a valid host name"),
    ("", "not a valid host name"),
    (".", "not a valid host name"),
    ("pypi.org ", "not a valid host name"),
    (" pypi.org", "not a valid host name"),
    ("pypi.org\x00.evil", "not a valid host name"),
    ("pypi%2eorg", "not a valid host name"),
    ("pypi.org/evil", "not a valid host name"),
    ("user@pypi.org", "not a valid host name"),
    ("*.pythonhosted.org", "not a valid host name"),
    ("-pypi.org", "not a valid host name"),
    ("pypi-.org", "not a valid host name"),
    ("a" * 64 + ".org", "not a valid host name"),
    (".".join(["a" * 60] * 5), "not a valid host name"),  # longer than 253
    ("bücher.example.org", "not an ASCII host name"),  # clients send the punycode form
    ("pyp\u0456.org", "not an ASCII host name"),  # Cyrillic i: a homograph is not pypi.org
    ("\uff50\uff59\uff50\uff49.org", "not an ASCII host name"),  # full-width letters are not folded to ASCII
    ("pypi.org:443", "an IPv6 address must be written in brackets"),
    ("::1", "an IPv6 address must be written in brackets"),
    ("[::1%eth0]", "zone ids"),
    ("[not-v6]", "not a valid IPv6 address"),
    ("999.1.1.1", "not a valid IPv4 address"),
    ("1.2.3.4.5", "not a valid IPv4 address"),
])
def test_junk_is_denied_as_invalid(host: str, why: str) -> None:
    verdict = POLICY.decide(host, 443)
    assert not verdict.allowed
    assert verdict.reason.startswith("invalid destination") and why in verdict.reason
    assert verdict.host.isascii() and "\x00" not in verdict.host and len(verdict.host) <= 83


def test_punycode_names_match_as_written() -> None:
    policy = HostPolicy(["xn--bcher-kva.example"])
    assert policy.decide("xn--bcher-kva.example", 443).allowed
    assert policy.decide("XN--BCHER-KVA.example.", 443).allowed
    assert not policy.decide("xn--bcher-kvb.example", 443).allowed


def test_underscores_in_labels_are_names() -> None:
    assert HostPolicy(["*.example.org"]).decide("_dmarc.example.org", 443).allowed


@pytest.mark.parametrize(("host", "canonical"), [
    ("203.0.113.7", "203.0.113.7"),
    ("0xcb.0.113.7", "203.0.113.7"),  # hex octet
    ("0313.0.113.7", "203.0.113.7"),  # octal octet
    ("3405803783", "203.0.113.7"),  # one 32-bit number
    ("203.28935", "203.0.113.7"),  # a.b with a 24-bit tail
])
def test_every_ipv4_spelling_is_the_address(host: str, canonical: str) -> None:
    verdict = POLICY.decide(host, 443)
    assert verdict.allowed and verdict.host == canonical and verdict.reason == "matches allow rule 203.0.113.7"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "017700000001", "[::1]",
                                  "[::ffff:127.0.0.1]", "198.51.100.1", "[2001:db8::1]"])
def test_ip_literals_are_denied_unless_listed(host: str) -> None:
    verdict = POLICY.decide(host, 80)
    assert not verdict.allowed and verdict.reason == "IP address literal not in the allow list"


def test_wildcards_never_match_addresses() -> None:
    policy = HostPolicy(["*.0.0.1", "*.113.7"])
    assert not policy.decide("127.0.0.1", 80).allowed
    assert not policy.decide("203.0.113.7", 80).allowed


def test_ipv6_is_canonical_and_bracketed_in_decisions() -> None:
    verdict = HostPolicy([]).decide("[2001:DB8:0:0::1]", 443)
    assert verdict.host == "[2001:db8::1]" and not verdict.allowed


@pytest.mark.parametrize(("port", "allowed"), [(1, True), (443, True), (65535, True), (0, False), (65536, False)])
def test_a_star_port_allows_every_valid_port(port: int, allowed: bool) -> None:
    verdict = HostPolicy(["pypi.org:*"]).decide("pypi.org", port)
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.reason == "invalid port"


@pytest.mark.parametrize(("rule", "port", "allowed"), [
    ("pypi.org", 443, True), ("pypi.org", 80, True), ("pypi.org", 22, False), ("pypi.org", 8443, False),
    ("pypi.org:8443", 8443, True), ("pypi.org:8443", 443, False), ("*.pypi.org:8443", 8443, True),
])
def test_rules_carry_ports(rule: str, port: int, allowed: bool) -> None:
    """An allowed name opens 443 and 80 only: the operator mapped a name to a host whose other
    services (ssh, a database) must stay out of reach."""
    verdict = HostPolicy([rule]).decide("pypi.org", port)
    assert verdict.allowed is allowed
    if not allowed:
        assert f"port {port} is not allowed" in verdict.reason


def test_a_deny_rule_without_a_port_denies_every_port() -> None:
    policy = HostPolicy(["*.example.org:*"], ["bad.example.org"])
    assert not policy.decide("bad.example.org", 8080).allowed and policy.decide("ok.example.org", 8080).allowed
    assert HostPolicy(["*.example.org:*"], ["bad.example.org:22"]).decide("bad.example.org", 443).allowed


@pytest.mark.parametrize(("text", "expected"), [
    ("pypi.org:443", ("pypi.org", 443)),
    ("[::1]:8080", ("[::1]", 8080)),
    ("pypi.org", ("pypi.org", 80)),
    ("[::1]", ("[::1]", 80)),
    ("pypi.org:0", ("pypi.org", 0)),  # parses; the policy then refuses port 0
])
def test_authority_parsing(text: str, expected: tuple[str, int]) -> None:
    assert parse_authority(text, 80) == expected


@pytest.mark.parametrize("text", ["pypi.org:", "pypi.org:+80", "pypi.org:0x50", "pypi.org: 80", "pypi.org:123456",
                                  "[::1", "[::1]x", "pypi.org:٤٤٣"])
def test_bad_authorities_are_invalid(text: str) -> None:
    with pytest.raises(InvalidHost):
        parse_authority(text, 80)


def test_connect_needs_a_port() -> None:
    with pytest.raises(InvalidHost, match="port is required"):
        parse_authority("pypi.org")


def test_invalid_rules_are_ignored_rather_than_matching_anything() -> None:
    policy = HostPolicy(["*", "*.", "bad host", "*.[::1]", "ok.org"])
    assert policy.decide("ok.org", 443).allowed
    assert not policy.decide("anything.net", 443).allowed


def test_destinations_must_be_public_unless_the_operator_mapped_them() -> None:
    for private in ("127.0.0.5", "10.1.2.3", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                    "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"):
        address = ipaddress.ip_address(private)
        assert destination_problem(address, from_operator=False), private
        assert destination_problem(address, from_operator=True) is None
    for public in ("203.0.114.7", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"):
        assert destination_problem(ipaddress.ip_address(public), from_operator=False) is None, public


def test_resolve_map_is_checked() -> None:
    assert parse_resolve({"Mirror.Internal.": "10.0.0.5", "v6.test": "[::1]"}) == {
        "mirror.internal": "10.0.0.5", "v6.test": "::1"}
    for bad, message in [
        ([], "must be a mapping"),
        ({"10.0.0.1": "10.0.0.2"}, "is an IP address"),
        ({"a b": "10.0.0.2"}, "not a valid host name"),
        ({"*.x.org": "10.0.0.2"}, "not a valid host name"),
        ({"x.org": "x.org"}, "not an IPv4 or IPv6 address"),
        ({"x.org": ["10.0.0.1"]}, "must map to an IP address string"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_resolve(bad)


def test_parse_host_shapes() -> None:
    assert parse_host("Example.org.").name == "example.org"
    assert parse_host("Example.org.").address is None
    assert str(parse_host("127.1").address) == "127.0.0.1"
    assert parse_host("[::1]").shown == "[::1]"
