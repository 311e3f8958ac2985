"""What a host is: its OS, home, temp dir, workspace roots and which sandboxes work there.

Probed once per agent start on a real host (:func:`probe`); assumed from inventory variables in a
dry-run (:func:`assumed_facts`), where nothing may be touched. Both feed the same binding and
rendering code, which is why a dry-run shows what would run.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from sandfleet_agent import bounds
from sandfleet_agent.portable.intent import BACKENDS_BY_OS


@dataclass(frozen=True)
class BackendStatus:
    """Whether one sandbox mechanism works on this host, and if not, why and how to fix it."""

    name: str
    available: bool
    reason: str = ""
    path: Optional[str] = None
    #: bwrap: whether it can mount a fresh /proc here (containers often refuse it), and why not.
    proc: bool = True
    proc_reason: str = ""
    #: bwrap: what ``bwrap --version`` says ("bubblewrap 0.8.0"); "" when unknown (older agents).
    #: Description only: two statuses that differ in it mean the same.
    version: str = field(default="", compare=False)


@dataclass(frozen=True)
class HostFacts:
    """What the host is: its OS, home, temp and workspace roots, and which sandboxes work on it
    (probed by the agent, or assumed from the inventory for a dry-run)."""

    os: str
    home: str
    tmpdir: Optional[str]
    workspace_roots: tuple[str, ...] = ()
    user: str = ""
    backends: tuple[BackendStatus, ...] = ()
    landlock_abi: int = 0
    assumed: bool = False  # True in a dry-run: taken from the inventory, not probed
    python: str = field(default_factory=lambda: ".".join(map(str, sys.version_info[:3])))
    #: The agent's state directory (its code cache, compiled templates, render memo, private temp
    #: dirs): every task's policy denies it.
    state_dir: str = ""
    #: What runs outside the sandbox later and so must never be writable from inside it: the
    #: agent's code, its interpreter's prefix, the directories on its PATH, and for a local agent
    #: the controller's own installation. Read-only wherever a writable root contains them.
    protected: tuple[str, ...] = ()
    #: The agent's effective uid and effective capabilities (``CapEff``): Landlock refuses to run a
    #: task that would keep root's powers. -1 when unknown (not a POSIX host).
    euid: int = -1
    cap_eff: int = 0
    #: How this host bounds a task's memory and processes (``cgroup1``, ``cgroup2``, ``rlimit``;
    #: :mod:`.limits`), why not better, and its memory (the default memory limit is half of it).
    limits: str = ""
    limits_reason: str = ""
    mem_total: int = 0
    #: For ``sandfleet doctor`` (why a sandbox cannot work, and the exact fix): the machine
    #: (``os.uname().machine``: the seccomp filter exists per architecture), the kernel release,
    #: the sysctls that gate unprivileged user namespaces as ``(name, value)`` pairs (only those
    #: this kernel has), the agent's own seccomp mode (``/proc/self/status``: 2 = a filter, as a
    #: container runtime installs; -1 unknown) and the container it runs in ("" for none found).
    #: Read once at start from /proc and two stat calls: about 0.1 ms together.
    machine: str = ""
    kernel: str = ""
    sysctls: tuple[tuple[str, str], ...] = ()
    seccomp_mode: int = -1
    container: str = ""

    def backend(self, name: str) -> Optional[BackendStatus]:
        return next((b for b in self.backends if b.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostFacts:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["workspace_roots"] = tuple(known.get("workspace_roots", ()))
        known["protected"] = tuple(known.get("protected", ()))
        known["sysctls"] = tuple((str(k), str(v)) for k, v in known.get("sysctls", ()))
        known["backends"] = tuple(
            BackendStatus(**{k: v for k, v in b.items() if k in BackendStatus.__dataclass_fields__})
            for b in known.get("backends", ())
        )
        return cls(**known)


def host_os() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return sys.platform


def _tmpdir() -> str:
    env = os.environ.get("TMPDIR", "")
    if os.path.isabs(env):
        return env
    if not (os.environ.get("TEMP") or os.environ.get("TMP")) and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"  # what tempfile.gettempdir() finds first then, without importing it (~1.4 ms)
    import tempfile

    return tempfile.gettempdir()


#: Where sandbox helper binaries (bwrap, ...) are taken from: root-owned system directories only,
#: never PATH. A task that can write a directory on the agent's PATH could otherwise plant a
#: ``bwrap`` script there, and that script would be "the sandbox".
SYSTEM_BIN_DIRS = ("/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin", "/sbin", "/run/current-system/sw/bin")
#: Replaces :data:`SYSTEM_BIN_DIRS` for bwrap (``:``-separated; empty: look nowhere, so bwrap is
#: off). Candidates still pass every ownership check, so it cannot make an unsafe bwrap trusted.
BWRAP_DIRS_ENV = "SANDFLEET_BWRAP_DIRS"
_SYMLINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS)
_BWRAP_PACKAGE = ("install the distribution's bubblewrap package (apt-get install bubblewrap, "
                  "dnf install bubblewrap, ...)")


def _unsafe_entry(path: str, st: os.stat_result) -> str:
    """Why ``path`` (its lstat ``st``) could be changed by someone other than root; "" if it cannot.

    A symlink's mode means nothing (only who may replace it in its directory does). A sticky
    directory writable by others (``/tmp``, NixOS's ``/nix/store``) is fine: only root may remove
    or rename a root-owned entry there, and every entry passed through must be root-owned."""
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}, not root"
    writable = st.st_mode & 0o022
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if writable and not stat.S_ISLNK(st.st_mode) and not sticky_dir:
        who = {0o022: "group and others", 0o020: "group", 0o002: "others"}[writable]
        return f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def _trust_problem(path: str) -> str:
    """Why the executable ``path`` cannot be trusted to be what root installed; "" if it can.

    Resolves ``path`` one component at a time as the kernel does, following every symlink, and
    checks everything it passes through: ``/``, each directory, each symlink and the file itself
    must be owned by root and not writable by group or others (see :func:`_unsafe_entry`)."""
    if not path.startswith("/"):
        return f"{path} is not an absolute path"
    try:
        st = os.lstat("/")
    except OSError as exc:
        return f"/ cannot be examined ({exc.strerror})"
    problem = _unsafe_entry("/", st)
    if problem:
        return problem
    parts = [p for p in path.split("/") if p]
    parts.reverse()  # a stack: the next component is last
    cur, hops = "/", 0
    while parts:
        part = parts.pop()
        if part == ".":
            continue
        if part == "..":
            cur = posixpath.dirname(cur)  # cur has no symlinks in it, so this is what the kernel does
            continue
        nxt = posixpath.join(cur, part)
        try:
            entry = os.lstat(nxt)
        except OSError as exc:
            return f"{nxt} cannot be examined ({exc.strerror})"
        problem = _unsafe_entry(nxt, entry)
        if problem:
            return problem if nxt == path else f"{problem} (on the way to {path})"
        if stat.S_ISLNK(entry.st_mode):
            hops += 1
            if hops > _SYMLINK_HOPS:
                return f"{path} has too many levels of symbolic links"
            try:
                target = os.readlink(nxt)
            except OSError as exc:
                return f"{nxt} cannot be read ({exc.strerror})"
            if target.startswith("/"):
                cur = "/"
            parts.extend(reversed([p for p in target.split("/") if p]))
            continue
        if parts and not stat.S_ISDIR(entry.st_mode):
            return f"{nxt} is not a directory"
        cur, st = nxt, entry
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not st.st_mode & 0o111:
        return f"{path} is not executable"
    return ""


def trusted_binary(name: str, dirs: Sequence[str] = SYSTEM_BIN_DIRS) -> tuple[Optional[str], str]:
    """The first ``dir/name`` in ``dirs`` that only root can have put there (:func:`_trust_problem`),
    as ``(path, "")``; else ``(None, why)``, naming each copy found and why it is not used.

    PATH is never searched for the binary. It is only looked at to explain a refusal: a copy on
    PATH outside ``dirs`` is named, since that is usually the one its owner expects to run."""
    refused: list[str] = []
    seen: set[str] = set()
    for d in dirs:
        if not d.startswith("/"):
            continue
        candidate = posixpath.join(posixpath.normpath(d), name)
        if candidate in seen or not os.path.lexists(candidate):
            continue
        seen.add(candidate)
        problem = _trust_problem(candidate)
        if not problem:
            return candidate, ""
        refused.append(f"{candidate} is not used: {problem}")
    import shutil

    on_path = shutil.which(name)  # only to name it in the reason below, never to run it
    if on_path and os.path.isabs(on_path) and posixpath.normpath(on_path) not in seen:
        problem = _trust_problem(on_path)
        if problem:
            why = problem
        else:
            why = "only the system directories are trusted, never PATH"
        refused.append(f"{on_path} (on PATH) is not used: {why}")
    looked = ", ".join(d for d in dirs if d.startswith("/")) or "no directory"
    if refused:
        return None, (f"{name} is not installed in a root-owned system directory ({looked}); "
                      + "; ".join(refused))
    return None, f"{name} is not installed (looked in {looked})"


def _bwrap_dirs(environ: Optional[Mapping[str, str]] = None) -> tuple[str, ...]:
    env = os.environ if environ is None else environ
    value = env.get(BWRAP_DIRS_ENV)
    if value is None:
        return SYSTEM_BIN_DIRS
    return tuple(d for d in value.split(":") if d.startswith("/"))


# The probe bwrap must pass before we rely on it: the namespaces a sandboxed task will use.
# Distros that restrict unprivileged user namespaces (Ubuntu 24.04 AppArmor) fail here.
_BWRAP_PROBE = ("--unshare-user", "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/",
                "--proc", "/proc", "--dev", "/dev", "--", "/bin/true")
# The same without a fresh /proc: an empty read-only tmpfs there, as Bwrap._proc renders it then.
_BWRAP_PROBE_NO_PROC = ("--unshare-user", "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/",
                        "--perms", "555", "--tmpfs", "/proc", "--dev", "/dev", "--", "/bin/true")

_USERNS_FIX = ("allow unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 (Debian, older "
               "Ubuntu), or on Ubuntu 23.10+ sysctl kernel.apparmor_restrict_unprivileged_userns=0 or an "
               "AppArmor profile for bwrap that allows userns; in a container, its seccomp/AppArmor profile "
               "blocks unshare/clone of user namespaces (run it with a profile that allows them)")
#: bwrap's stderr → (what it means, how to fix it), first match wins; each pattern is a regex
#: searched in one stderr line (case-insensitive). ``{line}`` in the cause is the matching line.
_PROC_FAILURE = r"can't mount proc on"
_BWRAP_FAILURES: tuple[tuple[str, str, str], ...] = (
    (_PROC_FAILURE,
     "{line}; typical in a container whose own /proc has covered parts (Docker masks /proc/kcore "
     "and others), and not a user namespace problem",
     "nothing needed: sandboxes get an empty /proc here; to give them a real one, run the agent "
     "where /proc is not overmounted (e.g. a privileged container or the host)"),
    (r"setting up [ug]id map|error writing to setgroups",
     "user namespaces are restricted here ({line}): bwrap could create one but not map its user, "
     "which is what Ubuntu 23.10+'s AppArmor restriction does",
     _USERNS_FIX),
    (r"no permissions to creat",
     "unprivileged user namespaces are not allowed here ({line})",
     _USERNS_FIX),
    # bwrap 0.8 words ENOSPC itself: "nesting depth or /proc/sys/user/max_*_namespaces exceeded (ENOSPC)"
    (r"(creating new namespace failed|unshare|clone).*(no space left on device|\(ENOSPC\))",
     "the user namespace limit is 0 or used up ({line})",
     "raise it: sysctl user.max_user_namespaces=15000"),
    (r"kernel does not support user namespaces",
     "this kernel has no user namespaces ({line})",
     "use a kernel built with CONFIG_USER_NS, or install bwrap setuid root (not recommended)"),
    (r"(creating new namespace failed|unshare|clone).*operation not permitted",
     "creating namespaces is not permitted here ({line})",
     _USERNS_FIX),
    (r"loopback: failed",
     "bwrap cannot set up the loopback interface of a new network namespace ({line}); this is a "
     "network namespace problem, not a user namespace one",
     "run the agent on a kernel or container runtime that lets a new network namespace configure "
     "its own 'lo' (gVisor pre-configures it; some seccomp/SELinux policies block netlink there)"),
    (r"can't read /proc/sys/kernel/overflow[ug]id",
     "bwrap cannot read the overflow uid/gid from /proc/sys ({line}): /proc/sys is hidden here",
     "make /proc/sys/kernel readable to the agent (do not mask /proc/sys in its container)"),
)


def classify_bwrap_failure(stderr: str, returncode: Optional[int] = None) -> tuple[str, str]:
    """What a failed bwrap start means, from its stderr: ``(cause, fix)``, each one sentence."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for pattern, cause, fix in _BWRAP_FAILURES:
        for line in lines:
            if re.search(pattern, line, re.IGNORECASE):
                return cause.format(line=line), fix
    detail = lines[-1] if lines else f"exit {returncode}" if returncode is not None else "no message"
    return f"bwrap fails here ({detail})", _USERNS_FIX


def split_reason(reason: str) -> tuple[str, str, bool]:
    """A bwrap :class:`BackendStatus` reason (``"cause; fix"``) back into ``(cause, fix, userns)``,
    ``userns`` saying whether the fix is the user namespace one (for ``sandfleet doctor``); the
    whole reason and "" when its fix is not one of this module's."""
    fixes = [_USERNS_FIX, _BWRAP_PACKAGE] + [fix for _, _, fix in _BWRAP_FAILURES]
    for fix in fixes:
        if reason.endswith("; " + fix):
            userns = fix == _USERNS_FIX or "user.max_user_namespaces" in fix or "CONFIG_USER_NS" in fix
            return reason[:-len(fix) - 2], fix, userns
    return reason, "", False


def _is_proc_failure(stderr: str) -> bool:
    return re.search(_PROC_FAILURE, stderr, re.IGNORECASE) is not None


def _run_probe(path: str, args: Sequence[str]) -> tuple[Optional[int], str]:
    """bwrap's exit status and stderr; ``(None, why)`` when it could not be started at all."""
    import subprocess  # only when bwrap is probed, not when its verdict is kept

    try:
        proc = subprocess.run([path, *args], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    return proc.returncode, proc.stderr.decode(errors="replace")


def probe_bwrap(cache: Optional[str] = None) -> BackendStatus:
    """Whether bwrap works here: the system's bwrap (:func:`trusted_binary`, never PATH), started
    once with the namespaces a task uses (~4 ms). If only mounting a fresh /proc fails (containers),
    a second start without it: then bwrap is available with ``proc=False`` and sandboxes get an
    empty /proc (``Bwrap._proc``). Any other failure says its cause and fix (:func:`classify_bwrap_failure`).
    ``cache``: a private folder where a working bwrap is remembered (:func:`kept_bwrap`)."""
    dirs = _bwrap_dirs()
    path, why = trusted_binary("bwrap", dirs) if dirs else (None, f"bwrap is not installed where this agent "
                                                               f"looks ({BWRAP_DIRS_ENV} names no directory)")
    if path is None:
        return BackendStatus("bwrap", False, f"{why}; {_BWRAP_PACKAGE}")
    key = bwrap_key(path) if cache is not None else None
    if cache is None or key is None:
        return _start_bwrap(path)
    status = kept_bwrap(cache, key, path)
    if status is None:
        status = _start_bwrap(path)
        if status.available:  # never a failure: the next agent probes again
            keep_bwrap(cache, key, status)
    return status


def _start_bwrap(path: str) -> BackendStatus:
    """:func:`probe_bwrap`'s trial starts of the trusted bwrap at ``path``."""
    version = bwrap_version(path)
    code, stderr = _run_probe(path, _BWRAP_PROBE)
    if code is None:
        return BackendStatus("bwrap", False, f"{path} could not start: {stderr}", path, version=version)
    if code == 0:
        return BackendStatus("bwrap", True, "", path, version=version)
    if _is_proc_failure(stderr):
        proc_cause, _ = classify_bwrap_failure(stderr, code)
        code2, stderr2 = _run_probe(path, _BWRAP_PROBE_NO_PROC)
        if code2 == 0:
            return BackendStatus("bwrap", True, "", path, proc=False, proc_reason=proc_cause, version=version)
        if code2 is None:
            return BackendStatus("bwrap", False, f"{path} could not start: {stderr2}", path, version=version)
        code, stderr = code2, stderr2
    cause, fix = classify_bwrap_failure(stderr, code)
    return BackendStatus("bwrap", False, f"{cause}; {fix}", path, version=version)


#: How long a working bwrap is remembered (:func:`kept_bwrap`): a change its key cannot see (an
#: AppArmor profile removed on a kernel without a policy revision file) lasts at most this long.
BWRAP_KEPT_S = 600
_BWRAP_KEPT = "bwrap.json"


def bwrap_key(path: str) -> Optional[str]:
    """What decides whether the trusted bwrap at ``path`` works, as one string: the boot, that
    binary (its inode, size, mtime and ctime), the user namespace sysctls, the AppArmor policy
    revision, this process's euid, user namespace and seccomp mode; None when any of it is
    unreadable (then nothing is remembered)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        st = os.stat(path)
        userns = os.readlink("/proc/self/ns/user")
    except (OSError, ValueError):
        return None
    try:
        with open("/sys/kernel/security/apparmor/revision", encoding="ascii") as fh:
            apparmor = fh.read().strip()
    except (OSError, ValueError):
        apparmor = ""  # no AppArmor, or not readable here: the time limit covers it
    return json.dumps([boot, path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                       userns_sysctls(), apparmor, os.geteuid(), userns, seccomp_mode()])


def kept_bwrap(cache: str, key: str, path: str) -> Optional[BackendStatus]:
    """The working bwrap an earlier agent probed under this very ``key``, at most
    :data:`BWRAP_KEPT_S` ago, saving this one bwrap's start (~3 ms, docs/performance.md); None
    otherwise. Only what the probe learnt comes from the file (its ``/proc`` verdict and version),
    never the binary: ``path`` is the one just trusted. A file this user does not own alone, in a
    folder not private to them, is ignored. Forging one takes writing to the agent's own state
    dir, which its code there already trusts (its compiled dataclasses); and it fails closed: a
    task under a bwrap that does not work is not ok and its command never runs."""
    try:
        folder = os.open(cache, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fd = os.open(_BWRAP_KEPT, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder) if _private(folder) else -1
    except OSError:
        fd = -1
    finally:
        os.close(folder)
    if fd < 0:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            kept = json.loads(fh.read()) if _private(fh.fileno(), stat.S_IFREG) else None
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("key") != key:
        return None
    at, proc, reason, version = kept.get("at"), kept.get("proc"), kept.get("proc_reason"), kept.get("version")
    if not (isinstance(at, (int, float)) and 0 <= time.time() - at <= BWRAP_KEPT_S and isinstance(proc, bool)
            and isinstance(reason, str) and isinstance(version, str)):
        return None
    return BackendStatus("bwrap", True, "", path, proc=proc, proc_reason=reason, version=version)


def keep_bwrap(cache: str, key: str, status: BackendStatus) -> None:
    """Remember a working bwrap for the next agents (:func:`kept_bwrap`): the whole file or none."""
    entry = {"key": key, "at": time.time(), "proc": status.proc, "proc_reason": status.proc_reason,
             "version": status.version}
    part = os.path.join(cache, f"{_BWRAP_KEPT}.{os.getpid()}")
    old = os.umask(0o077)
    try:
        os.makedirs(cache, mode=0o700, exist_ok=True)
        with open(part, "x", encoding="utf-8") as out:
            out.write(json.dumps(entry))
        os.replace(part, os.path.join(cache, _BWRAP_KEPT))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(part)
    finally:
        os.umask(old)


def _private(fd: int, kind: int = stat.S_IFDIR) -> bool:
    """Whether ``fd`` is a ``kind`` that this euid owns and nobody else may write."""
    st = os.fstat(fd)
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid() and not st.st_mode & 0o022


_VERSION_IN_BINARY = re.compile(rb"\0bubblewrap (\d+\.\d+(?:\.\d+)?)\0")


def bwrap_version(path: str) -> str:
    """bwrap's version as ``bwrap --version`` prints it ("bubblewrap 0.8.0"), read from the binary's
    own string (that message is a constant in it) rather than by starting it: ~0.1 ms, no process.
    "" when not found (a build that words it otherwise)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(8 << 20)
    except OSError:
        return ""
    match = _VERSION_IN_BINARY.search(data)
    return f"bubblewrap {match.group(1).decode('ascii')}" if match else ""


#: Caps the Landlock ABI this host will use, to reproduce an older kernel; it can only lower it.
MAX_ABI_ENV = "SANDFLEET_LANDLOCK_MAX_ABI"


def _landlock_abi() -> int:
    """``landlock_create_ruleset(NULL, 0, VERSION)``, without importing :mod:`.landlock` (~5-10 ms
    of every agent start, on hosts whose tasks may never use Landlock); 0 when unsupported."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        from sandfleet_agent.linux.libc import function  # not ctypes: ~1.5 ms of every start

        abi = function("syscall")(444, None, 0, 1)  # same number on every arch
    except (OSError, AttributeError):
        return 0
    return abi if isinstance(abi, int) and abi > 0 else 0


def probe_landlock() -> tuple[BackendStatus, int]:
    abi, why = _landlock_abi(), ""
    if abi <= 0:  # the full module explains why (and is the reference for the probe)
        from sandfleet_agent.linux.landlock_ruleset import landlock_abi, unavailable_reason

        abi = landlock_abi()
        why = unavailable_reason() if abi <= 0 else ""  # built without it, or off at boot (lsm=)
    cap = os.environ.get(MAX_ABI_ENV, "")
    if cap.isdigit() and int(cap) < abi:
        abi = int(cap)
        if abi <= 0:
            return BackendStatus("landlock", False, f"Landlock is turned off here by {MAX_ABI_ENV}={cap}"), 0
    if abi <= 0:
        return BackendStatus("landlock", False, why or "Landlock is not enabled in this kernel "
                             "(needs Linux >= 5.13 with 'landlock' in the lsm= boot parameter)"), 0
    return BackendStatus("landlock", True, f"ABI {abi}"), abi


def probe_seatbelt(exe: str = "/usr/bin/sandbox-exec") -> BackendStatus:
    """Seatbelt is always ``/usr/bin/sandbox-exec``, never one found on PATH (a planted one would be
    the sandbox). Deprecated by Apple but present on every macOS release so far."""
    if os.access(exe, os.X_OK):
        return BackendStatus("seatbelt", True, "", exe)
    return BackendStatus("seatbelt", False, f"{exe} is missing or not executable; it ships with macOS, so this "
                         "system is stripped or not macOS", exe)


def probe_windows(system_root: Optional[str] = None, build: Optional[int] = None) -> BackendStatus:
    """The Windows sandbox needs Windows PowerShell 5.1 (it compiles the launcher's C# with the .NET
    Framework) and Windows 10 or later (app containers started with a restricted token)."""
    root = system_root or os.environ.get("SYSTEMROOT") or "C:\\Windows"
    exe = root.rstrip("\\") + "\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    if build is None:
        version = getattr(sys, "getwindowsversion", None)
        build = version().build if version else 0
    if build < 10240:
        return BackendStatus("windows", False, f"Windows 10 or later is needed (this is build {build})", exe)
    if not os.path.isfile(exe):
        return BackendStatus("windows", False, f"{exe} is missing; Windows PowerShell 5.1 is part of Windows 10 and "
                             "later, so this image has had it removed", exe)
    return BackendStatus("windows", True, "", exe)


def state_dir(home: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """Where the agent keeps its state on a POSIX host, as the bootstrap stub computes it."""
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(cache, "sandfleet")


def own_paths(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """What the agent runs from and trusts later: its package, its interpreter's prefixes and
    binary, the absolute directories on its PATH, and ``extra`` (a local controller's own
    installation, sent in the init line). Canonical, without duplicates or the filesystem root."""
    package = os.path.dirname(os.path.abspath(__file__))
    paths = [package, sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable or "/"))]
    paths += [p for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p)]
    paths += list(extra)
    real = (os.path.realpath(p) for p in paths if p)
    return tuple(dict.fromkeys(p for p in real if p != os.path.dirname(p)))


#: The sysctls that decide whether an unprivileged process may create a user namespace (bwrap's
#: first step); each is reported only where this kernel has it.
USERNS_SYSCTLS = ("kernel.unprivileged_userns_clone", "user.max_user_namespaces",
                  "kernel.apparmor_restrict_unprivileged_userns")


def userns_sysctls() -> tuple[tuple[str, str], ...]:
    """``(name, value)`` of each of :data:`USERNS_SYSCTLS` this kernel has (three small reads)."""
    found = []
    for name in USERNS_SYSCTLS:
        try:
            with open("/proc/sys/" + name.replace(".", "/"), encoding="ascii") as fh:
                found.append((name, fh.read().strip()))
        except (OSError, ValueError):
            continue
    return tuple(found)


def seccomp_mode() -> int:
    """The agent's own seccomp mode (``Seccomp:`` in /proc/self/status): 0 none, 2 a filter; -1 unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def container() -> str:
    """The container this agent runs in, as its runtime marks it ("" when none is found): the
    ``container`` variable systemd and podman set, ``/run/.containerenv`` (podman), ``/.dockerenv``."""
    named = os.environ.get("container", "")  # noqa: SIM112 - its name is lowercase
    if named:
        return named[:40]
    if os.path.exists("/run/.containerenv"):
        return "podman"
    if os.path.exists("/.dockerenv"):
        return "docker"
    return ""


def cap_eff() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _user() -> str:
    """``getpass.getuser()``, whose first answer is the first of these set: ``getpass`` itself (it
    imports ``termios``, ~0.35 ms of every start) only where none is, as it then asks the password
    database."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        user = os.environ.get(name)
        if user:
            return user
    import getpass

    return getpass.getuser()


def probe(workspace_roots: tuple[str, ...] = (), protected: tuple[str, ...] = (),
          bwrap_cache: Optional[str] = None) -> HostFacts:
    """Facts of the machine this code runs on. Costs one bwrap start on Linux (~4 ms), unless
    ``bwrap_cache`` (a private folder) remembers a working one (:func:`kept_bwrap`); what
    ``sandfleet doctor`` needs besides (bwrap's version, sysctls, seccomp mode) ~0.2 ms of reads."""
    system = host_os()
    backends: list[BackendStatus] = []
    abi = 0
    if system == "linux":
        backends.append(probe_bwrap(bwrap_cache))
        landlock, abi = probe_landlock()
        backends.append(landlock)
    elif system == "macos":
        backends.append(probe_seatbelt())
    elif system == "windows":
        backends.append(probe_windows())
    home = os.path.expanduser("~")
    posix = system != "windows"
    mechanism, why = (bounds.probe() if system == "linux" else ("rlimit", "") if system == "macos"
                      else ("", "no job object limits in the Windows launcher yet"))
    return HostFacts(
        os=system,
        home=home,
        tmpdir=_tmpdir(),
        workspace_roots=tuple(workspace_roots),
        user=_user(),
        backends=tuple(backends),
        landlock_abi=abi,
        state_dir=state_dir(home) if posix else "",
        protected=own_paths(protected) if posix else (),
        euid=os.geteuid() if posix else -1,
        cap_eff=cap_eff() if system == "linux" else 0,
        limits=mechanism,
        limits_reason=why,
        mem_total=bounds.mem_total() if system == "linux" else 0,
        machine=os.uname().machine if posix else os.environ.get("PROCESSOR_ARCHITECTURE", ""),
        kernel=os.uname().release if posix else "",
        sysctls=userns_sysctls() if system == "linux" else (),
        seccomp_mode=seccomp_mode() if system == "linux" else -1,
        container=container() if system == "linux" else "",
    )


def assumed_facts(
    system: str,
    user: Optional[str] = None,
    workspace_roots: tuple[str, ...] = (),
    home: Optional[str] = None,
    tmpdir: Optional[str] = None,
    landlock_abi: int = 7,
) -> HostFacts:
    """Facts for a host we may not touch (dry-run), from what the inventory says of it.

    Every backend of the OS is assumed to work, so the dry-run shows the wrapper the host would
    run when it is set up right; the run itself checks for real and fails closed if not.
    """
    user = user or "user"
    if home is None:
        home = {"linux": "/root" if user == "root" else f"/home/{user}",
                "macos": f"/Users/{user}",
                "windows": f"C:\\Users\\{user}"}.get(system, f"/home/{user}")
    if tmpdir is None:
        tmpdir = {"macos": "/private/tmp",
                  "windows": f"{home}\\AppData\\Local\\Temp"}.get(system, "/tmp")
    backends = tuple(BackendStatus(name, True, "assumed (dry-run)") for name in BACKENDS_BY_OS.get(system, ()))
    posix = system != "windows"
    return HostFacts(os=system, home=home, tmpdir=tmpdir, workspace_roots=tuple(workspace_roots), user=user,
                     backends=backends, landlock_abi=landlock_abi if system == "linux" else 0, assumed=True,
                     state_dir=posixpath.join(home, ".cache", "sandfleet") if posix else "",
                     euid=(0 if user == "root" else 1000) if posix else -1,
                     limits=("cgroup1" if user == "root" else "rlimit") if system == "linux"
                     else "rlimit" if system == "macos" else "")
