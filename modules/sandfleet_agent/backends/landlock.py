"""Landlock: the Linux backend that needs no namespaces, applied in the child before exec.

The wrapper is the command's own argv plus a ruleset file (``landlock.json``, rendered from
``templates/landlock.j2``); the agent applies the ruleset between fork and exec, so no extra
interpreter starts per task. By hand: ``python3 -m sandfleet_agent.linux.landlock_exec landlock.json
-- argv...``.

Landlock only ever adds rights to a subtree. Where the policy wants a weaker path inside a
granted one (a read-only ``.git`` inside a writable workspace, a denied file inside a readable
tree), the enclosing directory is not granted; its entries are, one by one, except the weaker
path — exact, but the directory itself then takes no new entries, which the task is told. What
Landlock cannot express at all is refused, never weakened:

* ``network: managed``: Landlock filters TCP by port, never by host name, so it cannot keep a
  command on the proxy (the proxy's port would be open on every address). The message says that
  bwrap is needed; with bwrap missing the user sees bwrap's reason next to this one.
* ``network: none`` without TCP rules (ABI < 4).
* a host where sandfleet has no seccomp filter (only x86_64 and aarch64 have one): every task
  runs under it (:mod:`..seccomp`); under ``network: none`` it allows no ``socket()`` at all,
  which also closes pathname UNIX sockets (Landlock controls them only from ABI 9).
* an agent running as root or holding any capability: Landlock takes no capability away, so a
  root task could ``mknod`` the disk, ``chown`` anything or read every process's environment.
  Landlock is for agents run as an unprivileged user (bwrap drops root's powers itself).
* more than :data:`MAX_GRANTS` grants after splitting (a deny glob matching thousands of files).

What remains, said in every result's warnings (:data:`LIMITS`) and in the README's table:
metadata (``chmod``, ``utime``, ``setxattr``) of the agent user's own files outside the writable
roots is not mediated, and other processes' command lines are visible in ``/proc``; without ABI 6
signals to other processes of the same user are not scoped.

``:tmpdir`` is private: the task gets an empty directory of its own under the agent's state dir
(``TMPDIR`` points at it; the agent creates it before the task and removes it after), never the
host's shared temp dir. Other tasks' temp dirs sit under the same denied state dir.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Callable, Optional

from sandfleet_agent.backends.base import Backend, ProxyEndpoint, Refused, Wrapper
from sandfleet_agent.backends.render import render_text
from sandfleet_agent.binding.bind import BoundPolicy, Rule
from sandfleet_agent.binding.facts import HostFacts, cap_eff
from sandfleet_agent.binding.hostfs import AssumedFs, FsView, LocalFs
from sandfleet_agent.linux import seccomp
from sandfleet_agent.linux.landlock_ruleset import (
    MAX_ABI,
    LandlockRuleset,
    LandlockUnavailable,
    NetRules,
    RulesetError,
    prepare,
)
from sandfleet_agent.paths import at_or_below, strictly_below
from sandfleet_agent.portable.globs import GlobError, expand
from sandfleet_agent.portable.intent import Access, NetworkMode

RULESET_FILE = "landlock.json"
#: What a Landlock sandbox does not stop, said with every task it runs.
LIMITS = ("landlock: does not stop chmod/utime/setxattr on the agent user's own files outside the writable roots, "
          "nor hide other processes' command lines in /proc (bwrap does both)")
#: Said with every network-none task: Landlock has no network namespace to give it a loopback.
NO_SOCKETS = ("landlock: network none: no socket() at all (no loopback, no UNIX sockets); socketpair() works "
              "(bwrap gives a private loopback)")
#: Where a dry-run says the task's private temp dir is (the agent's pid names the real one).
NOMINAL_TMP = "tmp/<agent>"
MAX_GRANTS = 4096
#: What a process needs to start when reads are restricted to ``:minimal``.
PLATFORM_READS = ("/bin", "/sbin", "/usr", "/etc", "/lib", "/lib64", "/lib32", "/nix/store",
                  "/run/current-system/sw")
DEVICES_WRITE = ("/dev/null",)
DEVICES_READ = ("/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_NET_ABI, _SCOPE_ABI = 4, 6


def _grants_rights(access: Optional[Access]) -> int:
    return {None: 0, Access.DENY: 0, Access.READ: 1, Access.WRITE: 2}[access]


class _Planner:
    """Turns ordered rules into Landlock grants, splitting directories around weaker paths."""

    def __init__(self, rules: Sequence[Rule], fs: FsView) -> None:
        self.rules, self.fs = list(rules), fs
        self.grants: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def access(self, path: str) -> Optional[Access]:
        best: Optional[Rule] = None
        for rule in self.rules:
            if at_or_below(path, rule.path) and (best is None or len(rule.path) >= len(best.path)):
                best = rule
        return best.access if best else None

    def plan(self) -> list[tuple[str, str]]:
        for rule in self.rules:
            if not any(strictly_below(rule.path, other.path) for other in self.rules):
                self._grant_tree(rule.path, rule.access)
        return self.grants

    def _grant_tree(self, path: str, access: Optional[Access]) -> None:
        inner = [r for r in self.rules if strictly_below(r.path, path)]
        weaker = [r for r in inner if _grants_rights(r.access) < _grants_rights(access)]
        if not weaker:
            if _grants_rights(access):
                self.grants.append((path, "write" if access is Access.WRITE else "read"))
            for rule in inner:
                if _grants_rights(rule.access) > _grants_rights(access) and not any(
                        strictly_below(rule.path, o.path) and _grants_rights(o.access) > _grants_rights(access)
                        for o in inner):
                    self._grant_tree(rule.path, rule.access)
            return
        if _grants_rights(access) and self.fs.kind(path) == "dir":
            shown = ", ".join(sorted(r.path for r in weaker)[:3])
            self.notes.append(f"landlock: {path} is granted entry by entry to keep {shown} "
                              f"{'read-only' if access is Access.WRITE else 'unreadable'}; new entries "
                              f"directly in {path} cannot be created (bwrap has no such limit)")
        if not self.fs.exact:
            self.notes.append(f"landlock: the entries of {path} are granted one by one on the host")
        for name, kind in sorted(self.fs.scandir(path)):  # nothing when missing or unreadable
            child = os.path.join(path, name)
            if kind == "link":
                continue  # a grant would follow it out of the tree; its target keeps its own access
            if any(at_or_below(r.path, child) for r in inner):
                self._grant_tree(child, self.access(child))
            elif _grants_rights(access):
                self.grants.append((child, "write" if access is Access.WRITE else "read"))
            if len(self.grants) > MAX_GRANTS:
                raise Refused(f"the policy needs more than {MAX_GRANTS} Landlock grants; use bwrap")


def _expand_globs(patterns: Sequence[str], fs: FsView) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        try:
            found.update(expand(pattern, fs))
        except GlobError as exc:
            raise Refused(str(exc)) from None
    return sorted(found)


class Landlock(Backend):
    name = "landlock"

    def __init__(self, facts: HostFacts, proxy: Optional[ProxyEndpoint] = None, fs: Optional[FsView] = None) -> None:
        super().__init__(facts, proxy)
        self.fs = fs or (AssumedFs(facts.os) if facts.assumed else LocalFs())

    def ruleset(self, policy: BoundPolicy, private: Optional[str] = None) -> tuple[str, list[str]]:
        """The ruleset file's text (validated) and notes on what was split to express it;
        ``private`` is the task's own temp dir, granted in place of the policy's private rules."""
        abi = min(self.facts.landlock_abi, MAX_ABI)
        if abi < 1:
            raise Refused("Landlock is not available in this kernel")
        mode = policy.network.mode
        if mode is NetworkMode.MANAGED:
            raise Refused("a managed network needs bwrap: Landlock filters TCP by port, never by host name")
        _refuse_root(self.facts.euid, self.facts.cap_eff)
        if not seccomp.supported():
            raise Refused("Landlock tasks need sandfleet's seccomp filter, which exists for x86_64 and aarch64 only")
        net: Optional[NetRules] = None
        sockets = "all"
        if mode is NetworkMode.NONE:
            if abi < _NET_ABI:
                raise Refused(f"network none needs Landlock ABI {_NET_ABI} (Linux 6.7) for TCP rules; "
                              f"this kernel has ABI {abi}")
            net, sockets = NetRules(), "none"
        scope = ("abstract_unix_socket", "signal") if abi >= _SCOPE_ABI else ()
        rules = [r for r in policy.rules if r.path not in policy.private]
        if private is not None and len(rules) < len(policy.rules):
            rules.append(Rule(private, Access.WRITE, ":tmpdir"))
        rules += [Rule(p, Access.DENY, "deny glob") for p in _expand_globs(policy.deny_globs, self.fs)]
        extra: list[Rule] = []
        if policy.minimal_read:
            extra += [Rule(p, Access.READ, ":minimal") for p in PLATFORM_READS if self.fs.kind(p) is not None]
        extra += [Rule(p, Access.READ, "device") for p in DEVICES_READ if self.fs.kind(p) is not None]
        extra += [Rule(p, Access.WRITE, "device") for p in DEVICES_WRITE if self.fs.kind(p) is not None]
        planner = _Planner(rules + [r for r in extra if _accepts(rules, r)], self.fs)
        grants = planner.plan()
        notes = list(planner.notes)
        if abi < _SCOPE_ABI:
            notes.append(f"landlock: ABI {abi} cannot scope signals; the task may signal other processes of its "
                         "user (bwrap's pid namespace can)")
        text = render_text("landlock.j2", abi=abi, grants=grants, net=net, scope=scope, sockets=sockets)
        try:
            LandlockRuleset.from_json(text)
            return text, notes
        except RulesetError as exc:
            raise Refused(f"cannot express this policy with Landlock: {exc}") from None

    def private_tmp(self) -> str:
        """This agent's private temp dir for its tasks (one task at a time per agent)."""
        if self.facts.assumed or not self.facts.state_dir:
            return os.path.join(self.facts.state_dir or "<state>", NOMINAL_TMP)
        return os.path.join(self.facts.state_dir, "tmp", f"agent-{os.getpid()}")

    def render(self, policy: BoundPolicy, argv: Sequence[str]) -> Wrapper:
        private = self.private_tmp() if policy.private else None
        text, notes = self.ruleset(policy, private)
        cwd, env = policy.cwd, {}
        if private is not None:
            env["TMPDIR"] = private
            home = max((r for r in policy.rules if at_or_below(cwd, r.path)),
                       key=lambda r: len(r.path), default=None)
            if home is not None and home.path in policy.private:  # a cwd in the private temp dir moves with it
                cwd = private + cwd[len(home.path.rstrip("/")):]
        if policy.network.mode is NetworkMode.NONE:
            notes.append(NO_SOCKETS)
        return Wrapper(self.name, tuple(argv), files={RULESET_FILE: text}, cwd=cwd, env=env,
                       notes=(*notes, LIMITS), host_scratch=(private,) if private else ())

    def preexec(self, wrapper: Wrapper) -> Optional[Callable[[], None]]:
        _refuse_root(os.geteuid(), cap_eff())  # the facts are from the agent's start; check again
        try:
            prepared = prepare(_parsed(wrapper.files[RULESET_FILE]))
        except LandlockUnavailable as exc:
            raise Refused(str(exc)) from None
        return prepared.preexec_fn


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> LandlockRuleset:
    """The ruleset file, parsed and checked: a frozen value, the same for the same text, so a
    task that repeats its policy does not parse ~200 rules again (~3 ms, docs/performance.md). A
    text that fails raises every time (a raise is not kept). The paths are opened per task
    (:func:`prepare`): a descriptor kept would hold a replaced directory's old inode."""
    return LandlockRuleset.from_json(text)


def _refuse_root(euid: int, cap_eff: int) -> None:
    if euid == 0 or cap_eff:
        who = "as root" if euid == 0 else f"with capabilities (CapEff {cap_eff:#x})"
        raise Refused(f"Landlock does not run tasks of an agent {who}: Landlock takes no capability away, so the "
                      "task would keep root's powers; run the agent as an unprivileged user (ansible_user in the "
                      "inventory), or use bwrap, which drops them")





def _accepts(rules: Sequence[Rule], extra: Rule) -> bool:
    """Platform paths are added only where the policy has not already said something stronger."""
    covering = [r for r in rules if at_or_below(extra.path, r.path)]
    if not covering:
        return True
    deepest = max(covering, key=lambda r: len(r.path))
    return deepest.access is not Access.DENY and _grants_rights(deepest.access) < _grants_rights(extra.access)
