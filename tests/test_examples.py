"""Every job in examples/ passes ``sandfleet check`` and dry-runs; and ``sandfleet completion``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.ci import need

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: example: (inventory, exit code: 16 where the example shows a policy refusing a task)
CASES = {"test-suite": ("inventory.yml", 0), "agent-command": ("inventory.yml", 0),
         "mixed-os": ("inventory.yml", 0), "group-policy": ("inventory", 16),
         "k8s-indexed-job": ("inventory.yml", 0), "github-actions": ("inventory.yml", 0)}  # + tests/test_slicing.py


def sandfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandfleet", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_every_example_is_tested_and_listed() -> None:
    assert {p.name for p in EXAMPLES.iterdir() if p.is_dir()} == set(CASES)
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}/`" in readme for name in CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_check(name: str) -> None:
    inventory, code = CASES[name]
    proc = sandfleet("check", f"examples/{name}/playbook.yml", "-i", f"examples/{name}/{inventory}")
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_dry_run(name: str) -> None:
    inventory, code = CASES[name]
    proc = sandfleet("run", f"examples/{name}/playbook.yml", "-i", f"examples/{name}/{inventory}", "--dry-run",
                     "--format", "json")
    assert proc.returncode == code, proc.stderr
    results = [e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "task_result"]
    assert results and all(r["dry_run"] for r in results)
    assert {r["status"] for r in results} <= {"ok", "skipped", "denied"}


def test_agent_command_reaches_only_its_allowlist() -> None:
    proc = sandfleet("run", "examples/agent-command/playbook.yml", "-i", "examples/agent-command/inventory.yml",
                     "--dry-run", "--format", "json")
    install = next(e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "task_result")
    assert install["request"]["sandbox"]["network"]["mode"] == "managed"
    assert install["request"]["sandbox"]["network"]["allow"] == ["pypi.org", "*.pythonhosted.org"]


def test_mixed_os_renders_each_hosts_wrapper() -> None:
    proc = sandfleet("run", "examples/mixed-os/playbook.yml", "-i", "examples/mixed-os/inventory.yml", "--dry-run",
                     "--format", "json")
    ran = {e["host"]: e["os"] for e in map(json.loads, proc.stdout.splitlines())
           if e["event"] == "task_result" and e["status"] == "ok"}
    assert ran == {"lin1": "linux", "mac1": "macos", "win1": "windows"}


# -- sandfleet completion ---------------------------------------------------------------------

def test_bash_can_source_the_completion() -> None:
    proc = subprocess.run(["bash", "-c", f"source <({sys.executable} -m sandfleet completion bash); "
                                         "complete -p sandfleet"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "-F _sandfleet" in proc.stdout and "sandfleet" in proc.stdout


def _complete(words: str) -> list[str]:
    script = sandfleet("completion", "bash").stdout
    words_list = ["sandfleet", *words.split(" ")]
    code = (f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words_list)}); COMP_CWORD={len(words_list) - 1}; "
            "_sandfleet; printf '%s\\n' \"${COMPREPLY[@]}\"")
    proc = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_completion_comes_from_the_parser() -> None:
    from sandfleet.cli import completion_script

    assert "completion" in _complete("co") and "config" in _complete("co")
    assert _complete("run --format ") == ["text", "json"]
    assert "--results-dir" in _complete("run --res")
    assert "--network" in _complete("exec all --net")
    assert completion_script("bash") in sandfleet("completion", "bash").stdout
    assert "doctor" in _complete("") and "facts" in _complete("")


def test_zsh_can_source_the_completion() -> None:
    need(shutil.which("zsh") is not None, "zsh is missing (apt-get install zsh)")
    proc = subprocess.run(["zsh", "-c", f"autoload -U compinit && compinit -u; "
                                        f"source <({sys.executable} -m sandfleet completion zsh)"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_zsh_script_wraps_the_bash_one() -> None:
    zsh = sandfleet("completion", "zsh").stdout
    assert zsh.startswith("#compdef sandfleet\n") and "bashcompinit" in zsh
    assert "complete -o default -F _sandfleet sandfleet" in zsh
