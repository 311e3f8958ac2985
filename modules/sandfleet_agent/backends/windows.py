"""Windows backend: an AppContainer on a restricted token, started by a PowerShell launcher.

The wrapper is ``powershell.exe -NoLogo -NoProfile -NonInteractive -Command <launcher>``. The
launcher (``templates/windows.ps1.j2`` + the fixed ``windows_launcher.ps1``) carries two values,
each a PowerShell literal: the policy, an XML document (``templates/windows.xml.j2``), and the
command line, quoted so that ``CommandLineToArgvW`` gives the argv back. It compiles a small C#
helper, applies the policy's ACL entries, creates a fresh AppContainer profile, starts the
command suspended in it, puts it in a kill-on-close job, resumes it, waits, deletes the
profile and exits with the command's code (125 when setup failed: nothing ran).

Why two tokens in one. An app container's own access check honours only *allow* entries for its
SIDs (Forshaw, Windows Security Internals, ch. 7), so it can grant a tree but cannot take a
subtree back. The command therefore runs with a token that is both an AppContainer (second
check: allow entries for the container and its capabilities) and restricted (third check: the
user's own SIDs plus one policy SID, where *deny* entries count). One SID per distinct policy,
derived from a hash of it, serves as the capability and the restricting SID: an inheritable
allow entry for it grants a writable (Modify) or readable (ReadAndExecute) root, a deny entry
takes write rights back from a read-only path inside one (``.git``) or everything from a denied
path. The entries stay on disk after the task, keyed to that SID, so a repeated policy costs
nothing and no other policy gains from them. A missing protected or denied path inside a
writable root is first created (empty dir for ``.git``, empty file otherwise) so that it can carry
the entry, as bwrap does with its placeholders.

Enforced: writes only where the policy writes; reads only where it reads, narrowed (see below);
network none: no network capability at all, loopback included; full: the internetClient,
internetClientServer and privateNetworkClientServer capabilities; the command and everything it
starts die with the launcher (job object).

Narrowed, never widened (a note says so): an app container reads what Windows opens to every
app container (the Windows and Program Files directories) plus what the policy's entries grant;
``:root`` read or write therefore becomes the working directory, the workspace roots (and for
write the temp dir) rather than every drive; network ``full`` still cannot reach loopback
(Windows isolates app containers from it unless an administrator exempts them).

Refused: network ``managed`` (loopback is all-or-nothing for an app container and opening it
needs an administrator, so the command cannot be held to the one proxy port); a policy without
``:minimal`` and without full read (Windows always lets a process read its system directories);
a whole drive or a network share as a read/write root; a working directory the plan cannot make
readable; a path or argument XML 1.0 or a command line cannot carry exactly (among them an argument
to a ``.bat``/``.cmd`` file holding a character cmd.exe acts on: Windows starts a batch file through
cmd.exe, which would read ``&``, ``|``, ``%`` ... in it as commands, not as argv); a command line over
32766 characters; a policy bound for another OS; PowerShell missing.

Checking by hand on a Windows 10/11 machine: ``sandfleet run PB -i INV --dry-run --format json`` for a
host with ``sandfleet_os: windows`` gives ``wrapper.files["launcher.ps1"]``; save it and, in the task's
working directory, run ``powershell -NoProfile -ExecutionPolicy Bypass -File launcher.ps1`` (a script file
needs the bypass where the default policy forbids scripts; the wrapper's ``-Command`` does not), or run
``wrapper.argv`` as is.
Use a probe command (``cmd /c whoami /groups`` shows the app container and the ``S-1-15-3-1024-…``
capability; ``cmd /c "echo x> C:\\Users\\<you>\\outside.txt"`` and writing into ``.git`` must fail with
"Access is denied", writing in the workspace must work; ``curl https://example.com`` must fail for
network none); ``icacls <workspace>`` then shows the entries for that SID.

Known limits: the task may also write its own app container's profile folder (private to it and
deleted with it); files matching a deny glob that appear after launch are not covered (as on
Linux); PowerShell sets ``PSModulePath`` in the command's environment; ACL entries accumulate, one
set per distinct policy (remove them with ``icacls <path> /remove *S-1-15-3-1024-…``); setting an
entry needs the right to change that path's ACL (the owner has it; a deny under ``C:\\Windows``
needs an administrator and otherwise fails the task, closed); Constrained Language Mode blocks the
launcher (it fails, closed). Not yet run on Windows here: the launcher is proven by its readers
and goldens, not by a Windows host; the steps above are how to confirm it on one.
"""

from __future__ import annotations

import hashlib
import ntpath
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

from sandfleet_agent.backends.base import Backend, ProxyEndpoint, Refused, Wrapper
from sandfleet_agent.backends.escaping import win_cmdline
from sandfleet_agent.backends.render import render_argv, render_text
from sandfleet_agent.binding.bind import BoundPolicy
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.binding.hostfs import AssumedFs, FsView, LocalFs
from sandfleet_agent.paths import at_or_below
from sandfleet_agent.portable.globs import GlobError, expand, validate
from sandfleet_agent.portable.intent import Access, NetworkMode

POWERSHELL = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
POLICY_FILE = "policy.xml"
LAUNCHER_FILE = "launcher.ps1"
#: CreateProcess takes at most 32767 characters including the terminating NUL.
MAX_COMMAND_LINE = 32766
#: Well-known capability SIDs an app container needs for the network (none for ``network: none``).
NETWORK_CAPABILITIES = (
    ("internetClient", "S-1-15-3-1"),
    ("internetClientServer", "S-1-15-3-2"),
    ("privateNetworkClientServer", "S-1-15-3-3"),
)
_READABLE = (Access.READ, Access.WRITE)


@dataclass(frozen=True)
class AclEntry:
    """One entry for the policy SID: ``write``/``read`` allow a tree, ``read-only`` denies its
    write rights, ``deny`` denies everything; ``create`` (``dir``/``file``) makes a missing path
    inside a writable root first, so it can carry the entry."""

    path: str
    access: str
    create: Optional[str] = None


@dataclass(frozen=True)
class Plan:
    """What the launcher applies for one task: its AppContainer SID, working folder, capabilities
    and ACL entries, and the notes the run reports."""

    sid: str
    cwd: str
    capabilities: tuple[tuple[str, str], ...]
    entries: tuple[AclEntry, ...]
    notes: tuple[str, ...] = ()


class WindowsSandbox(Backend):
    name = "windows"

    def __init__(self, facts: HostFacts, proxy: Optional[ProxyEndpoint] = None, fs: Optional[FsView] = None) -> None:
        super().__init__(facts, proxy)
        self.fs = fs or (AssumedFs("windows") if self.facts.assumed else LocalFs())

    def render(self, policy: BoundPolicy, argv: Sequence[str]) -> Wrapper:
        if not argv:
            raise ValueError("nothing to run: argv is empty")
        powershell = self._binary()
        plan = self.plan(policy)
        try:
            _check_batch_arguments(argv)
            command_line = win_cmdline(argv)
            policy_xml = render_text("windows.xml.j2", plan=plan)
        except ValueError as exc:
            raise Refused(f"the Windows launcher cannot carry this task exactly: {exc}") from None
        if len(command_line) > MAX_COMMAND_LINE:
            raise Refused(f"the command line is {len(command_line)} characters; Windows allows {MAX_COMMAND_LINE}")
        script = render_text("windows.ps1.j2", policy_xml=policy_xml, command_line=command_line)
        words = render_argv("windows.j2", powershell=powershell, script=script)
        outer = len(win_cmdline(words))
        if outer > MAX_COMMAND_LINE:
            raise Refused(f"the launcher's command line would be {outer} characters; Windows allows "
                          f"{MAX_COMMAND_LINE} (shorten the command or the policy)")
        return Wrapper(self.name, tuple(words), files={POLICY_FILE: policy_xml, LAUNCHER_FILE: script},
                       cwd=plan.cwd, notes=plan.notes)

    def _binary(self) -> str:
        status = self.facts.backend(self.name)
        if status is None or not status.available:
            reason = status.reason if status and status.reason else "the Windows sandbox was not probed on this host"
            raise Refused(f"the Windows sandbox cannot run here: {reason}")
        return status.path or POWERSHELL

    # -- the plan ---------------------------------------------------------------------------

    def plan(self, policy: BoundPolicy) -> Plan:
        if policy.os != "windows":
            raise Refused(f"the Windows sandbox enforces Windows policies only; this one was bound for {policy.os}")
        notes: list[str] = []
        if policy.network.mode is NetworkMode.MANAGED:
            raise Refused("managed network cannot be enforced by a Windows app container: loopback is either "
                          "closed to it or, with an administrator's exemption, open on every port, so the "
                          "command cannot be held to the proxy alone")
        capabilities: tuple[tuple[str, str], ...] = ()
        if policy.network.mode is NetworkMode.FULL:
            capabilities = NETWORK_CAPABILITIES
            notes.append("windows: network full reaches everything but loopback (Windows keeps app containers "
                         "off localhost unless an administrator exempts them)")
        root = policy.root
        base = policy.access(root)
        if base not in _READABLE and not policy.minimal_read:
            raise Refused("Windows lets every process read its system directories (C:\\Windows, Program Files); "
                          "this policy grants neither :minimal nor :root read, so it cannot be held exactly "
                          "(add ':minimal': read)")
        rules = self._rules(policy, root, base, notes)
        entries, realised = _entries(rules, policy.creates_dir)
        for pattern in policy.deny_globs:
            entries += [AclEntry(path, "deny") for path in self._expand(pattern, notes)]
        cwd = _norm(policy.cwd)
        if _realised(realised, cwd) not in _READABLE:
            raise Refused(f"the working directory {cwd} is not readable under this policy "
                          "(give it a read or write rule, or choose another cwd)")
        sid = policy_sid(rules, policy.deny_globs)
        return Plan(sid, cwd, capabilities, tuple(entries), tuple(notes))

    def _rules(self, policy: BoundPolicy, root: str, base: Optional[Access], notes: list[str]
               ) -> list[tuple[str, Access]]:
        """Canonical rules, drive root left out (no entry goes there), narrowed ``:root`` added."""
        rules: dict[str, tuple[str, Access]] = {}

        def add(path: str, access: Access) -> None:
            key = path.lower()
            if key not in rules or access.precedence > rules[key][1].precedence:
                rules[key] = (path, access)

        for rule in policy.rules:
            path = _norm(rule.path)
            if path.lower() == root.lower():
                continue
            if rule.access in _READABLE and path.startswith("\\\\"):
                raise Refused(f"{path} is a network share; an app container cannot be given one")
            if rule.access in _READABLE and _is_drive_root(path):
                raise Refused(f"granting the whole drive {path} would put an ACL entry on its root (administrators "
                              "only) and rewrite every file's ACL; grant directories on it instead")
            add(path, rule.access)
        if base in _READABLE:
            assert base is not None
            narrowed = [policy.cwd, *policy.workspace_roots]
            if base is Access.WRITE and self.facts.tmpdir:
                narrowed.append(self.facts.tmpdir)
            added = []
            for path in map(_norm, narrowed):
                if _governing(list(rules.values()), path) is None and path.lower() not in rules:
                    add(path, base)
                    added.append(path)
            also = f"{', '.join(dict.fromkeys(added))}, " if added else ""
            notes.append(f"windows: :root {base.value} is narrowed to {also}the paths the policy names and what "
                         "Windows opens to every app container")
        return sorted(rules.values(), key=lambda r: (_depth(r[0]), r[0].lower()))

    def _expand(self, pattern: str, notes: list[str]) -> list[str]:
        """The paths to deny; a glob that cannot be compiled is refused even in a dry-run, which
        expands nothing, so it never shows a wrapper the host would then refuse."""
        try:
            validate(pattern)
            if not self.fs.exact:
                notes.append(f"deny glob {pattern} is expanded on the host when the task runs")
                return []
            return expand(pattern, self.fs)
        except GlobError as exc:
            raise Refused(str(exc)) from None


#: What cmd.exe acts on in the command line of a batch file it runs (BatBadBut, CVE-2024-24576).
_CMD_ACTIVE = re.compile(r'[%!^&|<>()"\r\n]')


def _check_batch_arguments(argv: Sequence[str]) -> None:
    """CreateProcess runs a ``.bat``/``.cmd`` file as ``cmd.exe /c`` with the command line as is, so
    its arguments are parsed by cmd, not by ``CommandLineToArgvW``: ``x & calc`` would run calc.
    No quoting is exact there, so an argument cmd would act on is refused."""
    if ntpath.splitext(argv[0].rstrip(" ."))[1].lower() not in (".bat", ".cmd"):
        return
    for arg in argv:
        found = _CMD_ACTIVE.search(arg)
        if found:
            raise ValueError(f"{argv[0]} is a batch file, which cmd.exe runs; it would act on {found.group()!r} in "
                             f"the argument {arg!r} instead of passing it on (call a program, or cmd /c yourself)")


def _entries(rules: list[tuple[str, Access]], creates_dir: Callable[[str], bool] = lambda n: n == ".git",
             ) -> tuple[list[AclEntry], dict[str, Access]]:
    """The ACL entries, shallow first, and the access each path ends up with. An entry is written
    only where the inherited one differs: a readable path under a writable one gets its write
    rights denied, a denied path a full deny (always, since Windows may open it to every app
    container on its own)."""
    entries: list[AclEntry] = []
    realised: dict[str, Access] = {}
    for path, access in rules:
        parent = _realised(realised, ntpath.dirname(path))
        placeholder = ("dir" if creates_dir(ntpath.basename(path)) else "file") \
            if parent is Access.WRITE else None
        if access is Access.WRITE:
            if parent is not Access.WRITE:
                entries.append(AclEntry(path, "write"))
        elif access is Access.READ:
            if parent is Access.WRITE:
                entries.append(AclEntry(path, "read-only", placeholder))
            elif parent is not Access.READ:
                entries.append(AclEntry(path, "read"))
        else:
            entries.append(AclEntry(path, "deny", placeholder))
        realised[path.lower()] = access
    return entries, realised


def _realised(realised: dict[str, Access], path: str) -> Optional[Access]:
    for candidate in _ancestors(path):
        if candidate.lower() in realised:
            return realised[candidate.lower()]
    return None


def _governing(rules: list[tuple[str, Access]], path: str) -> Optional[Access]:
    best: Optional[tuple[str, Access]] = None
    for rule in rules:
        if at_or_below(path, rule[0], windows=True) and (best is None or _depth(rule[0]) > _depth(best[0])):
            best = rule
    return best[1] if best else None


def _ancestors(path: str) -> Iterator[str]:
    """``path`` and its parents, deepest first."""
    current = path
    while True:
        yield current
        parent = ntpath.dirname(current)
        if parent == current:
            return
        current = parent


def _norm(path: str) -> str:
    return str(ntpath.normpath(path))


def _depth(path: str) -> int:
    return len([p for p in ntpath.splitdrive(path)[1].split("\\") if p])


def _is_drive_root(path: str) -> bool:
    return ntpath.splitdrive(path)[1] in ("", "\\")


def policy_sid(rules: Sequence[tuple[str, Access]], globs: Sequence[str]) -> str:
    """The SID that stands for this policy: a capability SID (``S-1-15-3-1024-…``) whose eight
    sub-authorities are a SHA-256 of the rules and deny-glob patterns. Equal policies share it, so
    their ACL entries are reused; any difference gives another SID, which no entry grants yet."""
    text = "\n".join([f"{a.value}\t{p.lower()}" for p, a in rules] + [f"glob\t{g.lower()}" for g in globs])
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return "S-1-15-3-1024-" + "-".join(str(int.from_bytes(digest[i:i + 4], "little")) for i in range(0, 32, 4))
