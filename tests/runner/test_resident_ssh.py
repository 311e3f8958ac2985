"""The resident agent over real OpenSSH servers (tests/support/sshd.py): the controller's side of
``sandfleet_agent_persist``, a connection killed mid-task, ``sandfleet agent stop`` and become.
Its life and walls on one host are in tests/test_resident_agent.py."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandfleet.inventory import HostConfig
from sandfleet.transports.base import AgentInit, HostUnreachable
from sandfleet.transports.ssh import SshConnection, SshConnector
from sandfleet_agent.portable.intent import PROFILES, SandboxIntent
from sandfleet_agent.portable.wire import ExecRequest, Status
from support.agents import start_time, wait_until
from support.ci import need
from support.sshd import BECOME_USER, USER, Fleet, SshHost, allow_become, running

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with running(3) as fleet:
        yield fleet


def settled(cache: Path, count: int = 1, within: float = 10.0) -> dict[str, int]:
    """:func:`residents` once ``count`` of them listen: a resident is forked by the first run's
    stub and gets ready beside that run, so right after the run it may not be listening yet."""
    deadline = time.monotonic() + within
    while True:
        found = residents(cache)
        listening = {n: p for n, p in found.items() if (cache / "sandfleet" / "run" / f"{n}.sock").exists()}
        if len(listening) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def residents(cache: Path) -> dict[str, int]:
    """The live resident servers whose state is under ``cache``: name -> pid (from each lock)."""
    found = {}
    for lock in (cache / "sandfleet" / "run").glob("*.lock"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(lock.read_text())
            if start_time(pid) is not None and b"sandfleet-agent" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found[lock.name.removesuffix(".lock")] = pid
    return found


@pytest.fixture
def host(fleet: Fleet) -> Iterator[SshHost]:
    """A host of its own; what residents it has are killed after (they outlive sshd)."""
    host = fleet.spawn()
    yield host
    host.stop()
    for pid in residents(host.cache).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Controller:
    def __init__(self, fleet: Fleet, tmp: Path, hosts: list[SshHost]) -> None:
        self.fleet, self.tmp = fleet, tmp
        self.known_hosts = fleet.known_hosts(tmp / "known_hosts", hosts)
        self.ssh_config = fleet.ssh_config(tmp / "ssh_config", self.known_hosts)

    def connection(self, host: SshHost, persist: int = 60, **extra: Any) -> SshConnection:
        settings: dict[str, Any] = {"workspace_roots": (str(host.workspace),), **extra}
        config = HostConfig(name=host.name, address=host.address, port=host.port, user=USER,
                            key_file=str(self.fleet.client_key), os="linux", agent_persist_s=persist,
                            vars={"ansible_port": host.port}, **settings)
        return SshConnector("reject", str(self.ssh_config))(config)

    def sandfleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return subprocess.run([sys.executable, "-m", "sandfleet", *args, "--ssh-config", str(self.ssh_config)],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def request(*argv: str) -> ExecRequest:
    return ExecRequest(id="t", argv=argv, sandbox=SandboxIntent(PROFILES["workspace"]))


def test_the_second_connection_is_served_by_the_first_ones_resident(fleet: Fleet, host: SshHost,
                                                                     tmp_path: Path) -> None:
    ctl = Controller(fleet, tmp_path, [host])
    seen = []
    for _ in range(3):
        conn = ctl.connection(host)
        facts = conn.start(AgentInit(workspace_roots=(str(host.workspace),)))
        result = conn.execute(request("/usr/bin/id", "-un"))
        seen.append((conn.resident, result.status, result.backend, result.stdout))
        assert facts.workspace_roots == (str(host.workspace),)
        conn.close()
        settled(host.cache)
    assert seen == [(False, Status.OK, "bwrap", f"{USER}\n")] + [(True, Status.OK, "bwrap", f"{USER}\n")] * 2
    ((_, pid),) = residents(host.cache).items()
    assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == USER


def test_a_connection_killed_mid_task_kills_the_task_not_the_resident(fleet: Fleet, host: SshHost,
                                                                      tmp_path: Path) -> None:
    """The relay hands the run the SSH channel's own pipes: when the controller's TCP connection
    dies, sshd closes them, the run's agent sees EOF and kills the task's process group."""
    ctl = Controller(fleet, tmp_path, [host])
    first = ctl.connection(host)
    first.start(AgentInit())
    first.close()
    ((_, server),) = settled(host.cache).items()
    conn = ctl.connection(host)
    conn.start(AgentInit())
    assert conn.resident
    tag = f"8{os.getpid()}{time.monotonic_ns() % 100000}"
    outcome: list[Any] = []

    def task() -> None:
        try:
            outcome.append(conn.execute(request("/bin/sh", "-c", f"sleep {tag}; true")))
        except HostUnreachable as exc:
            outcome.append(exc)

    worker = threading.Thread(target=task)
    worker.start()
    assert wait_until(lambda: _pgrep(tag)), outcome
    conn._transports[0].sock.shutdown(socket.SHUT_RDWR)  # the network drops; no EOF is sent
    worker.join(15)
    assert isinstance(outcome[0], HostUnreachable), outcome
    assert wait_until(lambda: not _pgrep(tag), within_s=15), "the task outlived its connection"
    conn.close()
    assert list(residents(host.cache).values()) == [server]
    again = ctl.connection(host)
    again.start(AgentInit())
    assert again.resident and again.execute(request("/bin/true")).status is Status.OK
    again.close()


def test_agent_stop_stops_every_hosts_resident_and_names_the_unreachable(fleet: Fleet, tmp_path: Path) -> None:
    hosts = [fleet.spawn(), fleet.spawn()]
    try:
        ctl = Controller(fleet, tmp_path, hosts)
        for h in hosts:
            conn = ctl.connection(h)
            conn.start(AgentInit())
            conn.close()
        pids = {h.name: settled(h.cache) for h in hosts}
        assert all(len(found) == 1 for found in pids.values()), pids
        address, port = fleet.dead_address()
        inventory = fleet.inventory(tmp_path / "inv.yml", hosts)  # no persist setting: stop finds them anyway
        with inventory.open("a") as out:
            out.write(f"    gone:\n      ansible_host: {address}\n      ansible_port: {port}\n"
                      f"      ansible_user: {USER}\n      ansible_ssh_private_key_file: {fleet.client_key}\n"
                      "    here:\n      ansible_connection: local\n")
        stopped = ctl.sandfleet("agent", "stop", "-i", str(inventory))
        assert stopped.returncode == 4, stopped
        lines = dict(line.split(": ", 1) for line in stopped.stdout.splitlines())
        for h in hosts:
            ((name, pid),) = pids[h.name].items()
            assert lines[h.name] == f"stopped {name}", stopped.stdout
            assert wait_until(lambda pid=pid: start_time(pid) is None)
        assert lines["gone"].startswith("unreachable: ") and lines["here"].startswith("skipped: "), stopped.stdout
        again = ctl.sandfleet("agent", "stop", "-i", str(inventory), "-l", hosts[0].name)
        assert (again.returncode, again.stdout) == (0, f"{hosts[0].name}: no resident agent\n"), again
    finally:
        for h in hosts:
            h.stop()
            for pid in residents(h.cache).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_with_become_it_is_the_become_users_and_out_of_the_login_users_reach(fleet: Fleet, host: SshHost,
                                                                              tmp_path: Path) -> None:
    need(shutil.which("sudo") is not None, "sudo is missing (apt-get install sudo)")
    rule = allow_become()
    other = pwd.getpwnam(BECOME_USER)
    cache = Path(other.pw_dir) / ".cache"  # sudo -H: the become user's home, its own cache
    before = set(residents(cache).values())
    try:
        ctl = Controller(fleet, tmp_path, [host])
        served = []
        for _ in range(2):
            conn = ctl.connection(host, become_user=BECOME_USER, workspace_roots=())
            conn.start(AgentInit())
            served.append((conn.resident, conn.execute(request("/usr/bin/id", "-un")).stdout))
            conn.close()
            settled(cache, len(before) + 1)
        assert served == [(False, f"{BECOME_USER}\n"), (True, f"{BECOME_USER}\n")]
        mine = {n: p for n, p in residents(cache).items() if p not in before}
        ((name, pid),) = mine.items()
        assert os.stat(f"/proc/{pid}").st_uid == other.pw_uid
        assert not list((host.cache / "sandfleet").glob("run/*.sock"))  # nothing in the login user's cache
        login = pwd.getpwnam(USER)
        code = ("import os, socket; socket.socket(socket.AF_UNIX).connect("
                f"'/proc/self/fd/%d/{name}.sock' % os.open({str(cache / 'sandfleet' / 'run')!r}, os.O_PATH))")
        tried = subprocess.run(["setpriv", f"--reuid={login.pw_uid}", f"--regid={login.pw_gid}", "--init-groups",
                                "/usr/bin/python3", "-c", code], capture_output=True, text=True)
        assert tried.returncode != 0 and "PermissionError" in tried.stderr, tried
    finally:
        rule.unlink(missing_ok=True)
        for pid in set(residents(cache).values()) - before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _pgrep(tag: str) -> bool:
    return subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 0
