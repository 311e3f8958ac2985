"""Host names as inventories write them: ``web[01:20]:2222``, ``db-[a:c]``, ``[fe80::1]:22``.

A port of Ansible's ``parse_address`` and ``expand_hostname_range`` so that the same line gives
the same hosts here as there: zero padding kept, ``[1:10:2]`` strides, letter ranges over
``a-zA-Z``, several ranges in one name, and ``:port`` split off only where it cannot be part of an
IPv6 address.
"""

from __future__ import annotations

import re
import string
from typing import Optional

_NUMERIC_RANGE = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_HEX_RANGE = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_IPV6_PART = rf"(?:[0-9a-f]{{1,4}}|{_HEX_RANGE})"
_IPV4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_LABEL = rf"(?:[\w]|{_ALNUM_RANGE})(?:[\w_-]|{_ALNUM_RANGE})*(?<![_-])"

_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
IPV4 = re.compile(rf"^(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}$", re.I)
_H = _IPV6_PART
IPV6 = re.compile(
    rf"^((?:{_H}:){{7}}{_H}|(?:{_H}:){{1,6}}:|(?:{_H}:)(?::{_H}){{1,6}}|(?:{_H}:){{2}}(?::{_H}){{1,5}}|"
    rf"(?:{_H}:){{3}}(?::{_H}){{1,4}}|(?:{_H}:){{4}}(?::{_H}){{1,3}}|(?:{_H}:){{5}}(?::{_H}){{1,2}}|"
    rf"(?:{_H}:){{6}}(?::{_H})|:(?::{_H}){{1,6}}|{_H}?::|(?:0:){{6}}(?:{_H}\.){{3}}{_H}|"
    rf"::(?:ffff:)?(?:{_H}\.){{3}}{_H}|(?:0:){{5}}ffff:(?:{_H}\.){{3}}{_H})$",
    re.I,
)
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.I | re.UNICODE)


class RangeError(ValueError):
    """A ``[x:y]`` range that cannot be expanded; the caller adds where it was written."""


def parse_address(address: str) -> Optional[tuple[str, Optional[int]]]:
    """Split ``host:port`` the way Ansible does; ``None`` when it is not a recognisable address.

    The port is optional on a bare name or IPv4 address and mandatory after ``[...]``, so an
    IPv6 address only carries a port when bracketed.
    """
    port: Optional[int] = None
    for regex in (_BRACKETED_HOSTPORT, _HOSTPORT):
        m = regex.match(address)
        if m:
            address, port = m.group(1), int(m.group(2))
    for regex in (IPV4, IPV6, _HOSTNAME):
        if regex.match(address):
            return address, port
    return None


def is_ip_address(name: str) -> bool:
    return bool(IPV4.match(name) or IPV6.match(name))


def expand_host_pattern(pattern: str) -> tuple[list[str], Optional[int]]:
    """The host names and the port one inventory host entry stands for.

    Raises :class:`RangeError` for a malformed range such as ``web[1:x]``.
    """
    parsed = parse_address(pattern)
    name, port = parsed if parsed is not None else (pattern, None)
    names = expand_ranges(name) if "[" in name else [name]
    return names, port


def expand_ranges(name: str) -> list[str]:
    """Expand the first ``[beg:end(:step)]`` in ``name``, then the rest recursively."""
    parts = name.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise RangeError(f"unterminated range in host name {name!r}")
    head, body, tail = parts
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise RangeError(f"host range [{body}] must be begin:end or begin:end:step")
    beg, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise RangeError(f"host range [{body}] must specify an end value")
    width = len(beg) if beg[0] == "0" and len(beg) > 1 else 0
    if width and width != len(end):
        raise RangeError(f"host range [{body}] must have begin and end of equal length to keep zero padding")
    try:
        step = int(step_text)
    except ValueError:
        raise RangeError(f"host range [{body}] has a step that is not a number") from None
    if step <= 0:
        raise RangeError(f"host range [{body}] must have a step of 1 or more")
    items: list[str]
    if beg in string.ascii_letters and end in string.ascii_letters and len(beg) == len(end) == 1:
        i_beg, i_end = string.ascii_letters.index(beg), string.ascii_letters.index(end)
        if i_beg > i_end:
            raise RangeError(f"host range [{body}] must have begin <= end")
        items = list(string.ascii_letters[i_beg:i_end + 1:step])
    else:
        try:
            numbers = range(int(beg), int(end) + 1, step)
        except ValueError:
            raise RangeError(
                f"host range [{body}] must be numbers (like [01:20]) or single letters (like [a:f])"
            ) from None
        if not numbers:
            raise RangeError(f"host range [{body}] is empty: begin must be <= end")
        items = [str(n).zfill(width) for n in numbers]
    out: list[str] = []
    for item in items:
        expanded = f"{head}{item}{tail}"
        out.extend(expand_ranges(expanded) if "[" in expanded else [expanded])
    return out
