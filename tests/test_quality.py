"""The repository's own standards, checked as tests so README's one test command covers them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import need

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    need(shutil.which("ruff") is not None, "ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run(["ruff", "check", "sandfleet", "modules", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    """mypy cannot follow the editable install's `modules/` → `sandfleet.modules` mapping, so it
    checks a tree of symlinks laid out as installed."""
    need(shutil.which("mypy") is not None, "mypy is not installed (pip install -e '.[test]')")
    pkg = tmp_path / "sandfleet"
    pkg.mkdir()
    for entry in (ROOT / "sandfleet").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "modules").symlink_to(ROOT / "modules")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "cache"), "-p", "sandfleet"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    assert test_command in ci.splitlines()
