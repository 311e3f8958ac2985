"""What sandfleet needs to know about one host, read from its variables and checked.

Every bad value is reported at the file and line that set it, with what is allowed, before
anything runs. Ansible's names are read where one exists, including the ``ansible_ssh_*``
spellings, which win over the plain ones as in Ansible's ssh connection plugin.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, get_args

from sandfleet.errors import InputError, Mark
from sandfleet.load.policies import INVENTORY_SOURCE, read_policy
from sandfleet.load.yamlsrc import YMap
from sandfleet.templating import VarRenderer
from sandfleet_agent.network.netpolicy import parse_resolve
from sandfleet_agent.portable.intent import BACKENDS_BY_OS, OS_NAMES, OS_OF_BACKEND
from sandfleet_agent.portable.policy import Policy

ConnectionKind = Literal["ssh", "local"]
CONNECTIONS: tuple[ConnectionKind, ...] = get_args(ConnectionKind)
_SSH_ALIASES = ("smart", "paramiko", "paramiko_ssh")
SANDFLEET_VARS = ("sandfleet_agent_persist", "sandfleet_allow_unsandboxed", "sandfleet_home",
                  "sandfleet_network_resolve", "sandfleet_os", "sandfleet_pipelining", "sandfleet_policy",
                  "sandfleet_python", "sandfleet_sandbox", "sandfleet_sandbox_reuse", "sandfleet_tmpdir",
                  "sandfleet_workspace_roots")
_TRUE = ("y", "yes", "on", "1", "true", "t")
_FALSE = ("n", "no", "off", "0", "false", "f")
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\[^\\/]+[\\/][^\\/]+)")
BECOME_METHODS = ("sudo",)
#: A POSIX user name (what useradd accepts): never a shell word, an option or a sudo ``#uid``.
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_BECOME_PASSWORDS = ("ansible_become_password", "ansible_become_pass")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smh]?)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}
#: The longest ``sandfleet_agent_persist``; the resident agent caps what it is sent at the same
#: (``sandfleet_agent.resident.MAX_PERSIST_S``; docs/resident-agent.md says why a day).
MAX_AGENT_PERSIST_S = 24 * 3600
#: Ansible's own ``ansible_*`` variables a user sets (connection, become, interpreter) or reads (magic
#: variables). A variable not in here but close to one is most likely a typo that Ansible would ignore
#: silently (``ansible_conection: local`` connects over SSH): sandfleet warns, naming the close one.
ANSIBLE_VARS = (
    "ansible_host", "ansible_port", "ansible_user", "ansible_connection", "ansible_password",
    "ansible_ssh_host", "ansible_ssh_port", "ansible_ssh_user", "ansible_ssh_pass", "ansible_ssh_password",
    "ansible_ssh_private_key_file", "ansible_private_key_file", "ansible_ssh_common_args",
    "ansible_ssh_extra_args", "ansible_sftp_extra_args", "ansible_scp_extra_args", "ansible_ssh_pipelining",
    "ansible_ssh_executable", "ansible_ssh_timeout", "ansible_timeout", "ansible_pipelining",
    "ansible_become", "ansible_become_method", "ansible_become_user", "ansible_become_password",
    "ansible_become_pass", "ansible_become_exe", "ansible_become_flags", "ansible_sudo", "ansible_sudo_user",
    "ansible_sudo_pass", "ansible_python_interpreter", "ansible_shell_type", "ansible_shell_executable",
    "ansible_network_os", "ansible_remote_tmp", "ansible_group_priority", "ansible_facts", "ansible_check_mode",
    "ansible_diff_mode", "ansible_forks", "ansible_limit", "ansible_play_hosts", "ansible_play_hosts_all",
    "ansible_play_batch", "ansible_play_name", "ansible_run_tags", "ansible_skip_tags", "ansible_version",
    "ansible_verbosity", "ansible_inventory_sources", "ansible_config_file", "ansible_playbook_python",
    "ansible_async_path", "ansible_role_names", "ansible_play_role_names", "ansible_role_name",
    "ansible_collection_name", "ansible_dependent_role_names", "ansible_hostname", "ansible_os_family",
    "ansible_ssh_args", "ansible_ssh_retries", "ansible_ssh_transfer_method", "ansible_host_key_checking",
    "ansible_ssh_host_key_checking", "ansible_ssh_use_tty",
    # facts, which people sometimes pin in an inventory
    "ansible_distribution", "ansible_distribution_version", "ansible_distribution_major_version",
    "ansible_distribution_release", "ansible_architecture", "ansible_system", "ansible_kernel", "ansible_machine",
    "ansible_fqdn", "ansible_nodename", "ansible_domain", "ansible_env", "ansible_user_id", "ansible_user_dir",
    "ansible_user_shell", "ansible_pkg_mgr", "ansible_service_mgr", "ansible_default_ipv4", "ansible_default_ipv6",
    "ansible_all_ipv4_addresses", "ansible_interfaces", "ansible_date_time", "ansible_local", "ansible_lsb",
    "ansible_mounts", "ansible_memtotal_mb", "ansible_processor", "ansible_processor_vcpus", "ansible_selinux",
)
_warned: set[tuple[str, Optional[Mark]]] = set()  # each typo once per process, not once per host
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class HostConfig:
    """How to reach a host and what its sandbox should start from.

    ``vars`` holds all of the host's variables (inventory and magic ones) as written, templates
    unrendered: the playbook renders what it uses.
    """

    name: str
    connection: ConnectionKind = "ssh"
    address: str = ""
    port: int = 22
    user: Optional[str] = None
    key_file: Optional[str] = None
    os: Optional[str] = None
    workspace_roots: tuple[str, ...] = ()
    sandbox_pin: Optional[str] = None
    python: str = "python3"
    allow_unsandboxed: bool = False
    home: Optional[str] = None
    tmpdir: Optional[str] = None
    #: ``sandfleet_network_resolve``: where managed-network proxies on this host find these names
    #: (name → IP, like curl's ``--resolve``). Operator configuration, never playbook content: it is
    #: the only way to point an allowed name at a loopback or private address.
    network_resolve: tuple[tuple[str, str], ...] = ()
    #: ``sandfleet_sandbox_reuse`` (default true): tasks with the same sandbox share one persistent
    #: bwrap sandbox on this host (modules/sandfleet_agent/linux/sandbox_pool.py); false gives every task a fresh one.
    sandbox_reuse: bool = True
    #: ``sandfleet_pipelining`` (default true; Ansible's ``ansible_pipelining`` is the precedent):
    #: send a host the requests of tasks that cannot observe each other in one batch
    #: (sandfleet/run/pipeline.py, docs/performance.md); false sends every request alone.
    pipelining: bool = True
    #: ``sandfleet_policy``: the operator's walls for this host (``sandfleet/load/policies.py``); None
    #: means the built-in default.
    policy: Optional[Policy] = None
    #: ``ansible_become`` (+ ``ansible_become_user``, default root): the user the agent, and so
    #: every task, runs as, through ``sudo -n`` (``ansible_become_method: sudo``, the only one) after
    #: logging in as ``user``; None: the login user.
    become_user: Optional[str] = None
    #: ``ansible_become_password`` (or ``--ask-become-pass``): answers sudo's prompt over the
    #: session's stdin, never on a command line; None: ``sudo -n``, which never asks.
    become_password: Optional[str] = field(default=None, repr=False)
    #: ``sandfleet_agent_persist`` (``10m``; default 0, off): keep a resident agent on this host for
    #: that long after a run, so later runs skip the agent's start (docs/resident-agent.md).
    agent_persist_s: int = 0
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


def build_host_config(name: str, renderer: VarRenderer, all_vars: Mapping[str, Any]) -> HostConfig:
    reader = _Reader(renderer)
    reader.check_sandfleet_names(all_vars)
    os_name = reader.choice("sandfleet_os", OS_NAMES)
    return HostConfig(
        name=name,
        connection=reader.connection(),
        address=reader.text("ansible_ssh_host") or reader.text("ansible_host") or name,
        port=reader.port(),
        user=reader.text("ansible_ssh_user") or reader.text("ansible_user"),
        key_file=reader.text("ansible_ssh_private_key_file") or reader.text("ansible_private_key_file"),
        os=os_name,
        workspace_roots=reader.workspace_roots(os_name),
        sandbox_pin=reader.sandbox(os_name),
        python=reader.python(),
        allow_unsandboxed=reader.boolean("sandfleet_allow_unsandboxed"),
        home=reader.absolute_path("sandfleet_home", os_name),
        tmpdir=reader.absolute_path("sandfleet_tmpdir", os_name),
        network_resolve=reader.network_resolve(),
        sandbox_reuse=reader.boolean("sandfleet_sandbox_reuse", default=True),
        pipelining=reader.boolean("sandfleet_pipelining", default=True),
        policy=reader.policy(),
        become_user=reader.become(),
        become_password=reader.become_password(),
        agent_persist_s=reader.duration("sandfleet_agent_persist", MAX_AGENT_PERSIST_S),
        vars=dict(all_vars),
    )


class _Reader:
    def __init__(self, renderer: VarRenderer) -> None:
        self.r = renderer

    def fail(self, var: str, message: str, *, allowed: Optional[tuple[str, ...]] = None,
             index: Optional[int] = None) -> InputError:
        mark = self.r.mark(var)
        raw = self.r.raw(var)
        if index is not None and hasattr(raw, "item_mark"):
            mark = raw.item_mark(index)
        return InputError(f"{var}: {message}", mark, allowed=allowed)

    def check_sandfleet_names(self, all_vars: Mapping[str, Any]) -> None:
        """An unknown ``sandfleet_*`` name is an error; an unknown ``ansible_*`` one close to a known
        one is a warning on stderr (Ansible's other variables, and anyone's own, stay silent)."""
        for var in all_vars:
            if not isinstance(var, str):
                continue
            if var.startswith("sandfleet_") and var not in SANDFLEET_VARS:
                close = did_you_mean(var, SANDFLEET_VARS)
                hint = f" (did you mean {close!r}?)" if close else ""
                raise InputError(f"unknown sandfleet variable {var!r}{hint}", self.r.mark(var),
                                 allowed=SANDFLEET_VARS)
            if var.startswith("ansible_") and var not in ANSIBLE_VARS:
                close = did_you_mean(var, ANSIBLE_VARS)
                if close:
                    warn_once(var, self.r.mark(var), f"unknown variable {var!r}, did you mean {close!r}? "
                              "(Ansible ignores it silently, and so does sandfleet)")

    def text(self, var: str) -> Optional[str]:
        value = self.r.get(var)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.fail(var, f"must be a string, got {_show(value)}")
        text = str(value)
        if not text.strip():
            raise self.fail(var, "must not be empty")
        return text

    def choice(self, var: str, allowed: tuple[str, ...]) -> Optional[str]:
        value = self.r.get(var)
        if value is None:
            return None
        if value not in allowed:
            raise self.fail(var, f"unknown value {_show(value)}", allowed=allowed)
        return str(value)

    def connection(self) -> ConnectionKind:
        value = self.r.get("ansible_connection")
        if value is None or value in _SSH_ALIASES:
            return "ssh"
        for known in CONNECTIONS:
            if value == known:
                return known
        raise self.fail("ansible_connection", f"unsupported connection {_show(value)}", allowed=CONNECTIONS)

    def port(self) -> int:
        var = "ansible_ssh_port" if self.r.get("ansible_ssh_port") is not None else "ansible_port"
        value = self.r.get(var)
        if value is None:
            return 22
        number: Optional[int] = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
        if number is None or not 1 <= number <= 65535:
            raise self.fail(var, f"must be a port number from 1 to 65535, got {_show(value)}")
        return number

    def boolean(self, var: str, default: bool = False) -> bool:
        value = self.r.get(var)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise self.fail(var, f"must be a boolean, got {_show(value)}", allowed=("true", "false"))

    def duration(self, var: str, most: int) -> int:
        """Seconds from ``30s``, ``10m``, ``1h`` or a plain number of seconds; 0, false, no or off
        is 0 (off); more than ``most`` is an error naming it."""
        value = self.r.get(var)
        if value is None or value is False:
            return 0
        text = str(value).strip().lower() if not isinstance(value, bool) else ""
        if text in _FALSE:
            return 0
        found = _DURATION.match(text)
        if found is None:
            raise self.fail(var, f"{_show(value)} is not a duration: a number of seconds or one with a unit "
                            "(30s, 10m, 1h); 0 or false turns it off")
        seconds = round(float(found.group(1)) * _UNITS[found.group(2) or "s"])
        if seconds > most:
            raise self.fail(var, f"{_show(value)} is longer than the most allowed, {most // 3600}h")
        return max(seconds, 1)

    def become(self) -> Optional[str]:
        """The user to become (None: no become), its method and name checked."""
        method = self.r.get("ansible_become_method")
        if method is not None and method not in BECOME_METHODS:
            raise self.fail("ansible_become_method", f"unsupported become method {_show(method)}",
                            allowed=BECOME_METHODS)
        user = self.text("ansible_become_user")
        if user is not None and not _USER_NAME.match(user):
            raise self.fail("ansible_become_user", f"{user!r} is not a user name (letters, digits, '_', '.', '-'; "
                            "not starting with '.' or '-'; at most 32 characters)")
        if not self.boolean("ansible_become"):
            return None
        if self.connection() != "ssh":
            raise self.fail("ansible_become", "works only with ansible_connection: ssh (a local connection runs "
                            "as the controller's user)")
        return user or "root"

    def become_password(self) -> Optional[str]:
        """The password sudo may ask for (``ansible_become_password``, or its older name)."""
        for var in _BECOME_PASSWORDS:
            value = self.r.get(var)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    raise self.fail(var, f"must be a string, got {type(value).__name__}")  # never the value
                return str(value)
        return None

    def python(self) -> str:
        value = self.text("sandfleet_python")
        if value is not None:
            return value
        interpreter = self.r.get("ansible_python_interpreter")
        if isinstance(interpreter, str) and interpreter.strip() and not interpreter.startswith("auto"):
            return interpreter
        return "python3"

    def sandbox(self, os_name: Optional[str]) -> Optional[str]:
        pin = self.choice("sandfleet_sandbox", tuple(OS_OF_BACKEND))
        if pin is not None and os_name is not None and OS_OF_BACKEND[pin] != os_name:
            fits = BACKENDS_BY_OS[os_name]
            raise self.fail("sandfleet_sandbox", f"{pin!r} cannot run on a {os_name} host "
                            f"(sandfleet_os is {os_name})", allowed=fits)
        return pin

    def workspace_roots(self, os_name: Optional[str]) -> tuple[str, ...]:
        var = "sandfleet_workspace_roots"
        value = self.r.get(var)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise self.fail(var, f"must be a list of paths or one path, got {_show(value)}")
        roots: list[str] = []
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(var, f"each root must be a string path, got {_show(item)}", index=index)
            problem = path_problem(item, os_name, allow_home=True)
            if problem:
                raise self.fail(var, problem, index=index if not isinstance(value, str) else None)
            roots.append(item)
        return tuple(roots)

    def network_resolve(self) -> tuple[tuple[str, str], ...]:
        var = "sandfleet_network_resolve"
        value = self.r.get(var)
        if value is None:
            return ()
        try:
            return tuple(sorted(parse_resolve(value).items()))
        except ValueError as exc:
            raise self.fail(var, f"{exc} (e.g. {{mirror.internal: 10.0.0.5}})") from None

    def policy(self) -> Optional[Policy]:
        var = "sandfleet_policy"
        raw = self.r.raw(var)
        if raw is None:
            return None
        value = raw if isinstance(raw, YMap) else self.r.get(var)
        if not isinstance(value, dict):
            raise self.fail(var, f"must be a mapping of policy keys, got {_show(value)} (a YAML inventory or "
                            "group_vars/*.yml can hold one)")
        return read_policy(value, self.r.mark(var), INVENTORY_SOURCE)

    def absolute_path(self, var: str, os_name: Optional[str]) -> Optional[str]:
        value = self.text(var)
        if value is None:
            return None
        problem = path_problem(value, os_name, allow_home=False)
        if problem:
            raise self.fail(var, problem)
        return value


def did_you_mean(name: str, known: tuple[str, ...]) -> Optional[str]:
    """The known name ``name`` is most likely a typo of: the nearest by edits (a swap of two neighbours
    counts one) after the common ``prefix_``, at most 1 edit for a short rest and 2 for a long one."""
    prefix = name.split("_", 1)[0] + "_"
    rest = name[len(prefix):]
    limit = 1 if len(rest) <= 6 else 2
    best: Optional[tuple[int, str]] = None
    for candidate in known:
        if candidate.startswith(prefix):
            distance = _edits(rest, candidate[len(prefix):], limit)
            if distance <= limit and (best is None or distance < best[0]):
                best = (distance, candidate)
    return best[1] if best else None


def _edits(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (insert, delete, replace, swap neighbours); > limit early."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], previous2[j - 2] + 1)
        previous2, previous = previous, row
    return previous[-1]


def warn_once(var: str, mark: Optional[Mark], message: str) -> None:
    """``sandfleet: FILE:LINE:COL: warning: MESSAGE`` on stderr, once per variable and place."""
    with _warned_lock:
        if (var, mark) in _warned:
            return
        _warned.add((var, mark))
    where = f"{mark}: " if mark else ""
    sys.stderr.write(f"sandfleet: {where}warning: {message}\n")


def path_problem(path: str, os_name: Optional[str], *, allow_home: bool) -> Optional[str]:
    """Why ``path`` is not an absolute path for a host of ``os_name`` (``None`` if it is one)."""
    if "\0" in path:
        return f"{path!r} contains a NUL character"
    shown = f"'{path}'"  # not repr(): a Windows path should read as written, single backslashes
    posix = path.startswith("/")
    windows = bool(_WINDOWS_ABSOLUTE.match(path))
    home = allow_home and (path == "~" or path.startswith("~/") or (os_name == "windows" and path.startswith("~\\")))
    if home:
        return None
    example = {"windows": r"C:\work or \\server\share", None: r"/srv/work or C:\work"}.get(os_name, "/srv/work")
    also = " or ~/..." if allow_home else ""
    if os_name in ("linux", "macos") and windows:
        return f"{shown} is a Windows path, but sandfleet_os is {os_name} (use a POSIX path like {example}{also})"
    if os_name == "windows" and posix and not windows:
        return f"{shown} is a POSIX path, but sandfleet_os is windows (use a path like {example}{also})"
    if posix or windows:
        return None
    return f"{shown} is not an absolute path (use a path like {example}{also})"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "null"
    return repr(value)
