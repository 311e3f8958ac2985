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
from typing import Callable, Optional

from sandfleet.errors import InputError
from sandfleet.inventory.model import VarSetting
from sandfleet.load.yamlsrc import YMap, load_yaml_file

VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")


class VarsDirs:
    """The vars directories of every inventory source, in source order (later sources win).

    ``check(name)`` says why a file may not set a variable, if it may not, and ``confined``
    refuses a file that is not a regular file inside its base folder (a symlink out of it, a FIFO):
    the playbook's own folder is the playbook author's, who must neither set what only the
    operator decides nor have the controller read the operator's files (``~/.kube/config`` is
    YAML) into variables a template can print (``Inventory.beside_playbook``)."""

    def __init__(self, bases: Sequence[Path], check: Optional[Callable[[str], Optional[str]]] = None,
                 confined: bool = False) -> None:
        self._bases = tuple(bases)
        self._check = check
        self._confined = confined
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
                    if self._confined:
                        for path in self._found[key]:
                            _inside(path, base)
                for path in self._found[key]:
                    merged.update(self._load(path))
        return merged

    @property
    def bases(self) -> tuple[Path, ...]:
        return self._bases

    def _load(self, path: Path) -> dict[str, VarSetting]:
        if path not in self._files:
            self._files[path] = load_vars_file(path, self._check)
        return self._files[path]


def _inside(path: Path, base: Path) -> None:
    real, root = os.path.realpath(path), os.path.realpath(base)
    if os.path.commonpath([real, root]) != root:
        raise InputError(f"refused: it resolves to {real}, outside the playbook's folder {root}; a vars file beside "
                         "a playbook must be a file inside that folder", file=str(path))
    if not os.path.isfile(real):
        raise InputError("refused: not a regular file (a vars file beside a playbook must be one)", file=str(path))


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


def _files_in(directory: Path, seen: Optional[set[str]] = None) -> list[Path]:
    seen = set() if seen is None else seen
    real = os.path.realpath(directory)
    if real in seen:
        return []  # a symlink back up the tree: each directory once, never a loop
    seen.add(real)
    found: list[Path] = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        path = directory / entry
        ext = os.path.splitext(entry)[1]
        if path.is_dir() and not ext:
            found.extend(_files_in(path, seen))
        elif path.is_file() and ext in VARS_EXTENSIONS:
            found.append(path)
    return found


def load_vars_file(path: Path, check: Optional[Callable[[str], Optional[str]]] = None) -> dict[str, VarSetting]:
    data = load_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, YMap):
        raise InputError("a vars file must be a mapping of variable names to values",
                         getattr(data, "mark", None), file=str(path))
    out: dict[str, VarSetting] = {}
    refused: list[InputError] = []
    for key in data:
        if not isinstance(key, str) or not key:
            raise InputError(f"a variable name must be a non-empty string, got {key!r}", data.key_mark(key))
        problem = check(key) if check is not None else None
        if problem:
            refused.append(InputError(problem, data.key_mark(key)))
        out[key] = VarSetting(data[key], data.value_mark(key))
    if refused:
        raise InputError.collect(refused)
    return out
