"""The repository's own standards, checked as tests so README's one test command covers them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "\n(ruff and mypy come with the test extra: pip install -e '.[test]')"


def test_ruff_is_clean() -> None:
    """Run through this interpreter (the test extra installs ruff into it), so a ruff missing from
    PATH fails instead of skipping."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "sandfleet", "modules", "tests", "bench", "docs"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + INSTALL_HINT


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    """Both packages as they are laid out, controller and host side (mypy_path finds
    ``modules/sandfleet_agent``). Run through this interpreter, like ruff."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "cache"), "-p", "sandfleet", "-p", "sandfleet_agent"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + INSTALL_HINT
