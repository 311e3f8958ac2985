"""Helpers for the inventory tests: write real files under a temporary folder and load them."""

from __future__ import annotations

from pathlib import Path

from sandfleet.inventory import Inventory, load_inventory


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root`` and return ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def inventory_from(root: Path, files: dict[str, str], *sources: str) -> Inventory:
    """Write files and load the named ones, in order, as -i sources (default: the top-level files)."""
    write_files(root, files)
    names = sources or tuple(f for f in files if "/" not in f)
    return load_inventory([str(root / s) for s in names])
