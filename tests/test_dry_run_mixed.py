"""One playbook, a mixed fleet, ``--dry-run``: each host gets its own OS's sandbox, bound to its
own roots (bwrap on Linux, Seatbelt on macOS, the AppContainer launcher on Windows), and a root
of one OS's spelling given to a host of another is refused clearly, never reinterpreted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from support import eventschema

ROOT = Path(__file__).resolve().parent.parent

INVENTORY = """\
all:
  children:
    linux:
      hosts:
        lin1: {ansible_host: 192.0.2.10, sandfleet_os: linux, sandfleet_workspace_roots: [/srv/ws]}
    macs:
      hosts:
        mac1: {ansible_host: 192.0.2.11, sandfleet_os: macos, sandfleet_workspace_roots: [/Users/dev/ws]}
    windows:
      hosts:
        win1: {ansible_host: 192.0.2.12, sandfleet_os: windows, sandfleet_workspace_roots: ['C:\\\\work\\\\ws']}
"""

PLAYBOOK = """\
- name: the same tasks everywhere
  hosts: all
  tasks:
    - name: test in the workspace
      exec: {argv: [python3, -m, pytest, -q], cwd: ":workspace_roots"}
    - name: read a Windows data directory
      exec: {argv: [python3, -c, "print(1)"]}
      sandbox:
        filesystem:
          ":root": read
          'C:\\data': read
"""


def dry_run(tmp_path: Path, inventory: str = INVENTORY, fmt: str = "json") -> subprocess.CompletedProcess[str]:
    (tmp_path / "inv.yml").write_text(inventory)
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    return subprocess.run([sys.executable, "-m", "sandfleet", "run", str(tmp_path / "pb.yml"), "-i",
                           str(tmp_path / "inv.yml"), "--dry-run", "--format", fmt],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ})


def by_host(proc: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for event in eventschema.parse(proc.stdout):
        if event["event"] == "task_result":
            out[(event["host"], event["task"])] = event
    return out


def test_each_host_gets_its_own_wrapper_and_a_windows_root_is_refused_elsewhere(tmp_path: Path) -> None:
    proc = dry_run(tmp_path)
    assert proc.returncode == 8, proc.stderr  # a sandbox could not be provided somewhere
    events = by_host(proc)
    work = "test in the workspace"

    lin = events[("lin1", work)]
    assert (lin["os"], lin["backend"]) == ("linux", "bwrap")
    assert "/srv/ws" in lin["wrapper"]

    mac = events[("mac1", work)]
    assert (mac["os"], mac["backend"]) == ("macos", "seatbelt")
    argv = mac["wrapper"]
    assert argv[:2] == ["/usr/bin/sandbox-exec", "-p"]
    assert argv[argv.index("--") + 1:] == ["python3", "-m", "pytest", "-q"]
    assert "-DWRITABLE_ROOT_1=/Users/dev/ws" in argv and "-DWRITABLE_ROOT_0=/private/tmp" in argv
    assert '(subpath (param "WRITABLE_ROOT_1"))' in mac["wrapper_files"]["seatbelt.sb"]
    outside_regexes = re.sub(r'\(regex "(?:[^"\\]|\\.)*"\)', "", argv[2])
    assert "/Users/dev" not in outside_regexes, "paths reach the profile as parameters (or escaped, in a regex)"

    win = events[("win1", work)]
    assert (win["os"], win["backend"]) == ("windows", "windows")
    assert win["wrapper"][0].endswith("\\powershell.exe")
    policy = win["wrapper_files"]["policy.xml"]
    assert '<path name="C:\\work\\ws" access="write"/>' in policy
    assert '<path name="C:\\work\\ws\\.git" access="read-only" create="dir"/>' in policy

    for host in ("lin1", "mac1", "win1"):  # the request is the same portable intent everywhere
        assert events[(host, work)]["request"]["sandbox"] == lin["request"]["sandbox"]

    data = "read a Windows data directory"
    for host, system in (("lin1", "linux"), ("mac1", "macos")):
        refused = events[(host, data)]
        assert refused["status"] == "sandbox_unavailable" and refused["wrapper"] == [] and refused["backend"] is None
        assert f"'file:///C:/data' is invalid on '{system}'" in refused["message"]
    assert '<path name="C:\\data" access="read"/>' in events[("win1", data)]["wrapper_files"]["policy.xml"]


def test_the_text_dry_run_shows_every_hosts_wrapper(tmp_path: Path) -> None:
    proc = dry_run(tmp_path, fmt="text")
    assert proc.returncode == 8, proc.stderr
    text = proc.stdout
    assert "lin1 [linux] test in the workspace: backend bwrap" in text
    assert "mac1 [macos] test in the workspace: backend seatbelt" in text
    assert "win1 [windows] test in the workspace: backend windows" in text
    assert "lin1 [linux] read a Windows data directory: sandbox_unavailable: sandbox intent cannot be bound " \
           "on this host: 'file:///C:/data' is invalid on 'linux': C:\\data is a Windows path and this host " \
           "runs linux; give this host a path in its own spelling" in text
    # A profile or launcher passed as one argv word is shown once, as the file below the command.
    assert "    $ /usr/bin/sandbox-exec -p \"$(cat seatbelt.sb)\" -DREADABLE_ROOT_0=/ " in text
    # every task's policy denies credentials and the agent's own state (its code cache among it)
    assert "-DREADABLE_ROOT_0_EXCLUDED_9=/Users/user/.ssh -DREADABLE_ROOT_0_EXCLUDED_10=/Users/user/.cache/sandfleet " \
        "-DREADABLE_ROOT_0_EXCLUDED_11=/Users/user/.config/gcloud -DWRITABLE_ROOT_0=/private/tmp " in text
    assert "-NonInteractive -Command \"$(cat launcher.ps1)\"\n    --- policy.xml\n" in text
    assert text.count("(deny default)") == 1 and text.count("Add-Type -TypeDefinition") == 2  # 2 Windows tasks


def test_a_windows_workspace_root_on_a_linux_host_is_refused_before_anything_runs(tmp_path: Path) -> None:
    inventory = INVENTORY.replace("sandfleet_workspace_roots: [/srv/ws]", "sandfleet_workspace_roots: ['C:\\\\srv']")
    proc = dry_run(tmp_path, inventory)
    assert proc.returncode == 65 and proc.stdout == ""
    assert "is a Windows path, but sandfleet_os is linux" in proc.stderr
    assert f"{tmp_path / 'inv.yml'}:5:" in proc.stderr and "Traceback" not in proc.stderr


def test_hosts_described_differently_get_their_own_wrappers_in_inventory_order(tmp_path: Path) -> None:
    """The dry-run reuses a rendering for hosts the inventory describes alike; a host with other
    roots, another user or another pin must still get its own, and the output is in inventory
    order (one worker), the same on every run."""
    inventory = """\
all:
  hosts:
    a1: {ansible_host: 192.0.2.1, sandfleet_os: linux, sandfleet_workspace_roots: [/srv/one]}
    a2: {ansible_host: 192.0.2.2, sandfleet_os: linux, sandfleet_workspace_roots: [/srv/one]}
    b1: {ansible_host: 192.0.2.3, sandfleet_os: linux, sandfleet_workspace_roots: [/srv/two]}
    c1: {ansible_host: 192.0.2.4, sandfleet_os: linux, sandfleet_workspace_roots: [/srv/one],
         sandfleet_sandbox: landlock}
    a3: {ansible_host: 192.0.2.5, sandfleet_os: linux, sandfleet_workspace_roots: [/srv/one]}
"""
    proc = dry_run(tmp_path, inventory)
    events = eventschema.parse(proc.stdout)
    tasks = [e for e in events if e.get("task") == "test in the workspace"]
    assert [e["host"] for e in tasks] == ["a1", "a2", "b1", "c1", "a3"]
    argv = {e["host"]: e["wrapper"] for e in tasks}
    assert argv["a1"] == argv["a2"] == argv["a3"]
    assert "/srv/one" in argv["a1"] and "/srv/two" not in argv["a1"]
    assert "/srv/two" in argv["b1"] and "/srv/one" not in argv["b1"]
    assert tasks[3]["backend"] == "landlock" and {tasks[i]["backend"] for i in (0, 1, 2, 4)} == {"bwrap"}
    assert [e["request"]["id"] for e in tasks] == [f"p1/t1/{h}" for h in ("a1", "a2", "b1", "c1", "a3")]
