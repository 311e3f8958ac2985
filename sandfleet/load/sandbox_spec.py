"""The ``sandbox:`` block of a playbook, turned into a portable :class:`SandboxIntent` (docs/sandbox.md).

Grammar (a task's own block replaces its play's entirely; blocks never merge)::

    sandbox: false                  explicitly unsandboxed (parse_sandbox returns None)
    sandbox: true                   the default: profile `workspace`, network `none` (same as `{}`)
    sandbox:
      profile: read-only | workspace | full-access
      filesystem: {PATH-KEY: read | write | deny, ...}
      network: none | full | {allow: [DOMAIN, ...], deny: [DOMAIN, ...]}
      workspace_roots: [ABSOLUTE-PATH, ...]
      linux: {prefer: bwrap | landlock, ...}      # per-OS hints, read only by hosts of that OS
      macos: {...}
      windows: {...}

Decisions, and why:

- Permissions: ``profile`` alone = its entries; ``filesystem`` alone = exactly its entries (so an
  empty ``filesystem`` with no profile is an error: nothing could be read, nothing could run);
  both = the profile's entries followed by the filesystem entries; neither = the default profile.
- ``network`` is never implied by a profile (``full-access`` still has network ``none`` unless
  asked): leaving the network on must be written down. The managed form needs a non-empty
  ``allow`` list: the host proxy lets through only allowed domains, so a ``deny``-only list would
  silently mean "no network" (that is ``none``). ``deny`` entries win over ``allow``. Domains are
  lower-cased, de-duplicated, ASCII (punycode) hostnames; ``*.x`` covers x's subdomains.
- PATH-KEY: an absolute POSIX or Windows path (a ``file:`` URI on the intent), ``~`` / ``~/sub``
  (the symbol ``home``), a symbol (``:root``, ``:minimal``, ``:workspace_roots[/sub]``,
  ``:tmpdir``, ``:slash_tmp``), or a git-style glob (deny only: a glob cannot grant access, since
  the backends can only carve holes with patterns, not open them). Only ``:workspace_roots`` and
  ``~`` take a subpath: the others name a whole area whose sub-tree has no meaning across hosts.
  A subpath is ``/``-separated and relative: no ``..``, no leading ``/``, no drive, no empty
  segment; ``.`` segments are dropped. ``:workspace_roots/<glob>`` is the relative glob ``<glob>``
  (relative globs are anchored at each workspace root). Any character of ``*?[`` makes a key a
  glob, checked by the hosts' own engine (:func:`sandfleet_agent.portable.globs.validate`, strictly): a
  reversed range, an unclosed ``[``, a class holding what Seatbelt cannot hold (``\\``, ``[``,
  non-ASCII) or a trailing ``\\`` is refused at load, at its key. ``:home`` is not a spelling
  (write ``~``); an unknown ``:name`` is kept on the intent and reported as a warning, so an older
  controller passes a newer playbook's symbol through.
- Per-OS hints: ``linux.prefer`` is checked here; every other hint key is carried as plain data
  and validated by the hosts that read it. A hint may only choose among ways to enforce the
  intent, never weaken it.
- Mistakes: every independent part of a block (each unknown key, the profile, each filesystem
  entry's key and access, the network and each of its domains, each workspace root, each OS's
  hints, each limit) is checked even after an earlier one failed, and the block raises one
  :class:`InputError` carrying them all in file order, as the playbook loader does for a file.

This module also holds the small validation helpers the playbook loader shares (key checking,
type names, native path -> URI).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, TypeVar

from sandfleet.errors import InputError, Mark
from sandfleet.load.yamlsrc import YList, YMap
from sandfleet_agent.portable import globs
from sandfleet_agent.portable.intent import (
    BACKENDS_BY_OS,
    DEFAULT_PROFILE,
    KNOWN_SYMBOLS,
    OS_NAMES,
    PROFILES,
    Access,
    FilePath,
    Glob,
    NetworkMode,
    NetworkPolicy,
    PathSpec,
    Permission,
    SandboxIntent,
    Special,
)
from sandfleet_agent.portable.limits import KEYS as LIMIT_KEYS
from sandfleet_agent.portable.limits import TaskLimits, parse_limits
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.words import describe, suggest

#: Called with (message, mark) for a problem that is reported but not fatal.
WarnFn = Callable[[str, Mark], None]
_T = TypeVar("_T")

SANDBOX_KEYS = ("profile", "filesystem", "network", "workspace_roots", "limits", *OS_NAMES)
ACCESS_VALUES = tuple(a.value for a in Access)
LINUX_PREFER = BACKENDS_BY_OS["linux"]
#: Symbols that take a ``/subpath``. ``home`` is spelled ``~/sub``.
SUBPATH_SYMBOLS = ("workspace_roots",)
PATH_KEY_FORMS = (
    "/absolute/path",
    "C:\\windows\\path",
    "\\\\server\\share\\path",
    "~",
    "~/sub",
    ":root",
    ":minimal",
    ":workspace_roots[/sub]",
    ":tmpdir",
    ":slash_tmp",
    "a glob (deny only)",
)

DEFAULT_INTENT = SandboxIntent(permissions=PROFILES[DEFAULT_PROFILE], network=NetworkPolicy())
"""What a task gets when no sandbox is written anywhere: sandboxed by default."""

_GLOB_CHARS = frozenset("*?[")
_SYMBOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DRIVE = re.compile(r"[A-Za-z]:")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_OLD_SYMBOL_SPELLINGS = {"cwd": "workspace_roots", "project_roots": "workspace_roots"}


# --- shared helpers -------------------------------------------------------------------------------








def unknown_keys(node: YMap, allowed: tuple[str, ...], what: str,
                 hints: Optional[Mapping[str, str]] = None) -> list[InputError]:
    """Every unknown key of ``node``, each an error at its key: a typo must not silently drop a
    setting, and a block with two typos shows both."""
    out = []
    for key in node:
        if key in allowed:
            continue
        hint = (hints or {}).get(str(key))
        extra = f"; {hint}" if hint else suggest(key, allowed)
        out.append(InputError(f"unknown {what} key {key!r}{extra}", node.key_mark(key), allowed=allowed))
    return out


def check_keys(node: YMap, allowed: tuple[str, ...], what: str,
               hints: Optional[Mapping[str, str]] = None) -> None:
    """Unknown keys are errors, never ignored: the first one is raised."""
    errors = unknown_keys(node, allowed, what, hints)
    if errors:
        raise errors[0]


class _Mistakes:
    """The mistakes of one ``sandbox:`` block, each recorded while the next independent part is
    checked, as the playbook loader does for a whole file (sandfleet/load/playbook.py): one load
    shows them all. A part that depends on a broken one (the "filesystem is empty" check after a
    bad entry) is skipped, so each mistake is reported once, where it was made."""

    def __init__(self) -> None:
        self.found: list[InputError] = []

    def attempt(self, default: Any, check: Callable[..., _T], *args: Any) -> _T:
        """``check(*args)``, or ``default`` after recording its error(s) (what is built is dropped
        once a mistake is recorded, so ``default`` need only keep the checks going)."""
        try:
            return check(*args)
        except InputError as exc:
            self.found.extend(exc.errors)
            return default  # type: ignore[no-any-return]

    def raise_any(self) -> None:
        """One :class:`InputError` carrying every mistake in file order, if there is one."""
        if self.found:
            raise InputError.collect(sorted(self.found, key=lambda e: (e.mark.line, e.mark.col) if e.mark
                                            else (1 << 30, 0)))


def expect_map(value: Any, mark: Mark, what: str) -> YMap:
    if not isinstance(value, YMap):
        raise InputError(f"{what} must be a mapping, got {describe(value)}", mark)
    return value


def expect_list(value: Any, mark: Mark, what: str) -> YList:
    if not isinstance(value, YList):
        raise InputError(f"{what} must be a list, got {describe(value)}", mark)
    return value


def expect_str(value: Any, mark: Mark, what: str, allowed: Optional[Iterable[str]] = None) -> str:
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {describe(value)}", mark, allowed=allowed)
    return value


def plain(value: Any) -> Any:
    """Loaded YAML as ordinary dicts and lists (the position-keeping types stay in the loader)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def native_path_uri(text: str, mark: Mark, what: str) -> str:
    """An absolute native path (POSIX or Windows spelling) as its canonical ``file:`` URI."""
    if "\0" in text:
        raise InputError(f"{what} {text!r} contains a NUL character", mark)
    try:
        return str(PathUri.from_native(text))
    except ValueError as exc:
        raise InputError(f"{what} must be an absolute path: {exc}", mark,
                         allowed=("/absolute/path", "C:\\windows\\path", "\\\\server\\share\\path")) from None


def check_subpath(sub: str, key: str, mark: Mark) -> Optional[str]:
    """A symbol's subpath, normalized (``.`` dropped); ``None`` when it names the symbol itself.

    Fails closed on anything that could leave the symbol's tree on some OS.
    """
    if "\0" in sub:
        raise InputError(f"{key!r}: the subpath contains a NUL character", mark)
    if "\\" in sub:
        raise InputError(f"{key!r}: separate a subpath with '/', not '\\' (it is read the same on every OS)",
                         mark)
    if sub.startswith("/"):
        raise InputError(f"{key!r}: the subpath must be relative, not absolute", mark)
    segments = sub.split("/")
    if _DRIVE.match(segments[0]):
        raise InputError(f"{key!r}: the subpath must be relative, not start with a drive", mark)
    if "" in segments:
        raise InputError(f"{key!r}: the subpath has an empty segment (a doubled or trailing '/')", mark)
    if ".." in segments:
        raise InputError(f"{key!r}: the subpath may not contain '..' (it could leave the symbol's tree)",
                         mark)
    kept = [s for s in segments if s != "."]
    return "/".join(kept) or None


# --- the sandbox block ----------------------------------------------------------------------------


def parse_sandbox(value: Any, mark: Mark, warn: WarnFn) -> Optional[SandboxIntent]:
    """The intent a ``sandbox:`` value asks for; ``None`` for ``sandbox: false``. A block with
    several mistakes raises one :class:`InputError` carrying each (``.errors``, file order)."""
    if value is False:
        return None
    if value is True:
        return DEFAULT_INTENT
    if value is None:
        raise InputError("sandbox is empty; write `sandbox: true` (the default sandbox), "
                         "`sandbox: false` (unsandboxed) or a mapping", mark)
    if not isinstance(value, YMap):
        raise InputError(f"sandbox must be true, false or a mapping, got {describe(value)}", mark)
    node = value
    mistakes = _Mistakes()
    mistakes.found += unknown_keys(node, SANDBOX_KEYS, "sandbox")

    permissions: list[Permission] = []
    if "profile" in node:
        permissions.extend(mistakes.attempt((), _profile, node))
    if "filesystem" in node:
        before = len(mistakes.found)
        permissions.extend(mistakes.attempt([], _filesystem, node, warn))
        if not permissions and len(mistakes.found) == before and "profile" not in node:
            mistakes.found.append(InputError("filesystem is empty and no profile is given: nothing could be read, "
                                             "so nothing could run; list entries, or add a profile",
                                             node.value_mark("filesystem")))
    if "profile" not in node and "filesystem" not in node:
        permissions.extend(PROFILES[DEFAULT_PROFILE])

    network = (mistakes.attempt(NetworkPolicy(), _network, node["network"], node.value_mark("network"))
               if "network" in node else NetworkPolicy())
    roots = mistakes.attempt((), _workspace_roots, node) if "workspace_roots" in node else ()
    per_os = {os_name: mistakes.attempt({}, _os_hints, node, os_name) for os_name in OS_NAMES if os_name in node}
    limits = mistakes.attempt(TaskLimits(), _limits, node) if "limits" in node else TaskLimits()
    mistakes.raise_any()
    return SandboxIntent(permissions=tuple(permissions), network=network, workspace_roots=roots,
                         per_os=per_os, limits=limits)


def _limits(node: YMap) -> TaskLimits:
    """``limits: {memory: 512M, pids: 256, cpu_seconds: 600, file_size: 1G, open_files: 1024,
    output: 4M}``: what the task asks; the host's policy gives defaults and caps."""
    value = expect_map(node["limits"], node.value_mark("limits"), "limits")
    mistakes = _Mistakes()
    for key in value:
        try:
            parse_limits({key: value[key]})
        except ValueError as exc:
            mark = value.key_mark(key) if key not in LIMIT_KEYS else value.value_mark(key)
            mistakes.found.append(InputError(str(exc), mark, allowed=LIMIT_KEYS if key not in LIMIT_KEYS else None))
    mistakes.raise_any()
    return parse_limits(plain(value))


def _profile(node: YMap) -> tuple[Permission, ...]:
    mark = node.value_mark("profile")
    name = node["profile"]
    if not isinstance(name, str) or name not in PROFILES:
        hint = suggest(name, PROFILES) if isinstance(name, str) else f"; got {describe(name)}"
        raise InputError(f"unknown profile {name!r}{hint}", mark, allowed=tuple(PROFILES))
    return PROFILES[name]


def _filesystem(node: YMap, warn: WarnFn) -> list[Permission]:
    """Each entry checked on its own: a bad key and a bad access elsewhere are two mistakes."""
    fs = expect_map(node["filesystem"], node.value_mark("filesystem"), "filesystem")
    mistakes = _Mistakes()
    out = [p for key, access in fs.items() for p in mistakes.attempt((), _entry, fs, key, access, warn)]
    mistakes.raise_any()
    return out


def _entry(fs: YMap, key: Any, access_text: Any, warn: WarnFn) -> tuple[Permission, ...]:
    """One ``PATH-KEY: access`` entry; its key and its access are checked apart (both may be wrong)."""
    key_mark, value_mark = fs.key_mark(key), fs.value_mark(key)
    mistakes = _Mistakes()
    access: Optional[Access] = None
    if not isinstance(access_text, str) or access_text not in ACCESS_VALUES:
        hint = "; 'none' is spelled 'deny'" if access_text == "none" else ""
        mistakes.found.append(InputError(f"access for {key!r} must be read, write or deny, got "
                                         f"{access_text!r}{hint}", value_mark, allowed=ACCESS_VALUES))
    else:
        access = Access(access_text)
    path = mistakes.attempt(None, _entry_path, key, key_mark, warn)
    if isinstance(path, Glob) and access is not None and access is not Access.DENY:
        mistakes.found.append(InputError(f"glob {key!r} can only be used with deny, not {access.value}: a glob "
                                         "cannot grant access; list the directories to allow instead", value_mark,
                                         allowed=("deny",)))
    mistakes.raise_any()
    assert path is not None and access is not None  # else raise_any raised
    return (Permission(path, access),)


def _entry_path(key: Any, key_mark: Mark, warn: WarnFn) -> PathSpec:
    if key is None:
        raise InputError("a null key: an unquoted `~` (or `null`) is YAML's null; for the home "
                         "directory write \"~\"", key_mark, allowed=PATH_KEY_FORMS)
    if not isinstance(key, str):
        raise InputError(f"filesystem key {key!r} must be a path, got {describe(key)}", key_mark,
                         allowed=PATH_KEY_FORMS)
    return parse_path_key(key, key_mark, warn)


def parse_path_key(key: str, mark: Mark, warn: WarnFn) -> PathSpec:
    """One filesystem key as the intent's path (symbol, file URI or glob)."""
    if not key:
        raise InputError("empty filesystem key", mark, allowed=PATH_KEY_FORMS)
    if "\0" in key:
        raise InputError(f"filesystem key {key!r} contains a NUL character", mark)
    is_glob = any(c in _GLOB_CHARS for c in key)
    if key.startswith(":"):
        return _symbol_key(key, mark, warn, is_glob)
    if is_glob:
        return _glob(key, key, mark)
    if key == "~":
        return Special("home")
    if key.startswith("~/"):
        return Special("home", check_subpath(key[2:], key, mark))
    if key.startswith("~"):
        raise InputError(f"{key!r}: only your own home is supported (`~` or `~/sub`), not another "
                         "user's", mark, allowed=PATH_KEY_FORMS)
    if not looks_absolute(key):
        raise InputError(f"relative path {key!r}: a path key must be absolute, start with ~, be a "
                         "symbol, or be a glob (deny only)", mark, allowed=PATH_KEY_FORMS)
    return FilePath(native_path_uri(key, mark, "path"))


def looks_absolute(key: str) -> bool:
    """An absolute path of either convention: ``/x``, ``C:\\x`` or ``C:/x``, ``\\\\server\\share``."""
    return key.startswith(("/", "\\\\")) or bool(re.match(r"[A-Za-z]:[\\/]", key))


def _symbol_key(key: str, mark: Mark, warn: WarnFn, is_glob: bool) -> PathSpec:
    if "\\" in key:
        raise InputError(f"{key!r}: separate a symbol's subpath with '/', not '\\' (it is read the same "
                         "on every OS)", mark)
    name, sep, sub = key[1:].partition("/")
    if not _SYMBOL_NAME.fullmatch(name):
        raise InputError(f"{key!r} is not a symbol: ':' must be followed by a name", mark,
                         allowed=PATH_KEY_FORMS)
    if name == "home":
        raise InputError(f"write {'~/' + sub if sub else '~'!r} for the home directory, not {key!r}", mark)
    if is_glob:
        if name == "workspace_roots" and sub:
            return _glob(sub, key, mark)
        raise InputError(f"{key!r}: a glob may only follow :workspace_roots/ (or ~/, /, or stand "
                         "relative)", mark)
    subpath = check_subpath(sub, key, mark) if sep else None
    if name in KNOWN_SYMBOLS:
        if subpath is not None and name not in SUBPATH_SYMBOLS:
            raise InputError(f"{key!r}: :{name} takes no subpath (only :workspace_roots/sub and ~/sub do)",
                             mark)
        return Special(name, subpath)
    known = [s for s in KNOWN_SYMBOLS if s != "home"]
    alt = _OLD_SYMBOL_SPELLINGS.get(name)
    hint = f"; did you mean ':{alt}'?" if alt else suggest(name, known)
    warn(f"unknown symbol ':{name}' is kept and passed on, but hosts that do not know it ignore "
         f"it{hint} (known: {', '.join(':' + s for s in known)})", mark)
    return Special(name, subpath)


def _glob(pattern: str, key: str, mark: Mark) -> Glob:
    if pattern.startswith("\\\\") or re.match(r"[A-Za-z]:\\", pattern):
        raise InputError(f"glob {key!r}: write Windows globs with '/' (C:/x/*.pem); in a glob '\\' "
                         "escapes the next character", mark)
    if ".." in pattern.split("/"):
        raise InputError(f"glob {key!r} may not contain '..'", mark)
    if "" in pattern.split("/")[1:]:
        raise InputError(f"glob {key!r} has an empty segment (a doubled or trailing '/')", mark)
    _check_glob(key, mark)
    return Glob(pattern)


def _check_glob(key: str, mark: Mark) -> None:
    """Ask the hosts' own glob engine, strictly: a glob any host would refuse (``[z-a]``, a class
    Seatbelt cannot hold) or read otherwise than written (an unclosed ``[``) is refused here, at
    its key, rather than failing the run on some hosts. The key itself is checked (its
    ``:workspace_roots`` prefix is a plain name) so the message shows what the user wrote."""
    try:
        globs.validate(key, strict=True)
    except globs.GlobError as exc:
        raise InputError(str(exc), mark, allowed=globs.GLOB_SYNTAX) from None


def _network(value: Any, mark: Mark) -> NetworkPolicy:
    modes = ("none", "full", "{allow: [domains], deny: [domains]}")
    if isinstance(value, str):
        if value == NetworkMode.NONE.value:
            return NetworkPolicy(NetworkMode.NONE)
        if value == NetworkMode.FULL.value:
            return NetworkPolicy(NetworkMode.FULL)
        raise InputError(f"unknown network {value!r}{suggest(value, ('none', 'full'))}", mark,
                         allowed=modes)
    if not isinstance(value, YMap):
        raise InputError(f"network must be none, full or a mapping, got {describe(value)}", mark,
                         allowed=modes)
    mistakes = _Mistakes()
    mistakes.found += unknown_keys(value, ("allow", "deny"), "network")
    allow: tuple[str, ...] = ()
    if "allow" not in value or value["allow"] == []:
        where = value.value_mark("allow") if "allow" in value else value.mark
        mistakes.found.append(InputError("a managed network needs a non-empty allow list (only allowed domains get "
                                         "through; a deny-only list would mean no network): write network: none for "
                                         "no network, network: full for all, or {allow: [example.org]}", where))
    else:
        allow = mistakes.attempt((), _domains, value, "allow")
    deny = mistakes.attempt((), _domains, value, "deny") if "deny" in value else ()
    mistakes.raise_any()
    return NetworkPolicy(NetworkMode.MANAGED, allow=allow, deny=deny)


def _domains(node: YMap, key: str) -> tuple[str, ...]:
    items = expect_list(node[key], node.value_mark(key), f"network {key}")
    mistakes = _Mistakes()
    out: list[str] = []
    for i, item in enumerate(items):
        domain = mistakes.attempt(None, check_domain, item, items.item_mark(i))
        if domain is not None and domain not in out:
            out.append(domain)
    mistakes.raise_any()
    return tuple(out)


def check_domain(value: Any, mark: Mark) -> str:
    """A hostname or ``*.hostname``, lower-cased, with an optional port: ``name`` means ports 443
    and 80, ``name:PORT`` that port, ``name:*`` every port. URLs and a bare ``*`` are refused."""
    if not isinstance(value, str):
        raise InputError(f"a domain must be a string, got {describe(value)}", mark)
    text = value.strip().lower()
    if "://" in text or "/" in text:
        raise InputError(f"{value!r} is a URL; give only the domain (e.g. pypi.org)", mark)
    if text == "*" or text.startswith("*:"):
        raise InputError("'*' would allow every domain; write network: full for that", mark)
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    if sep and not (port == "*" or (port.isdigit() and 1 <= int(port) <= 65535)):
        raise InputError(f"{value!r}: the port must be a number from 1 to 65535 or *", mark,
                         allowed=("name (ports 443 and 80)", "name:PORT", "name:*"))
    host = host[2:] if host.startswith("*.") else host
    if ":" in host:
        raise InputError(f"{value!r}: give a domain with at most one :PORT", mark)
    if not host.isascii():
        try:
            alt = f"; write it as {host.encode('idna').decode('ascii')!r}"
        except UnicodeError:
            alt = ""
        raise InputError(f"domain {value!r} must be ASCII (punycode){alt}", mark)
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InputError(f"{value!r} is not a valid domain: dot-separated labels of letters, digits and "
                         "'-', optionally starting with '*.' for subdomains", mark)
    return text


def _workspace_roots(node: YMap) -> tuple[str, ...]:
    items = expect_list(node["workspace_roots"], node.value_mark("workspace_roots"), "workspace_roots")
    mistakes = _Mistakes()
    roots = [mistakes.attempt("", _workspace_root, item, items.item_mark(i)) for i, item in enumerate(items)]
    mistakes.raise_any()
    return tuple(roots)


def _workspace_root(item: Any, mark: Mark) -> str:
    return native_path_uri(expect_str(item, mark, "a workspace root"), mark, "workspace root")


def _os_hints(node: YMap, os_name: str) -> Mapping[str, Any]:
    hints = expect_map(node[os_name], node.value_mark(os_name), f"sandbox.{os_name} hints")
    mistakes = _Mistakes()
    for key in hints:
        if not isinstance(key, str):
            mistakes.found.append(InputError(f"{os_name} hint key {key!r} must be a string", hints.key_mark(key)))
    if os_name == "linux" and "prefer" in hints and hints["prefer"] not in LINUX_PREFER:
        prefer = hints["prefer"]
        mistakes.found.append(InputError(f"unknown linux.prefer {prefer!r}{suggest(prefer, LINUX_PREFER)}",
                                         hints.value_mark("prefer"), allowed=LINUX_PREFER))
    mistakes.raise_any()
    out: dict[str, Any] = plain(hints)
    return out
