"""``ansible_become`` over real OpenSSH servers (tests/support/sshd.py): the login user runs the
agent, and so every task, as another unprivileged user through ``sudo -n``, or through
``sudo -S`` answering its prompt with the become password.

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


PASSWORD_USER = "sandfleet-become-pw"
PASSWORD_SUDOERS = Path("/etc/sudoers.d/sandfleet-test-become-pw")


@pytest.fixture
def password_rule(fleet: Fleet) -> Iterator[str]:
    """The login user may become :data:`PASSWORD_USER` only with its own (random) password; sudo
    asks every time (no cached credentials), so each test sees the prompt. That user's workspace
    is :func:`password_workspace`."""
    import secrets

    from support.sshd import SUDO_PATH, ensure_user

    other = ensure_user(PASSWORD_USER)
    password_workspace(fleet).mkdir(exist_ok=True)
    os.chown(password_workspace(fleet), other.pw_uid, other.pw_gid)
    password = "pw " + secrets.token_hex(8) + " ;$(x)"  # spaces and shell words: stdin only, never a shell
    subprocess.run(["chpasswd"], input=f"{USER}:{password}\n", text=True, check=True)
    python = shutil.which("python3", path=SUDO_PATH)
    PASSWORD_SUDOERS.write_text(f"Defaults:{USER} timestamp_timeout=0\n{USER} ALL=({PASSWORD_USER}) PASSWD: {python}\n")
    PASSWORD_SUDOERS.chmod(0o440)
    subprocess.run(["visudo", "-c", "-q", "-f", str(PASSWORD_SUDOERS)], check=True)
    try:
        yield password
    finally:
        PASSWORD_SUDOERS.unlink(missing_ok=True)
        subprocess.run(["usermod", "-p", "*", USER], check=True)  # back to key-only, as ensure_user leaves it


def password_workspace(fleet: Fleet) -> Path:
    return fleet.base / "become-pw-ws"


def as_password_user(fleet: Fleet, password: str) -> dict[str, str]:
    return {"ansible_become": "true", "ansible_become_user": PASSWORD_USER, "ansible_become_password": f"'{password}'",
            "sandfleet_workspace_roots": f"[{password_workspace(fleet)}]"}


def test_a_become_password_answers_sudo_and_is_never_shown(fleet: Fleet, tmp_path: Path, password_rule: str) -> None:
    host = fleet.hosts[0]
    code, events, stderr = run(fleet, tmp_path, ["exec: {argv: [/usr/bin/id, -un]}"],
                               **{host.name: as_password_user(fleet, password_rule)})
    results = {e["host"]: e for e in events if e["event"] == "task_result"}
    assert code == 0, (events, stderr)
    assert results[host.name]["stdout"] == f"{PASSWORD_USER}\n"
    assert password_rule not in stderr and password_rule not in str(events)


def test_a_wrong_become_password_makes_the_host_unreachable_without_showing_it(
        fleet: Fleet, tmp_path: Path, password_rule: str) -> None:
    host = fleet.hosts[0]
    wrong = password_rule + "-wrong"
    code, events, stderr = run(fleet, tmp_path, ["exec: {argv: [/usr/bin/id, -un]}"],
                               **{host.name: as_password_user(fleet, wrong)})
    unreachable = {e["host"]: e["message"] for e in events if e["event"] == "host_unreachable"}
    assert code != 0 and not [e for e in events if e["event"] == "task_result" and e["host"] == host.name]
    assert f"sudo on {host.name} refused the become password for {PASSWORD_USER}" in unreachable[host.name]
    assert wrong not in stderr and wrong not in str(events)


def test_a_password_given_where_sudo_needs_none_is_not_sent(fleet: Fleet, tmp_path: Path) -> None:
    """With a NOPASSWD rule sudo asks nothing: the password must not reach the stub's stdin (it
    would take it for its protocol) nor anything else."""
    host, other = fleet.hosts[0], pwd.getpwnam(BECOME_USER)
    workspace = fleet.base / "become-ws"
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, other.pw_uid, other.pw_gid)
    code, events, stderr = run(fleet, tmp_path, ["exec: {argv: [/usr/bin/id, -un]}"], **{host.name: {
        "ansible_become": "true", "ansible_become_user": BECOME_USER, "ansible_become_password": "unused-secret",
        "sandfleet_workspace_roots": f"[{workspace}]"}})
    results = {e["host"]: e for e in events if e["event"] == "task_result"}
    assert code == 0, (events, stderr)
    assert results[host.name]["stdout"] == f"{BECOME_USER}\n"


def test_the_password_is_on_no_command_line(fleet: Fleet, tmp_path: Path, password_rule: str) -> None:
    """``ps`` on the host (here, the same machine) must never show it, while the agent runs."""
    import time

    host = fleet.hosts[0]
    hosts = [host]
    known_hosts = fleet.known_hosts(tmp_path / "known_hosts", hosts)
    ssh_config = fleet.ssh_config(tmp_path / "ssh_config", known_hosts)
    inventory = fleet.inventory(tmp_path / "inv.yml", hosts, **{host.name: as_password_user(fleet, password_rule)})
    playbook = tmp_path / "pb.yml"
    playbook.write_text("- hosts: all\n  tasks:\n    - exec: {argv: [/bin/sleep, '2']}\n")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory),
                             "--ssh-config", str(ssh_config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env)
    seen_agent, deadline = False, time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for entry in Path("/proc").iterdir():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                assert password_rule.encode() not in cmdline
                seen_agent = seen_agent or (b"sandfleet-agent" in cmdline and b"sudo" not in cmdline)
            time.sleep(0.05)
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    assert seen_agent  # the scan ran while the agent did: the test could have failed


def test_ask_become_pass_asks_once_and_answers_sudo(fleet: Fleet, tmp_path: Path, password_rule: str) -> None:
    """``-K``: the password typed once (here on stdin: no terminal, as getpass falls back) is used
    for the become host whose inventory gives none; it shows nowhere."""
    host = fleet.hosts[0]
    known_hosts = fleet.known_hosts(tmp_path / "known_hosts", [host])
    ssh_config = fleet.ssh_config(tmp_path / "ssh_config", known_hosts)
    variables = {k: v for k, v in as_password_user(fleet, "x").items() if k != "ansible_become_password"}
    inventory = fleet.inventory(tmp_path / "inv.yml", [host], **{host.name: variables})
    playbook = tmp_path / "pb.yml"
    playbook.write_text("- hosts: all\n  tasks:\n    - exec: {argv: [/usr/bin/id, -un]}\n")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    base = [sys.executable, "-m", "sandfleet"]
    proc = subprocess.run([*base, "run", str(playbook), "-i", str(inventory), "--format", "json", "--ssh-config",
                           str(ssh_config), "--ask-become-pass"], input=password_rule + "\n", capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120, start_new_session=True)
    results = [e for e in eventschema.parse(proc.stdout) if e["event"] == "task_result"]
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert [r["stdout"] for r in results] == [f"{PASSWORD_USER}\n"]
    assert "BECOME password: " in proc.stderr and password_rule not in proc.stderr + proc.stdout
    facts = subprocess.run([*base, "facts", "all", "-i", str(inventory), "--ssh-config", str(ssh_config), "-K",
                            "--format", "json"], input=password_rule + "\n", capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=120, start_new_session=True)
    assert facts.returncode == 0, facts.stderr
    assert password_rule not in facts.stdout + facts.stderr
    without = subprocess.run([*base, "facts", "all", "-i", str(inventory), "--ssh-config", str(ssh_config)],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert without.returncode == 4 and "--ask-become-pass" in without.stdout + without.stderr
