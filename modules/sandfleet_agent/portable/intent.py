"""The portable sandbox intent: what a task may touch, independent of any operating system.

The controller builds it from the playbook and sends it as-is; every host binds the symbolic
entries to its own paths (:mod:`.binding`) and enforces it with its own sandbox. Concrete paths
are ``file:`` URIs (see :mod:`.pathuri`) so a Windows path never masquerades as a POSIX one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional, Union

from sandfleet_agent.portable.limits import TaskLimits


class Access(str, Enum):
    READ = "read"
    WRITE = "write"
    DENY = "deny"

    @property
    def precedence(self) -> int:
        """At equal specificity deny beats write beats read."""
        return _PRECEDENCE[self]


_PRECEDENCE = {Access.READ: 0, Access.WRITE: 1, Access.DENY: 2}

#: Symbols this version binds. ``home`` is how ``~/sub`` travels. Any other ``:name`` is carried
#: untouched and ignored with a warning at binding time, so an older host accepts a newer playbook.
#: The operating systems a host may run and, per OS, the sandboxes sandfleet has for it: the one
#: table the inventory, the playbook grammar, the policy and the backend choice read. The first of
#: each is what an operator who chose nothing gets (Landlock only by choice: see backends).
BACKENDS_BY_OS: Mapping[str, tuple[str, ...]] = {
    "linux": ("bwrap", "landlock"),
    "macos": ("seatbelt",),
    "windows": ("windows",),
}
OS_NAMES = tuple(BACKENDS_BY_OS)
OS_OF_BACKEND: Mapping[str, str] = {name: os_name for os_name, names in BACKENDS_BY_OS.items() for name in names}

KNOWN_SYMBOLS = ("root", "minimal", "workspace_roots", "tmpdir", "slash_tmp", "home")


@dataclass(frozen=True)
class Special:
    """A symbolic path, bound on the host: ``:workspace_roots/sub`` is ``Special("workspace_roots", "sub")``."""

    name: str
    subpath: Optional[str] = None

    @property
    def known(self) -> bool:
        return self.name in KNOWN_SYMBOLS

    def __str__(self) -> str:
        if self.name == "home":
            return "~" + (f"/{self.subpath}" if self.subpath else "")
        return f":{self.name}" + (f"/{self.subpath}" if self.subpath else "")


@dataclass(frozen=True)
class FilePath:
    """A concrete path, always a canonical ``file:`` URI (or the lossless opaque form)."""

    uri: str

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class Glob:
    """A git-style glob (``**/*.pem``); only meaningful with ``deny``. Relative globs are
    anchored at each workspace root, ``~/`` globs at the home directory."""

    pattern: str

    def __str__(self) -> str:
        return self.pattern


PathSpec = Union[Special, FilePath, Glob]


@dataclass(frozen=True)
class Permission:
    """One entry of a permission profile: a path, symbol or glob and the access it gets."""

    path: PathSpec
    access: Access


class NetworkMode(str, Enum):
    NONE = "none"
    FULL = "full"
    MANAGED = "managed"


@dataclass(frozen=True)
class NetworkPolicy:
    """``none``: no network at all; ``full``: unrestricted; ``managed``: only the ``allow`` domains
    (``*.x`` includes subdomains and the apex) through a host-side proxy, ``deny`` winning."""

    mode: NetworkMode = NetworkMode.NONE
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxIntent:
    """A requested sandbox. ``None`` in its place means the task was explicitly unsandboxed.

    ``workspace_roots`` are file URIs; empty means "use the host's own roots".
    ``per_os`` holds hints read only by hosts of that OS (``{"linux": {"prefer": "landlock"}}``);
    a hint may choose how to enforce the intent, never weaken it.
    """

    permissions: tuple[Permission, ...]
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    workspace_roots: tuple[str, ...] = ()
    per_os: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: What the task asks of memory, processes, CPU time ... (:mod:`.limits`); unset keys get the
    #: policy's defaults, and more than the policy's max is refused.
    limits: TaskLimits = field(default_factory=TaskLimits)


# Built-in profiles. `workspace` mirrors Codex's workspace-write: read everything, write the
# workspace roots and the task's own private temp dir (`:tmpdir`); `.git` stays read-only (added
# at binding time). The host's shared /tmp (`:slash_tmp`) is not in it: that is where other users'
# and the operator's sockets and agent dirs live; an intent that needs it names it.
_READ_ROOT = Permission(Special("root"), Access.READ)

PROFILES: Mapping[str, tuple[Permission, ...]] = {
    "read-only": (_READ_ROOT,),
    "workspace": (
        _READ_ROOT,
        Permission(Special("workspace_roots"), Access.WRITE),
        Permission(Special("tmpdir"), Access.WRITE),
    ),
    "full-access": (Permission(Special("root"), Access.WRITE),),
}

DEFAULT_PROFILE = "workspace"
