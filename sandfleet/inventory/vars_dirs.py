"""``group_vars/`` and ``host_vars/`` next to each inventory source, found as Ansible finds them.

For a group or host ``NAME`` the first of ``NAME`` (a file, or a directory whose files merge in
sorted order, recursively), ``NAME.yml``, ``NAME.yaml``, ``NAME.json`` that exists is used; the
others are ignored, as in Ansible. Inside a directory only files with no extension or one of the
YAML extensions count, and hidden files and ``~`` backups are skipped. Files are read only for
groups and hosts that exist, and each file once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from sandfleet.errors import InputError
from sandfleet.inventory.model import VarSetting
from sandfleet.load.yamlsrc import YMap, load_yaml_file

VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")


class VarsDirs:
    """The vars directories of every inventory source, in source order (later sources win)."""

    def __init__(self, bases: Sequence[Path]) -> None:
        self._bases = tuple(bases)
        self._found: dict[tuple[Path, str], list[Path]] = {}
        self._files: dict[Path, dict[str, VarSetting]] = {}

    def collect(self, kind: str, names: Iterable[str]) -> dict[str, VarSetting]:
        """Merge ``kind`` (``group_vars``/``host_vars``) files for ``names``: sources outer, names inner.

        That nesting is Ansible's: a later source's file for a parent group beats an earlier
        source's file for a child group.
        """
        names = tuple(names)
        merged: dict[str, VarSetting] = {}
        for base in self._bases:
            for name in names:
                key = (base / kind, name)
                if key not in self._found:
                    self._found[key] = find_vars_files(base / kind, name)
                for path in self._found[key]:
                    merged.update(self._load(path))
        return merged

    def _load(self, path: Path) -> dict[str, VarSetting]:
        if path not in self._files:
            self._files[path] = load_vars_file(path)
        return self._files[path]


def find_vars_files(directory: Path, name: str) -> list[Path]:
    if not name or name.startswith(os.sep) or not directory.is_dir():
        return []
    for ext in VARS_EXTENSIONS:
        candidate = directory / f"{name}{ext}"
        if candidate.is_dir():
            return _files_in(candidate)
        if candidate.exists():
            return [candidate]
    return []


def _files_in(directory: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        path = directory / entry
        ext = os.path.splitext(entry)[1]
        if path.is_dir() and not ext:
            found.extend(_files_in(path))
        elif path.is_file() and ext in VARS_EXTENSIONS:
            found.append(path)
    return found


def load_vars_file(path: Path) -> dict[str, VarSetting]:
    data = load_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, YMap):
        raise InputError("a vars file must be a mapping of variable names to values",
                         getattr(data, "mark", None), file=str(path))
    out: dict[str, VarSetting] = {}
    for key in data:
        if not isinstance(key, str) or not key:
            raise InputError(f"a variable name must be a non-empty string, got {key!r}", data.key_mark(key))
        out[key] = VarSetting(data[key], data.value_mark(key))
    return out
