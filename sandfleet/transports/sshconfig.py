"""Where and how to reach a host: its inventory variables over ssh_config, as Ansible does.

paramiko parses ssh_config but acts on almost none of it, so this module turns a
:class:`HostConfig` into a :class:`Route`: the endpoints to connect through (``ProxyJump``,
recursively, each hop resolved through ssh_config itself) and the target, each with its address,
user, keys, known_hosts files and timeouts.

Honoured: ``Host``/``Match`` (paramiko's matcher), ``Include`` (expanded here, which paramiko
lacks), ``HostName``, ``User``, ``Port``, ``IdentityFile``, ``IdentitiesOnly``, ``ProxyJump``,
``UserKnownHostsFile``, ``GlobalKnownHostsFile``, ``HashKnownHosts``, ``ConnectTimeout``,
``ServerAliveInterval`` and ``StrictHostKeyChecking``. The command line's ``--host-key-policy``
is the source of truth for host keys; ssh_config may only tighten it: ``yes`` forbids recording
keys for that host even under ``accept-new``; ``accept-new``, ``ask`` (nobody can answer a
prompt across parallel hosts) and ``no``/``off`` leave the command line's policy as it is, so a
config written for interactive ``ssh`` can never switch host key checking off. A
``ProxyCommand`` is refused with a clear message rather than silently bypassed.

A host is looked up under its ``ansible_host`` (else its inventory name), the name Ansible's ssh
plugin hands to ``ssh``, so a ``Host`` block's ``HostName`` still applies to it. Where inventory
and ssh_config both say something (user, port, key, timeout), the inventory wins; the inventory
key is tried before ssh_config's ``IdentityFile`` entries. Jump hosts take nothing from the
inventory, as with ``ssh -J``.
"""

from __future__ import annotations

import getpass
import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from sandfleet.errors import UsageError
from sandfleet.inventory import HostConfig
from sandfleet.transports._lean import paramiko
from sandfleet.transports.base import HostUnreachable

DEFAULT_TIMEOUT = 10.0
DEFAULT_KEEPALIVE = 15
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
USER_CONFIG, SYSTEM_CONFIG = "~/.ssh/config", "/etc/ssh/ssh_config"
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
MAX_JUMPS = 8
_INCLUDE = re.compile(r"^\s*include(?:\s*=\s*|\s+)(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Endpoint:
    """One SSH server to authenticate to, fully resolved."""

    alias: str  # the name looked up in ssh_config (inventory ansible_host, or a ProxyJump entry)
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts: tuple[str, ...] = ()  # the user's files; new keys go to the first
    global_known_hosts: tuple[str, ...] = ()
    strict: bool = False  # StrictHostKeyChecking yes: never record a new key for this host
    hash_known_hosts: bool = False
    timeout: float = DEFAULT_TIMEOUT
    keepalive: int = DEFAULT_KEEPALIVE

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Route:
    """The jumps to go through, in order, then the target."""

    target: Endpoint
    jumps: tuple[Endpoint, ...] = ()


def expand_includes(path: str, depth: int = 0) -> str:
    """The text of an ssh_config with its ``Include`` lines replaced by the files they name."""
    if depth > 16:
        raise UsageError(f"ssh_config Include nesting is too deep at {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read ssh_config {path}: {exc.strerror}") from None
    out: list[str] = []
    for line in lines:
        match = _INCLUDE.match(line)
        if not match:
            out.append(line)
            continue
        for pattern in match.group(1).split():
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):  # relative names are relative to ~/.ssh, as in OpenSSH
                pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
            for included in sorted(glob.glob(pattern)):
                out.append(expand_includes(included, depth + 1))
    return "\n".join(out)


class SshConfig:
    """The ssh_config of a run (``--ssh-config FILE``, else ~/.ssh/config then /etc/ssh/ssh_config)."""

    def __init__(self, text: str = "", source: str = "") -> None:
        self.source = source
        try:
            self._config = paramiko.SSHConfig.from_text(text)
        except paramiko.ssh_exception.ConfigParseError as exc:
            raise UsageError(f"cannot parse ssh_config {source}: {exc}") from None

    @classmethod
    def load(cls, path: Optional[str] = None) -> SshConfig:
        if path is not None:
            if not os.path.isfile(path):
                raise UsageError(f"--ssh-config {path}: no such file")
            return cls(expand_includes(path), path)
        found = [p for p in (os.path.expanduser(USER_CONFIG), SYSTEM_CONFIG) if os.path.isfile(p)]
        return cls("\n".join(expand_includes(p) for p in found), " + ".join(found))

    def lookup(self, alias: str) -> dict[str, Any]:
        try:
            return dict(self._config.lookup(alias))
        except Exception as exc:  # paramiko raises several kinds for one bad Match line
            raise HostUnreachable(f"ssh_config lookup for {alias} failed: {exc}") from None

    def route(self, config: HostConfig) -> Route:
        """How to reach an inventory host; a broken ProxyJump raises :class:`HostUnreachable`."""
        explicit_port = any(k in config.vars for k in ("ansible_port", "ansible_ssh_port"))
        options = self.lookup(config.address)
        target = self._endpoint(config.address, options, user=config.user,
                                port=config.port if explicit_port else None, key_file=config.key_file,
                                timeout=inventory_timeout(config))
        jumps = self._jumps(options.get("proxyjump"), {config.address}, target.timeout)
        return Route(target, tuple(jumps))

    def _jumps(self, spec: Optional[str], seen: set[str], timeout: float) -> list[Endpoint]:
        if not spec or spec.strip().lower() == "none":
            return []
        chain: list[Endpoint] = []
        for index, hop in enumerate(spec.split(",")):
            alias, user, port = parse_jump(hop)
            if alias in seen or len(seen) > MAX_JUMPS:
                raise HostUnreachable(f"ProxyJump loops or is longer than {MAX_JUMPS} hops at {alias!r} "
                                      f"(check ssh_config {self.source})")
            seen = seen | {alias}
            options = self.lookup(alias)
            if index == 0:  # only the first hop's own ProxyJump applies, as with ssh -J a,b
                chain.extend(self._jumps(options.get("proxyjump"), seen, timeout))
            chain.append(self._endpoint(alias, options, user=user, port=port, key_file=None, timeout=None))
        return chain

    def _endpoint(self, alias: str, options: Mapping[str, Any], *, user: Optional[str], port: Optional[int],
                  key_file: Optional[str], timeout: Optional[float]) -> Endpoint:
        if options.get("proxycommand", "none").strip().lower() != "none":
            raise HostUnreachable(f"ssh_config gives {alias} a ProxyCommand, which sandfleet does not run; "
                                  "use ProxyJump instead")
        identities = [os.path.expanduser(key_file)] if key_file else []
        identities += [os.path.expanduser(p) for p in options.get("identityfile", [])]
        user_files = _files(options.get("userknownhostsfile"), USER_KNOWN_HOSTS)
        global_files = _files(options.get("globalknownhostsfile"), GLOBAL_KNOWN_HOSTS)
        return Endpoint(
            alias=alias,
            hostname=options.get("hostname", alias),
            port=port if port is not None else _number(options, "port", 22, alias),
            user=user or options.get("user") or getpass.getuser(),
            identity_files=tuple(dict.fromkeys(identities)),
            identities_only=_yes(options.get("identitiesonly")),
            known_hosts=user_files,
            global_known_hosts=global_files,
            strict=_yes(options.get("stricthostkeychecking")),
            hash_known_hosts=_yes(options.get("hashknownhosts")),
            timeout=timeout if timeout is not None else float(_number(options, "connecttimeout",
                                                                       int(DEFAULT_TIMEOUT), alias)),
            keepalive=_number(options, "serveraliveinterval", DEFAULT_KEEPALIVE, alias) or DEFAULT_KEEPALIVE,
        )


def inventory_timeout(config: HostConfig) -> Optional[float]:
    """``ansible_timeout`` (seconds for connect, banner and authentication), if the inventory sets it."""
    value = config.vars.get("ansible_timeout")
    if value is None:
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds <= 0:
        raise HostUnreachable(f"ansible_timeout of {config.name} must be a positive number of seconds, "
                              f"got {value!r}")
    return seconds


def parse_jump(hop: str) -> tuple[str, Optional[str], Optional[int]]:
    """``[user@]host[:port]`` or ``ssh://[user@]host[:port]`` (IPv6 in brackets) → parts."""
    text = hop.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):].rstrip("/")
    user: Optional[str] = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port: Optional[str] = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        raise HostUnreachable(f"bad ProxyJump entry {hop!r} (expected [user@]host[:port])")
    return host, user or None, int(port) if port is not None else None


def _files(value: Optional[str], default: tuple[str, ...]) -> tuple[str, ...]:
    words = value.split() if value else list(default)
    return tuple(os.path.expanduser(w) for w in words if w.lower() != "none")


def _yes(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("yes", "true")


def _number(options: Mapping[str, Any], key: str, default: int, alias: str) -> int:
    value = options.get(key)
    if value is None:
        return default
    if not str(value).isdigit():
        raise HostUnreachable(f"ssh_config {key} for {alias} must be a number, got {value!r}")
    return int(value)
