"""`sandfleet exec PATTERN -i INV [options] -- ARGV`: one command, ad hoc, end to end.

Real parts: the command line in this process (``main``), the local agent as a subprocess, real
bubblewrap; an unreachable host is an ssh host on a closed loopback port, and the host-key test
starts one real sshd. Every option has a test that shows it takes effect, not only that it parses.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandfleet.cli import main
from sandfleet_agent.portable.policy import DEFAULT_PROTECTED
from support import eventschema
from support.ci import need
from support.netservers import HttpServer
from support.sshd import Fleet, free_port, running

ROOT = Path(__file__).resolve().parent.parent
WARNING = "bwrap: network none/managed: no UNIX sockets"


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def inventory(tmp: Path, hosts: tuple[str, ...] = ("web1",), policy: Any = None, **extra: Any) -> str:
    """Local hosts sharing the workspace ``tmp/ws``; ``policy`` is the inventory's sandfleet_policy,
    ``extra`` more variables for every host."""
    ws = tmp / "ws"
    ws.mkdir(exist_ok=True)
    variables: dict[str, Any] = {"ansible_connection": "local", "sandfleet_os": "linux",
                                 "sandfleet_workspace_roots": [str(ws)], **extra}
    if policy is not None:
        variables["sandfleet_policy"] = policy
    path = tmp / "inv.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {h: dict(variables) for h in hosts}}}))
    return str(path)


def blocks(out: str) -> dict[str, list[str]]:
    """The ad-hoc output per host: its header first, then its lines."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        match = re.match(r"^(\S+) \| (OK|FAILED|TIMEOUT|DENIED|SANDBOX UNAVAILABLE|ERROR|UNREACHABLE!)( \||$)", line)
        if match:
            current = found.setdefault(match.group(1), [])
        current.append(line)
    return found


def json_events(out: str) -> list[dict[str, Any]]:
    return eventschema.parse(out)


# -- output shape and exit codes ----------------------------------------------------------------


def test_ok_prints_the_header_then_stdout_and_exits_0(tmp_path: Path) -> None:
    code, out, err = cli("exec", "web1", "-i", inventory(tmp_path), "--", "echo", "hello")
    assert code == 0, err
    assert out == "web1 | OK | rc=0 | backend bwrap\nhello\n"
    assert f"[WARNING]: [web1] {WARNING}" in err  # warnings go to stderr, stdout holds only the blocks


def test_a_failure_shows_rc_message_stdout_and_stderr_and_exits_2(tmp_path: Path) -> None:
    code, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert code == 2
    assert out == "web1 | FAILED | rc=3 | backend bwrap | exited with 3\nout\n--- stderr\nerr\n"


def test_verbose_shows_stderr_of_a_success_the_argv_the_wrapper_and_the_policy(tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo out; echo note >&2"]
    code, quiet, _ = cli("exec", "all", "-i", inventory(tmp_path), "--", *argv)
    assert code == 0 and quiet == "web1 | OK | rc=0 | backend bwrap\nout\n"
    code, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "-v", "--", *argv)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "web1 | OK | rc=0 | backend bwrap"
    assert lines[1] == "    $ sh -c 'echo out; echo note >&2'"
    assert lines[2].startswith("    wrapper: /") and "bwrap" in lines[2] and lines[3].startswith("    policy: built-in")
    assert lines[4:] == ["out", "--- stderr", "note"]


def test_timeout_kills_the_command(tmp_path: Path) -> None:
    started = datetime.now()
    code, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "--timeout", "0.5", "--", "sleep", "30")
    assert code == 2 and datetime.now() - started < timedelta(seconds=10)
    assert out == "web1 | TIMEOUT | backend bwrap | timed out after 0.5 s; its process group was killed\n"


def test_no_sandbox_available_runs_nothing_and_exits_8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "no-bwrap").mkdir()
    monkeypatch.setenv("SANDFLEET_BWRAP_DIRS", str(tmp_path / "no-bwrap"))  # the agent finds no bwrap
    marker = tmp_path / "ws" / "ran"
    code, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "--", "touch", str(marker))
    assert code == 8 and not marker.exists()
    assert out.startswith("web1 | SANDBOX UNAVAILABLE | no sandbox can enforce this task's intent on this linux host")
    assert "bwrap is not installed" in out


def test_an_unreachable_host_exits_4_while_the_others_report(tmp_path: Path) -> None:
    """``gone`` is reached through --ssh-config alone (the inventory names no address or port),
    so the message naming that port also proves the file was read."""
    port = free_port("127.0.0.1")
    inv = Path(inventory(tmp_path, hosts=("web1", "web2")))
    data = yaml.safe_load(inv.read_text())
    data["all"]["hosts"]["gone"] = {"sandfleet_os": "linux"}
    inv.write_text(yaml.safe_dump(data))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host gone\n    HostName 127.0.0.1\n    Port {port}\n"
                      f"    UserKnownHostsFile {tmp_path / 'known_hosts'}\n")
    code, out, _ = cli("exec", "all", "-i", str(inv), "--ssh-config", str(config), "--", "echo", "hi")
    assert code == 4
    found = blocks(out)
    assert found["gone"] == [f"gone | UNREACHABLE! | cannot reach gone at 127.0.0.1:{port}: Connection refused"]
    assert found["web1"] == ["web1 | OK | rc=0 | backend bwrap", "hi"]
    assert found["web2"] == ["web2 | OK | rc=0 | backend bwrap", "hi"]


def test_hostile_output_cannot_drive_the_terminal(tmp_path: Path) -> None:
    code = ("import sys; sys.stdout.write('\\x1b]0;owned\\x07\\x1b[2J\\rweb2 | OK\\n'); sys.stdout.flush();"
            "sys.stdout.buffer.write(b'\\xff\\n'); sys.stderr.write('\\x1b[31mred\\x9b'); sys.exit(1)")
    rc, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "--", "python3", "-c", code)
    assert rc == 2
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", out), repr(out)
    lines = out.splitlines()
    assert lines[1] == "\\x1b]0;owned\\x07\\x1b[2J\\x0dweb2 | OK"  # cannot fake a header either: no \r
    assert lines[2] in ("\ufffd", "\\xff")  # a byte that is not UTF-8: replaced on the host, or shown escaped
    assert lines[3:] == ["--- stderr", "\\x1b[31mred\\x9b"]


# -- the command: argv as a list, templates, cwd, env, -e ------------------------------------------


def test_shell_metacharacters_and_options_after_the_separator_run_literally(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    words = ["$(touch pwned)", "; touch pwned2", "|", "&&", "`id`", "*", ">out", "-l", "--", "--limit"]
    code, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "--cwd", str(ws), "--",
                       "python3", "-c", "import sys; print(sys.argv[1:])", *words)
    assert code == 0 and out.splitlines()[1] == str(words)
    assert not [p for p in ws.iterdir() if "pwned" in p.name or "out" in p.name]  # no shell ever saw the words


def test_cwd_is_a_template_and_is_used(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    (tmp_path / "ws" / "web1").mkdir()
    code, out, _ = cli("exec", "all", "-i", inv, "--cwd", ":workspace_roots/{{ inventory_hostname }}", "--", "pwd")
    assert code == 0 and out.splitlines()[1] == str(tmp_path / "ws" / "web1")


def test_env_reaches_the_command_and_is_a_template(tmp_path: Path) -> None:
    code, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "--env", "GREETING=hello world",
                       "--env", "WHO={{ inventory_hostname }}", "--env", "EMPTY=", "--", "printenv", "GREETING", "WHO",
                       "EMPTY")
    assert code == 0 and out.splitlines()[1:] == ["hello world", "web1", ""]


def test_extra_vars_reach_the_argv_templates(tmp_path: Path) -> None:
    code, out, _ = cli("exec", "all", "-i", inventory(tmp_path), "-e", 'greeting="hi there"', "-e", '{"n": 3}',
                       "--", "echo", "{{ greeting }} x{{ n }}")
    assert code == 0 and out.splitlines()[1] == "hi there x3"


# -- the sandbox options ----------------------------------------------------------------------------


def test_write_lets_a_write_succeed_that_fails_without(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    policy = {"filesystem": {":workspace_roots": "write", ":tmpdir": "write", ":root": "read", str(outside): "write"}}
    inv = inventory(tmp_path, policy=policy)
    target = outside / "made"
    code, out, _ = cli("exec", "all", "-i", inv, "--", "touch", str(target))
    assert code == 2 and out.startswith("web1 | FAILED | rc=1") and not target.exists()
    code, out, _ = cli("exec", "all", "-i", inv, "--write", str(outside), "--", "touch", str(target))
    assert code == 0 and out.startswith("web1 | OK") and target.exists()


def test_deny_hides_a_path_and_read_opens_one_below_it(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    private = tmp_path / "ws" / "private"
    (private / "pub").mkdir(parents=True)
    (private / "pub" / "note").write_text("public\n")
    (private / "secret").write_text("secret\n")
    argv = ["sh", "-c", f"cat {private}/pub/note; cat {private}/secret"]
    code, out, _ = cli("exec", "all", "-i", inv, "--", *argv)
    assert code == 0 and out.splitlines()[1:] == ["public", "secret"]
    code, out, _ = cli("exec", "all", "-i", inv, "--deny", str(private), "--", *argv)
    assert code == 2 and "public" not in out and "secret\n" not in out
    code, out, _ = cli("exec", "all", "-i", inv, "--deny", str(private), "--read", str(private / "pub"), "--", *argv)
    assert code == 2 and out.splitlines()[1:3] == ["public", "--- stderr"]
    assert "secret: No such file or directory" in out


def test_profile_read_only_takes_the_workspace_write_away(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    target = tmp_path / "ws" / "made"
    code, out, _ = cli("exec", "all", "-i", inv, "--profile", "read-only", "--", "touch", str(target))
    assert code == 2 and "Read-only file system" in out and not target.exists()
    code, _, _ = cli("exec", "all", "-i", inv, "--", "touch", str(target))
    assert code == 0 and target.exists()


def test_network_none_blocks_a_connection_that_full_allows(tmp_path: Path) -> None:
    inv = inventory(tmp_path, policy={"network": "full"})
    with HttpServer("127.0.0.1") as server:
        fetch = ["python3", "-c", f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{server.port}/x', "
                                  "timeout=5).status)"]
        blocked = cli("exec", "all", "-i", inv, "--network", "none", "--", *fetch)
        reached = cli("exec", "all", "-i", inv, "--network", "full", "--", *fetch)
    assert blocked[0] == 2 and "Connection refused" in blocked[1]
    assert reached[0] == 0 and reached[1].splitlines()[1] == "200"


def test_network_domains_become_the_managed_allowlist(tmp_path: Path) -> None:
    inv = inventory(tmp_path, policy={"network": {"max": "managed", "allow": ["*.allowed.test:*"]}},
                    sandfleet_network_resolve={"pkgs.allowed.test": "127.0.0.5", "other.test": "127.0.0.5"})
    with HttpServer("127.0.0.5") as server:
        port = server.port
        fetch = "import sys, urllib.request as u; [print(u.urlopen(x).read().decode()) for x in sys.argv[1:]]"
        code, out, _ = cli("exec", "all", "-i", inv, "--network", f"pkgs.allowed.test:{port}, extra.allowed.test",
                           "--", "python3", "-c", fetch, f"http://pkgs.allowed.test:{port}/ok",
                           f"http://other.test:{port}/no")
    assert code == 2
    lines = out.splitlines()
    assert lines[1] == f"    network: denied other.test:{port} (not in the allow list)"
    assert json.loads(lines[2])["path"] == "/ok" and "HTTP Error 403: Forbidden" in out
    code, out, _ = cli("exec", "all", "-i", inv, "--network", f"pkgs.allowed.test:{port},extra.allowed.test",
                       "--dry-run", "--format", "json", "--", "true")
    (result,) = [e for e in json_events(out) if e["event"] == "task_result"]
    assert result["request"]["sandbox"]["network"] == {
        "mode": "managed", "allow": [f"pkgs.allowed.test:{port}", "extra.allowed.test"], "deny": []}


def test_no_sandbox_needs_the_operators_consent(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    code, out, _ = cli("exec", "all", "-i", inv, "--no-sandbox", "--", "touch", str(outside / "bare"))
    assert code == 16 and out.startswith("web1 | DENIED | denied by the policy: this task is marked 'sandbox: false'")
    assert not (outside / "bare").exists()
    code, out, _ = cli("exec", "all", "-i", inv, "--no-sandbox", "--allow-unsandboxed", "--", "touch",
                       str(outside / "bare"))
    assert code == 0 and out == "web1 | OK | rc=0 | backend none\n" and (outside / "bare").exists()


def test_write_root_is_refused_by_the_inventorys_policy(tmp_path: Path) -> None:
    """A playbook author's reach for everything: the operator's sandfleet_policy decides, nothing runs."""
    policy = {"filesystem": {":workspace_roots": "write", ":tmpdir": "write", ":root": "read"}, "network": "none"}
    inv = inventory(tmp_path, policy=policy)
    marker = tmp_path / "pwned"
    code, out, _ = cli("exec", "all", "-i", inv, "--write", "/", "--network", "full", "--", "touch", str(marker))
    assert code == 16 and not marker.exists()
    assert out.startswith("web1 | DENIED | denied by the policy: ") and "inventory sandfleet_policy" in out
    assert len(out.splitlines()) == 1


def test_policy_file_narrows_the_inventorys(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    policy = tmp_path / "policy.yml"
    policy.write_text('filesystem: {":root": read, ":tmpdir": write}\n')  # no writable workspace
    code, out, _ = cli("exec", "all", "-i", inv, "--policy", str(policy), "--", "true")
    assert code == 16 and out.startswith("web1 | DENIED | denied by the policy: :workspace_roots=write")
    assert f"--policy {policy}" in out
    code, out, _ = cli("exec", "all", "-i", inv, "--policy", str(policy), "--profile", "read-only", "--", "true")
    assert code == 0, out


# -- which hosts, how many at once, what is printed --------------------------------------------------


def test_limit_narrows_the_pattern(tmp_path: Path) -> None:
    inv = inventory(tmp_path, hosts=("web1", "web2", "db1"))
    code, out, _ = cli("exec", "web*", "-i", inv, "-l", "web2:db1", "--", "echo", "{{ inventory_hostname }}")
    assert code == 0 and out == "web2 | OK | rc=0 | backend bwrap\nweb2\n"
    code, out, err = cli("exec", "db1", "-i", inv, "-l", "web2", "--", "true")
    assert code == 1 and out == "" and "matches no host; nothing ran" in err  # as run: nothing ran


def test_forks_bounds_how_many_hosts_run_at_once(tmp_path: Path) -> None:
    inv = inventory(tmp_path, hosts=("web1", "web2"))

    def spans(forks: str) -> list[tuple[datetime, datetime]]:
        code, out, _ = cli("exec", "all", "-i", inv, "-f", forks, "--format", "json", "--", "sleep", "0.5")
        assert code == 0
        results = [e for e in json_events(out) if e["event"] == "task_result"]
        starts = [datetime.fromisoformat(e["started"].replace("Z", "+00:00")) for e in results]
        return sorted((s, s + timedelta(milliseconds=e["duration_ms"])) for s, e in zip(starts, results))

    (_, first_end), (second_start, _) = spans("1")
    assert second_start >= first_end  # one at a time
    (_, first_end), (second_start, _) = spans("2")
    assert second_start < first_end  # together


def test_dry_run_touches_nothing_and_prints_what_run_dry_run_prints(tmp_path: Path) -> None:
    inv = inventory(tmp_path, hosts=("web1", "web2"))
    marker = tmp_path / "ws" / "marker"
    code, out, _ = cli("exec", "all", "-i", inv, "--dry-run", "--cwd", ":workspace_roots", "--", "touch", str(marker))
    assert code == 0 and not marker.exists()
    playbook = tmp_path / "pb.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "all", "tasks": [
        {"exec": {"argv": ["touch", str(marker)], "cwd": ":workspace_roots"}}]}]))
    code, run_out, _ = cli("run", str(playbook), "-i", inv, "--dry-run")
    assert code == 0

    def timeless(text: str) -> str:
        return re.sub(r"DRY-RUN \([0-9.]+ s\)", "DRY-RUN (T)", text)

    assert timeless(out) == timeless(run_out)
    assert f"web1 [linux] touch {marker}: backend bwrap\n    $ /" in out and "--bind" in out
    assert "nothing was executed" in out


def test_format_json_prints_the_events_run_prints(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    for name in DEFAULT_PROTECTED:  # as a first sandbox leaves them, so both render the same wrapper
        (tmp_path / "ws" / name).mkdir()
    code, out, _ = cli("exec", "web1", "-i", inv, "--format", "json", "--env", "CI=1", "--", "echo", "hi")
    assert code == 0
    playbook = tmp_path / "pb.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "web1", "tasks": [{"exec": {"argv": ["echo", "hi"],
                                                                               "env": {"CI": "1"}}}]}]))
    code, run_out, _ = cli("run", str(playbook), "-i", inv, "--format", "json")
    assert code == 0
    assert json.loads(out.splitlines()[0]) == json.loads(run_out.splitlines()[0])  # run_start
    ours, theirs = json_events(out), json_events(run_out)  # each validated against the schema
    assert [e["event"] for e in ours] == [e["event"] for e in theirs] == ["task_result", "recap"]
    volatile = {"started", "duration_ms"}
    assert ({k: v for k, v in ours[0].items() if k not in volatile}
            == {k: v for k, v in theirs[0].items() if k not in volatile})
    assert ours[0]["stdout"] == "hi\n" and ours[0]["request"]["env"] == ["CI"] and ours[1] == theirs[1]


def test_format_json_reports_unreachable_and_refused_hosts_with_runs_exit_code(tmp_path: Path) -> None:
    inv = Path(inventory(tmp_path))
    data = yaml.safe_load(inv.read_text())
    data["all"]["hosts"]["gone"] = {"ansible_host": "127.0.0.1", "ansible_port": free_port("127.0.0.1")}
    inv.write_text(yaml.safe_dump(data))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n    UserKnownHostsFile {tmp_path / 'known_hosts'}\n")
    code, out, _ = cli("exec", "all", "-i", str(inv), "--ssh-config", str(config), "--format", "json",
                       "--profile", "full-access", "--", "true")
    assert code == 4 | 16
    kinds = {e["event"]: e for e in json_events(out)}
    assert kinds["host_unreachable"]["host"] == "gone" and kinds["task_result"]["status"] == "denied"
    assert kinds["recap"]["hosts"]["gone"]["unreachable"] == 1


# -- SSH: the host key policy -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd() -> Iterator[Fleet]:
    with running(1) as fleet:
        yield fleet


def test_host_key_policy_accept_new_records_what_reject_refuses(sshd: Fleet, tmp_path: Path) -> None:
    (host,) = sshd.hosts
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    config = sshd.ssh_config(tmp_path / "ssh_config", known_hosts)
    inv = sshd.inventory(tmp_path / "inv.yml", [host])
    base = ["exec", "all", "-i", str(inv), "--ssh-config", str(config)]
    code, out, _ = cli(*base, "--", "echo", "hi")
    assert code == 4 and out.startswith(f"{host.name} | UNREACHABLE! | ") and "unknown" in out.lower()
    assert known_hosts.read_text() == ""
    code, out, _ = cli(*base, "--host-key-policy", "accept-new", "--", "echo", "hi")
    assert code == 0 and out == f"{host.name} | OK | rc=0 | backend bwrap\nhi\n"
    assert host.host_key.split()[1] in known_hosts.read_text()


# -- the command line itself ------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "says"), [
    (["exec", "all", "-i", "INV"], "the command goes after '--'"),
    (["exec", "all", "-i", "INV", "echo", "hi"], "the command goes after '--' (got 'echo hi' without it)"),
    (["exec", "all", "-i", "INV", "ls", "-l"], "the command goes after '--'"),
    (["exec", "all", "-i", "INV", "--"], "no command after '--'"),
    (["exec", "web", "db", "-i", "INV", "--", "true"], "one PATTERN before '--'"),
    (["exec", "all", "-i", "INV", "--bogus", "--", "true"], "unrecognized arguments: --bogus"),
    (["exec", "-i", "INV", "--", "true"], "required: PATTERN"),
    (["exec", "all", "--", "true"], "required: -i/--inventory"),
    (["exec", "all", "-i", "INV", "--env", "NOEQUALS", "--", "true"], "--env 'NOEQUALS': expected NAME=VALUE"),
    (["exec", "all", "-i", "INV", "--env", "=x", "--", "true"], "expected NAME=VALUE"),
    (["exec", "all", "-i", "INV", "--write", "relative", "--", "true"], "relative path 'relative'"),
    (["exec", "all", "-i", "INV", "--write", "**/*.pem", "--", "true"], "can only be used with deny"),
    (["exec", "all", "-i", "INV", "--read", "/x", "--deny", "/x", "--", "true"], "given as both --read and --deny"),
    (["exec", "all", "-i", "INV", "--profile", "everything", "--", "true"], "unknown profile 'everything'"),
    (["exec", "all", "-i", "INV", "--network", "none,pypi.org", "--", "true"], "not a mix"),
    (["exec", "all", "-i", "INV", "--network", ",", "--", "true"], "--network needs"),
    (["exec", "all", "-i", "INV", "--network", "bad domain!", "--", "true"], "not a valid domain"),
    (["exec", "all", "-i", "INV", "--no-sandbox", "--write", "/x", "--", "true"], "cannot go with --write"),
    (["exec", "all", "-i", "INV", "--timeout", "0", "--", "true"], "positive number of seconds"),
    (["exec", "all", "-i", "INV", "--timeout", "nan", "--", "true"], "positive number of seconds"),
    (["exec", "all", "-i", "INV", "-f", "0", "--", "true"], "positive integer"),
    (["exec", "all", "-i", "INV", "--format", "yaml", "--", "true"], "invalid choice"),
    (["exec", "all", "-i", "INV", "--host-key-policy", "yes", "--", "true"], "invalid choice"),
    (["exec", "all", "-i", "INV", "--cwd", "relative", "--", "true"], "cwd 'relative' must be absolute"),
    (["exec", "all", "-i", "INV", "--", "echo", "{{ oops"], "argv item 2 is not a valid template"),
])
def test_bad_command_lines_exit_64_and_run_nothing(tmp_path: Path, argv: list[str], says: str) -> None:
    inv = inventory(tmp_path)
    code, out, err = cli(*[inv if a == "INV" else a for a in argv])
    assert code == 64, err
    assert out == "" and err.startswith(("sandfleet: ", "sandfleet exec: ")) and says in err and "Traceback" not in err


def test_invalid_files_exit_65(tmp_path: Path) -> None:
    code, out, err = cli("exec", "all", "-i", str(tmp_path / "missing.yml"), "--", "true")
    assert code == 65 and out == "" and "missing.yml" in err
    bad = tmp_path / "policy.yml"
    bad.write_text("network: sometimes\n")
    code, _, err = cli("exec", "all", "-i", inventory(tmp_path), "--policy", str(bad), "--", "true")
    assert code == 65 and f"{bad}:1:" in err


def test_the_installed_command_runs_it(tmp_path: Path) -> None:
    """Through ``python -m sandfleet``: sys.argv, the real streams, the exit status."""
    proc = subprocess.run([sys.executable, "-m", "sandfleet", "exec", "all", "-i", inventory(tmp_path), "--",
                           "echo", "-n", "hi", "--"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "web1 | OK | rc=0 | backend bwrap\nhi --\n"


def test_the_readmes_example_runs_as_shown() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Ad-hoc: sandfleet exec", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", section, re.S | re.M)
    (command,) = [body for lang, body in blocks if lang == "sh"]
    (shown,) = [body for lang, body in blocks if not lang]
    bin_dir = os.path.dirname(sys.executable)  # where pip put the `sandfleet` script
    proc = subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == shown.replace("<checkout>", str(ROOT))
