"""The issue's end-to-end case: 40 real sshd hosts (and one that refuses connections) run as 4
slices, 4 separate ``sandfleet run`` processes at once, each told only what a Kubernetes Indexed
Job tells its pods (``JOB_COMPLETION_INDEX``, with ``--slice auto/4``). Every host runs exactly
once, and ``sandfleet merge`` gives what one unsliced run over the same hosts gives: the JSON
events, the JUnit file and the exit code, but for timings (docs/slicing.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_merge import by_host, junit_shape

from sandfleet.run.slicing import ENGINES
from support import eventschema
from support.sshd import USER, Fleet, running

ROOT = Path(__file__).resolve().parent.parent
HOSTS, N = 40, 4
FAILING = "h07"
PLAYBOOK = f"""\
- name: slices
  hosts: all
  sandbox: false
  tasks:
    - name: mark
      exec: {{argv: [sh, -c, 'echo "$RUN" >> ran'], cwd: ":workspace_roots", env: {{RUN: "{{{{ run }}}}"}}}}
    - name: who
      exec: {{argv: [echo, "{{{{ inventory_hostname }}}}"]}}
    - name: maybe fail
      exec: {{argv: [sh, -c, "exit {{{{ 3 if inventory_hostname == '{FAILING}' else 0 }}}}"]}}
"""


@pytest.fixture(scope="module")
def sshd() -> Iterator[Fleet]:
    with running(HOSTS) as fleet:
        yield fleet


@dataclass
class Controller:
    base: Path
    inventory: Path
    playbook: Path
    ssh_config: Path

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "sandfleet", "run", str(self.playbook), "-i", str(self.inventory),
                "--ssh-config", str(self.ssh_config), "--allow-unsandboxed", *extra]


def engine_env(**values: str) -> dict[str, str]:
    """This environment with no job engine's variables but ``values``: only what the engine sets."""
    names = {v for e in ENGINES for v in (e.index_var, e.count_var) if v}
    return {**{k: v for k, v in os.environ.items() if k not in names and not k.startswith("SANDFLEET_")},
            **values}


@pytest.fixture(scope="module")
def ctl(sshd: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Controller:
    base = tmp_path_factory.mktemp("slices")
    known = sshd.known_hosts(base / "known_hosts", sshd.hosts)
    ssh_config = sshd.ssh_config(base / "ssh_config", known)
    inventory = sshd.inventory(base / "inv.yml", sshd.hosts)
    address, port = sshd.dead_address()
    with inventory.open("a") as f:
        f.write(f"    dead:\n      ansible_host: {address}\n      ansible_port: {port}\n"
                f"      ansible_user: {USER}\n      sandfleet_os: linux\n")
    playbook = base / "pb.yml"
    playbook.write_text(PLAYBOOK)
    return Controller(base, inventory, playbook, ssh_config)


def marks(fleet: Fleet) -> dict[str, str]:
    return {h.name: (h.workspace / "ran").read_text() if (h.workspace / "ran").exists() else "" for h in fleet.hosts}


def test_four_slices_at_once_merge_to_the_unsliced_run(sshd: Fleet, ctl: Controller) -> None:
    for h in sshd.hosts:
        (h.workspace / "ran").unlink(missing_ok=True)
    # The 4 slices, as 4 pods of an Indexed Job: at once, each with its index and nothing else.
    dirs = [ctl.base / f"index-{i}" for i in range(N)]
    procs = [subprocess.Popen(ctl.argv("--slice", f"auto/{N}", "--results-dir", str(d), "-e", "run=sliced"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=engine_env(JOB_COMPLETION_INDEX=str(i)))
             for i, d in enumerate(dirs)]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    sizes = []
    for i, (code, out, err) in enumerate(outcomes):
        assert code in (0, 2, 4, 6), out + err
        assert f"slice {i + 1}/{N} (Kubernetes Indexed Job: JOB_COMPLETION_INDEX={i})" in err, err
        sizes.append(len(json.loads((dirs[i] / "@run.json").read_text())["assigned"]))
    assert sorted(sizes) == [10, 10, 10, 11]  # 41 hosts: balanced within one
    # Every host ran exactly once, in exactly one of the processes.
    assert marks(sshd) == {h.name: "sliced\n" for h in sshd.hosts}

    merged = subprocess.run([sys.executable, "-m", "sandfleet", "merge", *map(str, dirs), "--format", "json",
                             "--junit", str(ctl.base / "merged.xml")], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    single = subprocess.run(ctl.argv("--format", "json", "--junit", str(ctl.base / "single.xml"), "-e", "run=single"),
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert marks(sshd) == {h.name: "sliced\nsingle\n" for h in sshd.hosts}

    # The exit code: h07 failed (2), dead unreachable (4), whichever slices they fell in.
    assert single.returncode == merged.returncode == 6, merged.stderr + single.stderr
    ours, theirs = eventschema.parse(merged.stdout), eventschema.parse(single.stdout)
    assert ours[-1] == theirs[-1] and list(ours[-1]["hosts"]) == [h.name for h in sshd.hosts] + ["dead"]
    assert [e for e in ours if e["event"] == "play_start"] == [e for e in theirs if e["event"] == "play_start"]
    assert by_host(ours) == by_host(theirs) and len(by_host(ours)) == HOSTS
    unreachable: list[dict[str, Any]] = [e for e in theirs if e["event"] == "host_unreachable"]
    assert [e for e in ours if e["event"] == "host_unreachable"] == unreachable and len(unreachable) == 1
    assert junit_shape(ctl.base / "merged.xml") == junit_shape(ctl.base / "single.xml")
    # The failed host shows in the merge, where CI reads it.
    [failure] = [c for c in ET.parse(ctl.base / "merged.xml").iter("testcase") if c.find("failure") is not None]
    assert (failure.get("classname"), failure.get("name")) == (FAILING, "maybe fail")
    assert ours[-1]["hosts"][FAILING]["failed"] == 1 and ours[-1]["hosts"]["dead"]["unreachable"] == 1

    # A slice whose results are missing fails the merge, naming it.
    lost = subprocess.run([sys.executable, "-m", "sandfleet", "merge", *map(str, dirs[:2] + dirs[3:])],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert lost.returncode == 65 and f"slice 3/{N} is missing" in lost.stderr, lost.stderr
