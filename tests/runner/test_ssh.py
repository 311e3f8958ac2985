"""The SSH transport against real OpenSSH servers: runs, host keys, failures, the agent's life.

Every host is its own sshd on its own loopback address (see ``sshd.py``); the controller is the
real CLI in a subprocess, except where a test needs the connection object itself. The controller
never reads root's ~/.ssh: each test passes ``--ssh-config`` naming its own known_hosts and key.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandfleet.inventory import HostConfig
from sandfleet.transports import ssh, stamps
from sandfleet.transports._lean import paramiko
from sandfleet.transports.base import AgentInit, AgentStream, HostUnreachable
from sandfleet.transports.bootstrap import AgentBundle, agent_bundle
from sandfleet.transports.hostkeys import ChangedHostKey, UnknownHostKey, fingerprint
from sandfleet.transports.ssh import SshConnection, SshConnector
from sandfleet_agent.portable.wire import ExecRequest
from support import eventschema
from support.ci import need
from support.netservers import HttpServer
from support.sshd import USER, Fleet, SshHost, keygen, running

ROOT = Path(__file__).resolve().parents[2]
HOSTS = 10
EXEC = "exec: {{argv: {argv}}}"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with running(HOSTS) as fleet:
        yield fleet


@pytest.fixture
def hosts(fleet: Fleet) -> list[SshHost]:
    return fleet.hosts[:HOSTS]


@pytest.fixture
def spare(fleet: Fleet) -> Iterator[SshHost]:
    """A host of its own, for tests that kill it."""
    host = fleet.spawn()
    yield host
    host.stop()


class Controller:
    """One test's view of the controller: its ssh_config, known_hosts and files."""

    def __init__(self, fleet: Fleet, tmp: Path) -> None:
        self.fleet, self.tmp = fleet, tmp
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text("")
        self.ssh_config = fleet.ssh_config(tmp / "ssh_config", self.known_hosts)

    def trust(self, hosts: list[SshHost]) -> None:
        self.fleet.known_hosts(self.known_hosts, hosts)

    def playbook(self, *tasks: str) -> Path:
        path = self.tmp / "pb.yml"
        path.write_text("- hosts: all\n  tasks:\n" + "".join(f"    - {t}\n" for t in tasks))
        return path

    def inventory(self, hosts: list[SshHost], **per_host: dict[str, str]) -> Path:
        return self.fleet.inventory(self.tmp / "inv.yml", hosts, **per_host)

    def args(self, playbook: Path, inventory: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "sandfleet", "run", str(playbook), "-i", str(inventory), "--format", "json",
                "--ssh-config", str(self.ssh_config), *extra]

    def run(self, playbook: Path, inventory: Path, *extra: str, env: dict[str, str] | None = None) -> Run:
        env = {**{k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}, **(env or {})}
        proc = subprocess.run(self.args(playbook, inventory, *extra), capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=120)
        return Run(proc.returncode, eventschema.parse(proc.stdout), proc.stderr)

    def connection(self, host: SshHost, policy: str = "reject") -> SshConnection:
        config = HostConfig(name=host.name, address=host.address, port=host.port, user=USER,
                            key_file=str(self.fleet.client_key), os="linux", workspace_roots=(str(host.workspace),),
                            vars={"ansible_port": host.port})
        return SshConnector(policy, str(self.ssh_config))(config)


class Run:
    def __init__(self, code: int, events: list[dict[str, Any]], stderr: str) -> None:
        self.code, self.events, self.stderr = code, events, stderr

    def results(self, host: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "task_result" and host in (None, e["host"])]

    def unreachable(self) -> dict[str, str]:
        return {e["host"]: e["message"] for e in self.events if e["event"] == "host_unreachable"}

    def __repr__(self) -> str:
        return f"exit {self.code}\n" + "\n".join(map(json.dumps, self.events)) + "\n" + self.stderr


@pytest.fixture
def ctl(fleet: Fleet, tmp_path: Path) -> Controller:
    return Controller(fleet, tmp_path)


def wait_until(check: Any, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def request(argv: list[str], timeout_s: float | None = None) -> ExecRequest:
    from sandfleet_agent.portable.intent import PROFILES, SandboxIntent

    return ExecRequest(id="t", argv=tuple(argv), timeout_s=timeout_s, sandbox=SandboxIntent(PROFILES["workspace"]))


class TestFleetRun:
    def test_five_hosts_run_sandboxed_tasks_under_bwrap_as_an_unprivileged_user(
            self, ctl: Controller, hosts: list[SshHost]) -> None:
        five = hosts[:5]
        escape = Path(f"~{USER}").expanduser() / f"escaped-{os.getpid()}"
        pb = ctl.playbook(EXEC.format(argv="[/bin/echo, hello]"), EXEC.format(argv="[/usr/bin/id, -un]"),
                          "exec: {argv: [/usr/bin/touch, made-here], cwd: ':workspace_roots'}",
                          f"exec: {{argv: [/usr/bin/touch, {escape}]}}\n      ignore_errors: true")
        run = ctl.run(pb, ctl.inventory(five), "--host-key-policy", "accept-new")
        assert run.code == 0, run
        for h in five:
            results = run.results(h.name)
            assert [r["status"] for r in results] == ["ok", "ok", "ok", "failed"], run
            assert {r["backend"] for r in results} == {"bwrap"}
            assert results[0]["stdout"] == "hello\n" and results[1]["stdout"] == f"{USER}\n"
            assert (h.workspace / "made-here").exists()
            assert "Read-only file system" in results[3]["stderr"]  # the user's own home, outside the workspace
        assert not escape.exists()
        assert len(ctl.known_hosts.read_text().splitlines()) == 5

    def test_landlock_chosen_by_the_operator_confines_an_unprivileged_user(self, ctl: Controller,
                                                                        hosts: list[SshHost]) -> None:
        """Landlock runs only where the operator pins it, for an agent that is not root: here the
        unprivileged login user. Its walls hold, and it says what it cannot stop. (It writes in a
        subdirectory: with read-only names kept in the workspace, Landlock grants the workspace's
        entries one by one, so the workspace itself takes no new entry; the warning says so.)"""
        one = hosts[:1]
        ctl.trust(one)
        user = pwd.getpwnam(USER)
        (one[0].workspace / "sub").mkdir(exist_ok=True)
        os.chown(one[0].workspace / "sub", user.pw_uid, user.pw_gid)
        escape = Path(f"~{USER}").expanduser() / f"escaped-landlock-{os.getpid()}"
        pb = ctl.playbook("exec: {argv: [/usr/bin/touch, sub/made-here], cwd: ':workspace_roots'}",
                          f"exec: {{argv: [/usr/bin/touch, {escape}]}}\n      ignore_errors: true")
        run = ctl.run(pb, ctl.inventory(one, **{one[0].name: {"sandfleet_sandbox": "landlock"}}))
        results = run.results(one[0].name)
        assert [(r["status"], r["backend"]) for r in results] == [("ok", "landlock"), ("failed", "landlock")], run
        assert (one[0].workspace / "sub" / "made-here").exists() and not escape.exists()
        assert any("chmod/utime/setxattr" in w for w in results[0]["warnings"])

    def test_second_start_uploads_nothing(self, ctl: Controller, spare: SshHost) -> None:
        ctl.trust([spare])
        seen = []
        for _ in range(2):
            conn = ctl.connection(spare)
            facts = conn.start(AgentInit((str(spare.workspace),)))
            assert facts.user == USER and conn.remote_python
            assert conn.execute(request(["/bin/echo", "hi"])).stdout == "hi\n"
            conn.close()
            seen.append(conn.uploaded)
        assert seen == [True, False]
        zips = list((spare.cache / "sandfleet").glob("agent-*.zip"))
        assert [z.name for z in zips] == [f"agent-{agent_bundle().sha256}.zip"]
        assert zips[0].stat().st_mode & 0o777 == 0o600 and (spare.cache / "sandfleet").stat().st_mode & 0o777 == 0o700

    @pytest.mark.parametrize("inline", [True, False])
    def test_after_the_session_opens_the_agent_starts_in_one_round_trip(
            self, ctl: Controller, spare: SshHost, monkeypatch: pytest.MonkeyPatch, inline: bool) -> None:
        """Issue 20: after the session's open the controller waits for no reply to the exec and
        writes nothing to the channel before the hello: the init line is in the command. So a
        host with the agent cached costs one round trip from exec to hello, a fresh one one more
        (``upload``, then exactly the zip). An init line too big for the command goes on stdin
        after ``ready`` instead (one more round trip, as before)."""
        ctl.trust([spare])
        if not inline:
            monkeypatch.setattr(ssh, "INLINE_INIT", 10)
        events: list[Any] = []
        write, wait, hello = ssh._ChannelWriter.write, paramiko.Channel._wait_for_event, AgentStream.receive_hello
        monkeypatch.setattr(ssh._ChannelWriter, "write",
                            lambda self, data: events.append(bytes(data)) or write(self, data))
        monkeypatch.setattr(paramiko.Channel, "_wait_for_event", lambda self: events.append("wait") or wait(self))
        monkeypatch.setattr(AgentStream, "receive_hello", lambda self: events.append("hello") or hello(self))
        init = AgentInit((str(spare.workspace),))
        line = AgentStream.init_line(init)
        seen = []
        for _ in range(2):
            events.clear()
            conn = ctl.connection(spare)
            assert conn.start(init).workspace_roots == (str(spare.workspace),)
            before_hello = events[:events.index("hello")]
            assert "wait" not in before_hello  # not even for the exec's reply
            zip_data = agent_bundle().data if conn.uploaded else b""
            assert b"".join(before_hello) == zip_data + (b"" if inline else line), len(b"".join(before_hello))
            assert conn.execute(request(["/bin/echo", "hi"])).stdout == "hi\n"
            conn.close()
            seen.append(conn.uploaded)
        assert seen == [True, False]

    def test_a_later_start_sends_the_copys_stamp_and_a_changed_copy_is_still_mended(
            self, ctl: Controller, spare: SshHost, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
            capsys: pytest.CaptureFixture[str]) -> None:
        """The stub reports its copy's stamp; the controller keeps it in its private cache folder
        and sends it with the next start, so that host does not check its copy again. A copy
        changed since has another stamp: it is checked and mended before the agent runs."""
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "controller-cache"))
        monkeypatch.setattr(stamps, "_folder", functools.cache(stamps._folder.__wrapped__))  # found anew
        ctl.trust([spare])
        sent: list[str | None] = []
        command = AgentBundle.command
        monkeypatch.setattr(AgentBundle, "command", lambda self, *a, **kw: sent.append(kw.get("stamp")) or
                            command(self, *a, **kw))

        def echo() -> str:
            conn = ctl.connection(spare)
            conn.start(AgentInit((str(spare.workspace),)))
            out = conn.execute(request(["/bin/echo", "hi"])).stdout
            conn.close()
            return out

        assert echo() == "hi\n"  # the upload: its copy changed this second, so no stamp yet
        time.sleep(1.1)
        assert echo() == echo() == "hi\n"  # checked and stamped, then the stamp sent
        first = sent[2]
        assert sent[0] is None and first is not None and stamps.valid(first)
        kept = list((tmp_path / "controller-cache" / "sandfleet" / "controller" / "stamps").iterdir())
        assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600
        marker = spare.workspace / "pwned"
        agent = spare.cache / "sandfleet" / f"agent-{agent_bundle().sha256}" / "sandfleet_agent" / "agent.py"
        agent.write_text(agent.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
        capsys.readouterr()
        assert echo() == "hi\n" and sent[3] == first
        assert "had been modified" in capsys.readouterr().err and not marker.exists()
        time.sleep(1.1)
        assert echo() == echo() == "hi\n"
        assert sent[5] not in (None, first)  # the mended copy, checked and stamped anew

    def test_cli_rerun_leaves_the_cached_zip_untouched(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:2])
        pb, inv = ctl.playbook(EXEC.format(argv="[/bin/true]")), ctl.inventory(hosts[:2])
        assert ctl.run(pb, inv).code == 0
        stamps = {z: z.stat().st_mtime_ns for h in hosts[:2] for z in (h.cache / "sandfleet").glob("agent-*.zip")}
        assert len(stamps) == 2
        run = ctl.run(pb, inv)
        assert run.code == 0, run
        assert {z: z.stat().st_mtime_ns for z in stamps} == stamps


class TestAuthentication:
    def test_keys_from_ssh_agent_and_user_from_ssh_config(self, ctl: Controller, hosts: list[SshHost]) -> None:
        need(shutil.which("ssh-agent") is not None, "ssh-agent is missing (apt-get install openssh-client)")
        ctl.trust(hosts[:1])
        ctl.ssh_config.write_text(f"Host *\n    User {USER}\n    UserKnownHostsFile {ctl.known_hosts}\n")
        inv = ctl.inventory(hosts[:1], **{hosts[0].name: {"ansible_user": "null", "ansible_ssh_private_key_file":
                                                          "null"}})
        sock = ctl.tmp / "agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
        try:
            assert wait_until(sock.exists)
            env = {"SSH_AUTH_SOCK": str(sock), "HOME": str(ctl.tmp)}  # no default keys to fall back on
            subprocess.run(["ssh-add", "-q", str(ctl.fleet.client_key)], env={**os.environ, **env}, check=True)
            run = ctl.run(ctl.playbook(EXEC.format(argv="[/usr/bin/id, -un]")), inv, env=env)
            assert run.code == 0 and run.results()[0]["stdout"] == f"{USER}\n", run
        finally:
            agent.terminate()
            agent.wait()

    def test_a_refused_key_is_named_in_the_message(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:1])
        stranger = ctl.tmp / "stranger"
        keygen(stranger)
        ctl.ssh_config.write_text(f"Host *\n    UserKnownHostsFile {ctl.known_hosts}\n    IdentitiesOnly yes\n")
        inv = ctl.inventory(hosts[:1], **{hosts[0].name: {"ansible_ssh_private_key_file": str(stranger)}})
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/true]")), inv)
        assert run.code == 4, run
        message = run.unreachable()[hosts[0].name]
        assert "accepted none of the keys tried" in message and str(stranger) in message


class TestHostKeys:
    def test_unknown_key_is_refused_by_default_and_nothing_runs(self, ctl: Controller, hosts: list[SshHost]) -> None:
        h = hosts[0]
        marker = h.workspace / f"unknown-{os.getpid()}"
        run = ctl.run(ctl.playbook(EXEC.format(argv=f"[/usr/bin/touch, {marker}]")), ctl.inventory([h]))
        assert run.code == 4, run
        message = run.unreachable()[h.name]
        assert "unknown host key" in message and "--host-key-policy accept-new" in message
        assert f"ssh-keyscan -p {h.port} {h.address} >> {ctl.known_hosts}" in message
        assert not run.results() and not marker.exists() and ctl.known_hosts.read_text() == ""

    def test_changed_key_is_refused_even_with_accept_new(self, ctl: Controller, hosts: list[SshHost]) -> None:
        h = hosts[1]
        impostor = keygen(ctl.tmp / "impostor").split()
        ctl.known_hosts.write_text(f"# a comment\n@cert-authority *.example ssh-ed25519 AAAA\n"
                                   f"{h.known_hosts_name} {impostor[0]} {impostor[1]}\n")
        before = ctl.known_hosts.read_text()
        marker = h.workspace / f"changed-{os.getpid()}"
        run = ctl.run(ctl.playbook(EXEC.format(argv=f"[/usr/bin/touch, {marker}]")), ctl.inventory([h]),
                      "--host-key-policy", "accept-new")
        assert run.code == 4, run
        message = run.unreachable()[h.name]
        import base64
        real = fingerprint(base64.b64decode(h.host_key.split()[1]))
        old = fingerprint(base64.b64decode(impostor[1]))
        assert "HOST KEY CHANGED" in message and real in message and old in message
        assert f"ssh-keygen -R '{h.known_hosts_name}' -f {ctl.known_hosts}" in message
        assert f"{ctl.known_hosts}:3" in message  # the unusable @cert-authority line was skipped, not fatal
        assert ctl.known_hosts.read_text() == before and not marker.exists()

    def test_accept_new_from_parallel_runs_records_each_key_once(self, ctl: Controller, hosts: list[SshHost]) -> None:
        pb, inv = ctl.playbook(EXEC.format(argv="[/bin/true]")), ctl.inventory(hosts)
        # The second run works in other directories: two tasks sharing a workspace without .git race
        # on bwrap's placeholder mount point (a host-side limit, not what this test is about).
        other = {h.name: {"sandfleet_workspace_roots": f"[{h.workspace}2]"} for h in hosts}
        for h in hosts:
            (h.workspace.parent / "ws2").mkdir(exist_ok=True)
            os.chown(h.workspace.parent / "ws2", ctl.fleet.user.pw_uid, ctl.fleet.user.pw_gid)
        inv2 = ctl.fleet.inventory(ctl.tmp / "inv2.yml", hosts, **other)
        procs = [subprocess.Popen(ctl.args(pb, i, "--host-key-policy", "accept-new", "-f", str(len(hosts))),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) for i in (inv, inv2)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[0].decode() for o in outputs]
        lines = ctl.known_hosts.read_text().splitlines()
        assert sorted(lines) == sorted(h.known_hosts_line().strip() for h in hosts)
        run = ctl.run(pb, inv, "-f", str(len(hosts)))  # the default policy now knows them all
        assert run.code == 0 and len(run.results()) == len(hosts), run

    def test_strict_host_key_checking_yes_in_ssh_config_beats_accept_new(
            self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.ssh_config.write_text(f"Host {hosts[2].address}\n    StrictHostKeyChecking yes\n"
                                  + ctl.ssh_config.read_text())
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/true]")), ctl.inventory(hosts[2:4]),
                      "--host-key-policy", "accept-new")
        assert run.code == 4 and set(run.unreachable()) == {hosts[2].name}, run
        assert [r["host"] for r in run.results()] == [hosts[3].name]

    def test_strict_host_key_checking_no_does_not_weaken_reject(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.ssh_config.write_text("Host *\n    StrictHostKeyChecking no\n" + ctl.ssh_config.read_text())
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/true]")), ctl.inventory(hosts[:1]))
        assert run.code == 4 and "unknown host key" in run.unreachable()[hosts[0].name], run


class TestFailures:
    def test_unreachable_host_leaves_the_others_intact(self, ctl: Controller, fleet: Fleet,
                                                       hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:2])
        address, port = fleet.dead_address()
        inv = ctl.inventory(hosts[:2])
        inv.write_text(inv.read_text() + f"    dead:\n      ansible_host: {address}\n      ansible_port: {port}\n"
                                          "      sandfleet_os: linux\n")
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/echo, one]"), EXEC.format(argv="[/bin/echo, two]")), inv)
        assert run.code == 4, run
        assert "Connection refused" in run.unreachable()["dead"]
        for h in hosts[:2]:
            assert [r["stdout"] for r in run.results(h.name)] == ["one\n", "two\n"]

    def test_host_killed_mid_run_keeps_its_finished_task_and_the_others(
            self, ctl: Controller, hosts: list[SshHost], spare: SshHost) -> None:
        fleet_hosts = [*hosts[:2], spare]
        ctl.trust(fleet_hosts)
        pb = ctl.playbook(EXEC.format(argv="[/bin/echo, first]"), EXEC.format(argv="[/bin/sleep, '1.5']"),
                          EXEC.format(argv="[/bin/echo, last]"))
        with subprocess.Popen(ctl.args(pb, ctl.inventory(fleet_hosts)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            lines = []
            for line in proc.stdout:
                lines.append(line)
                event = json.loads(line)
                if event.get("host") == spare.name and event["event"] == "task_result":
                    spare.stop()  # the host dies while its second task sleeps
            run = Run(proc.wait(timeout=60), eventschema.parse("".join(lines)), proc.stderr.read())
        assert run.code == 4, run
        assert [r["stdout"] for r in run.results(spare.name)] == ["first\n"]
        assert "lost the SSH connection" in run.unreachable()[spare.name]
        for h in hosts[:2]:
            assert [r["status"] for r in run.results(h.name)] == ["ok", "ok", "ok"]

    def test_missing_python_says_which_setting_to_fix(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:1])
        inv = ctl.inventory(hosts[:1], **{hosts[0].name: {"sandfleet_python": "/nonexistent/python3"}})
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/true]")), inv)
        assert run.code == 4
        assert f"python3 >= 3.9 not found on {hosts[0].name}" in run.unreachable()[hosts[0].name]
        assert "set sandfleet_python" in run.unreachable()[hosts[0].name]

    def test_too_old_python_says_which_version_it_found(self, ctl: Controller, hosts: list[SshHost]) -> None:
        fake = ctl.fleet.base / f"python3.8-{os.getpid()}"  # /usr/bin/python3 claiming to be 3.8.10
        fake.write_text("#!/usr/bin/python3\nimport sys\nargs = sys.argv[1:]\ni = args.index('-c')\n"
                        "sys.argv = ['-c'] + args[i + 2:]\nsys.version_info = (3, 8, 10, 'final', 0)\n"
                        "exec(compile(args[i + 1], '<stub>', 'exec'), {'__name__': '__main__'})\n")
        fake.chmod(0o755)
        ctl.trust(hosts[:1])
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/true]")),
                      ctl.inventory(hosts[:1], **{hosts[0].name: {"sandfleet_python": str(fake)}}))
        assert run.code == 4, run
        message = run.unreachable()[hosts[0].name]
        assert f"python3 >= 3.9 not found on {hosts[0].name}" in message and "is Python 3.8.10" in message

    def test_host_os_mismatch_fails_that_host_clearly(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:2])
        inv = ctl.inventory(hosts[:2], **{hosts[0].name: {"sandfleet_os": "macos"}})
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/true]")), inv)
        assert run.code == 4, run
        assert "runs linux, but the inventory says sandfleet_os=macos" in run.unreachable()[hosts[0].name]
        assert [r["status"] for r in run.results(hosts[1].name)] == ["ok"]


class TestAgentOverSsh:
    def test_ten_megabytes_of_output_come_back_truncated(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:1])
        pb = ctl.playbook(EXEC.format(argv="[/bin/sh, -c, 'yes 0123456789abcdef | head -c 10000000']"))
        started = time.monotonic()
        run = ctl.run(pb, ctl.inventory(hosts[:1]))
        assert run.code == 0, run.stderr
        result = run.results()[0]
        assert result["stdout_truncated"] is True and 0 < len(result["stdout"]) <= 1 << 20
        assert set(result["stdout"].splitlines()[1:-1]) == {"0123456789abcdef"}  # the tail of the stream
        assert time.monotonic() - started < 30

    def test_timeout_kills_the_remote_process_group(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:1])
        tag = f"{os.getpid()}.{time.monotonic_ns() % 100000}"
        pb = ctl.playbook(EXEC.format(argv=f"[/bin/sh, -c, 'sleep 3{tag} & sleep 4{tag}; echo never']")
                          + "\n      timeout: 1")
        run = ctl.run(pb, ctl.inventory(hosts[:1]))
        assert run.code == 2 and run.results()[0]["status"] == "timeout", run
        gone = wait_until(lambda: subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode != 0)
        assert gone, "a process the timed-out task forked is still running on the host"
        assert wait_until(lambda: not hosts[0].agents()), "the agent outlived the run"

    def test_close_ends_the_agent(self, ctl: Controller, hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:1])
        conn = ctl.connection(hosts[0])
        conn.start(AgentInit())
        assert hosts[0].agents(), "no agent process found on the host"
        conn.close()
        assert wait_until(lambda: not hosts[0].agents()), "the agent is still running after close()"
        conn.close()  # twice is fine

    def test_close_mid_task_kills_the_remote_task(self, ctl: Controller, hosts: list[SshHost]) -> None:
        """Ctrl-C path: the controller closes the channel while a task runs; the agent sees EOF on
        its stdin and kills the task's process group instead of letting it run on."""
        import threading

        ctl.trust(hosts[:1])
        conn = ctl.connection(hosts[0])
        conn.start(AgentInit())
        tag = f"7{os.getpid()}{time.monotonic_ns() % 100000}"  # digits: `sleep 9<tag>` is a valid, long sleep
        seen: list[Any] = []
        task = request(["/bin/sh", "-c", f"sleep 9{tag}; true"])
        worker = threading.Thread(target=lambda: _swallow(seen, conn.execute, task))
        worker.start()
        assert wait_until(lambda: subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 0), seen
        conn.close()
        worker.join(10)
        assert wait_until(lambda: subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode != 0), \
            "the remote task outlived its connection"
        assert wait_until(lambda: not hosts[0].agents())

    def test_a_dropped_connection_is_unreachable_not_a_crash(self, ctl: Controller, spare: SshHost) -> None:
        ctl.trust([spare])
        conn = ctl.connection(spare)
        conn.start(AgentInit())
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute(request(["/bin/sleep", "5"]))
            except BaseException as exc:  # the test inspects what came out
                outcome.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.3)
        spare.stop()
        worker.join(10)
        assert not worker.is_alive() and isinstance(outcome[0], HostUnreachable), outcome
        conn.close()

    def test_host_key_errors_are_typed(self, ctl: Controller, hosts: list[SshHost]) -> None:
        conn = ctl.connection(hosts[0])
        with pytest.raises(UnknownHostKey):
            conn.start(AgentInit())
        other = keygen(ctl.tmp / "other").split()
        ctl.known_hosts.write_text(f"{hosts[0].known_hosts_name} {other[0]} {other[1]}\n")
        with pytest.raises(ChangedHostKey):
            ctl.connection(hosts[0], "accept-new").start(AgentInit())


class TestProxyJump:
    def test_target_is_reached_through_the_jump_host(self, ctl: Controller, fleet: Fleet, tmp_path: Path) -> None:
        jump = fleet.spawn(log_level="DEBUG1")
        target = fleet.hosts[1]
        try:
            ctl.trust([jump, target])
            ctl.ssh_config.write_text(
                f"Host behind\n    HostName {target.address}\n    Port {target.port}\n    User {USER}\n"
                f"    ProxyJump {USER}@bastion\n"
                f"Host bastion\n    HostName {jump.address}\n    Port {jump.port}\n" + ctl.ssh_config.read_text())
            inv = tmp_path / "jump.yml"
            inv.write_text(f"all:\n  hosts:\n    far:\n      ansible_host: behind\n      sandfleet_os: linux\n"
                           f"      sandfleet_workspace_roots: [{target.workspace}]\n")
            run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/echo, via]")), inv)
            assert run.code == 0, run
            assert run.results()[0]["stdout"] == "via\n"
            log = jump.log.read_text()
            assert f"target {target.address} port {target.port}" in log, log[-3000:]
        finally:
            jump.stop()

    def test_an_unknown_jump_host_key_is_refused_too(self, ctl: Controller, fleet: Fleet, tmp_path: Path) -> None:
        jump, target = fleet.hosts[2], fleet.hosts[3]
        ctl.trust([target])  # the target is known, the jump is not
        ctl.ssh_config.write_text(f"Host behind\n    HostName {target.address}\n    Port {target.port}\n"
                                  f"    User {USER}\n    ProxyJump {USER}@{jump.address}:{jump.port}\n"
                                  + ctl.ssh_config.read_text())
        inv = tmp_path / "jump.yml"
        inv.write_text("all:\n  hosts:\n    far:\n      ansible_host: behind\n      sandfleet_os: linux\n")
        run = ctl.run(ctl.playbook(EXEC.format(argv="[/bin/true]")), inv)
        assert run.code == 4, run
        assert f"unknown host key for [{jump.address}]:{jump.port}" in run.unreachable()["far"]


def _swallow(seen: list[Any], fn: Any, *args: Any) -> None:
    try:
        seen.append(fn(*args))
    except Exception as exc:  # the connection is closed under it on purpose
        seen.append(exc)


class TestPlaySemanticsOverSsh:
    """A few play keywords over real sshd hosts (the local-connection tests cover each one)."""

    def test_serial_run_once_register_and_extra_vars(self, ctl: Controller, hosts: list[SshHost]) -> None:
        fleet_hosts = hosts[:4]
        ctl.trust(fleet_hosts)
        pb = ctl.tmp / "semantics.yml"
        pb.write_text(
            "- hosts: all\n  serial: 2\n  tasks:\n"
            "    - {name: once, exec: {argv: [/bin/echo, '{{ inventory_hostname }}']}, run_once: true, register: o}\n"
            "    - {name: all, exec: {argv: [/bin/echo, '{{ o.stdout }}-{{ tag }}']}, changed_when: false}\n")
        run = ctl.run(pb, ctl.inventory(fleet_hosts), "-e", "tag=x")
        assert run.code == 0, run
        names = [h.name for h in fleet_hosts]
        assert [r["host"] for r in run.results() if r["task"] == "once"] == [names[0], names[2]]
        assert {r["host"]: r["stdout"] for r in run.results() if r["task"] == "all"} == {
            names[0]: f"{names[0]}-x\n", names[1]: f"{names[0]}-x\n",
            names[2]: f"{names[2]}-x\n", names[3]: f"{names[2]}-x\n"}

    def test_an_unreachable_host_counts_toward_max_fail_percentage(self, ctl: Controller, fleet: Fleet,
                                                                   hosts: list[SshHost]) -> None:
        ctl.trust(hosts[:2])
        address, port = fleet.dead_address()
        inv = ctl.inventory(hosts[:2])
        inv.write_text(inv.read_text() + f"    dead:\n      ansible_host: {address}\n      ansible_port: {port}\n"
                                          "      sandfleet_os: linux\n")
        pb = ctl.tmp / "mfp.yml"
        pb.write_text("- hosts: all\n  max_fail_percentage: 30\n  tasks:\n"
                      "    - {name: a, exec: {argv: [/bin/true]}}\n    - {name: b, exec: {argv: [/bin/true]}}\n")
        run = ctl.run(pb, inv)
        assert run.code == 4 and list(run.unreachable()) == ["dead"], run
        assert [r["task"] for r in run.results()] == ["a", "a"]  # 1 of 3 = 33 % > 30 %: b never starts


def test_managed_network_on_an_ssh_host_uses_the_agent_copy_and_the_inventory_resolve_map(
        ctl: Controller, hosts: list[SshHost]) -> None:
    """An unprivileged remote user, the netns helper from the uploaded agent, the resolve map
    carried in the init line: the allowed name is reached, another one is refused."""
    ctl.trust(hosts[:1])
    fetch = "import sys, urllib.request as u; [print(u.urlopen(x).read().decode()) for x in sys.argv[1:]]"
    inv = ctl.inventory(hosts[:1], **{hosts[0].name: {
        "sandfleet_network_resolve": "{pkgs.allowed.test: 127.0.0.5, other.test: 127.0.0.5}",
        "sandfleet_policy": "{network: {max: managed, allow: ['*.allowed.test:*']}}"}})
    with HttpServer("127.0.0.5") as server:
        port = server.port
        pb = ctl.playbook(f"exec: {{argv: [/usr/bin/python3, -c, '{fetch}', 'http://pkgs.allowed.test:{port}/',"
                          f" 'http://other.test:{port}/']}}\n"
                          "      sandbox: {network: {allow: ['*.allowed.test:*']}}")
        run = ctl.run(pb, inv)
    (result,) = run.results()
    assert result["status"] == "failed" and json.loads(result["stdout"])["host"] == f"pkgs.allowed.test:{port}", run
    assert "/sandfleet/agent-" in result["wrapper"][3] and result["wrapper"][3].endswith("/netns.py")
    assert [(d["host"], d["decision"]) for d in result["network_decisions"]] == [
        ("pkgs.allowed.test", "allow"), ("other.test", "deny")]


class TestLimitsOverSsh:
    """Issue 22 over a real sshd, as the unprivileged login user: no cgroup of its own, so the
    agent bounds processes and memory with rlimits, and says so."""

    def test_a_fork_bomb_and_an_allocation_stop_at_the_tasks_limits(self, ctl: Controller,
                                                                      hosts: list[SshHost]) -> None:
        one = hosts[:1]
        ctl.trust(one)
        marker = f"bomb-{os.getpid()}-{time.monotonic_ns()}"
        bomb = ("import os, time\\nmade = 0\\ntry:\\n    while made < 10000:\\n        if os.fork() == 0:\\n"
                "            time.sleep(60)\\n            os._exit(0)\\n        made += 1\\nexcept OSError:\\n"
                "    print(made)")
        pb = ctl.tmp / "limits.yml"
        pb.write_text(
            "- hosts: all\n  tasks:\n"
            f"    - name: bomb\n      exec: {{argv: [python3, -c, \"{bomb}\", {marker}]}}\n"
            "      sandbox: {limits: {pids: 24}}\n      register: b\n"
            "    - name: alloc\n      exec: {argv: [python3, -c, 'bytearray(512 << 20)']}\n"
            "      sandbox: {limits: {memory: 256M}}\n      ignore_errors: true\n"
            "    - name: said\n      exec: {argv: [/bin/echo, '{{ b.limits.pids }}']}\n")
        run = ctl.run(pb, ctl.inventory(one))
        bomb_r, alloc, said = run.results(one[0].name)
        assert bomb_r["status"] == "ok" and int(bomb_r["stdout"]) <= 24, run
        assert bomb_r["limits"]["pids"] == 24 and bomb_r["limits_mechanism"] == "rlimit"
        assert alloc["status"] == "failed" and "MemoryError" in alloc["stderr"], run
        assert any("RLIMIT_AS" in w for w in alloc["warnings"])
        assert said["stdout"] == "24\n"
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _has(p, marker)]


def _has(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
