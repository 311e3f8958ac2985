"""macOS Seatbelt backend: ``/usr/bin/sandbox-exec -p PROFILE -DNAME=VALUE … -- argv``.

The profile is SBPL rendered from ``templates/seatbelt.sbpl.j2``; the argv from ``seatbelt.j2``.
Paths never appear in the profile text: each one is a ``-DNAME=VALUE`` parameter the profile
refers to as ``(param "NAME")``. The only literals that do are regexes (deny globs, protected
names) and fixed strings, written with the ``sbpl`` filter. Codex's seatbelt.rs is the model
(Codex's); the layout of roots and exclusions follows its ``READABLE_ROOT_i`` /
``WRITABLE_ROOT_i_EXCLUDED_j`` parameters.

Enforced: ``(deny default)``; the command may fork, exec and signal within its own sandbox and
read the sysctls, Mach services and devices a toolchain needs (``/dev/null``, the random
devices, ptys). Reads (with executable mapping and ``exec``) only under readable roots,
writes only under writable roots; a weaker path inside a root (a read-only ``.git``, a denied
path) is excluded with ``require-not`` on both ``literal`` and ``subpath``, so it can be neither
used nor created. A protected name (``.git``) is also excluded by a root-anchored regex that
ignores case, because APFS does and ``mkdir .GIT`` would otherwise plant a repository. Deny
globs become anchored regexes denied last, so they also cover files created after launch (the
Linux backends cannot). ``:minimal`` adds the platform paths a process needs to start. Network
none: no network operation at all; full: any, plus the system services name resolution and TLS
use; managed: one outbound TCP connection target, ``localhost:<proxy port>``, nothing else (no
DNS, no trust daemon: a TLS client that verifies through trustd fails rather than leak).

Refused: a policy bound for another OS; managed network without the host-side proxy; a working
directory the policy does not let the command read; a deny glob :func:`..globs.validate` cannot
compile (a reversed range ``[z-a]``: never rendered into a profile), or whose ``[...]`` class holds
a character a POSIX bracket expression cannot hold literally (``\\``, ``[``, non-ASCII, controls);
``sandbox-exec`` missing.

Checking by hand on a Mac: ``sandfleet run PB -i INV --dry-run --format json`` for a host with
``sandfleet_os: macos`` (and that Mac's own ``sandfleet_workspace_roots``) gives ``wrapper.argv``; run
it as is, or swap the command after ``--`` for ``/bin/sh`` to try things by hand: ``touch ~/outside``
and ``mkdir .git/hooks/x`` (or ``.GIT``) must fail with "Operation not permitted", ``touch x`` in the
workspace must work, ``curl https://example.com`` must fail for network none. ``log stream --style
compact --predicate 'sender=="Sandbox"'`` shows each denial as it happens.

Known limits: Seatbelt matches canonical paths (``/private/tmp``), so every path is canonical here;
on a case-insensitive volume a denied path can still be created under another spelling (only
protected names are matched ignoring case); ``?`` and ``[...]`` in a deny glob match one byte,
so they do not stand for a non-ASCII character.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from sandfleet_agent.backends.base import Backend, ProxyEndpoint, Refused, Wrapper
from sandfleet_agent.backends.render import render_argv, render_text
from sandfleet_agent.binding.bind import PROTECTED_NAMES, BoundPolicy
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.binding.hostfs import AssumedFs, FsView, LocalFs
from sandfleet_agent.paths import strictly_below
from sandfleet_agent.portable.globs import GLOB_MAGIC, GlobError, name_regex, unholdable, validate
from sandfleet_agent.portable.intent import Access, NetworkMode

SANDBOX_EXEC = "/usr/bin/sandbox-exec"  # never from PATH: a planted sandbox-exec would be the sandbox
PROFILE_FILE = "seatbelt.sb"
_READABLE = (Access.READ, Access.WRITE)


@dataclass
class AccessRoot:
    """One ``(allow … (require-all (subpath ROOT) (require-not …)…))`` component."""

    param: str
    path: str
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (param, path)
    regexes: list[str] = field(default_factory=list)  # protected names, case-insensitive

    @property
    def unconditional(self) -> bool:
        """The filesystem root with nothing carved out: the operation is simply allowed."""
        return self.path == "/" and not self.excluded and not self.regexes


@dataclass(frozen=True)
class Profile:
    """Everything the template needs; ``params`` in ``-D`` order (readable, then writable)."""

    read_roots: tuple[AccessRoot, ...]
    write_roots: tuple[AccessRoot, ...]
    deny_regexes: tuple[str, ...]
    network: NetworkMode
    proxy_port: Optional[int]
    platform_defaults: bool

    @property
    def params(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for root in (*self.read_roots, *self.write_roots):
            if not root.unconditional:
                out.append((root.param, root.path))
                out.extend(root.excluded)
        return out


class Seatbelt(Backend):
    name = "seatbelt"

    def __init__(self, facts: HostFacts, proxy: Optional[ProxyEndpoint] = None, fs: Optional[FsView] = None) -> None:
        super().__init__(facts, proxy)
        self.fs = fs or (AssumedFs("macos") if self.facts.assumed else LocalFs())

    def render(self, policy: BoundPolicy, argv: Sequence[str]) -> Wrapper:
        if not argv:
            raise ValueError("nothing to run: argv is empty")
        exe = self._binary()
        profile = self.profile(policy)
        text = render_text("seatbelt.sbpl.j2", p=profile)
        words = render_argv("seatbelt.j2", exe=exe, profile=text,
                            defines=[f"-D{name}={path}" for name, path in profile.params], argv=list(argv))
        return Wrapper(self.name, tuple(words), files={PROFILE_FILE: text}, cwd=self._canonical(policy.cwd))

    def _binary(self) -> str:
        status = self.facts.backend(self.name)
        if status is None or not status.available:
            reason = status.reason if status and status.reason else "seatbelt was not probed on this host"
            raise Refused(f"seatbelt cannot run here: {reason}")
        return status.path or SANDBOX_EXEC

    def _canonical(self, path: str) -> str:
        return self.fs.realpath(posixpath.normpath(path))

    # -- the profile ------------------------------------------------------------------------

    def profile(self, policy: BoundPolicy) -> Profile:
        if policy.os != "macos":
            raise Refused(f"seatbelt enforces macOS policies only; this one was bound for {policy.os}")
        port: Optional[int] = None
        if policy.network.mode is NetworkMode.MANAGED:
            if self.proxy is None:
                raise Refused("managed network needs the host-side proxy, and none is running for this task; "
                              "Seatbelt would otherwise have to open the network or close it entirely")
            port = int(self.proxy.port)
        if policy.access(policy.cwd) not in _READABLE:
            raise Refused(f"the working directory {policy.cwd} is not readable under this policy "
                          "(give it a read or write rule, or choose another cwd)")
        rules: dict[str, Access] = {}
        for rule in policy.rules:
            path = self._canonical(rule.path)
            if path not in rules or rule.access.precedence > rules[path].precedence:
                rules[path] = rule.access
        read_roots, write_roots = _roots(sorted(rules.items(), key=lambda r: (_depth(r[0]), r[0])),
                                         policy.protected_names)
        deny = [regex for pattern in policy.deny_globs for regex in self._deny_regexes(pattern)]
        full_read = any(r.path == "/" for r in read_roots)
        return Profile(tuple(read_roots), tuple(write_roots), tuple(dict.fromkeys(deny)), policy.network.mode,
                       port, policy.minimal_read and not full_read)

    def _deny_regexes(self, pattern: str) -> list[str]:
        """The regexes for one deny glob, as written and with its canonical prefix. A glob the
        engine cannot compile (``[z-a]``) is refused: rendered, it would be a profile that
        ``sandbox-exec`` rejects, or one that denies something other than what was asked."""
        try:
            validate(pattern)
        except GlobError as exc:
            raise Refused(str(exc)) from None
        return [glob_regex(variant) for variant in dict.fromkeys([pattern, self._canonical_prefix(pattern)])]

    def _canonical_prefix(self, pattern: str) -> str:
        """The pattern with its literal leading directories canonicalized (``/tmp`` → ``/private/tmp``),
        since Seatbelt sees canonical paths; globs themselves are never resolved."""
        parts = posixpath.normpath(pattern).split("/")
        literal = 1
        while literal < len(parts) and not GLOB_MAGIC.search(parts[literal]):
            literal += 1
        if literal >= len(parts):
            return self._canonical(pattern)
        prefix = "/".join(parts[:literal]) or "/"
        return posixpath.join(self._canonical(prefix), *parts[literal:])


def _roots(rules: list[tuple[str, Access]], names: tuple[str, ...] = PROTECTED_NAMES,
           ) -> tuple[list[AccessRoot], list[AccessRoot]]:
    """Readable and writable roots with their exclusions. A rule starts a root when the path's
    parent is not already readable (writable); a weaker rule inside one is excluded from it. A
    stronger rule below an exclusion (a writable dir inside a denied one) starts its own root,
    so nested grants need no rule ordering in the profile."""
    access_of = dict(rules)
    read_of: dict[str, AccessRoot] = {}
    write_of: dict[str, AccessRoot] = {}
    reads: list[AccessRoot] = []
    writes: list[AccessRoot] = []
    for path, access in rules:
        parent = _parent_rule(rules, path)
        p_access = access_of[parent] if parent is not None else None
        if access in _READABLE:
            if parent is not None and p_access in _READABLE:
                read_of[path] = read_of[parent]
            else:
                read_of[path] = AccessRoot(f"READABLE_ROOT_{len(reads)}", path)
                reads.append(read_of[path])
        elif parent is not None and p_access in _READABLE:
            root = read_of[parent]
            root.excluded.append((f"{root.param}_EXCLUDED_{len(root.excluded)}", path))
        if access is Access.WRITE:
            if parent is not None and p_access is Access.WRITE:
                write_of[path] = write_of[parent]
            else:
                write_of[path] = AccessRoot(f"WRITABLE_ROOT_{len(writes)}", path)
                writes.append(write_of[path])
        elif parent is not None and p_access is Access.WRITE:
            root = write_of[parent]
            root.excluded.append((f"{root.param}_EXCLUDED_{len(root.excluded)}", path))
            name = posixpath.basename(path)
            if name.lower() in {n.lower() for n in names if "/" not in n}:
                root.regexes.append(protected_regex(posixpath.dirname(path), name))
    return reads, writes


def _parent_rule(rules: list[tuple[str, Access]], path: str) -> Optional[str]:
    best: Optional[str] = None
    for other, _ in rules:
        if strictly_below(path, other) and (best is None or _depth(other) > _depth(best)):
            best = other
    return best


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


# -- regexes (POSIX extended, as Seatbelt's matcher reads them) ---------------------------------

_ERE_SPECIAL = re.compile(r"([.\[\\()*+?{|^$])")


def ere_escape(text: str) -> str:
    """A literal for a POSIX extended regex. ``]`` and ``}`` are literal on their own there and
    are left alone, since a backslash before them is undefined in POSIX."""
    return _ERE_SPECIAL.sub(r"\\\1", text)


def protected_regex(parent: str, name: str) -> str:
    """``^<parent>/<name>(/.*)?$`` with the name matched ignoring case (``.GIT`` is ``.git`` on APFS)."""
    ci = "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() and c.isascii() else ere_escape(c) for c in name)
    base = "" if parent == "/" else ere_escape(parent)
    return f"^{base}/{ci}(/.*)?$"


def glob_regex(pattern: str) -> str:
    """The anchored regex for an absolute deny glob, with :mod:`..globs` semantics (``**`` spans
    directories, ``*``/``?``/``[..]`` stay within a name and match dotfiles). The text matches
    Codex's translation; ``(.*/)?`` equals ``([^/]+/)*`` on canonical paths."""
    parts = [p for p in posixpath.normpath(pattern).split("/") if p]
    if not any(GLOB_MAGIC.search(p) for p in parts):
        return "^" + ere_escape(posixpath.normpath(pattern)) + "(/.*)?$"
    out = "^/"
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(.*/)?"
        else:
            out += name_regex(part, ere_escape, lambda t: _bracket(t.text, t.negated, pattern)) + ("" if last else "/")
    return out + "$"


def _bracket(body: str, negated: bool, pattern: str) -> str:
    """A POSIX bracket expression: ``]`` first, ``-`` last, ranges kept (as :mod:`..globs` keeps
    them: a ``-`` between two non-``-`` characters)."""
    bad = unholdable(body)
    if bad is not None:
        raise Refused(f"deny glob {pattern}: the class [{body}] holds {bad!r}, which a Seatbelt regex "
                      "bracket cannot hold literally")
    ranges, singles, k = [], [], 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-" and "-" not in (body[k], body[k + 2]):
            if body[k] > body[k + 2]:  # validate() refuses it first; this keeps an invalid regex unrenderable
                raise Refused(f"deny glob {pattern}: the range {body[k:k + 3]} in [{body}] is reversed")
            ranges.append(body[k:k + 3])
            k += 3
        else:
            singles.append(body[k])
            k += 1
    close = "]" if "]" in singles else ""
    dash = "-" if "-" in singles else ""
    caret = "^" if "^" in singles else ""
    rest = "".join(c for c in dict.fromkeys(singles) if c not in "]-^")
    head = "[^" + close + "/" if negated else "[" + close
    return head + "".join(ranges) + rest + caret + dash + "]"
