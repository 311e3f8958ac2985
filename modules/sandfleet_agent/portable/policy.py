"""Who decides the walls: the operator and the host's owner; a playbook only asks.

A task's intent is a request. It runs only if it fits inside the *effective policy* of its host,
made of layers, each of which can only narrow the one before it (except the first, which the
operator may widen from the built-in default):

1. the operator's: the inventory's ``sandfleet_policy`` for that host (Ansible precedence), or
   the built-in :data:`DEFAULT` when none is set; ``--allow-unsandboxed`` and
   ``sandfleet_allow_unsandboxed`` switch its ``unsandboxed`` on, ``sandfleet_sandbox`` adds the
   pinned backend to its ``linux_backends``;
2. ``--policy FILE`` on the command line (every host; narrows only);
3. the host owner's ``/etc/sandfleet/policy.yml`` and the agent user's
   ``~/.config/sandfleet/policy.yml``, read by the agent itself (narrow only; no controller can
   widen them, since the check runs on the host, in this module).

The document (one YAML shape for all three; every key optional)::

    filesystem: {":workspace_roots": write, ":tmpdir": write, ":root": read, "/opt/cache": write}
    deny: ["~/.ssh", "**/*.pem"]     # added to every task's intent, on top of the credential defaults
    default_denies: true             # false drops the credential defaults (first layer only)
    protected: [.github/workflows]   # kept read-only inside writable roots, on top of .git & co.
    network: {max: managed, allow: [pypi.org, "*.pythonhosted.org", "git.internal:8443"]}
    unsandboxed: false               # may a task run with `sandbox: false`?
    linux_backends: [bwrap, landlock]   # which Linux backends, in order of preference
    hints: false                     # may a playbook's `linux: {prefer: ...}` reorder them?
    limits: {value_bytes: 65536, argv_bytes: 131072, env_bytes: 131072, request_bytes: 1048576}
    resources:                       # task resources (limits.py): defaults, maxima, and whether a
      default: {memory: 4G, pids: 1024}   # limit a host cannot enforce may be skipped (with a warning)
      max: {memory: 16G, cpu_seconds: 3600}
      best_effort: false
    env_passthrough: [KUBECONFIG, http_proxy]   # agent variables a task inherits (below)

The rules (:func:`check`), after the intent is bound to the host's paths:

* **Filesystem**: every grant (a path the task may read or write) must be covered, in every layer
  that has a ``filesystem`` ceiling, by that ceiling's deepest entry containing it, with at least
  that access. Ceiling symbols bind *without* the cwd fallback: a host with no workspace roots
  grants no workspace, so a playbook's ``cwd:`` never becomes writable by itself. A write under a
  protected name (``.git``, ``.ssh`` ...) is covered only by a ceiling entry naming that path.
  ``:minimal`` reads need ``:minimal`` or ``:root`` read in the ceiling.
* **Mandatory denies** (:data:`DEFAULT_DENIES`, each layer's ``deny``) are added to the intent; a
  grant at or below one is refused, never trimmed.
* **Network**: ``none`` < ``managed`` < ``full``; each name of a managed allowlist must be covered
  by an ``allow`` rule of every layer that caps the network at ``managed``. Rules carry ports:
  ``name`` means ports 443 and 80, ``name:PORT`` that port, ``name:*`` every port; ``*.x`` covers
  x and its subdomains.
* **Unsandboxed** tasks need ``unsandboxed: true`` in every layer that says.
* **Backends**: a hint may only reorder backends every layer allows, and only with ``hints: true``.
* **Environment**: a task inherits from the agent's environment only ``spawn.INHERITED_ENV``
  (``PATH``, ``HOME``, ``LANG`` ...) and ``LC_*``, plus the names of the operator's
  ``env_passthrough`` that every later layer that sets ``env_passthrough`` also lists (a
  ``--policy`` file or the host owner's file can only narrow it; a playbook cannot touch it: it
  sets values with ``env``/``environment``, which win). Unset by default: nothing more passes.

A task that does not fit is ``denied``: nothing runs, and the message names the entry that
exceeded, the layer that refused, and what would raise it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Optional, Union

from sandfleet_agent.portable.intent import BACKENDS_BY_OS, Access, FilePath, Glob, NetworkMode, PathSpec, Special
from sandfleet_agent.portable.limits import KEYS as TASK_LIMIT_KEYS
from sandfleet_agent.portable.limits import TaskLimits, built_in_defaults, lowest, merged, parse_limits, shown
from sandfleet_agent.portable.pathuri import PathUri
from sandfleet_agent.portable.words import shown as shown_value
from sandfleet_agent.portable.words import suggest

#: The host owner's files, read by the agent (the second only narrows further).
HOST_FILES = ("/etc/sandfleet/policy.yml", "~/.config/sandfleet/policy.yml")
KEYS = ("filesystem", "deny", "default_denies", "protected", "network", "unsandboxed", "linux_backends", "hints",
        "limits", "resources", "env_passthrough")
RESOURCE_KEYS = ("default", "max", "best_effort")
NETWORK_KEYS = ("max", "allow")
LIMIT_KEYS = ("value_bytes", "argv_bytes", "env_bytes", "request_bytes")
BACKENDS = BACKENDS_BY_OS["linux"]  # what linux_backends may list
CEILING_ACCESS = ("read", "write")
SYMBOLS = ("root", "minimal", "workspace_roots", "tmpdir", "slash_tmp")
PATH_FORMS = ("/absolute/path", "C:\\windows\\path", "~", "~/sub", ":root", ":minimal", ":workspace_roots[/sub]",
              ":tmpdir", ":slash_tmp", "a glob (deny only)")
#: Credentials and tokens every task is denied unless the operator drops them (``default_denies``).
DEFAULT_DENIES = ("~/.ssh", "~/.aws", "~/.config/gcloud", "~/.azure", "~/.kube", "~/.docker", "~/.gnupg",
                  "~/.netrc", "~/.git-credentials", "~/.pypirc", "~/.npmrc")
#: The default denies that are directories: where one is missing inside a writable root, a
#: backend that must block its creation (bwrap) leaves an empty directory there, not a file
#: that would later break the tool (gpg, ssh) expecting a directory.
DENY_DIR_NAMES = (".ssh", ".aws", "gcloud", ".azure", ".kube", ".docker", ".gnupg")
#: Kept read-only wherever they appear in a writable root, existing or not: files that tools
#: outside the sandbox later trust (git hooks, agent and cloud configuration).
DEFAULT_PROTECTED = (".git", ".agents", ".codex", ".aws", ".ssh", ".docker", ".kube")
_NETWORK_ORDER = {NetworkMode.NONE: 0, NetworkMode.MANAGED: 1, NetworkMode.FULL: 2}
_ACCESS_ORDER = {Access.READ: 1, Access.WRITE: 2}
DEFAULT_PORTS = (443, 80)

Path = Union[str, int]


class PolicyError(ValueError):
    """A policy document that is not valid: ``path`` is where in it (``("network", "max")``)."""

    def __init__(self, message: str, path: tuple[Path, ...] = (), allowed: Sequence[str] = (),
                 at_key: bool = False) -> None:
        super().__init__(message)
        self.message, self.path, self.allowed = message, path, tuple(allowed)
        self.at_key = at_key  # the key at ``path`` is wrong (not its value): point at the key

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path)
        allowed = f" (allowed: {', '.join(self.allowed)})" if self.allowed else ""
        return f"{where + ': ' if where else ''}{self.message}{allowed}"


# -- network rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetRule:
    """``host`` (lower-case; ``*.x`` for x and its subdomains) and its ports: ``None`` is the
    default 443 and 80, ``0`` every port."""

    host: str
    port: Optional[int] = None

    @property
    def text(self) -> str:
        return self.host + ("" if self.port is None else ":*" if self.port == 0 else f":{self.port}")

    @property
    def ports(self) -> Optional[tuple[int, ...]]:
        """The ports allowed; ``None`` for every port."""
        return None if self.port == 0 else DEFAULT_PORTS if self.port is None else (self.port,)

    def matches_host(self, name: str) -> bool:
        if self.host.startswith("*."):
            base = self.host[2:]
            return name == base or name.endswith("." + base) or (name.startswith("*.") and
                                                                 (name[2:] == base or name.endswith("." + base)))
        return name == self.host

    def allows(self, name: str, port: int) -> bool:
        ports = self.ports
        return self.matches_host(name) and (ports is None or port in ports)

    def covers(self, other: NetRule) -> bool:
        """Whether everything ``other`` allows, this allows too."""
        if not self.matches_host(other.host):
            return False
        mine, theirs = self.ports, other.ports
        return mine is None or (theirs is not None and set(theirs) <= set(mine))


def parse_rule(text: object, path: tuple[Path, ...] = ()) -> NetRule:
    """``name``, ``*.name``, ``name:PORT`` or ``name:*``, checked."""
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(f"a network rule is a host name, got {shown_value(text)}", path,
                          ("pypi.org", "*.example.org", "host:8443", "host:*"))
    host, sep, port_text = text.strip().lower().rpartition(":") if ":" in text else (text.strip().lower(), "", "")
    port: Optional[int] = None
    if sep:
        if port_text == "*":
            port = 0
        elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
            port = int(port_text)
        else:
            raise PolicyError(f"{text!r}: the port must be 1-65535 or *", path)
    name = host[2:] if host.startswith("*.") else host
    labels = name.rstrip(".").split(".")
    if not name or any(not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label)
                       or not label.isascii() for label in labels):
        raise PolicyError(f"{text!r} is not a host name (ASCII labels of letters, digits, '-' and '_'; "
                          "punycode for others)", path)
    return NetRule(("*." if host.startswith("*.") else "") + name.rstrip("."), port)


# -- limits ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Sizes a task's request may reach, in bytes: one rendered value (argv element, env value,
    cwd), the whole argv, the whole environment, the request as sent."""

    value_bytes: int = 65536
    argv_bytes: int = 131072
    env_bytes: int = 131072
    request_bytes: int = 1048576

    def narrowed(self, other: Optional[Limits]) -> Limits:
        if other is None:
            return self
        return Limits(*(min(getattr(self, k), getattr(other, k)) for k in LIMIT_KEYS))


# -- the policy document --------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """One layer. ``None`` means "this layer says nothing about it" (a narrowing layer that omits
    a key does not narrow it); the first layer is always complete (:func:`complete`)."""

    source: str
    filesystem: Optional[tuple[tuple[str, Access], ...]] = None
    deny: tuple[str, ...] = ()
    default_denies: Optional[bool] = None
    protected: tuple[str, ...] = ()
    network: Optional[NetworkMode] = None
    allow: Optional[tuple[NetRule, ...]] = None
    unsandboxed: Optional[bool] = None
    linux_backends: Optional[tuple[str, ...]] = None
    hints: Optional[bool] = None
    limits: Optional[Limits] = None
    #: Task resources (:mod:`.limits`): what a task gets when it asks nothing, and the most it may ask.
    resources_default: Optional[TaskLimits] = None
    resources_max: Optional[TaskLimits] = None
    resources_best_effort: Optional[bool] = None
    #: Names of the agent's environment variables a task inherits (beyond ``INHERITED_ENV``);
    #: ``None``: this layer says nothing (for the operator's: none).
    env_passthrough: Optional[tuple[str, ...]] = None

    def to_json(self) -> dict[str, Any]:
        """The canonical document (what travels on the wire and what the digest is taken of)."""
        out: dict[str, Any] = {}
        if self.filesystem is not None:
            out["filesystem"] = {key: access.value for key, access in self.filesystem}
        if self.deny:
            out["deny"] = list(self.deny)
        if self.default_denies is not None:
            out["default_denies"] = self.default_denies
        if self.protected:
            out["protected"] = list(self.protected)
        if self.network is not None or self.allow is not None:
            net: dict[str, Any] = {}
            if self.network is not None:
                net["max"] = self.network.value
            if self.allow is not None:
                net["allow"] = [r.text for r in self.allow]
            out["network"] = net
        for key in ("unsandboxed", "hints"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.linux_backends is not None:
            out["linux_backends"] = list(self.linux_backends)
        if self.limits is not None:
            out["limits"] = {k: getattr(self.limits, k) for k in LIMIT_KEYS}
        resources: dict[str, Any] = {k: v.to_json() for k, v in (("default", self.resources_default),
                                                                  ("max", self.resources_max)) if v is not None}
        if self.resources_best_effort is not None:
            resources["best_effort"] = self.resources_best_effort
        if resources:
            out["resources"] = resources
        if self.env_passthrough is not None:  # only when set: an older agent never sees the key
            out["env_passthrough"] = list(self.env_passthrough)
        return out


#: What an operator who wrote nothing gets: the workspace and the task's private temp dir
#: writable, everything else readable, no network, no unsandboxed tasks, bwrap only.
DEFAULT = Policy(
    source="built-in default",
    filesystem=((":workspace_roots", Access.WRITE), (":tmpdir", Access.WRITE), (":root", Access.READ)),
    default_denies=True, network=NetworkMode.NONE, allow=(), unsandboxed=False, linux_backends=("bwrap",),
    hints=False, limits=Limits(),
)


def complete(policy: Policy, base: Policy = DEFAULT) -> Policy:
    """``policy`` with every key it leaves out taken from ``base`` (for the operator's layer)."""
    changes = {name: getattr(base, name) for name in ("filesystem", "default_denies", "network", "allow",
                                                      "unsandboxed", "linux_backends", "hints", "limits")
               if getattr(policy, name) is None}
    return replace(policy, **changes)


def parse(data: object, source: str) -> Policy:
    """A policy document (plain YAML/JSON data) as a :class:`Policy`; :class:`PolicyError` saying
    where and what is wrong. Nothing is filled in: see :func:`complete`."""
    if data is None:
        return Policy(source)
    doc = _mapping(data, ())
    for key in doc:
        if key not in KEYS:
            raise PolicyError(f"unknown policy key {key!r}{suggest(key, KEYS)}", (str(key),), KEYS, at_key=True)
    return Policy(
        source=source,
        filesystem=_ceiling(doc["filesystem"]) if "filesystem" in doc else None,
        deny=tuple(_path_key(item, ("deny", i), deny=True) for i, item in enumerate(_list(doc.get("deny"), ("deny",)))),
        default_denies=_bool(doc, "default_denies"),
        protected=tuple(_protected(item, ("protected", i))
                        for i, item in enumerate(_list(doc.get("protected"), ("protected",)))),
        network=_network_max(doc.get("network")),
        allow=_network_allow(doc.get("network")),
        unsandboxed=_bool(doc, "unsandboxed"),
        linux_backends=_backends(doc["linux_backends"]) if "linux_backends" in doc else None,
        hints=_bool(doc, "hints"),
        limits=_limits(doc["limits"]) if "limits" in doc else None,
        resources_default=_resources(doc.get("resources"), "default"),
        resources_max=_resources(doc.get("resources"), "max"),
        resources_best_effort=_best_effort(doc.get("resources")),
        env_passthrough=_env_names(doc["env_passthrough"]) if "env_passthrough" in doc else None,
    )


def _env_names(value: object) -> tuple[str, ...]:
    names = []
    for i, item in enumerate(_list(value, ("env_passthrough",))):
        if not isinstance(item, str) or not item or not item.isascii() or item[0].isdigit() or not all(
                c.isalnum() or c == "_" for c in item):
            raise PolicyError(f"env_passthrough lists environment variable names (ASCII letters, digits and '_', "
                              f"not starting with a digit), got {shown_value(item)}", ("env_passthrough", i),
                              ("KUBECONFIG", "http_proxy"))
        names.append(item)
    return tuple(dict.fromkeys(names))


def _resources(value: object, which: str) -> Optional[TaskLimits]:
    if value is None:
        return None
    doc = _mapping(value, ("resources",))
    for key in doc:
        if key not in RESOURCE_KEYS:
            raise PolicyError(f"unknown resources key {key!r}", ("resources", str(key)), RESOURCE_KEYS, at_key=True)
    if which not in doc:
        return None
    section = doc[which]
    if not isinstance(section, dict):
        raise PolicyError(f"must be a mapping of limits, got {shown_value(section)}", ("resources", which),
                          TASK_LIMIT_KEYS)
    for key, value in section.items():
        if key not in TASK_LIMIT_KEYS:
            raise PolicyError(f"unknown limit {key!r}", ("resources", which, str(key)), TASK_LIMIT_KEYS, at_key=True)
        try:
            parse_limits({key: value})
        except ValueError as exc:
            raise PolicyError(str(exc), ("resources", which, str(key))) from None
    return parse_limits(section)


def _best_effort(value: object) -> Optional[bool]:
    if not isinstance(value, dict) or "best_effort" not in value:
        return None
    if not isinstance(value["best_effort"], bool):
        raise PolicyError(f"must be true or false, got {shown_value(value['best_effort'])}",
                          ("resources", "best_effort"), ("true", "false"))
    return bool(value["best_effort"])


def _ceiling(value: object) -> tuple[tuple[str, Access], ...]:
    doc = _mapping(value, ("filesystem",))
    out = []
    for key, access in doc.items():
        path = ("filesystem", str(key))
        try:
            text = _path_key(key, path, deny=False)
        except PolicyError as exc:
            raise PolicyError(exc.message, exc.path, exc.allowed, at_key=True) from None
        if access == "deny":
            raise PolicyError(f"{key!r}: a ceiling says the most a task may get; put paths to deny under `deny:`",
                              path, CEILING_ACCESS)
        if access not in CEILING_ACCESS:
            raise PolicyError(f"access for {key!r} must be read or write, got {shown_value(access)}", path,
                              CEILING_ACCESS)
        out.append((text, Access(str(access))))
    return tuple(out)


def _path_key(key: object, path: tuple[Path, ...], deny: bool) -> str:
    if not isinstance(key, str) or not key:
        raise PolicyError(f"a path must be a non-empty string, got {shown_value(key)}", path, PATH_FORMS)
    try:
        spec = path_spec(key)
    except ValueError as exc:
        raise PolicyError(str(exc), path, PATH_FORMS) from None
    if isinstance(spec, Glob) and not deny:
        raise PolicyError(f"{key!r}: a glob can only deny; a ceiling lists directories", path, PATH_FORMS)
    return key


def path_spec(key: str) -> PathSpec:
    """A policy's path as the intent's path type; ``ValueError`` saying why it is not one."""
    if "\0" in key:
        raise ValueError(f"{key!r} contains a NUL character")
    if any(c in "*?[" for c in key):
        from sandfleet_agent.portable.globs import GlobError, validate

        try:
            validate(key)
        except GlobError as exc:
            raise ValueError(f"{key!r} is not a valid glob: {exc}") from None
        return Glob(key)
    if key.startswith(":"):
        name, _, sub = key[1:].partition("/")
        if name not in SYMBOLS:
            raise ValueError(f"unknown symbol {key!r}")
        if sub and name != "workspace_roots":
            raise ValueError(f"{key!r}: only :workspace_roots takes a subpath")
        if ".." in sub.split("/") or sub.startswith("/"):
            raise ValueError(f"{key!r}: a subpath is relative and without '..'")
        return Special(name, sub or None)
    if key == "~" or key.startswith("~/"):
        sub = key[2:]
        if ".." in sub.split("/"):
            raise ValueError(f"{key!r}: a subpath is without '..'")
        return Special("home", sub or None)
    try:
        return FilePath(str(PathUri.from_native(key)))
    except ValueError as exc:
        raise ValueError(f"{key!r} is not an absolute path, ~ or a symbol: {exc}") from None


def _protected(value: object, path: tuple[Path, ...]) -> str:
    if not isinstance(value, str) or not value or value.startswith(("/", "~", ":")) or "\0" in value \
            or any(part in ("", ".", "..") for part in value.split("/")):
        raise PolicyError(f"a protected name is a relative name like .github/workflows, got {shown_value(value)}", path)
    return value


def _network_max(value: object) -> Optional[NetworkMode]:
    if value is None:
        return None
    text = value if isinstance(value, str) else _mapping(value, ("network",)).get("max")
    if text is None:
        return None
    if text not in [m.value for m in NetworkMode]:
        where = ("network",) if isinstance(value, str) else ("network", "max")
        raise PolicyError(f"unknown network ceiling {shown_value(text)}", where, [m.value for m in NetworkMode])
    return NetworkMode(text)


def _network_allow(value: object) -> Optional[tuple[NetRule, ...]]:
    if not isinstance(value, Mapping):
        return None
    for key in value:
        if key not in NETWORK_KEYS:
            raise PolicyError(f"unknown network key {key!r}", ("network", str(key)), NETWORK_KEYS, at_key=True)
    if "allow" not in value:
        return None
    items = _list(value["allow"], ("network", "allow"))
    return tuple(parse_rule(item, ("network", "allow", i)) for i, item in enumerate(items))


def _backends(value: object) -> tuple[str, ...]:
    items = _list(value, ("linux_backends",))
    for i, item in enumerate(items):
        if item not in BACKENDS:
            raise PolicyError(f"unknown Linux backend {shown_value(item)}", ("linux_backends", i), BACKENDS)
    if not items:
        raise PolicyError("an empty list would refuse every sandboxed task; list at least one", ("linux_backends",),
                          BACKENDS)
    return tuple(dict.fromkeys(str(i) for i in items))


def _limits(value: object) -> Limits:
    doc = _mapping(value, ("limits",))
    given: dict[str, int] = {}
    for key, item in doc.items():
        if key not in LIMIT_KEYS:
            hint = (" (a task's resources go under resources: {default: ..., max: ...})"
                    if key in TASK_LIMIT_KEYS else "")
            raise PolicyError(f"unknown limit {key!r}{hint}", ("limits", str(key)), LIMIT_KEYS, at_key=True)
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise PolicyError(f"{key} must be a positive number of bytes, got {shown_value(item)}", ("limits", key))
        given[key] = item
    return replace(Limits(), **given)


def _mapping(value: object, path: tuple[Path, ...]) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"must be a mapping, got {shown_value(value)}", path)
    return value


def _list(value: object, path: tuple[Path, ...]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"must be a list, got {shown_value(value)}", path)
    return value


def _bool(doc: Mapping[str, Any], key: str) -> Optional[bool]:
    if key not in doc:
        return None
    if not isinstance(doc[key], bool):
        raise PolicyError(f"must be true or false, got {shown_value(doc[key])}", (key,), ("true", "false"))
    return bool(doc[key])






# -- the layers together --------------------------------------------------------------------------


@dataclass(frozen=True)
class Effective:
    """The layers in force for one task on one host, first (operator's, complete) to last."""

    layers: tuple[Policy, ...] = (DEFAULT,)

    @property
    def operator(self) -> Policy:
        return self.layers[0]

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(layer.source for layer in self.layers)

    @property
    def denies(self) -> tuple[str, ...]:
        defaults = DEFAULT_DENIES if self.operator.default_denies is not False else ()
        return tuple(dict.fromkeys([*defaults, *(d for layer in self.layers for d in layer.deny)]))

    @property
    def protected(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*DEFAULT_PROTECTED, *(p for layer in self.layers for p in layer.protected)]))

    @property
    def linux_backends(self) -> tuple[str, ...]:
        order = list(self.operator.linux_backends or DEFAULT.linux_backends or ())
        for layer in self.layers[1:]:
            if layer.linux_backends is not None:
                order = [b for b in order if b in layer.linux_backends]
        return tuple(order)

    @property
    def hints(self) -> bool:
        return all(layer.hints is not False for layer in self.layers) and self.operator.hints is True

    @property
    def env_passthrough(self) -> tuple[str, ...]:
        """The operator's pass-through names that every later layer setting one also lists."""
        names = list(self.operator.env_passthrough or ())
        for layer in self.layers[1:]:
            if layer.env_passthrough is not None:
                names = [n for n in names if n in layer.env_passthrough]
        return tuple(names)

    @property
    def limits(self) -> Limits:
        limits = self.operator.limits or Limits()
        for layer in self.layers[1:]:
            limits = limits.narrowed(layer.limits)
        return limits

    @property
    def limits_best_effort(self) -> bool:
        """May a limit the host cannot enforce be skipped? Only if some layer says so and none says not."""
        said = [layer.resources_best_effort for layer in self.layers if layer.resources_best_effort is not None]
        return bool(said) and all(said)

    def limits_named(self) -> set[str]:
        """The limit keys some layer of the policy sets (the built-in defaults are not among them)."""
        return {key for layer in self.layers for part in (layer.resources_default, layer.resources_max)
                if part is not None for key, _ in part.items()}

    def task_limits(self, asked: TaskLimits, mem_total: int) -> tuple[TaskLimits, Optional[Denial]]:
        """The limits a task runs with: what it asked, else the defaults (the operator's over the
        built-in ones, lowered by later layers), never above any layer's max; asking more than a
        max is a denial."""
        for layer in self.layers:
            cap = layer.resources_max
            if cap is None:
                continue
            for key, value in asked.items():
                most = getattr(cap, key)
                if most is not None and value > most:
                    return asked, Denial(f"limits.{key} {shown(key, value)} exceeds the policy's resources.max "
                                         f"{shown(key, most)} (set by {layer.source}; "
                                         f"{raise_hint(layer.source, 'resources.max')})", layer.source)
        defaults = merged(self.operator.resources_default or TaskLimits(), built_in_defaults(mem_total))
        for layer in self.layers[1:]:
            if layer.resources_default is not None:
                defaults = lowest(defaults, layer.resources_default)
        chosen = merged(asked, defaults)
        for layer in self.layers:
            if layer.resources_max is not None:
                chosen = lowest(chosen, layer.resources_max)
        return chosen, None

    def then(self, *layers: Policy) -> Effective:
        return Effective((*self.layers, *layers))

    def to_json(self) -> list[dict[str, Any]]:
        return [{"source": layer.source, "policy": layer.to_json()} for layer in self.layers]

    def digest(self) -> str:
        """A short fingerprint of the whole effective policy, for records and comparisons."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return str(_sha256()(text.encode("utf-8", "surrogatepass")).hexdigest()[:16])


@cache
def _sha256() -> Any:
    """SHA-256 from CPython's own module (``_sha2`` from 3.12, ``_sha256`` before): the same
    digest as ``hashlib.sha256``, without the OpenSSL that importing hashlib loads (~2-4 ms of every
    agent start, when the stub no longer needs it: sandfleet/transports/stamps.py). hashlib where a
    build has neither."""
    for name in ("_sha2", "_sha256"):
        try:
            return __import__(name).sha256
        except ImportError:
            continue
    import hashlib

    return hashlib.sha256


#: The policy of a task whose request names none: the built-in default alone.
BUILT_IN = Effective()


def effective_from_json(value: object) -> Effective:
    """The operator's layers as sent on the wire (``[{source, policy}, ...]``); the first is
    completed from the built-in default. ``ValueError`` for anything malformed: the agent then
    refuses the task rather than guess."""
    if value is None:
        return Effective()
    if not isinstance(value, list) or not value:
        raise ValueError("policy must be a non-empty list of {source, policy} layers")
    layers = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("source"), str):
            raise ValueError(f"policy[{i}] must be an object with a source and a policy")
        try:
            layer = parse(item.get("policy"), item["source"])
        except PolicyError as exc:
            raise ValueError(f"policy[{i}] ({item['source']}): {exc}") from None
        layers.append(complete(layer) if i == 0 else layer)
    return Effective(tuple(layers))


# -- the check ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Denial:
    """Why a task does not fit: the message names the entry, the layer, and the way to raise it."""

    message: str
    source: str


def raise_hint(source: str, what: str) -> str:
    """How the walls that refused could be raised, by who is allowed to."""
    if source.startswith("--policy"):
        return f"the --policy file narrows {what}; change that file"
    if source.startswith(("/", "~")):
        return f"the host's owner set {what} in {source}; no controller can raise it"
    if source == "command line":
        return f"{what} comes from the command line"
    return f"the operator can raise {what} with sandfleet_policy in the inventory"


@dataclass
class Grant:
    """A concrete path the bound intent gives a task, with its access and the intent entry."""

    path: str
    access: Access
    source: str


@dataclass
class CeilingView:
    """One layer's ceiling bound to the host's paths: (path, access) plus whether ``:minimal`` or
    ``:root`` read lets platform reads through."""

    entries: list[tuple[str, Access]] = field(default_factory=list)
    minimal: bool = False
    #: ``:tmpdir: write`` in the ceiling: covers the task's private temp dir, and nothing of the
    #: host's temp dir it hides (``/tmp/x: write`` needs a ceiling entry naming the host's paths).
    private_tmp: bool = False


def network_denial(mode: NetworkMode, allow: Sequence[str], effective: Effective) -> Optional[Denial]:
    for layer in effective.layers:
        if layer.network is not None and _NETWORK_ORDER[mode] > _NETWORK_ORDER[layer.network]:
            return Denial(f"network {mode.value} exceeds the policy's network ceiling {layer.network.value} "
                          f"(set by {layer.source}; {raise_hint(layer.source, 'network.max')})", layer.source)
        if mode is NetworkMode.MANAGED and layer.network is not NetworkMode.FULL and layer.allow is not None:
            for name in allow:
                rule = parse_rule(name)
                if not any(ceiling.covers(rule) for ceiling in layer.allow):
                    listed = ", ".join(r.text for r in layer.allow) or "nothing"
                    return Denial(f"network allow {name!r} is not covered by the policy's network.allow ({listed}; "
                                  f"set by {layer.source}; {raise_hint(layer.source, 'network.allow')})",
                                  layer.source)
    return None


def filesystem_denial(grants: Sequence[Grant], minimal: bool, views: Sequence[tuple[Policy, CeilingView]],
                      denied: Sequence[str], protected: Sequence[str], contains: Any,
                      private: Sequence[str] = ()) -> Optional[Denial]:
    """The first grant a ceiling does not cover, or that reaches into a mandatory deny."""
    for grant in grants:
        for wall in denied:
            if contains(wall, grant.path):
                return Denial(f"{grant.source}={grant.access.value} reaches {grant.path}, which the policy denies "
                              f"to every task ({wall}); {raise_hint('inventory', 'the deny list')}", "policy deny")
    for layer, view in views:
        if minimal and not view.minimal:
            return Denial(f":minimal=read exceeds the policy's filesystem ceiling ({layer.source}: neither :minimal "
                          f"nor :root is readable; {raise_hint(layer.source, 'filesystem')})", layer.source)
        for grant in grants:
            if grant.path in private and view.private_tmp:
                continue
            covering = [(p, a) for p, a in view.entries if contains(p, grant.path)]
            best = max(covering, key=lambda e: len(e[0]), default=None)
            ok = best is not None and _ACCESS_ORDER[best[1]] >= _ACCESS_ORDER[grant.access]
            if ok and best is not None and grant.access is Access.WRITE and best[0] != grant.path:
                ok = not _under_protected(best[0], grant.path, protected)
            if not ok:
                got = f"at most {best[1].value} there ({best[0]})" if best else "nothing there"
                return Denial(f"{grant.source}={grant.access.value} on {grant.path} exceeds the policy's filesystem "
                              f"ceiling ({layer.source} gives {got}; {raise_hint(layer.source, 'filesystem')})",
                              layer.source)
    return None


def _under_protected(root: str, path: str, protected: Sequence[str]) -> bool:
    """Whether ``path`` lies at or below a protected name relative to the ceiling entry ``root``."""
    rest = path[len(root.rstrip("/\\")):].replace("\\", "/").strip("/")
    parts = rest.split("/") if rest else []
    for name in protected:
        want = name.split("/")
        for i in range(len(parts) - len(want) + 1):
            if parts[i:i + len(want)] == want:
                return True
    return False


def unsandboxed_denial(effective: Effective) -> Optional[Denial]:
    for layer in effective.layers:
        if layer.unsandboxed is False:
            how = ("--allow-unsandboxed on the command line or sandfleet_allow_unsandboxed: true for this host"
                   if layer is effective.operator else raise_hint(layer.source, "unsandboxed"))
            return Denial("this task is marked 'sandbox: false' and would run without any sandbox; the policy "
                          f"({layer.source}) does not allow unsandboxed tasks ({how})", layer.source)
    return None


def read_host_layers(home: Optional[str] = None, files: Optional[Sequence[str]] = None) -> tuple[Policy, ...]:
    """The host owner's layers from :data:`HOST_FILES` that exist. Raises :class:`PolicyError`
    (with the file and, where it can, the line) for one that is not valid: the agent then refuses
    every task rather than run without the owner's walls."""
    layers = []
    for name in HOST_FILES if files is None else files:
        path = os.path.join(home or os.path.expanduser("~"), name[2:]) if name.startswith("~/") else name
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PolicyError(f"{path}: cannot be read: {exc.strerror}") from None
        layers.append(parse_host_file(text, path))
    return tuple(layers)


def parse_host_file(text: str, path: str) -> Policy:
    """A host policy file (YAML; JSON is YAML too). Errors name ``path:line:column``."""
    import yaml  # travels with the agent; imported only where a host has a policy file

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    try:
        return parse(data, path)
    except PolicyError as exc:
        line, column = _position(root, exc.path, exc.at_key)
        raise PolicyError(f"{path}:{line}:{column}: {exc}") from None


def _position(node: Any, path: tuple[Path, ...], at_key: bool) -> tuple[int, int]:
    """Line and column (1-based) of ``path`` in a composed YAML node tree (its nearest known part;
    the key's position when ``at_key``)."""
    mark = node.start_mark if node is not None else None
    for i, part in enumerate(path):
        found = None
        if node is not None and node.id == "mapping":
            found = next((v for k, v in node.value if k.value == str(part)), None)
            key = next((k for k, _v in node.value if k.value == str(part)), None)
            use_key = at_key and i == len(path) - 1
            mark = (key.start_mark if use_key else found.start_mark) if key is not None and found is not None else mark
        elif node is not None and node.id == "sequence" and isinstance(part, int) and part < len(node.value):
            found = node.value[part]
            mark = found.start_mark
        node = found
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
