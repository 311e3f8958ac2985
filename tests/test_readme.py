"""The README's two set-up commands are the ones CI and users run: they must not drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    """The ``sh`` code blocks of the README's Set-up section, in order."""
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", setup, re.S)]


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    _, test = _commands()
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ci_lines[-1] == test
    assert "pytest" in test and "'.[test]'" in test


def test_the_default_job_is_the_bundled_example_on_the_local_inventory() -> None:
    run, _ = _commands()
    assert run.endswith("sandfleet run playbooks/example.yml -i inventory/localhost.yml")
    assert (ROOT / "playbooks" / "example.yml").is_file() and (ROOT / "inventory" / "localhost.yml").is_file()
    assert "ansible_connection: local" in (ROOT / "inventory" / "localhost.yml").read_text()


def test_the_python_example_runs_as_shown() -> None:
    """The README's "From Python" block, run from the repository as it says."""
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1:5] == ["hello from the sandbox", "['true'] 0", "['false'] 2", "denied 16"], lines
    assert lines[5].startswith("Sandbox(...): unknown network 'sometimes'")
