"""bubblewrap backend: a bound policy becomes one ``bwrap`` argv (Linux).

The class computes a *mount plan* (which host paths appear where, read-only or writable, and
what is masked); ``templates/bwrap.j2`` lays that plan out as the argv. Codex's bwrap argv
is the model. The plan, in bwrap's order (it applies mounts in sequence, so a
later, deeper mount overrides an earlier, shallower one):

1. The base from the rule on ``/``: read → ``--ro-bind / /``; write → ``--bind / /``; none or
   deny → an empty ``--tmpfs /`` (restricted reads), then fresh ``--dev /dev`` and ``--proc /proc``
   (before anything below them, so a writable ``/dev/shm`` rule still lands on top).
2. Every rule, shallow → deep, realised against its nearest realised ancestor: a write →
   ``--bind``; a read under a writable or empty parent → ``--ro-bind``; a deny → an empty,
   unreadable mask (dir: ``--perms 000 --tmpfs``; file: ``--ro-bind /dev/null``, which opens with
   EACCES because bwrap mounts it ``nodev``). A rule giving what its parent already gives is a no-op.
3. With ``:minimal`` and restricted reads, the platform paths a process needs to start
   (:data:`PLATFORM_READ`) are read-only too, unless a rule on or above them says otherwise.
4. Every tmpfs we create is remounted read-only right after the last mount placed inside it, so a
   denied dir can hold re-opened descendants (bwrap makes their mount points while it is still
   writable; the mask then gets ``--perms 111``: traversable, not listable).

What a process needs in a restricted-read sandbox: the loader, libraries and the binary
(``/usr``, ``/lib*``, ``/bin``), ``/etc`` (``ld.so.cache``, ``passwd``, ``resolv.conf``, certs),
``/proc`` and ``/dev`` (always given, fresh), and a readable cwd (refused otherwise). Without
``:minimal`` only the named roots are there, and most commands will fail with ``execvp``.

Always ``--cap-drop ALL``: started by root, bwrap keeps every capability inside its user
namespace, and a root task could then ``umount`` a deny mask or remount a read-only bind
writable. Full write with full network is still wrapped (unlike Codex case 18) so every task gets
the same pid/user/ipc namespaces, fresh ``/proc`` and ``/dev``, and no capabilities.

Managed network: bwrap is not given ``--unshare-net``; instead the wrapper starts with
the netns helper (:mod:`..netns`, run by the agent's own interpreter with ``-I -S``), which
creates a private network namespace holding nothing but the proxy's listener on
``127.0.0.1:3128``, hands that listener to the agent's proxy over the endpoint's Unix socket, and
execs bwrap inside the namespace. The proxy variables (:mod:`..proxyenv`) are ``--setenv``
arguments, so a dry-run shows the whole wiring; a dry-run's endpoint is nominal (no proxy starts).
Without an endpoint (``socket_path``) the task is refused: there is nothing to route through.

Refused (the task fails closed): managed network without a proxy endpoint; a read-only path
reached through a symlink inside a writable root (the link could be swapped); a cwd the policy
does not let the command read; a deny glob anchored at ``/`` or matching/scanning too much; a
policy bound for another OS; bwrap missing or unable to create namespaces.

Known limits: files matching a deny glob that appear after launch are not masked; blocking the
creation of a missing ``.git`` (or other read-only / denied path) inside a writable root leaves
an empty mount point on the host after the run (:attr:`MountPlan.placeholders` lists them).
"""

from __future__ import annotations

import errno
import os
import posixpath
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Optional

from sandfleet_agent.backends.base import SECCOMP_FD, STATUS_FD, Backend, ProxyEndpoint, Refused, Wrapper
from sandfleet_agent.backends.render import render_argv
from sandfleet_agent.binding.bind import BoundPolicy
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.binding.hostfs import AssumedFs, FsView, LocalFs
from sandfleet_agent.linux import seccomp
from sandfleet_agent.network import netns
from sandfleet_agent.network.proxyenv import proxy_env
from sandfleet_agent.paths import at_or_below
from sandfleet_agent.portable.globs import GlobError, expand, validate
from sandfleet_agent.portable.intent import Access, NetworkMode

#: Read-only with ``:minimal`` when present: what a dynamically linked program needs to start
#: and behave (loader, libraries, config, certificates). ``/etc/resolv.conf`` is listed on its own
#: because it is often a symlink into ``/run``, whose target is then made readable as well.
PLATFORM_READ: tuple[str, ...] = (
    "/bin", "/sbin", "/usr", "/etc", "/lib", "/lib64", "/lib32", "/nix/store",
    "/run/current-system/sw", "/etc/resolv.conf",
)


#: Said with every task whose network is not full: what the seccomp filter takes away.
UNIX_SOCKET_NOTE = ("bwrap: network none/managed: no UNIX sockets (pathname sockets reach host services); "
                    "socketpair() works, a UNIX-socket server in the workspace does not")

#: The wrapper's ``fd 4`` file (:data:`.base.STATUS_FD`): what bwrap writes there, and why.
STATUS_NOTE = ("bwrap's status (--json-status-fd 4): the agent reads a fresh sandbox's to tell a command that "
               "could not start (rc 127 not found, 126 not executable) from one that exited 1 (a persistent "
               "sandbox's goes to /dev/null); by hand, any writable descriptor will do (4>/dev/null)")

#: Where a dry-run says the netns helper lives on a host it did not probe (the agent's cache copy).
NOMINAL_AGENT_DIR = "<agent>"

#: Host-global kernel state a fresh ``/proc`` shows writable to the agent's uid: when the agent
#: runs as root, uid 0 in bwrap's user namespace *is* the host's root for these files' permission
#: checks, and ``kernel.core_pattern`` alone runs any program as host root. Covered read-only
#: with the host's own entries (identical but for the network sysctls, which then show the host's
#: values), as bwrap does itself when it does not unshare the user namespace, and as Docker does.
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
#: Hidden behind an empty, unopenable file: the keys of every keyring the user can view.
PROC_MASKED = ("/proc/keys", "/proc/key-users")
_OPS = ("bind", "ro-bind", "ro-bind-try", "symlink", "tmpfs", "remount-ro", "dev", "proc", "mqueue")


@dataclass(frozen=True)
class Mount:
    """One bwrap filesystem operation; ``src`` is the host path (or symlink target)."""

    op: str
    dest: str
    src: Optional[str] = None
    perms: Optional[str] = None

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown bwrap mount op {self.op!r}")


@dataclass(frozen=True)
class MountPlan:
    """The mounts in bwrap order and the canonical cwd, plus what the operator should know:
    ``notes`` (skipped missing paths, unexpanded globs) and ``placeholders`` (host paths bwrap
    creates as empty mount points to block their creation; left in place, never removed: see
    :attr:`~sandfleet_agent.backends.base.Wrapper.placeholders` for why)."""

    mounts: tuple[Mount, ...]
    cwd: str
    notes: tuple[str, ...] = ()
    placeholders: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Entry:
    """A path to realise: a policy rule, a deny-glob match, or a platform default."""

    path: str
    access: Access
    origin: str  # "rule" | "glob" | "platform"
    src: Optional[str] = None  # platform path reached through a symlinked ancestor
    link: Optional[str] = None  # platform path that is itself a symlink: recreate it

    @property
    def depth(self) -> int:
        return _depth(self.path)


@dataclass
class _State:
    """Mutable bookkeeping while one plan is built."""

    mounts: list[Mount] = field(default_factory=list)
    realised: dict[str, Optional[Access]] = field(default_factory=dict)
    masks: list[int] = field(default_factory=list)  # indices of tmpfs mounts we create
    notes: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)
    private: set[str] = field(default_factory=set)  # private temp dirs mounted (empty tmpfs)
    policy: Optional[BoundPolicy] = None


class Bwrap(Backend):
    """Enforce a bound policy with bubblewrap (user, pid, ipc, uts, cgroup and optionally net
    namespaces; a mount namespace built from the plan)."""

    name = "bwrap"
    unshare: tuple[str, ...] = (
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    )

    def __init__(self, facts: HostFacts, proxy: Optional[ProxyEndpoint] = None, paths: Optional[FsView] = None,
                 platform_read: Optional[Sequence[str]] = None) -> None:
        super().__init__(facts, proxy)
        self.paths = paths or (AssumedFs(facts.os) if facts.assumed else LocalFs())
        self.platform_read = tuple(PLATFORM_READ if platform_read is None else platform_read)

    # -- rendering --------------------------------------------------------------------------

    def render(self, policy: BoundPolicy, argv: Sequence[str]) -> Wrapper:
        if not argv:
            raise ValueError("nothing to run: argv is empty")
        bwrap = self._binary()
        managed = policy.network.mode is NetworkMode.MANAGED
        prefix = self._netns_helper() if managed else []
        plan = self.plan(policy)
        sockets = "all" if policy.network.mode is NetworkMode.FULL else "inet"
        words = render_argv(
            "bwrap.j2",
            prefix=prefix,
            bwrap=bwrap,
            unshare=list(self.unshare),
            unshare_net=policy.network.mode is NetworkMode.NONE,
            seccomp_fd=str(SECCOMP_FD),
            status_fd=str(STATUS_FD),
            setenv=sorted(proxy_env(self.proxy.port).items()) if managed and self.proxy else [],
            mounts=list(plan.mounts),
            cwd=plan.cwd,
            argv=list(argv),
        )
        notes = plan.notes
        if sockets != "all":
            notes += (UNIX_SOCKET_NOTE,)
        return Wrapper(self.name, tuple(words), cwd=plan.cwd, notes=notes, placeholders=plan.placeholders,
                       seccomp=sockets, status_fd=STATUS_FD,
                       files={f"fd {SECCOMP_FD}": seccomp.describe(sockets), f"fd {STATUS_FD}": STATUS_NOTE},
                       sandbox_scratch=_sandbox_made(plan, ("/dev/shm", "/dev/mqueue", *policy.private)),
                       env={"TMPDIR": policy.private[0]} if policy.private else {})

    def _netns_helper(self) -> list[str]:
        """The words that put bwrap into a network namespace whose only exit is the proxy."""
        if self.proxy is None or not self.proxy.socket_path:
            raise Refused("a managed network needs the host-side proxy, and none was started for this task")
        if self.facts.assumed:  # dry-run for another host: its agent's interpreter and copy
            python, helper = "python3", f"{NOMINAL_AGENT_DIR}/netns.py"
        else:
            python, helper = sys.executable, os.path.abspath(netns.__file__)
        if not python:
            raise Refused("a managed network needs the agent's Python interpreter, and its path is unknown")
        return [python, "-I", "-S", helper, "--port", str(self.proxy.port), "--handoff", self.proxy.socket_path, "--"]

    def _binary(self) -> str:
        status = self.facts.backend(self.name)
        if status is None or not status.available:
            reason = status.reason if status and status.reason else "bwrap was not probed on this host"
            raise Refused(f"bwrap cannot run here: {reason}")
        return status.path or "bwrap"

    # -- the mount plan ---------------------------------------------------------------------

    def plan(self, policy: BoundPolicy) -> MountPlan:
        """The mounts that make the sandbox's view of the filesystem match ``policy``."""
        if policy.os != "linux":
            raise Refused(f"bwrap enforces Linux policies only; this one was bound for {policy.os}")
        st = _State(policy=policy)
        entries = self._entries(policy, st)
        base = next((e.access for e in entries if e.path == "/"), None)
        if base is Access.WRITE:
            st.mounts.append(Mount("bind", "/", "/"))
        elif base is Access.READ:
            st.mounts.append(Mount("ro-bind", "/", "/"))
        else:
            base = None
            st.masks.append(len(st.mounts))
            st.mounts.append(Mount("tmpfs", "/"))
        st.realised["/"] = base
        st.mounts += [Mount("dev", "/dev"), Mount("mqueue", "/dev/mqueue")]
        st.mounts += self._proc(st)
        for entry in entries:
            if entry.path != "/":
                self._realise(entry, st)
        cwd = self.paths.realpath(policy.cwd)
        if _realised_parent(st.realised, cwd, inclusive=True) not in (Access.READ, Access.WRITE):
            raise Refused(f"the working directory {cwd} is not readable under this policy "
                          "(give it a read or write rule, or choose another cwd)")
        return MountPlan(_seal(st.mounts, st.masks), cwd, tuple(st.notes), tuple(st.placeholders))

    def _proc(self, st: _State) -> list[Mount]:
        """A fresh ``/proc`` whose host-global files are read-only or hidden. Where bwrap cannot
        mount one (a container whose own ``/proc`` has covered parts), an empty read-only
        ``/proc`` instead: the host's would show every host process (environments, command
        lines), and no ``/proc`` at all keeps every guarantee at the cost of tools that need it."""
        status = self.facts.backend(self.name)
        if status is not None and not status.proc:
            st.masks.append(len(st.mounts))
            st.notes.append("bwrap: this host cannot give the sandbox a fresh /proc (" + (status.proc_reason or
                            "mounting proc is refused") + "), so /proc is empty inside; tools that read it fail")
            return [Mount("tmpfs", "/proc", perms="555")]
        mounts = [Mount("proc", "/proc")]
        if self.facts.euid in (0, -1):  # only root's uid passes these files' permission checks
            mounts += [Mount("ro-bind-try", path, path) for path in PROC_READ_ONLY]
        mounts += [Mount("ro-bind", path, "/dev/null") for path in PROC_MASKED if self.paths.kind(path) is not None]
        return mounts

    def _entries(self, policy: BoundPolicy, st: _State) -> list[_Entry]:
        """Rules (canonical), deny-glob matches and platform defaults, one per path, shallow first."""
        by_path: dict[str, _Entry] = {}

        def add(entry: _Entry) -> None:
            prev = by_path.get(entry.path)
            if prev is None or entry.access.precedence > prev.access.precedence:
                by_path[entry.path] = entry

        for rule in policy.rules:
            origin = "private" if rule.path in policy.private else "rule"
            add(_Entry(self._canonical(policy, rule.path, rule.access), rule.access, origin))
        for pattern in policy.deny_globs:
            for match in self._expand_glob(pattern, st):
                add(_Entry(match, Access.DENY, "glob"))
        explicit = list(by_path.values())
        if policy.minimal_read and policy.access("/") not in (Access.READ, Access.WRITE):
            for entry in self._platform(explicit):
                by_path.setdefault(entry.path, entry)
        return sorted(by_path.values(), key=lambda e: (e.depth, e.path))

    def _canonical(self, policy: BoundPolicy, path: str, access: Access) -> str:
        """The path bwrap should mount: the canonical one. A read-only or denied path reached
        through a symlink the sandbox could replace (one inside a writable root) is refused: the
        rule is placed on the link's target when the sandbox starts, and a re-pointed link would
        name other content (planted, or not masked) under the very path the rule is about."""
        norm = posixpath.normpath(path)
        real = self.paths.realpath(norm)
        if real == norm:
            return norm
        if access is not Access.WRITE:
            link = next((p for p in _prefixes(norm) if self.paths.kind(p) == "link"), None)
            if link is not None and policy.access(posixpath.dirname(link)) is Access.WRITE:
                what = "read-only" if access is Access.READ else "denied"
                raise Refused(f"cannot enforce {what} path {norm}: {link} is a symlink inside a "
                              "writable root, which the sandboxed command could replace")
        return real

    def _platform(self, explicit: list[_Entry]) -> Iterator[_Entry]:
        """Platform defaults not governed by an explicit rule on or above them."""
        ruled = [e.path for e in explicit if e.origin in ("rule", "private")]
        plain = [p for p in self.platform_read
                 if self.paths.kind(p) not in (None, "link") and self.paths.realpath(p) == p]
        for path in self.platform_read:
            if any(at_or_below(path, r) for r in ruled):
                continue
            kind = self.paths.kind(path)
            if kind is None:
                continue
            real = self.paths.realpath(path)
            if real == path:
                yield _Entry(path, Access.READ, "platform")
                continue
            if any(at_or_below(path, p) for p in plain if p != path):
                pass  # visible through a plain parent already; only its target may be missing
            elif kind == "link" and self.paths.realpath(posixpath.dirname(path)) == posixpath.dirname(path):
                yield _Entry(path, Access.READ, "platform", link=self.paths.readlink(path))
            else:
                yield _Entry(path, Access.READ, "platform", src=real)
                continue
            if not any(at_or_below(real, p) for p in plain) and self.paths.kind(real) is not None:
                yield _Entry(real, Access.READ, "platform")

    def _realise(self, entry: _Entry, st: _State) -> None:
        """Append the mounts that give ``entry.path`` its access, given its realised parent. Below
        a private temp dir nothing of the host shows, so a rule there is always mounted."""
        parent = _realised_parent(st.realised, entry.path)
        if entry.access is parent and not _below_private(st, entry.path):
            return
        path = entry.path
        kind = self.paths.kind(path)
        if entry.access is Access.WRITE:
            if entry.origin == "private":
                st.mounts.append(Mount("tmpfs", path))  # the task's own empty temp dir, never the host's
                st.private.add(path)
            elif kind is None:
                st.notes.append(f"writable path {path} does not exist on this host; not mounted")
                return
            else:
                st.mounts.append(Mount("bind", path, path))
        elif entry.access is Access.READ:
            if kind is None:
                if parent is Access.WRITE:
                    self._block_creation(entry, st)
                elif entry.origin == "rule":
                    st.notes.append(f"readable path {path} does not exist on this host; not mounted")
                return
            if entry.link is not None:
                st.mounts.append(Mount("symlink", path, entry.link))
            elif entry.origin == "platform" and not self.paths.exact:
                st.mounts.append(Mount("ro-bind-try", path, entry.src or path))
            else:
                st.mounts.append(Mount("ro-bind", path, entry.src or path))
        else:
            if parent is None:
                return  # nothing of the host is visible there anyway
            if kind is None:
                if parent is Access.WRITE:
                    self._block_creation(entry, st)
                return
            self._mask(path, kind == "dir", "000", st)
        st.realised[path] = entry.access

    def _mask(self, path: str, is_dir: bool, perms: Optional[str], st: _State) -> None:
        if is_dir:
            st.masks.append(len(st.mounts))
            st.mounts.append(Mount("tmpfs", path, perms=perms))
        else:
            st.mounts.append(Mount("ro-bind", path, "/dev/null"))

    def _block_creation(self, entry: _Entry, st: _State) -> None:
        """A read-only or denied path missing inside a writable root must not be creatable:
        occupy its first missing component with an empty read-only mount. A directory when that
        component is a parent of the path (``~/.config`` for ``~/.config/gcloud``), a protected
        name (``.git``: git still walks up to a parent repository) or a credential directory
        (``~/.ssh``: ssh and gpg later expect one); otherwise an unopenable empty file
        (``/dev/null``, mounted ``nodev``). Either stays on the host as an empty mount point."""
        first = next((p for p in _prefixes(entry.path) if self.paths.kind(p) is None), None)
        if first is None or self.paths.kind(posixpath.dirname(first)) != "dir":
            return  # under an existing non-directory: can never be created
        if first != entry.path or (st.policy is not None and st.policy.creates_dir(posixpath.basename(first))):
            self._mask(first, True, "555" if entry.access is Access.READ else "000", st)
        else:
            self._mask(first, False, None, st)
        st.placeholders.append(first)
        st.realised[first] = entry.access

    # -- deny globs -------------------------------------------------------------------------

    def _expand_glob(self, pattern: str, st: _State) -> list[str]:
        """The paths to mask; a glob that cannot be compiled is refused even in a dry-run, which
        expands nothing, so it never shows a wrapper the host would then refuse."""
        try:
            validate(pattern)
            if not self.paths.exact:
                st.notes.append(f"deny glob {pattern} is expanded on the host when the task runs")
                return []
            return expand(pattern, self.paths)
        except GlobError as exc:
            raise Refused(str(exc)) from None


# -- path helpers (canonical POSIX paths) ------------------------------------------------------

def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def _prefixes(path: str) -> Iterator[str]:
    """``/a``, ``/a/b``, ``/a/b/c`` for ``/a/b/c``."""
    cur = ""
    for part in path.split("/"):
        if part:
            cur += "/" + part
            yield cur


def _realised_parent(realised: dict[str, Optional[Access]], path: str,
                     inclusive: bool = False) -> Optional[Access]:
    """The access the sandbox gives ``path`` so far: that of its deepest realised ancestor."""
    cur = path if inclusive else posixpath.dirname(path)
    while True:
        if cur in realised:
            return realised[cur]
        if cur == "/":
            return None
        cur = posixpath.dirname(cur)


def _sandbox_made(plan: MountPlan, paths: Sequence[str]) -> tuple[str, ...]:
    """Those of ``paths`` that are the sandbox's own (its /dev, its mqueue, a private temp dir)
    and that no later mount of a host path covers: what a persistent sandbox may empty."""
    own = {"dev": "/dev", "mqueue": "/dev/mqueue"}
    made: list[str] = []
    for path in paths:
        start = next((i for i, m in enumerate(plan.mounts)
                      if (m.op == "tmpfs" and m.dest == path) or own.get(m.op) == path
                      or (m.op == "dev" and path.startswith("/dev/"))), None)
        covered = start is None or any(m.op in ("bind", "ro-bind", "ro-bind-try", "symlink") and
                                       at_or_below(path, m.dest) for m in plan.mounts[start + 1:])
        if not covered:
            made.append(path)
    return tuple(made)


def _below_private(st: _State, path: str) -> bool:
    """Whether the deepest realised ancestor of ``path`` is a private temp dir (an empty tmpfs)."""
    cur = posixpath.dirname(path)
    while cur not in st.realised and cur != "/":
        cur = posixpath.dirname(cur)
    return cur in st.private


def _seal(mounts: list[Mount], masks: list[int]) -> tuple[Mount, ...]:
    """Remount each tmpfs we created read-only right after the last mount inside it, and make a
    deny mask traversable (111) when something below it is re-opened."""
    by_dest = {mounts[i].dest: i for i in masks}
    last = {i: i for i in masks}
    for j, mount in enumerate(mounts):
        ancestors = ["/", *_prefixes(mount.dest)][:-1] if mount.dest != "/" else []
        for ancestor in ancestors:
            index = by_dest.get(ancestor)
            if index is not None and index < j:
                last[index] = j
    out = list(mounts)
    after: dict[int, list[str]] = {}
    for index in masks:
        mask = mounts[index]
        if last[index] != index and mask.perms == "000":
            out[index] = Mount("tmpfs", mask.dest, perms="111")
        after.setdefault(last[index], []).insert(0, mask.dest)
    sealed: list[Mount] = []
    for i, mount in enumerate(out):
        sealed.append(mount)
        sealed.extend(Mount("remount-ro", dest) for dest in after.get(i, ()))
    return tuple(sealed)


def start_failure(argv0: str, rc: Optional[int], status: Optional[bytes], stderr: str) -> Optional[OSError]:
    """Why the task's command did not start in a fresh bwrap sandbox, as the ``OSError`` the agent
    reports for every backend (ENOENT: rc 127, any other errno: 126); None when it started, or
    when bwrap failed before it tried.

    bwrap ``execvp``s the command as its child's last step; when that fails it prints ``bwrap:
    execvp NAME: STRERROR`` and exits 1, exactly what a command that ran and exited 1 gives. The
    two are told apart by what bwrap writes on ``--json-status-fd`` (:data:`.base.STATUS_FD`,
    bwrap >= 0.3.2): its closing ``{"exit-code": N}`` only when the child's exec *succeeded* (bwrap
    counts the bytes its child wrote on a close-on-exec pipe: one before the exec, a second one if
    the exec failed). Nothing in the sandbox can write on that descriptor (bwrap's child closes it
    before setting the sandbox up), so a task cannot fake it. Only once bwrap has said that no
    command ran is its stderr line read, for the errno: no task wrote there.

    Rejected: the stderr line alone (any task can print it and exit 1); resolving ``argv0`` on the
    host before or after the run (the sandbox's file system is not the host's: deny masks,
    ``:minimal``, a private temp dir on a tmpfs; such a check would be wrong both ways).
    """
    if rc != 1 or status is None or b'"child-pid"' not in status or b'"exit-code"' in status:
        return None
    prefix = f"bwrap: execvp {argv0}: "
    at = stderr.rfind(prefix)
    if at < 0:
        return None  # a set-up step failed before the exec: bwrap's own message says which
    text = stderr[at + len(prefix):].strip()
    return OSError(_errno_of(text), text, argv0)


def setup_failure(rc: Optional[int], status: Optional[bytes], stderr: str) -> Optional[str]:
    """bwrap's own last words when it exited 1 before the task's command started for a reason other
    than the command's ``execvp`` (:func:`start_failure`): namespaces refused, a mount that failed,
    an option this bwrap does not know. So the sandbox could not be provided and nothing ran:
    ``sandbox_unavailable``, never a command "exited with 1". Told apart as :func:`start_failure`
    tells them: no ``{"exit-code": N}`` on ``--json-status-fd`` means the command was never
    executed, and a task cannot write there. None when the command ran (or ``status`` is None:
    no status descriptor, not a fresh bwrap)."""
    if rc != 1 or status is None or b'"exit-code"' in status:
        return None
    lines = [line for line in stderr.strip().splitlines() if line.startswith("bwrap: ")]
    if lines and lines[-1].startswith("bwrap: execvp "):
        return None  # the command itself could not start: start_failure's case
    return lines[-1] if lines else "bwrap exited before starting the command, saying nothing"


def _errno_of(text: str) -> int:
    """The errno whose C-locale message is ``text`` (bwrap never sets a locale); 0 if none."""
    return next((number for number in sorted(errno.errorcode) if os.strerror(number) == text), 0)
