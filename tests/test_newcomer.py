"""Issue 19, "what a newcomer tripped over": each trap fixed or explained, and pinned here.

1. a ``:symbol`` in argv is literal text: the loader warns at that item, saying where symbols are
   bound and how to get the path into argv;
2. a dry-run does not guess registered results: a task reading one "depends on a result";
3. the example's "denied on purpose" tasks fail for the sandbox's reason on any machine;
4. a backend's warning is shown once per host in the text output (JSON keeps every one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandfleet.load.playbook import load_playbook
from sandfleet_agent.binding.facts import HostFacts
from support import eventschema
from support.ci import need

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = [str(ROOT / "playbooks" / "example.yml"), "-i", str(ROOT / "inventory" / "localhost.yml")]


def sandfleet(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandfleet", *args], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1"}, cwd=cwd, timeout=120)


def results(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [e for e in eventschema.parse(proc.stdout) if e["event"] == "task_result"]


def local_inventory(tmp_path: Path) -> Path:
    (tmp_path / "ws").mkdir(exist_ok=True)
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      sandfleet_os: linux\n"
                         f"      sandfleet_workspace_roots: [{tmp_path / 'ws'}]\n")
    return inventory


# --- 1. symbols in argv -------------------------------------------------------------------------


def test_a_symbol_in_argv_is_warned_at_its_item(tmp_path: Path) -> None:
    pb = tmp_path / "pb.yml"
    pb.write_text("- hosts: all\n  tasks:\n"
                  "    - exec:\n"
                  "        argv: [pip, download, -d, \":workspace_roots\", requests]\n"
                  "        cwd: \":workspace_roots\"\n"
                  "    - exec: {argv: [ls, \":tmpdir/x\", \":not_a_symbol\", \"host:8080\", \"::1\"]}\n")
    warnings = load_playbook(str(pb)).warnings
    assert len(warnings) == 2, warnings  # not cwd, not an unknown name, not host:port or an IPv6 address
    first, second = warnings
    text = str(first)
    assert text.startswith(f"{pb}:4:35: warning: argv item ':workspace_roots'")
    assert "only in cwd and in the sandbox's filesystem keys" in text
    assert "{{ sandfleet_facts.workspace_roots[0] }}" in text
    assert second.mark.line == 6 and "':tmpdir/x'" in str(second) and "TMPDIR" in str(second)


def test_the_suggested_facts_keys_exist() -> None:
    facts = HostFacts(os="linux", home="/home/u", tmpdir="/tmp", workspace_roots=("/srv/ws",)).to_dict()
    assert facts["workspace_roots"][0] == "/srv/ws" and facts["home"] == "/home/u"


def test_the_warning_reaches_the_command_line_and_the_docs_say_where_symbols_bind(tmp_path: Path) -> None:
    pb = tmp_path / "pb.yml"
    pb.write_text("- hosts: all\n  tasks:\n    - exec: {argv: [mkdir, \":workspace_roots\"]}\n")
    proc = sandfleet("run", str(pb), "-i", str(local_inventory(tmp_path)), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"{pb}:3:28: warning: argv item ':workspace_roots'" in proc.stderr
    sandbox_doc = (ROOT / "docs" / "sandbox.md").read_text()
    assert "### Where symbols are bound" in sandbox_doc and "sandfleet_facts.workspace_roots[0]" in sandbox_doc


# --- 2. a dry-run does not guess results --------------------------------------------------------

DEPENDENT = """\
- hosts: all
  vars:
    last: "{{ r.stdout_lines[-1] }}"
  tasks:
    - name: list
      exec: {argv: [ls, /]}
      register: r
    - name: when
      exec: {argv: [echo, a]}
      when: r.rc == 0
    - name: loop
      exec: {argv: [echo, "{{ item }}"]}
      loop: "{{ r.stdout_lines }}"
    - name: argv
      exec: {argv: [echo, "{{ r.stdout_lines[-1] }}"]}
      register: r2
    - name: through a variable
      exec: {argv: [echo, "{{ last }}"]}
    - name: through a dependent task
      exec: {argv: [echo], env: {OUT: "{{ r2.stdout }}"}}
    - name: independent
      exec: {argv: [echo, ok]}
      when: greeting is not defined
"""


def test_a_dry_run_shows_tasks_reading_a_result_as_depending_on_it(tmp_path: Path) -> None:
    pb = tmp_path / "pb.yml"
    pb.write_text(DEPENDENT)
    inventory = local_inventory(tmp_path)
    proc = sandfleet("run", str(pb), "-i", str(inventory), "--dry-run", "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = results(proc)  # each validated against docs/events.schema.json
    assert [e["task"] for e in events] == ["list", "when", "loop", "argv", "through a variable",
                                           "through a dependent task", "independent"]
    assert [e["status"] for e in events] == ["ok", *["skipped"] * 5, "ok"]
    depends = [e["message"] for e in events[1:6]]
    assert all(m.startswith("depends on a result: ") for m in depends), depends
    assert "when reads 'r' (registered by 'list')" in depends[0]
    assert "loop reads 'r'" in depends[1] and "argv reads 'r'" in depends[2] and "argv reads 'r'" in depends[3]
    assert "env reads 'r2' (registered by 'argv')" in depends[4]
    assert all(e["rc"] is None and not e.get("wrapper") for e in events[1:6])

    text = sandfleet("run", str(pb), "-i", str(inventory), "--dry-run")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "localhost [linux] when: depends on a result: when reads 'r'" in text.stdout
    assert "skipped (when is false)" not in text.stdout and "PLAY ABORTED" not in text.stdout
    assert "rendered=2 refused=0 denied=0 skipped=0 depends_on_a_result=5" in text.stdout


def test_a_real_run_uses_the_results(tmp_path: Path) -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    pb = tmp_path / "pb.yml"
    pb.write_text(DEPENDENT)
    proc = sandfleet("run", str(pb), "-i", str(local_inventory(tmp_path)), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = results(proc)
    assert not any("depends on a result" in (e.get("message") or "") for e in events)
    assert {e["task"] for e in events if e["status"] == "ok"} >= {"when", "loop", "argv", "independent"}


# --- 3. the example's denials are the sandbox's -------------------------------------------------


def test_the_examples_denials_fail_for_the_sandboxs_reason() -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    secret = ROOT / "demo-workspace" / "secret" / "demo-token.txt"
    secret.unlink(missing_ok=True)
    proc = sandfleet("run", *EXAMPLE, "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = results(proc)
    assert [e["status"] for e in events] == ["ok", "ok", "ok", "failed", "failed", "failed"]
    # the secret exists and was readable in the default sandbox: the control for the deny rule
    assert secret.read_text() == "not-a-real-token"
    network, deny = events[4], events[5]
    assert network["request"]["sandbox"]["network"]["mode"] == "none"
    assert "control: a socketpair inside the task works: ok" in network["stderr"]
    assert "PermissionError: [Errno 1] Operation not permitted" in network["stderr"]  # seccomp, not "refused"
    assert deny["stderr"].strip() == "cat: secret/demo-token.txt: Permission denied"  # not "No such file"
    permissions = deny["request"]["sandbox"]["permissions"]
    assert {"path": {"special": "workspace_roots", "subpath": "secret"}, "access": "deny"} in permissions


# --- 4. each warning once per host --------------------------------------------------------------


def test_a_warning_is_shown_once_per_host_in_text_and_kept_in_json() -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    text = sandfleet("run", *EXAMPLE)
    assert text.returncode == 0, text.stdout + text.stderr
    warned = [ln for ln in text.stdout.splitlines() if "[WARNING]" in ln]
    assert len(warned) == len(set(warned)) >= 1, text.stdout
    dry = sandfleet("run", *EXAMPLE, "--dry-run")
    dry_warned = [ln for ln in dry.stdout.splitlines() if ln.startswith("    warning: ")]
    assert len(dry_warned) == len(set(dry_warned)) >= 1, dry.stdout
    events = results(sandfleet("run", *EXAMPLE, "--format", "json"))
    with_warnings = [e for e in events if e["warnings"]]
    assert len(with_warnings) > 1 and len({json.dumps(e["warnings"]) for e in with_warnings}) >= 1


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_text_still_shows_every_warning(verbose: bool) -> None:
    need(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    proc = sandfleet("run", *EXAMPLE, *(["-v"] if verbose else []))
    count = sum("[WARNING]" in ln for ln in proc.stdout.splitlines())
    jsonl = results(sandfleet("run", *EXAMPLE, "--format", "json"))
    expected = sum(len(e["warnings"]) for e in jsonl) if verbose else len({w for e in jsonl for w in e["warnings"]})
    assert count == expected, proc.stdout
