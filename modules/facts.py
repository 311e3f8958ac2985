"""What a host is: its OS, home, temp dir, workspace roots and which sandboxes work there.

Probed once per agent start on a real host (:func:`probe`); assumed from inventory variables in a
dry-run (:func:`assumed_facts`), where nothing may be touched. Both feed the same binding and
rendering code, which is why a dry-run shows what would run.
"""

from __future__ import annotations

import getpass
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

OSES = ("linux", "macos", "windows")
BACKENDS_BY_OS: Mapping[str, tuple[str, ...]] = {
    "linux": ("bwrap", "landlock"),
    "macos": ("seatbelt",),
    "windows": ("windows",),
}


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

    def backend(self, name: str) -> Optional[BackendStatus]:
        return next((b for b in self.backends if b.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostFacts:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["workspace_roots"] = tuple(known.get("workspace_roots", ()))
        known["protected"] = tuple(known.get("protected", ()))
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
    return env if os.path.isabs(env) else tempfile.gettempdir()


# The probe bwrap must pass before we rely on it: the namespaces a sandboxed task will use.
# Distros that restrict unprivileged user namespaces (Ubuntu 24.04 AppArmor) fail here.
_BWRAP_PROBE = ("--unshare-user", "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/",
                "--proc", "/proc", "--dev", "/dev", "--", "/bin/true")


def probe_bwrap() -> BackendStatus:
    path = shutil.which("bwrap")
    if path is None:
        return BackendStatus("bwrap", False, "bwrap is not installed "
                             "(install the 'bubblewrap' package, e.g. apt-get install bubblewrap)")
    try:
        proc = subprocess.run([path, *_BWRAP_PROBE], capture_output=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return BackendStatus("bwrap", False, f"bwrap could not start: {exc}", path)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = err[-1] if err else f"exit {proc.returncode}"
        return BackendStatus("bwrap", False, f"bwrap cannot create namespaces here ({detail}); "
                             "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1"
                             " or, on Ubuntu, kernel.apparmor_restrict_unprivileged_userns=0)", path)
    return BackendStatus("bwrap", True, "", path)


#: Caps the Landlock ABI this host will use, to reproduce an older kernel; it can only lower it.
MAX_ABI_ENV = "SANDFLEET_LANDLOCK_MAX_ABI"


def _landlock_abi() -> int:
    """``landlock_create_ruleset(NULL, 0, VERSION)``, without importing :mod:`.landlock` (~5-10 ms
    of every agent start, on hosts whose tasks may never use Landlock); 0 when unsupported."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        import ctypes

        abi = ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)  # same number on every arch
    except (OSError, AttributeError):
        return 0
    return abi if isinstance(abi, int) and abi > 0 else 0


def probe_landlock() -> tuple[BackendStatus, int]:
    abi = _landlock_abi()
    if abi <= 0:  # the full module explains why (and is the reference for the probe)
        from .landlock import landlock_abi

        abi = landlock_abi()
    cap = os.environ.get(MAX_ABI_ENV, "")
    if cap.isdigit() and int(cap) < abi:
        abi = int(cap)
        if abi <= 0:
            return BackendStatus("landlock", False, f"Landlock is turned off here by {MAX_ABI_ENV}={cap}"), 0
    if abi <= 0:
        return BackendStatus("landlock", False, "Landlock is not enabled in this kernel "
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


def cap_eff() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def probe(workspace_roots: tuple[str, ...] = (), protected: tuple[str, ...] = ()) -> HostFacts:
    """Facts of the machine this code runs on. Costs one bwrap start on Linux (~4 ms)."""
    system = host_os()
    backends: list[BackendStatus] = []
    abi = 0
    if system == "linux":
        backends.append(probe_bwrap())
        landlock, abi = probe_landlock()
        backends.append(landlock)
    elif system == "macos":
        backends.append(probe_seatbelt())
    elif system == "windows":
        backends.append(probe_windows())
    home = os.path.expanduser("~")
    posix = system != "windows"
    return HostFacts(
        os=system,
        home=home,
        tmpdir=_tmpdir(),
        workspace_roots=tuple(workspace_roots),
        user=getpass.getuser(),
        backends=tuple(backends),
        landlock_abi=abi,
        state_dir=state_dir(home) if posix else "",
        protected=own_paths(protected) if posix else (),
        euid=os.geteuid() if posix else -1,
        cap_eff=cap_eff() if system == "linux" else 0,
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
                     euid=(0 if user == "root" else 1000) if posix else -1)
