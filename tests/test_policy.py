"""The operator and the host's owner decide the walls; a playbook only asks.

Each widening an untrusted playbook could ask for is refused by the built-in policy with nothing
run (a sentinel outside the workspace is not created, a listener gets no connection); the same
intent runs once the operator raises the ceiling in the inventory; ``--policy`` narrows and cannot
widen; the host owner's file narrows what the operator allowed and no request can lift it; a hint
cannot pick a backend the policy does not list; the dry-run gives the run's verdict; size limits
hold without building the huge value. Policy documents get file:line:column errors (the corpus in
``tests/corpus/policy``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandfleet.errors import InputError
from sandfleet.load.policies import load_policy_file
from sandfleet_agent import agent
from sandfleet_agent.portable import policy, wire
from sandfleet_agent.portable.intent import Access, NetworkMode
from sandfleet_agent.portable.policy import DEFAULT, Effective, NetRule, Policy, complete, parse, parse_rule
from support import eventschema
from support.ci import need

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((Path(__file__).parent / "corpus" / "policy").glob("*.yml"))


def sandfleet(*args: str, cwd: Path = ROOT, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)} if home is not None else None
    return subprocess.run([sys.executable, "-m", "sandfleet", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env=env)


def events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return eventschema.parse(proc.stdout)


def results(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [e for e in events(proc) if e.get("event", "task_result") == "task_result"]


# -- documents ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_a_broken_policy_names_file_line_column(path: Path) -> None:
    expect = json.loads(path.with_suffix(".expect").read_text())
    with pytest.raises(InputError) as info:
        load_policy_file(str(path))
    err = info.value
    assert err.mark is not None and (err.mark.file, err.mark.line, err.mark.col) == (
        str(path), expect["line"], expect["col"]), str(err)
    assert expect["message"] in str(err)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 15


def test_a_broken_inventory_policy_names_the_variable_and_its_line(tmp_path: Path) -> None:
    (tmp_path / "inv.yml").write_text("all:\n  hosts:\n    h:\n      ansible_connection: local\n"
                                      "      sandfleet_policy:\n        network: {max: everything}\n")
    (tmp_path / "pb.yml").write_text("- hosts: all\n  tasks:\n    - exec: {argv: ['true']}\n")
    proc = sandfleet("run", str(tmp_path / "pb.yml"), "-i", str(tmp_path / "inv.yml"))
    assert proc.returncode == 65 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'inv.yml'}:6:" in proc.stderr and "sandfleet_policy: unknown network ceiling" in proc.stderr


class TestRules:
    def test_rules_with_ports_cover_only_what_they_allow(self) -> None:
        assert parse_rule("pypi.org").covers(parse_rule("pypi.org:443"))
        assert not parse_rule("pypi.org").covers(parse_rule("pypi.org:22"))
        assert not parse_rule("pypi.org").covers(parse_rule("pypi.org:*"))
        assert parse_rule("*.example.org:*").covers(parse_rule("a.b.example.org:8443"))
        assert parse_rule("*.example.org").covers(parse_rule("*.sub.example.org"))
        assert not parse_rule("example.org").covers(parse_rule("*.example.org"))
        assert NetRule("x.org", 8443).text == "x.org:8443" and NetRule("x.org", 0).text == "x.org:*"

    def test_the_first_layer_is_completed_and_later_ones_only_narrow(self) -> None:
        widened = complete(parse({"filesystem": {":root": "write"}, "network": "full"}, "inv"))
        narrower = parse({"network": {"max": "managed", "allow": ["pypi.org"]}, "linux_backends": ["bwrap"],
                          "limits": {"value_bytes": 10}}, "--policy f")
        eff = Effective((widened, narrower))
        assert widened.linux_backends == DEFAULT.linux_backends and widened.unsandboxed is False
        assert narrower.filesystem is None  # says nothing: does not narrow the filesystem
        assert eff.limits.value_bytes == 10 and eff.limits.argv_bytes == DEFAULT.limits.argv_bytes  # type: ignore
        assert eff.linux_backends == ("bwrap",) and not eff.hints
        assert "~/.ssh" in eff.denies and ".codex" in eff.protected

    def test_the_digest_names_the_whole_policy(self) -> None:
        a = Effective((complete(Policy("inv", network=NetworkMode.FULL)),))
        b = Effective((complete(Policy("inv", network=NetworkMode.NONE)),))
        assert a.digest() != b.digest() and a.digest() == Effective(a.layers).digest() and len(a.digest()) == 16

    def test_the_digest_is_sha256_of_the_policys_json(self) -> None:
        """Computed by CPython's own SHA-256 (no OpenSSL at the agent's start): hashlib's digest."""
        eff = Effective((complete(Policy("inv", network=NetworkMode.FULL)),))
        text = json.dumps(eff.to_json(), sort_keys=True, separators=(",", ":")).encode()
        assert eff.digest() == hashlib.sha256(text).hexdigest()[:16]

    def test_a_request_round_trips_its_policy(self) -> None:
        eff = Effective((complete(parse({"filesystem": {"/opt/cache": "write", ":root": "read"},
                                         "network": {"max": "managed", "allow": ["pypi.org:*"]}}, "inv")),
                         parse({"deny": ["**/*.pem"]}, "--policy p")))
        request = wire.ExecRequest(id="t", argv=("true",), policy=eff)
        assert wire.decode_request(wire.encode_request(request)).policy == eff
        assert dict(eff.operator.filesystem or ())["/opt/cache"] is Access.WRITE


# -- end to end, on the local connection with real bwrap ------------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[int, threading.Event]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    reached, stop = threading.Event(), threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                reached.set()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], reached
    stop.set()
    thread.join()
    srv.close()


class Job:
    """A workspace, a sentinel outside it, and an inventory for the local host."""

    def __init__(self, tmp: Path) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        self.tmp, self.ws, self.outside = tmp, tmp / "ws", tmp / "outside"
        self.ws.mkdir()
        self.outside.mkdir()
        self.sentinel = self.outside / "sentinel"
        self.home = tmp / "home"  # a task given :root write must not leave placeholders in the real one
        self.home.mkdir()

    def inventory(self, extra: str = "", roots: bool = True) -> Path:
        path = self.tmp / "inv.yml"
        root_line = f"      sandfleet_workspace_roots: [{json.dumps(str(self.ws))}]\n" if roots else ""
        path.write_text(f"all:\n  hosts:\n    here:\n      ansible_connection: local\n      sandfleet_os: linux\n"
                        f"{root_line}{extra}")
        return path

    def run(self, task: str, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
        pb = self.tmp / "pb.yml"
        pb.write_text(f"- hosts: all\n  tasks:\n    - name: t\n{task}")
        return sandfleet("run", str(pb), "-i", str(inventory or self.inventory()), "--format", "json", *args,
                         home=self.home)


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


def touch_and_connect(job: Job, port: int) -> str:
    script = (f"import socket; open({str(job.sentinel)!r}, 'w').close(); "
              f"socket.create_connection(('127.0.0.1', {port}), timeout=2)")
    return f"      exec: {{argv: [python3, -c, {json.dumps(script)}]}}\n"


WIDENINGS = {
    "full-access and network full": "      sandbox: {profile: full-access, network: full}\n",
    "root write": "      sandbox: {filesystem: {':root': write}}\n",
    "its own workspace roots": "      sandbox: {workspace_roots: ['/'], network: full}\n",
    "a writable outside path": "      sandbox: {filesystem: {':root': read, OUTSIDE: write}}\n",
}


class TestThePlaybookCannotWidenItsWalls:
    @pytest.mark.parametrize("widening", list(WIDENINGS))
    def test_refused_with_nothing_run(self, job: Job, listener: tuple[int, threading.Event], widening: str) -> None:
        port, reached = listener
        sandbox = WIDENINGS[widening].replace("OUTSIDE", json.dumps(str(job.outside)))
        proc = job.run(touch_and_connect(job, port) + sandbox)
        (result,) = results(proc)
        assert proc.returncode == 16 and result["status"] == "denied", result
        assert "exceeds the policy's" in result["message"] and "sandfleet_policy" in result["message"]
        assert not job.sentinel.exists() and not reached.is_set()
        assert result["policy_sources"] == ["built-in default"]

    def test_the_same_intent_runs_once_the_operator_raises_the_ceiling(self, job: Job,
                                                                      listener: tuple[int, threading.Event]) -> None:
        port, reached = listener
        inv = job.inventory("      sandfleet_policy:\n        filesystem: {':root': write}\n        network: full\n")
        proc = job.run(touch_and_connect(job, port) + WIDENINGS["full-access and network full"], inventory=inv)
        (result,) = results(proc)
        assert proc.returncode == 0 and result["status"] == "ok", result
        assert job.sentinel.exists() and reached.wait(5)
        assert result["policy_sources"] == ["inventory sandfleet_policy"]

    def test_a_host_without_roots_does_not_make_the_cwd_writable(self, job: Job) -> None:
        target = job.outside / "made"
        proc = job.run(f"      exec: {{argv: [touch, made], cwd: {json.dumps(str(job.outside))}}}\n",
                       inventory=job.inventory(roots=False))
        (result,) = results(proc)
        assert result["status"] == "denied" and "workspace_roots" in result["message"], result
        assert not target.exists()

    def test_policy_file_narrows_and_cannot_widen(self, job: Job, tmp_path: Path) -> None:
        raised = job.inventory("      sandfleet_policy: {network: full}\n")
        narrow = tmp_path / "narrow.yml"
        narrow.write_text("network: none\n")
        wide = tmp_path / "wide.yml"
        wide.write_text("filesystem: {':root': write}\nnetwork: full\n")
        net = "      exec: {argv: ['true']}\n      sandbox: {network: full}\n"
        assert results(job.run(net, inventory=raised))[0]["status"] == "ok"
        narrowed = results(job.run(net, "--policy", str(narrow), inventory=raised))[0]
        assert narrowed["status"] == "denied" and f"--policy {narrow}" in narrowed["message"]
        assert narrowed["policy_sources"] == ["inventory sandfleet_policy", f"--policy {narrow}"]
        root_write = "      exec: {argv: ['true']}\n      sandbox: {filesystem: {':root': write}}\n"
        assert results(job.run(root_write, "--policy", str(wide)))[0]["status"] == "denied"

    def test_a_managed_allowlist_must_fit_the_ceiling_ports_included(self, job: Job) -> None:
        inv = job.inventory("      sandfleet_policy: {network: {max: managed, allow: ['*.allowed.test']}}\n")
        ok = "      exec: {argv: ['true']}\n      sandbox: {network: {allow: [pkgs.allowed.test]}}\n"
        any_port = "      exec: {argv: ['true']}\n      sandbox: {network: {allow: ['pkgs.allowed.test:*']}}\n"
        other = "      exec: {argv: ['true']}\n      sandbox: {network: {allow: [pypi.org]}}\n"
        assert results(job.run(ok, inventory=inv))[0]["status"] == "ok"
        for task in (any_port, other):
            result = results(job.run(task, inventory=inv))[0]
            assert result["status"] == "denied" and "network.allow" in result["message"], result
        assert results(job.run(ok))[0]["status"] == "denied"  # the built-in default: network none

    def test_the_dry_run_gives_the_runs_verdict(self, job: Job) -> None:
        task = "      exec: {argv: ['true']}\n      sandbox: {profile: full-access}\n"
        dry = results(job.run(task, "--dry-run"))[0]
        ran = results(job.run(task))[0]
        assert dry["status"] == ran["status"] == "denied" and dry["message"] == ran["message"]
        assert dry["policy_digest"] == ran["policy_digest"]

    def test_a_huge_template_is_refused_without_being_built(self, job: Job) -> None:
        proc = job.run("      exec: {argv: [echo, \"{{ 'x' * 20000000 }}\"]}\n")
        (result,) = results(proc)
        assert result["status"] == "error" and "too large" in result["message"] and "value_bytes" in result["message"]
        raised = job.inventory("      sandfleet_policy: {limits: {argv_bytes: 64}}\n")
        long_argv = "      exec: {argv: [echo, \"" + "y" * 100 + "\"]}\n"
        assert "limits.argv_bytes 64" in results(job.run(long_argv, inventory=raised))[0]["message"]


class TestBackendChoice:
    """The dry-run of a host the controller does not probe shows the backend its policy picks."""

    def inventory(self, tmp_path: Path, policy_text: str) -> Path:
        inv = tmp_path / "inv.yml"
        inv.write_text("all:\n  hosts:\n    far:\n      ansible_host: 192.0.2.1\n      ansible_user: ci\n"
                       f"      sandfleet_os: linux\n      sandfleet_workspace_roots: [/srv/ws]\n{policy_text}")
        return inv

    def backend(self, tmp_path: Path, policy_text: str) -> str:
        pb = tmp_path / "pb.yml"
        pb.write_text("- hosts: all\n  tasks:\n    - exec: {argv: ['true']}\n"
                      "      sandbox: {linux: {prefer: landlock}}\n")
        (dry,) = results(sandfleet("run", str(pb), "-i", str(self.inventory(tmp_path, policy_text)), "--dry-run",
                                   "--format", "json"))
        return str(dry["backend"])

    def test_a_hint_cannot_pick_a_backend_the_policy_does_not_list(self, tmp_path: Path) -> None:
        assert self.backend(tmp_path, "") == "bwrap"
        assert self.backend(tmp_path, "      sandfleet_policy: {linux_backends: [bwrap, landlock]}\n") == "bwrap"
        assert self.backend(tmp_path, "      sandfleet_policy: {linux_backends: [bwrap, landlock], hints: true}\n") \
            == "landlock"


# -- the host owner's own policy ------------------------------------------------------------------


def converse(lines: list[str]) -> list[dict[str, Any]]:
    out = io.StringIO()
    agent.serve(io.StringIO("".join(line + "\n" for line in lines)), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


class TestTheHostOwnersPolicy:
    WIDE = Effective((complete(Policy("inventory sandfleet_policy", filesystem=((":root", Access.WRITE),),
                                      network=NetworkMode.FULL, unsandboxed=True)),))

    def requests(self, tmp_path: Path) -> list[str]:
        init = json.dumps({"v": 1, "init": {"workspace_roots": [str(tmp_path)]}})
        bare = wire.encode_request(wire.ExecRequest(id="bare", argv=("true",), sandbox=None, policy=self.WIDE))
        # a raw line, as a hostile controller would send it: it claims the widest operator policy
        raw = json.dumps({"v": 1, "id": "raw", "argv": ["true"], "sandbox": None,
                          "policy": [{"source": "anything", "policy": {"unsandboxed": True}}]})
        return [init, bare, raw]

    def test_a_host_file_narrows_what_the_operator_allowed(self, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        assert [r["status"] for r in converse(self.requests(tmp_path))[1:]] == ["ok", "ok"]
        host_file = tmp_path / "policy.yml"
        host_file.write_text("unsandboxed: false\n")
        monkeypatch.setattr(policy, "HOST_FILES", (str(host_file),))
        replies = converse(self.requests(tmp_path))[1:]
        assert [r["status"] for r in replies] == ["denied", "denied"]
        assert str(host_file) in replies[0]["message"] and "no controller can raise it" in replies[0]["message"]
        assert replies[0]["policy_sources"] == ["inventory sandfleet_policy", str(host_file)]

    def test_a_broken_host_file_refuses_everything(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        host_file = tmp_path / "policy.yml"
        host_file.write_text("network:\n  max: all\n")
        monkeypatch.setattr(policy, "HOST_FILES", (str(host_file),))
        replies = converse(self.requests(tmp_path))[1:]
        assert {r["status"] for r in replies} == {"denied"}
        assert f"{host_file}:2:8" in replies[0]["message"] and "invalid" in replies[0]["message"]

    def test_an_oversized_request_is_denied_by_the_host(self, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        host_file = tmp_path / "policy.yml"
        host_file.write_text("limits: {request_bytes: 2000}\n")
        monkeypatch.setattr(policy, "HOST_FILES", (str(host_file),))
        big = wire.encode_request(wire.ExecRequest(id="big", argv=("echo", "z" * 5000), sandbox=None,
                                                   policy=self.WIDE))
        (reply,) = converse([self.requests(tmp_path)[0], big])[1:]
        assert reply["status"] == "denied" and "limits.request_bytes 2000" in reply["message"]

    def test_the_agent_users_own_file_narrows_too(self, tmp_path: Path) -> None:
        """``~/.config/sandfleet/policy.yml`` of the agent's user, found through its home."""
        home = tmp_path / "home"
        (home / ".config" / "sandfleet").mkdir(parents=True)
        (home / ".config" / "sandfleet" / "policy.yml").write_text("linux_backends: [landlock]\n")
        layers = policy.read_host_layers(str(home), files=policy.HOST_FILES)
        assert [layer.source for layer in layers] == [str(home / ".config" / "sandfleet" / "policy.yml")]
        assert Effective((DEFAULT, *layers)).linux_backends == ()
        assert os.path.basename(policy.HOST_FILES[0]) == "policy.yml"


class TestTheBundledDemo:
    FILES = [str(ROOT / "playbooks" / "policy-demo.yml"), "-i", str(ROOT / "inventory" / "operator-policy.yml")]

    def test_check_names_the_refusal_before_anything_runs(self) -> None:
        proc = sandfleet("check", *self.FILES)
        assert proc.returncode == 16, proc.stdout + proc.stderr
        assert "denied: [localhost] refused on purpose - asks for the whole network" in proc.stdout
        assert "(the policy refuses 1 task(s))" in proc.stdout

    def test_the_run_refuses_on_purpose_and_says_how_to_raise_it(self) -> None:
        need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
        proc = sandfleet("run", *self.FILES, "--format", "json")
        ran = results(proc)
        assert proc.returncode == 16 and [r["status"] for r in ran] == ["ok", "denied"], proc.stdout
        assert "network ceiling none (set by inventory sandfleet_policy" in ran[1]["message"]
        assert not Path("/tmp/written-by-an-untrusted-playbook").exists()
