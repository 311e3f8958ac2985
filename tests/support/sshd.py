"""Real OpenSSH servers for the SSH transport tests and the fleet benchmark.

Each test host is its own ``sshd`` on its own loopback address (127.P.Q.X, P.Q from this
process's pid so parallel test runs never meet), with throw-away host keys, one throw-away client
key and an unprivileged login user. Each host has its own cache directory (``SetEnv
XDG_CACHE_HOME``), so the hosts behave like separate machines for the agent's zip cache, and its
own workspace directory owned by that user.

Used by ``tests/runner/test_ssh.py``, :mod:`support.unprivileged` (its test user), ``bench/fleet.py``
and ``bench/compare.py``; needs root and /usr/sbin/sshd.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

SSHD = "/usr/sbin/sshd"
USER = "sandfleet-test"


def missing_reason() -> Optional[str]:
    """Why real sshd hosts cannot run here, or None when they can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "starting sshd test hosts needs root"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing (apt-get install openssh-client)"
    return None


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """An unprivileged login user with a home and a password field that allows key logins."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], capture_output=True)  # may race another run
    shadow = {line.split(":")[0]: line.split(":")[1] for line in Path("/etc/shadow").read_text().splitlines()
              if line.count(":") >= 2}
    if shadow.get(name, "!").startswith("!"):  # a locked account cannot log in with UsePAM no
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    return pwd.getpwnam(name)


BECOME_USER = "sandfleet-become"
SUDOERS = Path("/etc/sudoers.d/sandfleet-test-become")
SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's secure_path


def allow_become(python: str = "python3", target: str = BECOME_USER) -> Path:
    """A sudoers rule: the login user may run ``python`` (as sudo finds it on its secure_path) as
    ``target``, and only that, without a password. Remove the file it returns when done."""
    ensure_user(target)
    found = shutil.which(python, path=SUDO_PATH)
    if found is None:
        raise RuntimeError(f"{python} not found on {SUDO_PATH}")
    SUDOERS.write_text(f"{USER} ALL=({target}) NOPASSWD: {found}\n")
    SUDOERS.chmod(0o440)
    subprocess.run(["visudo", "-c", "-q", "-f", str(SUDOERS)], check=True)
    return SUDOERS


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return (path.parent / (path.name + ".pub")).read_text().strip()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc: no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids whose environment has ``name=value``: how a test finds what runs on one fixture host."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in env:
                found.append(int(entry))
    return found


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class SshHost:
    name: str
    address: str
    port: int
    dir: Path
    host_key: str  # "ssh-ed25519 AAAA..." as in its .pub file
    cache: Path  # its XDG_CACHE_HOME
    workspace: Path
    log: Path
    proc: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False)

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.host_key}\n"

    def agents(self) -> list[int]:
        """Processes running with this host's environment: its agents and their tasks."""
        return processes_with_env("XDG_CACHE_HOME", str(self.cache))

    def stop(self) -> None:
        """Kill this sshd and every process under it (connections and sessions), like a host dying."""
        if self.proc is None:
            return
        doomed = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


class Fleet:
    """Starts and stops sshd test hosts under one temporary directory."""

    def __init__(self, base: Optional[Path] = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="sandfleet-sshd-"))
        self.base.chmod(0o755)  # the login user must reach its workspace and cache below it
        self.user = ensure_user()
        self.client_key = self.base / "client_key"
        public = keygen(self.client_key)
        self.authorized_keys = self.base / "authorized_keys"
        self.authorized_keys.write_text(public + "\n")
        self.authorized_keys.chmod(0o644)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        pid = os.getpid()
        self._prefix = f"127.{(pid >> 8) % 250 + 1}.{pid % 256}"
        self.hosts: list[SshHost] = []

    def spawn(self, name: Optional[str] = None, *, log_level: str = "VERBOSE") -> SshHost:
        index = len(self.hosts)
        if index >= 240:
            raise RuntimeError("at most 240 test hosts per process")
        name = name or f"h{index:02d}"
        address = f"{self._prefix}.{10 + index}"
        hdir = self.base / name
        hdir.mkdir(mode=0o755)
        host_key = keygen(hdir / "ssh_host_ed25519_key")
        cache, workspace = hdir / "cache", hdir / "ws"
        for d in (cache, workspace):
            d.mkdir()
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
        port = free_port(address)
        config = hdir / "sshd_config"
        config.write_text(f"""\
ListenAddress {address}:{port}
HostKey {hdir / "ssh_host_ed25519_key"}
PidFile {hdir / "sshd.pid"}
AuthorizedKeysFile {self.authorized_keys}
AllowUsers {USER}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
MaxStartups 1000:30:2000
MaxSessions 256
AllowTcpForwarding yes
LogLevel {log_level}
SetEnv XDG_CACHE_HOME={cache}
""")
        log = hdir / "sshd.log"
        host = SshHost(name, address, port, hdir, host_key, cache, workspace, log)
        self.hosts.append(host)
        self.start(host)
        return host

    def start(self, host: SshHost) -> None:
        with open(host.log, "ab") as log:
            host.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(host.dir / "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((host.address, host.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                pass
            if host.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd for {host.name} did not start: {host.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def dead_address(self) -> tuple[str, int]:
        """An address and port where nothing listens (refused at once)."""
        address = f"{self._prefix}.250"
        return address, free_port(address)

    def stop_all(self) -> None:
        for host in self.hosts:
            host.stop()

    def cleanup(self) -> None:
        """Every sshd and what runs under it, then what outlived them with a host's environment
        (a resident agent is its own session, not under any sshd), then the files."""
        self.stop_all()
        caches = {f"XDG_CACHE_HOME={h.cache}".encode() for h in self.hosts}
        for entry in os.listdir("/proc"):  # one pass for every host: a fleet may have hundreds
            if entry.isdigit():
                try:
                    env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if caches.intersection(env):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(entry), signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- files a controller needs -------------------------------------------------------------

    def known_hosts(self, path: Path, hosts: list[SshHost]) -> Path:
        path.write_text("".join(h.known_hosts_line() for h in hosts))
        return path

    def ssh_config(self, path: Path, known_hosts: Path, extra: str = "") -> Path:
        """An ssh_config that keeps the controller away from root's own ~/.ssh files."""
        path.write_text(f"{extra}\nHost *\n    UserKnownHostsFile {known_hosts}\n    IdentitiesOnly yes\n"
                        f"    IdentityFile {self.client_key}\n")
        return path

    def inventory(self, path: Path, hosts: list[SshHost], **per_host: dict[str, str]) -> Path:
        """A YAML inventory reaching ``hosts`` with the fixture's user, port and client key;
        ``per_host`` adds or replaces variables of single hosts."""
        lines = ["all:", "  hosts:"]
        for h in hosts:
            variables = {"ansible_host": h.address, "ansible_port": str(h.port), "ansible_user": USER,
                         "ansible_ssh_private_key_file": str(self.client_key), "sandfleet_os": "linux",
                         "sandfleet_workspace_roots": f"[{h.workspace}]", **per_host.get(h.name, {})}
            lines += [f"    {h.name}:", *(f"      {k}: {v}" for k, v in variables.items())]
        path.write_text("\n".join(lines) + "\n")
        return path


@contextlib.contextmanager
def running(hosts: int) -> Iterator[Fleet]:
    """``hosts`` real sshd hosts for a test module's fixture, cleaned up after. Without sshd or
    root the test skips (fails under CI: it must provide them)."""
    from support.ci import need  # here: bench/ uses this module without pytest

    reason = missing_reason()
    need(reason is None, reason or "")
    fleet = Fleet()
    try:
        for _ in range(hosts):
            fleet.spawn()
        yield fleet
    finally:
        fleet.cleanup()
