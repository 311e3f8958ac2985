"""docs/api.md is generated from the public API's docstrings; it must be what the code says now."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_api_reference_is_current() -> None:
    render = runpy.run_path(str(ROOT / "docs" / "apidoc.py"))["render"]
    assert (ROOT / "docs" / "api.md").read_text() == render(), "run: python docs/apidoc.py"


def test_every_public_name_has_a_section() -> None:
    import sandfleet

    text = (ROOT / "docs" / "api.md").read_text()
    assert all(f"## `{name}" in text for name in sandfleet.__all__ if name != "__version__")
