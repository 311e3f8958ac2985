"""``ansible_become`` over real OpenSSH servers (tests/support/sshd.py): the login user runs the
agent, and so every task, as another unprivileged user through ``sudo -n``.

The fixture's login user may become :data:`BECOME_USER` (a sudoers rule for the Python
interpreter only, written here and removed after); it has no rule for root, so a host asking
for root shows what an operator without a NOPASSWD rule sees.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandfleet.transports.bootstrap import agent_bundle
from support import eventschema
from support.ci import need
from support.sshd import BECOME_USER, USER, Fleet, allow_become, running

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    need(shutil.which("sudo") is not None, "sudo is missing (apt-get install sudo)")
    with running(2) as fleet:
        rule = allow_become()
        try:
            yield fleet
        finally:
            rule.unlink(missing_ok=True)


def run(fleet: Fleet, tmp: Path, tasks: list[str], **per_host: dict[str, str]) -> tuple[int, list[dict], str]:
    hosts = fleet.hosts[:2]
    known_hosts = fleet.known_hosts(tmp / "known_hosts", hosts)
    ssh_config = fleet.ssh_config(tmp / "ssh_config", known_hosts)
    inventory = fleet.inventory(tmp / "inv.yml", [h for h in hosts if h.name in per_host], **per_host)
    playbook = tmp / "pb.yml"
    playbook.write_text("- hosts: all\n  tasks:\n" + "".join(f"    - {t}\n" for t in tasks))
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    proc = subprocess.run([sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory),
                           "--format", "json", "--ssh-config", str(ssh_config)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    return proc.returncode, eventschema.parse(proc.stdout) if proc.stdout else [], proc.stderr


def test_tasks_run_and_write_as_the_become_user(fleet: Fleet, tmp_path: Path) -> None:
    other = pwd.getpwnam(BECOME_USER)
    workspace = fleet.base / "become-ws"
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, other.pw_uid, other.pw_gid)
    host = fleet.hosts[0]
    code, events, stderr = run(fleet, tmp_path, [
        "exec: {argv: [/usr/bin/id, -un]}",
        "exec: {argv: [/usr/bin/touch, made-by-become], cwd: ':workspace_roots'}",
    ], **{host.name: {"ansible_become": "true", "ansible_become_user": BECOME_USER,
                      "ansible_become_method": "sudo", "sandfleet_workspace_roots": f"[{workspace}]"}})
    results = [e for e in events if e["event"] == "task_result"]
    assert code == 0, (events, stderr)
    assert [r["status"] for r in results] == ["ok", "ok"], events
    assert results[0]["stdout"] == f"{BECOME_USER}\n"
    made = workspace / "made-by-become"
    assert made.stat().st_uid == other.pw_uid
    # sudo -H: the stub's cache is the become user's, not the login's XDG_CACHE_HOME
    assert (Path(other.pw_dir) / ".cache" / "sandfleet" / f"agent-{agent_bundle().sha256}.zip").exists()
    assert not list((host.cache / "sandfleet").glob("agent-*.zip"))


def test_without_a_nopasswd_rule_the_host_is_unreachable_with_the_fix(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.hosts[1]  # the login user has no sudo rule for root
    code, events, stderr = run(fleet, tmp_path, ["exec: {argv: [/usr/bin/id, -un]}"],
                               **{host.name: {"ansible_become": "yes"}})
    unreachable = {e["host"]: e["message"] for e in events if e["event"] == "host_unreachable"}
    assert code != 0 and set(unreachable) == {host.name}, (events, stderr)
    message = unreachable[host.name]
    assert f"sudo could not start the agent on {host.name} as root" in message
    assert f"allow the login user ({USER}) to run python3 as root without one (a NOPASSWD sudoers rule)" in message
    assert "sudo -n" in message and "password is required" in message


@pytest.mark.parametrize(("variables", "fragments"), [
    ({"ansible_become": "true", "ansible_become_method": "su"},
     ["ansible_become_method: unsupported become method 'su'", "sudo"]),
    ({"ansible_become": "true", "ansible_become_user": "'x;touch /tmp/pwned'"},
     ["ansible_become_user: 'x;touch /tmp/pwned' is not a user name"]),
    ({"ansible_become": "true", "ansible_become_user": "'-u root'"}, ["is not a user name"]),
    ({"ansible_become": "true", "ansible_become_user": "'$(id)'"}, ["is not a user name"]),
    ({"ansible_become": "true", "ansible_become_password": "secret"},
     ["ansible_become_password: a become password is not supported", "NOPASSWD"]),
    ({"ansible_become": "true", "ansible_connection": "local"}, ["works only with ansible_connection: ssh"]),
])
def test_bad_become_values_are_refused_at_load(fleet: Fleet, tmp_path: Path, variables: dict[str, str],
                                                fragments: list[str]) -> None:
    host = fleet.hosts[0]
    code, events, stderr = run(fleet, tmp_path, ["exec: {argv: [/usr/bin/id, -un]}"], **{host.name: variables})
    assert code != 0 and not [e for e in events if e["event"] == "task_result"], (events, stderr)
    assert f"{tmp_path / 'inv.yml'}:" in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    assert not Path("/tmp/pwned").exists()


def test_the_command_quotes_every_word() -> None:
    command = agent_bundle().command("/usr/bin/env python3", become_user=BECOME_USER)
    assert command.startswith(f"exec sudo -n -H -u {BECOME_USER} -- /usr/bin/env python3 -E -s -S -c '")
    assert agent_bundle().command("python3").startswith("exec python3 -E -s -S -c '")
