"""`sandfleet run` end to end on the local connection: real agent, real sandboxes, real exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from sandfleet_agent.linux.sandbox_pool import ENTRY_NAME
from sandfleet_agent.portable.policy import DEFAULT_PROTECTED
from support import eventschema
from support.ci import need
from support.netservers import HttpServer
from support.unprivileged import as_user, user_tree

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = [str(ROOT / "playbooks" / "example.yml"), "-i", str(ROOT / "inventory" / "localhost.yml")]


def sandfleet(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandfleet", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=120)


def events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return eventschema.parse(proc.stdout)


def tasks(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [e for e in events(proc) if e["event"] == "task_result"]


def protect_names(ws: Path) -> None:
    """Create the names a writable root keeps read-only (``.git`` & co.): a first sandbox blocks
    missing ones with empty mount points, after which the same policy renders differently."""
    for name in DEFAULT_PROTECTED:
        (ws / name).mkdir(exist_ok=True)


def no_bwrap(tmp_path: Path) -> dict[str, str]:
    """An environment whose agent finds no bwrap: it looks only in root-owned system directories
    (never PATH); ``SANDFLEET_BWRAP_DIRS`` narrows those to one without bwrap. PATH keeps the
    usual tools."""
    path = no_bwrap_path(tmp_path)
    return {"PATH": path, "SANDFLEET_BWRAP_DIRS": path}


def no_bwrap_path(tmp_path: Path) -> str:
    """A PATH with the usual tools but without bwrap (nor bash).

    ``python3`` is the interpreter running the tests, resolved, not whatever PATH finds: a pyenv
    or asdf shim is a bash script and fails here, and a task that cannot start would make "nothing
    ran" prove nothing. Every tool must be found and ``python3`` must run from this PATH, so what
    keeps a task from running under it is the missing sandbox alone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {tool: shutil.which(tool) for tool in ("uname", "mktemp", "touch", "ls", "sh", "cat", "true")}
    tools["python3"] = os.path.realpath(sys.executable)
    for tool, found in tools.items():
        assert found, f"{tool} is not on PATH"
        (bin_dir / tool).symlink_to(found)
    python3 = shutil.which("python3", path=str(bin_dir))
    assert python3 is not None
    works = subprocess.run([python3, "-c", "import os, socket; print('ok')"], env={"PATH": str(bin_dir)},
                           capture_output=True, text=True, timeout=30)
    assert works.stdout == "ok\n", works.stderr
    return str(bin_dir)


def write_playbook(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pb.yml"
    path.write_text(body)
    return path


def write_inventory(tmp_path: Path, extra: str = "") -> Path:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    path = tmp_path / "inv.yml"
    path.write_text(f"all:\n  hosts:\n    here:\n      ansible_connection: local\n      sandfleet_os: linux\n"
                    f"      sandfleet_workspace_roots: [{json.dumps(str(ws))}]\n{extra}")
    return path


class TestDefaultJob:
    def test_runs_under_bwrap(self) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        proc = sandfleet("run", *EXAMPLE, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        results = [e for e in events(proc) if e["event"] == "task_result"]
        assert [e["status"] for e in results] == ["ok", "ok", "ok", "failed", "failed", "failed"]
        assert [e.get("ignored", False) for e in results] == [False, False, False, True, True, True]
        assert {e["backend"] for e in results} == {"bwrap"}
        assert results[1]["stdout"] == "hello from inside the sandbox\n"
        assert "Read-only file system" in results[3]["stderr"]
        assert events(proc)[-1] == {"event": "recap", "hosts": {"localhost": {
            "ok": 3, "changed": 3, "failed": 0, "unreachable": 0, "sandbox_unavailable": 0, "denied": 0, "skipped": 0,
            "ignored": 3, "cancelled": 0}}}

    def test_without_bwrap_nothing_runs_and_the_message_names_both_fixes(self, tmp_path: Path) -> None:
        """Landlock is never a silent fallback (it keeps root's powers and shows host processes):
        an unpinned host whose bwrap cannot run refuses every task and says what to do."""
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        demo = ROOT / "demo-workspace" / "sandfleet-demo.txt"
        demo.unlink(missing_ok=True)
        proc = sandfleet("run", *EXAMPLE, "--format", "json",
                         env={**no_bwrap(tmp_path), "TMPDIR": str(scratch)})
        assert proc.returncode == 8, proc.stdout + proc.stderr
        results = [e for e in events(proc) if e["event"] == "task_result"]
        assert {e["status"] for e in results} == {"sandbox_unavailable"} and not demo.exists()
        message = results[0]["message"]
        assert "bwrap is not installed" in message and "make bwrap work here" in message
        assert "sandfleet_sandbox: landlock" in message

    def test_dry_run_wrapper_is_the_wrapper_that_ran(self) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        ran = [e for e in events(sandfleet("run", *EXAMPLE, "--format", "json")) if e["event"] == "task_result"]
        dry = tasks(sandfleet("run", *EXAMPLE, "--format", "json", "--dry-run"))
        assert len(ran) == len(dry) == 6
        for r, d in zip(ran, dry):
            assert (d["host"], d["task"], d["backend"]) == (r["host"], r["task"], r["backend"])
            assert d["wrapper"] == r["wrapper"]
            argv = d["wrapper"]
            if "--as-pid-1" in argv:  # the host's persistent sandbox; the task enters it as the file shown
                entry = d["wrapper_files"][ENTRY_NAME]
                assert json.loads(entry)["argv"] == d["request"]["argv"]
            else:
                assert d["request"]["argv"] == argv[argv.index("--") + 1:]

    @pytest.mark.parametrize("reuse", [True, False])
    def test_inventory_sandbox_reuse_reaches_the_agent(self, reuse: bool, tmp_path: Path) -> None:
        """``sandfleet_sandbox_reuse: false`` must give every task a fresh sandbox in a real run,
        not only in the dry-run (a run once ignored it: the init line never carried it)."""
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        inventory = write_inventory(tmp_path, f"      sandfleet_sandbox_reuse: {str(reuse).lower()}\n")
        protect_names(tmp_path / "ws")  # present before both, so run and dry-run see the same tree
        playbook = write_playbook(tmp_path, "- hosts: all\n  tasks:\n" + "    - exec: {argv: [/bin/echo, hi]}\n" * 2)
        ran = [e for e in events(sandfleet("run", str(playbook), "-i", str(inventory), "--format", "json"))
               if e["event"] == "task_result"]
        dry = tasks(sandfleet("run", str(playbook), "-i", str(inventory), "--format", "json", "--dry-run"))
        assert [e["status"] for e in ran] == ["ok", "ok"]
        assert [("--as-pid-1" in e["wrapper"]) for e in ran] == [False, reuse]  # a policy's 2nd task on
        assert [d["wrapper"] for d in dry] == [e["wrapper"] for e in ran]

    def test_dry_run_request_keeps_symbols_and_uses_uris(self) -> None:
        dry = tasks(sandfleet("run", *EXAMPLE, "--format", "json", "--dry-run"))
        request = dry[1]["request"]
        assert request["cwd"] == {"symbol": ":workspace_roots"}
        paths = [p["path"] for p in request["sandbox"]["permissions"]]
        assert {"special": "workspace_roots"} in paths and {"special": "root"} in paths
        deny = events(sandfleet("run", *EXAMPLE, "--format", "json", "--dry-run"))[5]["request"]
        assert {"path": {"special": "home", "subpath": ".ssh"}, "access": "deny"} in deny["sandbox"]["permissions"]


class TestFailClosed:
    def test_no_sandbox_available_runs_nothing(self, tmp_path: Path) -> None:
        marker = tmp_path / "ws" / "ran"
        pb = write_playbook(tmp_path, f"- hosts: all\n  tasks:\n    - exec: {{argv: [/usr/bin/touch, {marker}]}}\n")
        proc = sandfleet("run", str(pb), "-i", str(write_inventory(tmp_path)), "--format", "json",
                         env={**no_bwrap(tmp_path), "SANDFLEET_LANDLOCK_MAX_ABI": "0"})
        assert proc.returncode == 8, proc.stdout + proc.stderr
        result = events(proc)[0]
        assert result["status"] == "sandbox_unavailable"
        assert "bubblewrap" in result["message"] and "sandfleet_sandbox: landlock" in result["message"]
        assert not marker.exists()

    def test_pinned_backend_missing_is_refused_not_replaced(self, tmp_path: Path) -> None:
        marker = tmp_path / "ws" / "ran"
        pb = write_playbook(tmp_path, f"- hosts: all\n  tasks:\n    - exec: {{argv: [/usr/bin/touch, {marker}]}}\n")
        inv = write_inventory(tmp_path, "      sandfleet_sandbox: bwrap\n")
        proc = sandfleet("run", str(pb), "-i", str(inv), "--format", "json", env=no_bwrap(tmp_path))
        assert proc.returncode == 8
        assert "pinned" in events(proc)[0]["message"] and not marker.exists()

    def test_pinned_landlock_unsupported_is_refused_though_bwrap_works(self, tmp_path: Path) -> None:
        marker = tmp_path / "ws" / "ran"
        pb = write_playbook(tmp_path, f"- hosts: all\n  tasks:\n    - exec: {{argv: [/usr/bin/touch, {marker}]}}\n")
        inv = write_inventory(tmp_path, "      sandfleet_sandbox: landlock\n")
        proc = sandfleet("run", str(pb), "-i", str(inv), "--format", "json", env={"SANDFLEET_LANDLOCK_MAX_ABI": "0"})
        assert proc.returncode == 8
        message = events(proc)[0]["message"]
        assert "pinned by sandfleet_sandbox=landlock" in message and "bwrap" not in message.split(":", 1)[1]
        assert not marker.exists()

    def test_unsandboxed_needs_consent(self, tmp_path: Path) -> None:
        marker = tmp_path / "ws" / "bare"
        pb = write_playbook(tmp_path, f"- hosts: all\n  tasks:\n    - exec: {{argv: [/usr/bin/touch, {marker}]}}\n"
                                      "      sandbox: false\n")
        inv = str(write_inventory(tmp_path))
        refused = sandfleet("run", str(pb), "-i", inv, "--format", "json")
        assert refused.returncode == 16 and "--allow-unsandboxed" in events(refused)[0]["message"]
        assert events(refused)[0]["status"] == "denied"
        assert not marker.exists()
        allowed = sandfleet("run", str(pb), "-i", inv, "--format", "json", "--allow-unsandboxed")
        assert allowed.returncode == 0 and events(allowed)[0]["backend"] == "none" and marker.exists()


class TestExitCodes:
    def test_failed_task_sets_bit_2_and_stops_the_host(self, tmp_path: Path) -> None:
        pb = write_playbook(tmp_path, "- hosts: all\n  tasks:\n    - exec: {argv: ['false']}\n"
                                      "    - exec: {argv: ['true']}\n")
        proc = sandfleet("run", str(pb), "-i", str(write_inventory(tmp_path)), "--format", "json")
        assert proc.returncode == 2
        assert [e["event"] for e in events(proc)] == ["task_result", "recap"]

    def test_broken_playbook_is_65_with_position_and_no_traceback(self, tmp_path: Path) -> None:
        pb = write_playbook(tmp_path, "- hosts: all\n  tasks:\n    - exec: {argv: echo hi}\n")
        proc = sandfleet("run", str(pb), "-i", str(write_inventory(tmp_path)))
        assert proc.returncode == 65
        assert f"{pb}:3:" in proc.stderr and "Traceback" not in proc.stderr

    def test_bad_command_line_is_64(self) -> None:
        proc = sandfleet("run", "--no-such-flag")
        assert proc.returncode == 64 and "Traceback" not in proc.stderr

    def test_undefined_variable_fails_that_task_with_its_name(self, tmp_path: Path) -> None:
        pb = write_playbook(tmp_path, "- hosts: all\n  tasks:\n    - exec: {argv: [echo, '{{ nope }}']}\n")
        proc = sandfleet("run", str(pb), "-i", str(write_inventory(tmp_path)), "--format", "json")
        assert proc.returncode == 2
        message = events(proc)[0]["message"]
        assert "undefined variable 'nope'" in message and "on host 'here'" in message
        assert f"{pb}:3:" in message


def _timed_out_task(root: str, backend: str, tag: str) -> tuple[str, Optional[int]]:
    from sandfleet_agent.binding.facts import probe
    from sandfleet_agent.executor import execute
    from sandfleet_agent.portable.intent import PROFILES, SandboxIntent
    from sandfleet_agent.portable.wire import ExecRequest

    script = f"(exec -a grandchild{tag} sleep 300) & exec -a child{tag} sleep 300"
    result = execute(ExecRequest(id="t", argv=("bash", "-c", script), timeout_s=1,
                                 sandbox=SandboxIntent(PROFILES["workspace"])), probe((root,)), pin=backend)
    return result.status.value, result.rc


@pytest.mark.parametrize("backend", ["bwrap", "landlock"])
def test_timeout_kills_the_command_and_what_it_forked(backend: str) -> None:
    """Landlock runs for an unprivileged agent only: that column drops to the test user."""
    from sandfleet_agent.binding.facts import probe

    status = probe().backend(backend)
    need(status is not None and status.available, f"{backend} unavailable")
    tag = f"{os.getpid()}{backend}"
    with user_tree() as root:
        outcome = as_user(_timed_out_task, str(root), backend, tag) if backend == "landlock" \
            else _timed_out_task(str(root), backend, tag)
    assert outcome == ("timeout", None)
    assert gone(tag), "a process of the timed-out task is still running"


def gone(tag: str, within_s: float = 3.0) -> bool:
    """True once no process matches ``tag``; a killed pid namespace is torn down asynchronously."""
    import time

    deadline = time.monotonic() + within_s
    while subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_ctrl_c_kills_running_tasks_prints_a_partial_recap_and_exits_130(tmp_path: Path) -> None:
    """... and still writes the report files (what they hold: tests/test_run_outputs.py)."""
    import signal
    import time
    import xml.etree.ElementTree as ET

    tag = f"ctrlc{os.getpid()}"
    pb = write_playbook(tmp_path, "- hosts: all\n  tasks:\n    - exec: {argv: ['true']}\n"
                                  f"    - exec: {{argv: [bash, -c, 'exec -a {tag} sleep 300']}}\n")
    junit, results = tmp_path / "r.xml", tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "sandfleet", "run", str(pb), "-i", str(write_inventory(tmp_path)),
                             "--junit", str(junit), "--results-dir", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", tag], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the long task never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "RECAP" in out and "ok=1" in out
    assert gone(tag), "the task survived Ctrl-C"
    assert [c.get("name") for c in ET.parse(junit).iter("testcase")][:1] == ["true"]
    assert json.loads((results / "here.json").read_text())["tasks"][0]["status"] == "ok"


def test_vars_loop_when_and_register_on_real_tasks(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, "      base: /srv\n      app_dir: \"{{ base }}/app\"\n")
    protect_names(tmp_path / "ws")  # present before the run, so run and dry-run see one tree
    pb = write_playbook(tmp_path, """\
- hosts: all
  vars: {greeting: "hello world"}
  tasks:
    - name: nested inventory vars render; one argv element stays one
      exec: {argv: [echo, "{{ app_dir }}", "{{ greeting }}"]}
      register: first
    - name: loop
      exec: {argv: [echo, "{{ item }}"]}
      loop: [a, "b c"]
      register: looped
    - name: when true
      exec: {argv: [echo, "{{ first.stdout | trim }}", "{{ looped.results | length }}"]}
      when: first.rc == 0
    - name: when false
      exec: {argv: ['false']}
      when: looped.results[0].stdout == "nope"
""")
    proc = sandfleet("run", str(pb), "-i", str(inv), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [e for e in events(proc) if e["event"] == "task_result"]
    assert [(r["task"], r["status"]) for r in results] == [
        ("nested inventory vars render; one argv element stays one", "ok"), ("loop", "ok"), ("loop", "ok"),
        ("when true", "ok"), ("when false", "skipped")]
    # The argv that ran, element by element. The policy's first task runs in a fresh sandbox, whose
    # wrapper ends with it; the next enters the host's persistent sandbox as the message shown.
    dry = tasks(sandfleet("run", str(pb), "-i", str(inv), "--format", "json", "--dry-run"))
    assert "--as-pid-1" not in dry[0]["wrapper"] and "--as-pid-1" not in results[0]["wrapper"]
    assert dry[0]["wrapper"][-3:] == results[0]["wrapper"][-3:] == ["echo", "/srv/app", "hello world"]
    assert "--as-pid-1" in dry[1]["wrapper"] and "--as-pid-1" in results[1]["wrapper"]
    entry = dry[1]["wrapper_files"][ENTRY_NAME]
    assert json.loads(entry)["argv"][-1] == "a"
    assert [r["item"] for r in results[1:3]] == ["a", "b c"] and results[2]["stdout"] == "b c\n"
    assert results[3]["stdout"] == "/srv/app hello world 2\n"


def test_a_bad_host_setting_stops_the_run_before_any_host_runs_anything(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    inv = tmp_path / "inv.ini"
    inv.write_text("[all]\ngood ansible_connection=local sandfleet_os=linux\nbad ansible_port=notaport\n")
    pb = write_playbook(tmp_path, f"- hosts: all\n  tasks:\n    - exec: {{argv: [/usr/bin/touch, {marker}]}}\n"
                                  "      sandbox: false\n")
    proc = sandfleet("run", str(pb), "-i", str(inv), "--allow-unsandboxed", "--format", "json")
    assert proc.returncode == 65 and proc.stdout == ""
    assert f"{inv}:3:5: error: ansible_port" in proc.stderr and not marker.exists()


class TestManagedNetwork:
    """``network: {allow: [...]}`` through the CLI: the inventory's resolve map points the names at
    a server on 127.0.0.5; the result lists the proxy's decisions; a dry-run shows the wiring."""

    PLAYBOOK = """\
- hosts: all
  tasks:
    - name: fetch through the allowlist
      exec:
        argv:
          - python3
          - -c
          - "import sys, urllib.request as u; [print(u.urlopen(x).read().decode()) for x in sys.argv[1:]]"
          - "http://pkgs.allowed.test:{port}/ok"
          - "http://other.test:{port}/no"
      sandbox:
        network: {{allow: ["*.allowed.test:*"]}}
      ignore_errors: true
"""

    def files(self, tmp_path: Path, port: int, ignore_errors: bool = True) -> list[str]:
        text = self.PLAYBOOK.format(port=port)
        pb = write_playbook(tmp_path, text if ignore_errors else text.replace("      ignore_errors: true\n", ""))
        inv = write_inventory(tmp_path, "      sandfleet_network_resolve: {pkgs.allowed.test: 127.0.0.5, "
                                        "other.test: 127.0.0.5}\n"
                                        "      sandfleet_policy: {network: {max: managed, "
                                        "allow: ['*.allowed.test:*']}}\n")
        return [str(pb), "-i", str(inv)]

    def test_run_reaches_the_allowed_name_and_lists_decisions(self, tmp_path: Path) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        with HttpServer("127.0.0.5") as srv:
            port = srv.port
            proc = sandfleet("run", *self.files(tmp_path, port), "--format", "json")
            text = sandfleet("run", *self.files(tmp_path, port)).stdout
        (result,) = [e for e in events(proc) if e["event"] == "task_result"]
        assert result["status"] == "failed" and result["backend"] == "bwrap", result
        assert json.loads(result["stdout"])["path"] == "/ok" and "HTTP Error 403: Forbidden" in result["stderr"]
        assert result["network_decisions"] == [
            {"host": "pkgs.allowed.test", "port": port, "decision": "allow",
             "reason": "matches allow rule *.allowed.test:*", "count": 1},
            {"host": "other.test", "port": port, "decision": "deny", "reason": "not in the allow list", "count": 1}]
        assert f"    network: denied other.test:{port} (not in the allow list)" in text
        assert "network: allowed" not in text  # the allowed ones only with -v

    def test_dry_run_shows_the_wiring(self, tmp_path: Path) -> None:
        (dry,) = tasks(sandfleet("run", *self.files(tmp_path, 8080), "--format", "json", "--dry-run"))
        argv = dry["wrapper"]
        assert argv[1:3] == ["-I", "-S"] and argv[3].endswith("netns.py")
        assert argv[4:7] == ["--port", "3128", "--handoff"] and argv[7].endswith("/sfnet-XXXXXXXX/proxy.sock")
        assert argv[argv.index("HTTPS_PROXY") - 1:][:3] == ["--setenv", "HTTPS_PROXY", "http://127.0.0.1:3128"]
        assert "--unshare-net" not in argv
        assert dry["request"]["sandbox"]["network"] == {"mode": "managed", "allow": ["*.allowed.test:*"], "deny": []}
        text = sandfleet("run", *self.files(tmp_path, 8080), "--dry-run").stdout
        assert "netns.py --port 3128 --handoff" in text and "--setenv http_proxy http://127.0.0.1:3128" in text

    def test_without_bwrap_it_is_refused_and_says_bwrap_is_needed(self, tmp_path: Path) -> None:
        proc = sandfleet("run", *self.files(tmp_path, 8080, ignore_errors=False), "--format", "json",
                         env=no_bwrap(tmp_path))
        assert proc.returncode == 8, proc.stdout + proc.stderr
        message = events(proc)[0]["message"]
        assert "bwrap: bwrap is not installed" in message
        assert "a managed network needs bwrap: make bwrap work here" in message


class TestLimits:
    """Issue 22 through the command line: the limit that stopped a task is said in every format,
    ``register`` holds it, a dry-run shows the limits and how the host enforces them, and asking
    above the operator's max is denied before anything runs."""

    BOMB = ("import os, time\\nmade = 0\\ntry:\\n    while made < 10000:\\n        if os.fork() == 0:\\n"
            "            time.sleep(60)\\n            os._exit(0)\\n        made += 1\\nexcept OSError as e:\\n"
            "    print(made)\\n    raise SystemExit(3)")

    def playbook(self, tmp_path: Path) -> Path:
        return write_playbook(tmp_path, (
            "- hosts: all\n  tasks:\n"
            f"    - name: bomb\n      exec: {{argv: [python3, -c, \"{self.BOMB}\"]}}\n"
            "      sandbox: {limits: {pids: 16, cpu_seconds: 30}}\n      register: b\n      ignore_errors: true\n"
            "    - name: said\n      exec: {argv: [echo, '{{ b.limit }} {{ b.limits.pids }}']}\n"))

    def test_a_limit_kill_is_said_in_text_json_and_register(self, tmp_path: Path) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        need(os.geteuid() == 0, "the cgroup path needs a root agent here (the rlimit path has its own tests)")
        pb, inv = self.playbook(tmp_path), write_inventory(tmp_path)
        text = sandfleet("run", str(pb), "-i", str(inv))
        assert "pids limit 16 reached (a fork failed)" in text.stdout, text.stdout + text.stderr
        proc = sandfleet("run", str(pb), "-i", str(inv), "--format", "json")
        bomb, said = tasks(proc)
        assert bomb["status"] == "failed" and bomb["limit"] == "pids" and bomb["ignored"], bomb
        assert int(bomb["stdout"]) < 16 and bomb["limits_mechanism"] in ("cgroup1", "cgroup2")
        assert bomb["limits"] == {"pids": 16, "cpu_seconds": 30, "memory": bomb["limits"]["memory"],
                                  "output": 1 << 20}
        assert said["stdout"] == "pids 16\n"

    def test_dry_run_shows_limits_and_mechanism(self, tmp_path: Path) -> None:
        proc = sandfleet("run", str(self.playbook(tmp_path)), "-i", str(write_inventory(tmp_path)),
                         "--dry-run", "--format", "json")
        bomb = tasks(proc)[0]
        assert bomb["dry_run"] and bomb["limits"]["pids"] == 16 and bomb["limits"]["cpu_seconds"] == 30
        assert bomb["limits_mechanism"] in ("cgroup1", "cgroup2", "rlimit")
        text = sandfleet("run", str(tmp_path / "pb.yml"), "-i", str(tmp_path / "inv.yml"), "--dry-run")
        assert f"pids 16, cpu_seconds 30 s, output 1 MiB ({bomb['limits_mechanism']})" in text.stdout, text.stdout

    def test_asking_above_the_operators_max_is_denied(self, tmp_path: Path) -> None:
        inv = write_inventory(tmp_path, "  vars:\n    sandfleet_policy:\n      resources: {max: {pids: 8}}\n")
        proc = sandfleet("check", str(self.playbook(tmp_path)), "-i", str(inv))
        assert proc.returncode == 16, proc.stdout + proc.stderr
        assert "limits.pids 16 exceeds the policy's resources.max 8" in proc.stdout

    def test_a_bad_limit_is_named_where_it_is_written(self, tmp_path: Path) -> None:
        pb = write_playbook(tmp_path, "- hosts: all\n  tasks:\n    - exec: {argv: [true]}\n"
                                      "      sandbox: {limits: {memory: lots}}\n")
        proc = sandfleet("check", str(pb), "-i", str(write_inventory(tmp_path)))
        assert proc.returncode == 65, proc.stdout + proc.stderr
        assert f"{pb}:4:" in proc.stderr and "memory must be a positive size like 512M" in proc.stderr
