"""Host patterns (``hosts:`` and ``--limit``), with Ansible's grammar and evaluation order.

``a:b`` or ``a,b`` is a union, ``&x`` intersects, ``!x`` excludes; plain terms are applied first,
then intersections, then exclusions, whatever order they were written in, and a pattern made
only of ``&``/``!`` terms starts from ``all``. A term is a host or group name, a glob
(``web*``, ``*.example.com``), a regex after ``~`` (anchored at the start only, as
``re.match``), optionally followed by a subscript ``[0]``, ``[-1]``, ``[1:3]`` (inclusive end,
as in Ansible) or ``[2:]``. Matching nothing is not an error; a pattern that cannot be read is,
and so is an index past the end of what the term matched (as in Ansible).

Deliberate differences from Ansible: an empty pattern or limit is an error (Ansible silently
takes it as "all hosts"); a ``[`` without its ``]`` is an error (Ansible silently drops it, and
``~[`` then matches every host); a subscript that is almost right (``web[-2:]``, ``web[1:2:3]``)
is an error instead of being read as a glob.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from typing import Callable, Optional

from sandfleet.errors import InputError
from sandfleet.inventory.model import LOCALHOST_NAMES, Group, hosts_under
from sandfleet.inventory.ranges import parse_address

_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
_SUBSCRIPT_LIKE = re.compile(r"^(.+)\[([-0-9:]*[0-9][-0-9:]*)\]$")
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_GLOB_CHARS = (".", "?", "*", "[")
SUBSCRIPT_FORMS = ("[N]", "[-N]", "[N:M]", "[N:]")


def split_pattern(pattern: str) -> list[str]:
    """Split into terms: on commas if there are any, else on colons outside ``[...]``.

    A pattern that is one address (``fe80::1``, ``web[1:3]``, ``host:22``) is one term, so IPv6
    addresses and ranges survive; that is why a comma is the safer separator.
    """
    if "," in pattern:
        terms = pattern.split(",")
    elif parse_address(pattern) is not None:
        terms = [pattern]
    else:
        terms = _COLON_TERM.findall(pattern)
        leftover = _COLON_TERM.sub("", pattern)
        if leftover.strip(": \t\r\n"):
            raise InputError(f"invalid host pattern {pattern!r}: unbalanced '[' or ']'")
    return [term.strip() for term in terms if term.strip()]


def order_terms(terms: Sequence[str]) -> list[str]:
    """Unions first, then ``&`` intersections, then ``!`` exclusions; ``all`` if no union."""
    plain = [t for t in terms if t and t[0] not in "&!"]
    both = [t for t in terms if t and t[0] == "&"]
    minus = [t for t in terms if t and t[0] == "!"]
    return (plain or ["all"]) + both + minus


class PatternMatcher:
    """Evaluates patterns against one inventory's groups and hosts."""

    def __init__(self, groups: Mapping[str, Group], hosts: Sequence[str],
                 localhost: Callable[[str], Optional[str]]) -> None:
        self._groups = groups
        self._hosts = tuple(hosts)
        self._host_set = frozenset(hosts)
        self._localhost = localhost
        self._group_hosts: dict[str, list[str]] = {}

    def group_hosts(self, name: str) -> list[str]:
        if name not in self._group_hosts:
            self._group_hosts[name] = hosts_under(self._groups, name)
        return self._group_hosts[name]

    def select(self, pattern: str, limit: Optional[str] = None) -> list[str]:
        if not pattern or not pattern.strip():
            raise InputError("empty host pattern", allowed=("all", "a group", "a host", "a glob", "~regex"))
        hosts = self.evaluate(split_pattern(pattern))
        if limit is not None:
            allowed = set(self.evaluate(limit_terms(limit)))
            hosts = [h for h in hosts if h in allowed]
        return hosts

    def unmatched(self, pattern: str) -> list[str]:
        """The terms of ``pattern`` that match no host (without their ``&``/``!``), for
        Ansible's warning "Could not match supplied host pattern, ignoring: TERM"."""
        out: list[str] = []
        for term in split_pattern(pattern):
            bare = term[1:] if term[0] in "&!" else term
            if bare and bare not in self._host_set and not self._match_term(bare):
                out.append(bare)
        return out

    def evaluate(self, terms: Sequence[str]) -> list[str]:
        hosts: list[str] = []
        present: set[str] = set()
        for term in order_terms(terms):
            if term in self._host_set:
                matched = [term]
            else:
                matched = self._match_term(term[1:] if term[0] in "&!" else term)
            if term[0] == "!":
                drop = set(matched)
                hosts = [h for h in hosts if h not in drop]
            elif term[0] == "&":
                keep = set(matched)
                hosts = [h for h in hosts if h in keep]
            else:
                for host in matched:
                    if host not in present:
                        present.add(host)
                        hosts.append(host)
            present = set(hosts)
        return hosts

    def _match_term(self, term: str) -> list[str]:
        if not term:
            return []
        expr, subscript = _split_subscript(term)
        matched = self._enumerate(expr)
        if subscript is None or not matched:
            return matched
        start, end = subscript
        if end:  # a slice, inclusive of its end; [x:] runs to the last host
            return matched[start:(len(matched) if end == -1 else end + 1)]
        if not -len(matched) <= start < len(matched):  # [x] (and Ansible's reading of [x:0])
            raise InputError(f"subscript in host pattern {term!r} is out of range: {expr!r} matches "
                             f"{len(matched)} host(s), indexes {-len(matched)} to {len(matched) - 1}")
        return [matched[start]]

    def _enumerate(self, expr: str) -> list[str]:
        regex = _compile(expr)
        groups = [g for g in self._groups if regex.match(g)]
        results: list[str] = []
        for group in groups:
            results.extend(self.group_hosts(group))
        if not groups or expr[0] == "~" or any(c in expr for c in _GLOB_CHARS):
            results.extend(h for h in self._hosts if regex.match(h))
        if not results and expr in LOCALHOST_NAMES:
            implicit = self._localhost(expr)
            if implicit is not None:
                results.append(implicit)
        return results


def limit_terms(limit: str) -> list[str]:
    """The terms of a ``--limit``; ``@file`` stands for the host names in that file, one a line."""
    if not limit.strip():
        raise InputError("empty --limit pattern (leave the option out to select every host)")
    terms: list[str] = []
    for term in split_pattern(limit):
        if term.startswith("@"):
            terms.extend(_read_limit_file(term[1:]))
        else:
            terms.append(term)
    return terms


def _read_limit_file(path: str) -> list[str]:
    if not os.path.exists(path):
        raise InputError(f"limit file {path!r} not found (a limit starting with '@' names a file "
                         "of host names, one a line)")
    if not os.path.isfile(path):
        raise InputError(f"limit file {path!r} is a directory; a limit starting with '@' must name a file")
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.strip() for line in fh.read().split("\n") if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read limit file {path!r}: {exc}") from None


def _split_subscript(term: str) -> tuple[str, Optional[tuple[int, Optional[int]]]]:
    if term[0] == "~":
        return term, None
    m = _SUBSCRIPT.match(term)
    if m:
        expr, index, start, _sep, end = m.groups()
        if index is not None:
            return expr, (int(index), None)
        return expr, (int(start), int(end) if end else -1)
    bad = _SUBSCRIPT_LIKE.match(term)
    if bad:
        raise InputError(f"invalid subscript [{bad.group(2)}] in host pattern {term!r}",
                         allowed=SUBSCRIPT_FORMS)
    return term, None


def _compile(expr: str) -> re.Pattern[str]:
    try:
        return re.compile(expr[1:] if expr[0] == "~" else fnmatch.translate(expr))
    except re.error as exc:
        raise InputError(f"invalid regular expression in host pattern {expr!r}: {exc}") from None
