"""The Python API over real OpenSSH servers (tests/support/sshd.py): one command across a fleet with
a dead host in it, and an open fleet that keeps one connection and one agent per host.

Two sshd hosts of this module's own on loopback, with throw-away keys and the unprivileged test
user; the controller reads only the ssh_config and known_hosts written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sandfleet
from support.agents import SSH_AGENT, cmdline, snapshot, survivors, wait_until
from support.sshd import USER, Fleet, SshHost, running


@pytest.fixture(scope="module")
def sshd() -> Iterator[Fleet]:
    with running(2) as fleet:
        yield fleet


class Controller:
    """This test's inventory (the fixture hosts, plus ``dead`` where nothing listens) and ssh_config."""

    def __init__(self, fleet: Fleet, tmp: Path) -> None:
        self.fleet, self.hosts = fleet, fleet.hosts[:2]
        known_hosts = fleet.known_hosts(tmp / "known_hosts", self.hosts)
        self.ssh_config = str(fleet.ssh_config(tmp / "ssh_config", known_hosts))
        self.inventory = fleet.inventory(tmp / "inv.yml", self.hosts)
        address, port = fleet.dead_address()
        with self.inventory.open("a") as f:
            f.write(f"    dead:\n      ansible_host: {address}\n      ansible_port: {port}\n"
                    f"      ansible_user: {USER}\n      sandfleet_os: linux\n")


@pytest.fixture
def ctl(sshd: Fleet, tmp_path: Path) -> Controller:
    return Controller(sshd, tmp_path)


def agent_of(host: SshHost) -> list[int]:
    """The agent processes running on ``host`` (its sshd sessions' environment, the stub's argv)."""
    return sorted(pid for pid in host.agents() if SSH_AGENT in cmdline(pid).split(b"\0"))


def logins(host: SshHost) -> int:
    """SSH logins the host has accepted so far (its sshd logs at VERBOSE)."""
    return host.log.read_text(errors="replace").count(f"Accepted publickey for {USER}")


def test_run_command_reaches_the_live_hosts_and_reports_the_dead_one(ctl: Controller) -> None:
    result = sandfleet.run_command(["sh", "-c", "echo {{ inventory_hostname }} $(id -un)"], inventory=ctl.inventory,
                                   ssh_config=ctl.ssh_config)
    assert result.exit_code == 4 and not result.ok
    assert list(result.hosts) == ["h00", "h01", "dead"]
    for host in ctl.hosts:
        res = result.hosts[host.name]
        assert res.ok and res.unreachable is None
        assert [(t.status, t.stdout, t.backend) for t in res.tasks] == [("ok", f"{host.name} {USER}\n", "bwrap")]
    dead = result.hosts["dead"]
    assert dead.tasks == () and dead.unreachable is not None and "Connection refused" in dead.unreachable
    assert wait_until(lambda: not any(agent_of(h) for h in ctl.hosts)), "an agent outlived run_command"


def test_open_fleet_keeps_one_connection_and_agent_per_host_and_closes_on_error(ctl: Controller) -> None:
    before = {h.name: logins(h) for h in ctl.hosts}
    with pytest.raises(KeyError, match="stop"), sandfleet.open_fleet(ctl.inventory, "h*",
                                                                      ssh_config=ctl.ssh_config) as fleet:
        assert fleet.hosts == ("h00", "h01")
        agents: set[tuple[int, ...]] = set()
        for i in range(50):
            result = fleet.run(["echo", str(i)])
            assert result.exit_code == 0, result
            assert [h.tasks[0].stdout for h in result.hosts.values()] == [f"{i}\n"] * 2
            agents.add(tuple(p for h in ctl.hosts for p in agent_of(h)))
        [pids] = agents  # the same processes after every command
        assert len(pids) == 2, pids
        assert {h.name: logins(h) - before[h.name] for h in ctl.hosts} == {"h00": 1, "h01": 1}
        procs = snapshot(list(pids))
        assert any(b"bwrap" in line for line in survivors(procs).values()), "no persistent sandbox to clean up"
        raise KeyError("stop")
    assert wait_until(lambda: not survivors(procs)), survivors(procs)
    assert wait_until(lambda: not any(h.agents() for h in ctl.hosts)), [h.agents() for h in ctl.hosts]
