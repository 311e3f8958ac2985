"""Binding: turn a portable intent into this host's concrete, ordered filesystem policy.

Symbols become this host's paths (``:workspace_roots`` → each root, ``:tmpdir`` → the temp dir,
``~`` → home ...), URIs become native paths (or are refused when they belong to another OS),
symlinks are resolved, precedence is settled (deeper path wins; at equal depth deny > write >
read), and ``.git`` inside a writable root is carved out read-only unless a rule writes it. Every
backend renders from the resulting :class:`BoundPolicy`, so they all enforce the same thing.

The filesystem is consulted through a :class:`~.hostfs.FsView`, so the same code binds for a
real host (``LocalFs``) and for a host we may not touch in a dry-run (``AssumedFs``).
"""

from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional, Union

from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.binding.hostfs import AssumedFs, FsView, LocalFs
from sandfleet_agent.paths import at_or_below
from sandfleet_agent.portable.globs import GlobError, validate
from sandfleet_agent.portable.intent import KNOWN_SYMBOLS, Access, FilePath, Glob, NetworkPolicy, SandboxIntent, Special
from sandfleet_agent.portable.pathuri import WINDOWS, PathUri
from sandfleet_agent.portable.policy import DEFAULT_PROTECTED, DENY_DIR_NAMES, CeilingView, Policy, path_spec

__all__ = ["AssumedFs", "BindError", "BoundPolicy", "FsView", "LocalFs", "Rule", "bind", "bind_cwd"]

#: Names kept read-only inside a writable root unless a rule writes them: a sandboxed command
#: must not plant git hooks or rewrite history that the user's own tools run later, nor the
#: agent, cloud and container configuration other tools trust. The operator policy adds more.
PROTECTED_NAMES = DEFAULT_PROTECTED
#: Sources of the rules the agent adds for itself (never the intent's grants).
WALL_SOURCES = ("sandfleet's own state", "sandfleet's code, interpreter or PATH")


class BindError(Exception):
    """The intent cannot be bound on this host (e.g. a Windows path sent to a Linux host)."""


@dataclass(frozen=True)
class Rule:
    """One concrete path and its access; ``source`` says which intent entry put it there."""

    path: str
    access: Access
    source: str


@dataclass(frozen=True)
class BoundPolicy:
    """The concrete policy for one task on one host, ordered shallow → deep, one rule per path."""

    os: str
    rules: tuple[Rule, ...]
    cwd: str
    network: NetworkPolicy
    minimal_read: bool = False
    deny_globs: tuple[str, ...] = ()
    workspace_roots: tuple[str, ...] = ()
    hints: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: Writable rules that are the task's private scratch (``:tmpdir``): a backend gives the task
    #: an empty directory of its own there (bwrap a tmpfs on that path, Landlock a fresh directory
    #: it points ``TMPDIR`` at), never the host's shared one.
    private: tuple[str, ...] = ()
    #: Names kept read-only in writable roots (``.git`` ...; the policy may add ``a/b`` paths).
    protected_names: tuple[str, ...] = DEFAULT_PROTECTED

    def creates_dir(self, name: str) -> bool:
        """Whether a missing ``name`` blocked in a writable root should be an empty directory
        (the first segment of a protected name, so tools walking up still see a directory)."""
        key = name if self.os == "linux" else name.lower()
        return key in DENY_DIR_NAMES or any(key == (p if self.os == "linux" else p.lower()).split("/")[0]
                                            for p in self.protected_names)

    @property
    def root(self) -> str:
        return _fs_root(self.os, self.cwd)

    def access(self, path: str) -> Optional[Access]:
        """The access the policy gives ``path``: the deepest rule containing it wins."""
        found: Optional[Rule] = None
        for rule in self.rules:
            if _contains(self.os, rule.path, path) and (found is None or _depth(self.os, rule.path)
                                                        >= _depth(self.os, found.path)):
                found = rule
        return found.access if found else None

    @property
    def full_read(self) -> bool:
        return self.access(self.root) in (Access.READ, Access.WRITE)



def _pathmod(system: str) -> Any:
    return ntpath if system == "windows" else posixpath


def _fs_root(system: str, cwd: str) -> str:
    if system == "windows":
        drive = ntpath.splitdrive(cwd)[0]
        return (drive or "C:") + "\\"
    return "/"


def _parts(system: str, path: str) -> list[str]:
    mod = _pathmod(system)
    drive, rest = mod.splitdrive(mod.normpath(path))
    sep = "\\" if system == "windows" else "/"
    return [drive.lower() if system == "windows" else drive] + [
        (p.lower() if system == "windows" else p) for p in rest.split(sep) if p
    ]


@lru_cache(maxsize=4096)
def _depth(system: str, path: str) -> int:
    """Memoised: rules are sorted and compared by depth many times per task, on the same paths."""
    return len(_parts(system, path))


def _contains(system: str, parent: str, child: str) -> bool:
    """Whether ``child`` is ``parent`` or lies below it, in this OS's path convention."""
    return at_or_below(child, parent, windows=system == "windows")


def _join(system: str, base: str, subpath: Optional[str]) -> str:
    if not subpath or subpath == ".":
        return base
    mod = _pathmod(system)
    parts = [p for p in subpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BindError(f"subpath {subpath!r} may not contain '..'")
    return str(mod.join(base, *parts))


def _native(uri: str, system: str) -> str:
    try:
        return PathUri.parse(uri).to_native(system)
    except ValueError as exc:
        raise BindError(str(exc) + _other_os_hint(uri, system)) from None


def _other_os_hint(uri: str, system: str) -> str:
    """Why a path of the other OS's spelling is refused, shown as the user wrote it."""
    try:
        parsed = PathUri.parse(uri)
        windows_path = parsed.convention == WINDOWS
        if windows_path == (system == "windows"):
            return ""
        native = parsed.to_native("windows" if windows_path else "linux")
    except ValueError:
        return ""
    kind = "a Windows path" if windows_path else "a POSIX path"
    return (f": {native} is {kind} and this host runs {system}; give this host a path in its own spelling "
            "(per-host paths belong in that host's inventory vars)")


CwdSpec = Union[Special, FilePath, None]


def bind_cwd(cwd: CwdSpec, roots: tuple[str, ...], facts: HostFacts, fs: FsView) -> str:
    """The directory the command starts in. Unset: the first workspace root, else home."""
    if cwd is None:
        chosen = roots[0] if roots else facts.home
    elif isinstance(cwd, FilePath):
        chosen = _native(cwd.uri, facts.os)
    elif cwd.name == "workspace_roots":
        if not roots:
            raise BindError("cwd ':workspace_roots' needs workspace roots, and this host has none "
                            "(set sandfleet_workspace_roots in the inventory or give an absolute cwd)")
        chosen = _join(facts.os, roots[0], cwd.subpath)
    elif cwd.name == "home":
        chosen = _join(facts.os, facts.home, cwd.subpath)
    elif cwd.name == "tmpdir" and facts.tmpdir:
        chosen = _join(facts.os, facts.tmpdir, cwd.subpath)
    else:
        raise BindError(f"cwd {cwd} is not a symbol a cwd can use (allowed: :workspace_roots[/sub], ~/sub, "
                        "an absolute path)")
    return fs.realpath(chosen)


def workspace_roots(intent: Optional[SandboxIntent], facts: HostFacts) -> tuple[str, ...]:
    """The intent's own roots when it carries some (as URIs), else the host's."""
    if intent is not None and intent.workspace_roots:
        return tuple(_native(uri, facts.os) for uri in intent.workspace_roots)
    return facts.workspace_roots


def bind(
    intent: SandboxIntent,
    facts: HostFacts,
    cwd: CwdSpec = None,
    fs: Optional[FsView] = None,
    protected_names: tuple[str, ...] = DEFAULT_PROTECTED,
) -> BoundPolicy:
    """Bind ``intent`` for one task on the host described by ``facts``.

    Raises :class:`BindError` when the intent names something this host cannot honour as asked
    (a path of another OS's convention, a cwd that needs roots the host lacks); the caller fails
    the task closed rather than running it with less protection.
    """
    fs = fs or AssumedFs(facts.os)
    system = facts.os
    warnings: list[str] = []
    roots = workspace_roots(intent, facts)
    real_cwd = bind_cwd(cwd, roots, facts, fs)
    if roots:
        project_roots: tuple[str, ...] = roots
    elif cwd is not None:
        project_roots = (real_cwd,)
    else:
        project_roots = ()
    entries: list[tuple[str, Access, str]] = []
    deny_globs: list[str] = []
    minimal = False

    for perm in intent.permissions:
        target, access, label = perm.path, perm.access, str(perm.path)
        if isinstance(target, FilePath):
            entries.append((_native(target.uri, system), access, label))
        elif isinstance(target, Glob):
            if access is not Access.DENY:
                warnings.append(f"glob {target.pattern!r} with {access.value} ignored: globs can only deny")
                continue
            _check_glob(target.pattern)
            deny_globs.extend(_anchor_glob(target.pattern, system, facts.home, project_roots or (real_cwd,)))
        elif not target.known:
            understood = ", ".join(":" + s for s in KNOWN_SYMBOLS if s != "home")
            if access is Access.DENY:  # ignoring a grant narrows; ignoring a deny would widen
                raise BindError(f"{label}={access.value}: this host does not know :{target.name}, and ignoring a "
                                f"deny would grant more than asked (this host understands {understood}); "
                                "update sandfleet on the host")
            warnings.append(f"unknown symbol :{target.name} ignored (this host understands {understood})")
        elif target.name == "minimal":
            if access is Access.READ:
                minimal = True
            else:
                warnings.append(f":minimal={access.value} ignored: :minimal only grants platform reads")
        else:
            for path in _symbol_paths(target, system, facts, real_cwd, project_roots, fs, warnings):
                entries.append((path, access, label))

    resolved = _resolve(entries, system, fs)
    private = _private_scratch(resolved, entries, system, fs)
    _refuse_mutable_links(entries, resolved, system, fs)
    rules = _carve_outs(resolved, system, fs, private, protected_names)
    rules = _guard_agent(rules, facts, fs)
    rules.sort(key=lambda r: (_depth(system, r.path), _key(system, r.path)))
    return BoundPolicy(
        os=system,
        rules=tuple(rules),
        cwd=real_cwd,
        network=intent.network,
        minimal_read=minimal,
        deny_globs=tuple(dict.fromkeys(deny_globs)),
        workspace_roots=tuple(fs.realpath(r) for r in project_roots),
        hints=dict(intent.per_os.get(system, {})),
        warnings=tuple(warnings),
        private=private,
        protected_names=protected_names,
    )


def bind_ceiling(policy: Policy, facts: HostFacts, fs: FsView) -> CeilingView:
    """A layer's ceiling as this host's paths. Symbols bind to the host's own facts, never the
    intent's, and without the cwd fallback: a host without workspace roots has no workspace."""
    view = CeilingView()
    for key, access in policy.filesystem or ():
        spec = path_spec(key)
        if isinstance(spec, Special) and spec.name == "minimal":
            view.minimal = True
            continue
        if isinstance(spec, Special) and spec.name == "root":
            view.minimal = True
        if isinstance(spec, Special) and spec.name == "tmpdir":
            view.private_tmp = view.private_tmp or access is Access.WRITE
            continue
        for path in spec_paths(spec, facts, fs):
            view.entries.append((path, access))
    return view


def spec_paths(spec: Union[Special, FilePath, Glob], facts: HostFacts, fs: FsView) -> list[str]:
    """The concrete paths a policy path names on this host (none for globs and for paths in the
    other OS's spelling, which name nothing here)."""
    if isinstance(spec, Glob):
        return []
    if isinstance(spec, FilePath):
        try:
            return [fs.realpath(_native(spec.uri, facts.os))]
        except BindError:
            return []
    warnings: list[str] = []
    cwd = facts.workspace_roots[0] if facts.workspace_roots else facts.home
    return [fs.realpath(p) for p in _symbol_paths(spec, facts.os, facts, cwd, facts.workspace_roots, fs, warnings)]


def contains(system: str) -> Any:
    """``contains(parent, child)`` for this OS's paths (case-insensitive on Windows)."""
    return lambda parent, child: _contains(system, parent, child)


def _key(system: str, path: str) -> str:
    return path.lower() if system == "windows" else path


def _resolve(entries: list[tuple[str, Access, str]], system: str, fs: FsView) -> list[Rule]:
    """One rule per canonical path; at the same path the stronger access wins (deny > write > read)."""
    by_key: dict[str, Rule] = {}
    for path, access, source in entries:
        real = fs.realpath(path)
        prev = by_key.get(_key(system, real))
        if prev is None or access.precedence > prev.access.precedence:
            by_key[_key(system, real)] = Rule(real, access, source)
    return list(by_key.values())


def _symbol_paths(target: Special, system: str, facts: HostFacts, cwd: str, roots: tuple[str, ...],
                  fs: FsView, warnings: list[str]) -> list[str]:
    name, sub = target.name, target.subpath
    if name == "root":
        return [_fs_root(system, cwd)]
    if name == "workspace_roots":
        if not roots:
            warnings.append(f"{target} grants nothing: the host has no workspace roots and the task "
                            "no cwd (set sandfleet_workspace_roots or give the task a cwd)")
        return [_join(system, root, sub) for root in roots]
    if name == "home":
        return [_join(system, facts.home, sub)]
    if name == "tmpdir":
        return [_join(system, facts.tmpdir, sub)] if facts.tmpdir else []
    if name == "slash_tmp":
        return [] if system == "windows" else [_join(system, "/tmp", sub)]
    raise AssertionError(f"unhandled symbol {name}")  # KNOWN_SYMBOLS and this function disagree


def _check_glob(pattern: str) -> None:
    """A deny glob the engine cannot compile (``[z-a]``, sent by a controller that did not check
    it) fails the binding, so every backend refuses the task instead of running it unmasked or
    failing inside the agent; the message names the glob."""
    try:
        validate(pattern)
    except GlobError as exc:
        raise BindError(str(exc)) from None


def _anchor_glob(pattern: str, system: str, home: str, roots: tuple[str, ...]) -> list[str]:
    """Relative globs apply under each workspace root, ``~/`` globs under home."""
    mod = _pathmod(system)
    if pattern == "~" or pattern.startswith(("~/", "~\\")):
        return [str(mod.join(home, pattern[2:]))]
    if mod.isabs(pattern):
        return [pattern]
    return [str(mod.join(root, pattern)) for root in roots]


def _private_scratch(rules: list[Rule], entries: list[tuple[str, Access, str]], system: str,
                     fs: FsView) -> tuple[str, ...]:
    """The writable ``:tmpdir`` rule, unless ``:slash_tmp`` asks for the same directory shared."""
    shared = {_key(system, fs.realpath(path)) for path, access, label in entries if label.startswith(":slash_tmp")}
    return tuple(r.path for r in rules if r.source == ":tmpdir" and r.access is Access.WRITE
                 and _key(system, r.path) not in shared)


def _refuse_mutable_links(entries: list[tuple[str, Access, str]], rules: list[Rule], system: str,
                          fs: FsView) -> None:
    """A read-only or denied path named through a symlink that lies inside a writable root is
    refused: the task could re-point the link, and the rule (placed on the link's target when the
    sandbox is built) would no longer cover what the path names. Codex refuses the same."""
    if not fs.exact:
        return  # a dry-run for another host sees no links; the host checks for real
    writable = [r for r in rules if r.access is Access.WRITE]
    for path, access, label in entries:
        if access is Access.WRITE or not writable:
            continue
        for prefix in _prefixes(system, path):
            if fs.kind(prefix) != "link":
                continue
            parent = _pathmod(system).dirname(prefix)
            if any(_contains(system, w.path, fs.realpath(parent)) for w in writable):
                raise BindError(f"cannot enforce {label}={access.value}: its path {path} crosses the symlink "
                                f"{prefix}, which lies in a writable root and could be re-pointed by the task "
                                "(name the link's target instead)")


def _prefixes(system: str, path: str) -> list[str]:
    """Each ancestor of ``path`` and the path itself, shallow first (``/a``, ``/a/b``)."""
    mod = _pathmod(system)
    out: list[str] = []
    cur = str(mod.normpath(path))
    while True:
        out.append(cur)
        parent = str(mod.dirname(cur))
        if parent == cur:
            break
        cur = parent
    return [p for p in reversed(out) if p != _fs_root(system, p)]


def _guard_agent(rules: list[Rule], facts: HostFacts, fs: FsView) -> list[Rule]:
    """The agent's own walls, whatever the intent says: its state directory (code cache,
    compiled templates, render memo, private temp dirs) is denied, and what runs outside the
    sandbox later (the agent's code and interpreter, the directories on its PATH, a local
    controller's installation: :attr:`HostFacts.protected`) stays read-only inside writable
    roots, existing or not. A rule that asks to reach into either is refused, never trimmed."""
    system = facts.os
    walls = [(fs.realpath(facts.state_dir), Access.DENY, "sandfleet's own state")] if facts.state_dir else []
    # the protected paths are canonical already (facts.own_paths); realpath per task is the slow part
    walls += [(p, Access.READ, "sandfleet's code, interpreter or PATH") for p in facts.protected]
    writes = [r for r in rules if r.access is Access.WRITE]
    added: list[Rule] = []
    for wall, access, why in walls:
        if access is Access.READ and not any(_contains(system, r.path, wall) or _contains(system, wall, r.path)
                                             for r in writes):
            continue  # no writable rule above or below it: nothing to guard
        for rule in rules:
            if _contains(system, wall, rule.path) and (access is Access.DENY or rule.access is Access.WRITE):
                raise BindError(f"{rule.source}={rule.access.value} reaches {rule.path}, which holds {why} "
                                f"({wall}); no task may {'touch' if access is Access.DENY else 'write'} it")
        covering = [r for r in rules if _contains(system, r.path, wall)]
        deepest = max(covering, key=lambda r: _depth(system, r.path), default=None)
        if access is Access.DENY or (deepest is not None and deepest.access is Access.WRITE):
            added.append(Rule(wall, access, why))
    return rules + added


def _carve_outs(rules: list[Rule], system: str, fs: FsView, private: tuple[str, ...] = (),
                names: tuple[str, ...] = DEFAULT_PROTECTED) -> list[Rule]:
    """Keep ``.git`` (and the ``gitdir:`` a ``.git`` file points at) read-only inside each
    writable root, unless a rule already says something about that exact path. Exempt: the
    filesystem root (``:root=write`` asks for everything) and a private ``:tmpdir``, which starts
    empty and dies with the task, so nothing planted there reaches a later tool; the shared
    ``/tmp`` (``:slash_tmp``) is guarded like any workspace."""
    explicit = {_key(system, r.path) for r in rules}
    added: list[Rule] = []
    for rule in rules:
        if rule.access is not Access.WRITE or rule.path == _fs_root(system, rule.path) \
                or rule.path in private or _is_protected(system, rule.path, names):
            continue
        for name in names:
            guarded = _join(system, rule.path, name)
            if _key(system, guarded) in explicit:
                continue
            explicit.add(_key(system, guarded))
            added.append(Rule(guarded, Access.READ, f"protected {name} of writable {rule.path}"))
            target = _gitdir_target(guarded, system, fs)
            if target is not None and _key(system, target) not in explicit:
                explicit.add(_key(system, target))
                added.append(Rule(target, Access.READ, f"gitdir of {guarded}"))
    return rules + added


def _is_protected(system: str, path: str, names: tuple[str, ...] = DEFAULT_PROTECTED) -> bool:
    """A path that is itself a protected name (``.git`` made writable on purpose): nothing inside
    it needs guarding, and a ``.git/.git`` placeholder would be left on the host by the backends
    that create missing carve-outs (bwrap's mount points, the Windows ACL entries). macOS and
    Windows file systems ignore case, so there ``.GIT`` counts too."""
    norm = path.replace("\\", "/") if system == "windows" else path
    fold = (lambda t: t) if system == "linux" else str.lower
    return any(fold(norm).endswith("/" + fold(name)) for name in names)


def _gitdir_target(dot_git: str, system: str, fs: FsView) -> Optional[str]:
    """Where a ``.git`` *file* (worktrees, submodules) points: ``gitdir: <path>``."""
    if not fs.is_file(dot_git):
        return None
    head = fs.read_head(dot_git) or ""
    first = head.strip().splitlines()[0] if head.strip() else ""
    key, _, value = first.partition(":")
    if key.strip() != "gitdir" or not value.strip():
        return None
    mod = _pathmod(system)
    target = mod.join(mod.dirname(dot_git), value.strip())
    real = fs.realpath(str(target))
    return real if fs.is_dir(real) else None
