"""Landlock: the Linux sandbox that a process applies to itself, built from ctypes syscalls.

Why this exists next to bubblewrap: Landlock needs no namespaces, no setuid helper and no extra
binary, and costs well under a millisecond per command, so it is the Linux backend wherever
bubblewrap is missing or user namespaces are blocked. It is allow-only: a ruleset lists what may
be touched and the kernel denies the rest.

The ruleset file
================

A :class:`LandlockRuleset` serialises to the JSON that a dry-run shows and that
``python3 -m sandfleet_agent.linux.landlock_exec RULESET.json -- argv...`` reads back::

    {
      "abi": 7,
      "fs": [{"path": "/", "access": "read"},
             {"path": "/work/ws", "access": "write"},
             {"path": "/dev/null", "access": "write"}],
      "net": {"tcp_connect": [443], "tcp_bind": []},
      "scope": ["abstract_unix_socket", "signal"],
      "sockets": "none"
    }

All five keys are required, so an omission never reads as "unrestricted".

``abi``
    The Landlock ABI whose rights the ruleset handles, 1 to :data:`MAX_ABI`. Every filesystem
    right of that ABI is handled (denied unless granted). The kernel must offer at least this
    ABI, or :func:`build` raises :class:`LandlockUnavailable`; a newer kernel is used at this
    ABI, so a ruleset means the same thing on every host that accepts it.
``fs``
    Path rules, each path absolute. A rule covers the path and everything
    beneath it (a file path covers that file). ``access`` is ``read`` or ``write``:

    ========= ===== ===================================================================
    access    ABI   rights granted
    ========= ===== ===================================================================
    read      all   EXECUTE, READ_FILE, READ_DIR
    write     1     read + WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR,
                    MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM
    write     2+    + REFER (rename/link across directories)
    write     3+    + TRUNCATE
    write     5+    + IOCTL_DEV (ioctl on devices, e.g. a terminal opened in the sandbox)
    write     9+    + RESOLVE_UNIX (connect to pathname UNIX sockets)
    ========= ===== ===================================================================

    On a non-directory only the file rights apply (EXECUTE, READ_FILE, WRITE_FILE, TRUNCATE,
    IOCTL_DEV, RESOLVE_UNIX). Exec needs EXECUTE on the binary, its interpreter and its shared
    libraries, so those directories need ``read``. A path that does not exist when the ruleset
    is built is skipped and reported, since a rule on nothing grants nothing. Rules add up
    (nested or repeated rules grant the union), and Landlock cannot take a right back beneath
    a granted tree, so a ``read`` rule at or beneath a ``write`` path is rejected rather than
    silently ineffective (a read-only ``.git`` inside a writable workspace must be expressed
    by granting its siblings, or by another backend).
    Non-UTF-8 paths travel as surrogate escapes (``os.fsdecode``) and round-trip exactly.
``net``
    ``null``: TCP is not handled (not restricted). An object: TCP bind and connect are
    handled (ABI 4+) and only the listed ports are allowed; empty lists deny all TCP.
``scope``
    IPC scopes (ABI 6+): ``abstract_unix_socket`` (no connecting to abstract UNIX sockets
    created outside the sandbox) and ``signal`` (no signalling processes outside it).
``sockets``
    The socket policy of the seccomp filter (:mod:`.seccomp`) installed right after the
    ruleset, in the same child: ``all`` (network full), ``none`` (no ``socket()`` at all, only
    connected socket pairs: closes UDP, raw, netlink and pathname UNIX sockets, Landlock's
    gaps, for "network none") or ``inet``. The filter's other refusals (keyrings, namespaces,
    mounts, set-ID bits, other processes' limits ...) apply whatever this says.

See :func:`unenforced` for what Landlock cannot restrict; a caller whose intent needs one of
those must refuse (``sandbox_unavailable``) instead of running with this backend.

Standard library only; Linux x86_64 and aarch64 (and the other architectures that share the
unified syscall numbers).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from sandfleet_agent.linux.seccomp import SOCKET_MODES, Installer, supported
from sandfleet_agent.paths import at_or_below

if TYPE_CHECKING:
    import subprocess

# logging and subprocess are imported where used: the landlock_exec CLI starts a fresh
# interpreter per command and needs neither.

__all__ = [
    "MAX_ABI",
    "SCOPES",
    "FsRule",
    "LandlockRuleset",
    "LandlockUnavailable",
    "NetRules",
    "PreparedRuleset",
    "RulesetError",
    "build",
    "landlock_abi",
    "popen",
    "prepare",
    "restrict_current",
    "unavailable_reason",
    "unenforced",
]

#: Newest ABI whose rights this module knows; a ruleset asking for more is refused.
MAX_ABI = 9

READ = "read"
WRITE = "write"
ACCESSES = (READ, WRITE)

# -- uapi constants (include/uapi/linux/landlock.h) -------------------------------------------

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
FS_RESOLVE_UNIX = 1 << 16

NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1

#: Scope names in the ruleset file and their ``scoped`` bits (ABI 6+).
SOCKETS = SOCKET_MODES
SCOPES: Mapping[str, int] = {"abstract_unix_socket": 1 << 0, "signal": 1 << 1}

#: First ABI with each filesystem right beyond ABI 1's thirteen.
_FS_RIGHT_SINCE = ((FS_REFER, 2), (FS_TRUNCATE, 3), (FS_IOCTL_DEV, 5), (FS_RESOLVE_UNIX, 9))
_FS_ABI1 = (1 << 13) - 1
_FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
#: The only rights the kernel accepts on a rule whose path is not a directory.
_FS_FILE = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV | FS_RESOLVE_UNIX

_NET_SINCE = 4
_SCOPE_SINCE = 6

#: First kernel release per ABI, for error messages (ABI 8+ named by number only).
_KERNEL_FOR_ABI = {1: "5.13", 2: "5.19", 3: "6.2", 4: "6.7", 5: "6.10", 6: "6.12", 7: "6.15"}

#: Architectures whose Landlock syscalls are 444-446 (the unified numbers; not alpha, not mips).
_ARCHES = frozenset(
    {"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "armv8l", "riscv64",
     "ppc64le", "ppc64", "s390x", "loongarch64"}
)


def fs_rights(abi: int) -> int:
    """Every filesystem right ``abi`` knows: what a ruleset at that ABI handles (and ``write`` grants)."""
    rights = _FS_ABI1
    for bit, since in _FS_RIGHT_SINCE:
        if abi >= since:
            rights |= bit
    return rights


def _kernel_hint(abi: int) -> str:
    release = _KERNEL_FOR_ABI.get(abi)
    return f"Linux >= {release}" if release else f"a kernel with Landlock ABI {abi}"


class LandlockUnavailable(Exception):
    """The kernel cannot enforce this ruleset; the caller fails closed (``sandbox_unavailable``)."""


class RulesetError(ValueError):
    """The ruleset itself is malformed or asks for something Landlock cannot express."""


# -- the ruleset description --------------------------------------------------------------------


@dataclass(frozen=True)
class FsRule:
    """Grant ``access`` (``read`` or ``write``) on ``path`` and everything beneath it."""

    path: str
    access: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not os.path.isabs(self.path) or "\0" in self.path:
            raise RulesetError(f"fs path must be an absolute path without NUL, got {self.path!r}")
        if self.access not in ACCESSES:
            raise RulesetError(f"fs access for {self.path!r} must be read or write, got {self.access!r}")


def _ports(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise RulesetError(f"net.{name} must be a list of ports, got {value!r}")
    for port in value:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise RulesetError(f"net.{name}: {port!r} is not a port (0-65535)")
    return tuple(value)


@dataclass(frozen=True)
class NetRules:
    """TCP is handled: only these ports may be connected to / bound (empty denies all TCP)."""

    tcp_connect: tuple[int, ...] = ()
    tcp_bind: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tcp_connect", _ports("tcp_connect", self.tcp_connect))
        object.__setattr__(self, "tcp_bind", _ports("tcp_bind", self.tcp_bind))


@dataclass(frozen=True)
class LandlockRuleset:
    """What a sandboxed command may touch; see the module docstring for the file format."""

    abi: int
    fs: tuple[FsRule, ...] = ()
    net: Optional[NetRules] = None
    scope: tuple[str, ...] = ()
    sockets: str = "all"

    def __post_init__(self) -> None:
        if self.sockets not in SOCKETS:
            raise RulesetError(f"sockets must be one of {', '.join(SOCKETS)}, got {self.sockets!r}")
        if isinstance(self.abi, bool) or not isinstance(self.abi, int) or self.abi < 1:
            raise RulesetError(f"abi must be an integer >= 1, got {self.abi!r}")
        object.__setattr__(self, "fs", tuple(self.fs))
        object.__setattr__(self, "scope", tuple(self.scope))
        for rule in self.fs:
            if not isinstance(rule, FsRule):
                raise RulesetError(f"fs entries must be FsRule, got {rule!r}")
        writes = [other.path for other in self.fs if other.access == WRITE]  # a few, against ~200 rules:
        for rule in self.fs:  # not every pair (that loop was ~12 ms a task, docs/performance.md)
            if rule.access != READ:
                continue
            for other_path in writes:
                if at_or_below(rule.path, other_path):
                    raise RulesetError(
                        f"fs rule {rule.path!r} (read) lies at or beneath the write rule "
                        f"{other_path!r}; Landlock rules only add rights, so it would be writable"
                    )
        for name in self.scope:
            if name not in SCOPES:
                raise RulesetError(f"unknown scope {name!r} (known: {', '.join(SCOPES)})")
        if len(set(self.scope)) != len(self.scope):
            raise RulesetError(f"scope lists a name twice: {list(self.scope)}")
        if self.net is not None and self.abi < _NET_SINCE:
            raise RulesetError(f"net rules need abi >= {_NET_SINCE}, the ruleset says {self.abi}")
        if self.scope and self.abi < _SCOPE_SINCE:
            raise RulesetError(f"scopes need abi >= {_SCOPE_SINCE}, the ruleset says {self.abi}")

    def to_dict(self) -> dict[str, Any]:
        net = None
        if self.net is not None:
            net = {"tcp_connect": list(self.net.tcp_connect), "tcp_bind": list(self.net.tcp_bind)}
        return {
            "abi": self.abi,
            "fs": [{"path": r.path, "access": r.access} for r in self.fs],
            "net": net,
            "scope": list(self.scope),
            "sockets": self.sockets,
        }

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LandlockRuleset:
        if not isinstance(data, Mapping):
            raise RulesetError(f"a ruleset is a JSON object, got {type(data).__name__}")
        _exact_keys("ruleset", data, ("abi", "fs", "net", "scope", "sockets"))
        fs_data = data["fs"]
        if not isinstance(fs_data, list):
            raise RulesetError("fs must be a list of {path, access} objects")
        fs = []
        for entry in fs_data:
            if not isinstance(entry, Mapping):
                raise RulesetError(f"fs entry must be an object, got {entry!r}")
            _exact_keys("fs entry", entry, ("path", "access"))
            fs.append(FsRule(entry["path"], entry["access"]))
        net_data = data["net"]
        net = None
        if net_data is not None:
            if not isinstance(net_data, Mapping):
                raise RulesetError("net must be null or an object with tcp_connect and tcp_bind")
            _exact_keys("net", net_data, ("tcp_connect", "tcp_bind"))
            net = NetRules(net_data["tcp_connect"], net_data["tcp_bind"])
        scope = data["scope"]
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise RulesetError("scope must be a list of scope names")
        return cls(abi=data["abi"], fs=tuple(fs), net=net, scope=tuple(scope), sockets=data["sockets"])

    @classmethod
    def from_json(cls, text: str) -> LandlockRuleset:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RulesetError(f"ruleset is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _exact_keys(what: str, data: Mapping[str, Any], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in data]
    extra = sorted(str(k) for k in data if k not in keys)
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(extra)}"] if extra else []
        )
        raise RulesetError(f"{what}: {'; '.join(parts)} (expected exactly: {', '.join(keys)})")


def unenforced(abi: int) -> tuple[str, ...]:
    """What a Landlock sandbox at ``abi`` does not restrict: intents needing these must be refused."""
    gaps = [
        "UDP, raw, netlink and other non-TCP sockets (DNS over UDP and ICMP still work)",
        "network destinations: TCP rules match ports only, never hosts, addresses or domains",
        "metadata changes on readable paths: chmod, chown, utime, setxattr, stat, access",
        "a read-only subtree inside a write tree (rules only add rights)",
        "files and sockets already open when the sandbox starts (inherited descriptors)",
        "capabilities: a root command keeps them (netlink, raw sockets, module loading)",
    ]
    if abi < 3:
        gaps.append("truncate(2) of files under read paths (TRUNCATE needs ABI 3)")
    if abi < 4:
        gaps.append("TCP connect and bind (needs ABI 4)")
    if abi < 5:
        gaps.append("ioctl on devices opened under read paths (IOCTL_DEV needs ABI 5)")
    if abi < 6:
        gaps.append("signals and abstract UNIX sockets to processes outside (scopes need ABI 6)")
    if abi < 9:
        gaps.append(
            "connecting to pathname UNIX sockets under read paths, e.g. /run/docker.sock or "
            "D-Bus (RESOLVE_UNIX needs ABI 9)"
        )
    return tuple(gaps)


# -- syscalls ------------------------------------------------------------------------------------


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


@dataclass(frozen=True)
class _Syscalls:
    """libc entry points with fixed argument types, bound once so a forked child only calls them."""

    create_ruleset: Any
    add_rule: Any
    restrict_self: Any
    prctl: Any


def _bind(libc: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    fn = libc[name]  # item access returns a fresh function object, so each keeps its own argtypes
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_SYS: Optional[_Syscalls] = None


def _syscalls() -> _Syscalls:
    """Load the syscall wrappers once; raises OSError off Linux or on an unknown architecture."""
    global _SYS
    if _SYS is None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, f"Landlock is Linux-only (this is {sys.platform})")
        if os.uname().machine.lower() not in _ARCHES:
            raise OSError(errno.ENOSYS, f"unknown Landlock syscall numbers on {os.uname().machine}")
        libc = ctypes.CDLL(None, use_errno=True)
        c_long, c_void_p = ctypes.c_long, ctypes.c_void_p
        _SYS = _Syscalls(
            create_ruleset=_bind(libc, "syscall", c_long, c_long, c_void_p, ctypes.c_size_t, c_long),
            add_rule=_bind(libc, "syscall", c_long, c_long, c_long, c_long, c_void_p, c_long),
            restrict_self=_bind(libc, "syscall", c_long, c_long, c_long, c_long),
            prctl=_bind(libc, "prctl", ctypes.c_int, ctypes.c_int, *([ctypes.c_ulong] * 4)),
        )
    return _SYS


@functools.cache
def _probe() -> tuple[int, str]:
    """The kernel's Landlock ABI and, when 0, why."""
    try:
        sc = _syscalls()
    except OSError as exc:
        return 0, exc.strerror or str(exc)
    abi = sc.create_ruleset(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    if abi > 0:
        return int(abi), ""
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        return 0, (
            f"this kernel ({os.uname().release}) has no Landlock: it needs Linux >= 5.13 built "
            "with CONFIG_SECURITY_LANDLOCK=y"
        )
    if err == errno.EOPNOTSUPP:
        return 0, (
            "Landlock is built into this kernel but disabled at boot: add landlock to the lsm= "
            "kernel boot parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor,bpf)"
        )
    return 0, f"the Landlock ABI probe failed: {os.strerror(err)}"


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unsupported or disabled; never raises, cached."""
    try:
        return _probe()[0]
    except Exception:  # a probe must not take down the facts gathering
        return 0


def unavailable_reason() -> str:
    """Why :func:`landlock_abi` is 0 (empty when Landlock is available)."""
    try:
        return _probe()[1]
    except Exception as exc:
        return str(exc)


def _check(ruleset: LandlockRuleset, kernel_abi: int) -> None:
    """Refuse, with what is missing, any ruleset the kernel or this module cannot enforce fully."""
    if ruleset.abi > MAX_ABI:
        raise LandlockUnavailable(
            f"the ruleset asks for Landlock ABI {ruleset.abi}, but this sandfleet knows rights only "
            f"up to ABI {MAX_ABI}; upgrade sandfleet on the host"
        )
    if kernel_abi <= 0:
        reason = unavailable_reason() or (
            "the kernel reports no Landlock ABI; it needs Linux >= 5.13 with "
            "CONFIG_SECURITY_LANDLOCK=y and landlock in the lsm= boot parameter"
        )
        raise LandlockUnavailable(f"Landlock is not available: {reason}")
    if kernel_abi < ruleset.abi:
        needs = []
        if ruleset.net is not None:
            needs.append(f"TCP port rules need ABI {_NET_SINCE}")
        if ruleset.scope:
            needs.append(f"scopes need ABI {_SCOPE_SINCE}")
        detail = f" ({'; '.join(needs)})" if needs else ""
        raise LandlockUnavailable(
            f"the ruleset needs Landlock ABI {ruleset.abi} ({_kernel_hint(ruleset.abi)}){detail}, "
            f"but this kernel ({os.uname().release}) offers ABI {kernel_abi}; upgrade the kernel "
            f"or use another sandbox"
        )


def _build(ruleset: LandlockRuleset, kernel_abi: Optional[int]) -> tuple[int, int, tuple[str, ...]]:
    kabi = landlock_abi() if kernel_abi is None else kernel_abi
    _check(ruleset, kabi)
    sc = _syscalls()
    abi = ruleset.abi  # == min(ruleset.abi, kernel ABI) once _check has passed
    handled_fs = fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=(NET_BIND_TCP | NET_CONNECT_TCP) if ruleset.net is not None else 0,
        scoped=sum(SCOPES[name] for name in ruleset.scope),
    )
    # Pass the struct size this ABI knows, so an older kernel never sees fields it lacks.
    size = 8 if abi < _NET_SINCE else 16 if abi < _SCOPE_SINCE else ctypes.sizeof(attr)
    fd = sc.create_ruleset(_SYS_CREATE_RULESET, ctypes.addressof(attr), size, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise LandlockUnavailable(f"landlock_create_ruleset (ABI {abi}) failed: {os.strerror(err)}")
    skipped: list[str] = []
    try:
        for rule in ruleset.fs:
            if not _add_path(sc, fd, rule, handled_fs):
                skipped.append(rule.path)
        if ruleset.net is not None:
            ports: dict[int, int] = {}
            for port in ruleset.net.tcp_connect:
                ports[port] = ports.get(port, 0) | NET_CONNECT_TCP
            for port in ruleset.net.tcp_bind:
                ports[port] = ports.get(port, 0) | NET_BIND_TCP
            for port, access in sorted(ports.items()):
                net_attr = _NetPortAttr(allowed_access=access, port=port)
                if sc.add_rule(_SYS_ADD_RULE, fd, _RULE_NET_PORT, ctypes.addressof(net_attr), 0) != 0:
                    err = ctypes.get_errno()
                    raise LandlockUnavailable(f"cannot add the TCP rule for port {port}: {os.strerror(err)}")
    except BaseException:
        os.close(fd)
        raise
    return fd, abi, tuple(skipped)


def _add_path(sc: _Syscalls, fd: int, rule: FsRule, handled_fs: int) -> bool:
    """Add one path rule; False when the path does not exist (nothing to grant)."""
    try:
        pfd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise LandlockUnavailable(f"cannot open {rule.path!r} for a Landlock rule: {exc.strerror}") from None
    try:
        access = (_FS_READ if rule.access == READ else handled_fs) & handled_fs
        if not stat.S_ISDIR(os.fstat(pfd).st_mode):
            access &= _FS_FILE
        beneath = _PathBeneathAttr(allowed_access=access, parent_fd=pfd)
        if sc.add_rule(_SYS_ADD_RULE, fd, _RULE_PATH_BENEATH, ctypes.addressof(beneath), 0) != 0:
            err = ctypes.get_errno()
            raise LandlockUnavailable(f"cannot add the Landlock rule for {rule.path!r}: {os.strerror(err)}")
    finally:
        os.close(pfd)
    return True


def build(ruleset: LandlockRuleset, *, kernel_abi: Optional[int] = None) -> int:
    """Create the ruleset fd (close-on-exec) in the parent; missing paths are skipped and logged.

    ``kernel_abi`` overrides the probed ABI (tests fake an older kernel with it). Raises
    :class:`LandlockUnavailable` when the kernel cannot enforce the whole ruleset.
    """
    fd, _abi, skipped = _build(ruleset, kernel_abi)
    if skipped:
        import logging

        for path in skipped:
            logging.getLogger(__name__).info("landlock: skipped missing path %s", path)
    return fd


def restrict_current(fd: int) -> None:
    """Apply ruleset ``fd`` to the calling thread, for good: no_new_privs, then restrict_self.

    Meant for the child between fork and exec (``preexec_fn``): only calls prebound ctypes
    functions, imports nothing. Raises OSError on failure, which makes ``Popen`` fail instead of
    running the command unconfined.
    """
    sc = _SYS if _SYS is not None else _syscalls()
    if sc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if sc.restrict_self(_SYS_RESTRICT_SELF, fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")


def socket_filter_for(ruleset: LandlockRuleset) -> Installer:
    """The seccomp filter every Landlock task gets, with the ruleset's socket policy; refuses
    rather than run without it."""
    if not supported():
        raise LandlockUnavailable("Landlock tasks need sandfleet's seccomp filter, which exists for x86_64 "
                                  "and aarch64 only")
    return Installer(ruleset.sockets)


class PreparedRuleset:
    """A built ruleset fd plus the ``Popen`` arguments that apply it; a context manager.

    The fd must stay open until the child has restricted itself, i.e. until ``Popen`` returns
    (it waits for the exec); closing it then does not affect the child.
    """

    def __init__(self, ruleset: LandlockRuleset, *, kernel_abi: Optional[int] = None) -> None:
        self.ruleset = ruleset
        self.socket_filter = socket_filter_for(ruleset)
        self.fd, self.abi, self.skipped = _build(ruleset, kernel_abi)

    def preexec_fn(self) -> None:
        restrict_current(self.fd)
        self.socket_filter.install()

    def popen_kwargs(self) -> dict[str, Any]:
        """``preexec_fn`` for ``subprocess.Popen``/``run``; a failure raises ``SubprocessError``."""
        return {"preexec_fn": self.preexec_fn}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PreparedRuleset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            self.close()


def prepare(ruleset: LandlockRuleset, *, kernel_abi: Optional[int] = None) -> PreparedRuleset:
    """Build ``ruleset`` for spawning: ``with prepare(rs) as p: Popen(argv, **p.popen_kwargs())``."""
    return PreparedRuleset(ruleset, kernel_abi=kernel_abi)


def popen(ruleset: LandlockRuleset, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``args`` under ``ruleset``; the ruleset fd is closed once the child has exec'd."""
    import subprocess

    if "preexec_fn" in kwargs:
        raise TypeError("popen() sets preexec_fn itself")
    with prepare(ruleset) as prepared:
        try:
            return subprocess.Popen(list(args), **prepared.popen_kwargs(), **kwargs)
        except subprocess.SubprocessError as exc:  # preexec_fn raised: the command never ran
            raise LandlockUnavailable(f"applying the Landlock ruleset in the child failed: {exc}") from exc
