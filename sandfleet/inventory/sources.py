"""Turns ``-i`` arguments into parsed inventory files, choosing YAML or INI per file.

As in Ansible: a directory is read entry by entry in sorted order (recursively, skipping hidden
files, ``group_vars``/``host_vars``, backups and ``.cfg``/``.retry``/``.md``-like files); a
string with a comma that is not a path is a host list (``web1,web2,``); ``.yml``, ``.yaml`` and
``.json`` files are YAML; a file without an extension is YAML when it reads like YAML and INI
otherwise; every other file is INI. Unlike Ansible, a source that cannot be read is an error,
not a warning followed by an empty inventory: nothing should run against a fleet half-loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sandfleet.errors import InputError, Mark
from sandfleet.inventory.builder import InventoryBuilder
from sandfleet.inventory.ini_source import decode_ini, parse_ini_inventory
from sandfleet.inventory.model import UNGROUPED
from sandfleet.inventory.ranges import parse_address
from sandfleet.inventory.yaml_source import parse_yaml_inventory
from sandfleet.load.yamlsrc import load_yaml_text

YAML_EXTENSIONS = (".yml", ".yaml", ".json")
_IGNORED = re.compile(
    r"^\.|^host_vars$|^group_vars$|^vars_plugins$"
    r"|(\.pyc|\.pyo|\.swp|\.bak|~|\.rpm|\.md|\.txt|\.rst|\.orig|\.cfg|\.retry)$")
# A first line like `all:` or `web:  # comment` (a key, no `=` before the colon) reads as YAML.
_YAML_KEY_LINE = re.compile(r"^[^\s=\[#;][^=]*?:(\s|$)")


@dataclass(frozen=True)
class Source:
    """One ``-i`` argument: as written, and the directory its group_vars/host_vars live in."""

    given: str
    vars_base: Optional[Path]


def read_sources(sources: Sequence[str], builder: InventoryBuilder) -> list[Source]:
    out: list[Source] = []
    for given in sources:
        if not given:
            raise InputError("empty inventory source (-i needs a file, a directory or a host list)")
        path = Path(os.path.expanduser(given))
        if "," in given and not path.exists():
            _read_host_list(given, builder)
            out.append(Source(given, None))
        elif path.is_dir():
            _read_directory(path, builder)
            out.append(Source(given, path))
        elif path.exists():
            _read_file(path, builder)
            out.append(Source(given, path.parent))
        else:
            raise InputError("inventory source not found (expected a file, a directory, or a "
                             "comma-separated host list like 'web1,web2,')", file=given)
    return out


def _read_directory(directory: Path, builder: InventoryBuilder) -> None:
    for entry in sorted(os.listdir(directory)):
        if _IGNORED.search(entry):
            continue
        path = directory / entry
        if path.is_dir():
            _read_directory(path, builder)
        else:
            _read_file(path, builder)


def _read_file(path: Path, builder: InventoryBuilder) -> None:
    name = str(path)
    ext = path.suffix.lower() if path.suffix else ""
    if ext == ".toml":
        raise InputError("TOML inventories are not supported", file=name, allowed=("YAML", "INI"))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read inventory: {exc.strerror}", file=name) from None
    if data.startswith(b"#!") and os.access(path, os.X_OK):
        raise InputError("inventory scripts are not run by sandfleet; save the script's output as "
                         "a YAML inventory instead", file=name, allowed=("YAML", "INI"))
    builder.current_source = os.path.abspath(name)
    try:
        if ext in YAML_EXTENSIONS or (not ext and _reads_like_yaml(data)):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=name) from None
            parse_yaml_inventory(load_yaml_text(text, name), name, builder)
        else:
            parse_ini_inventory(decode_ini(data, name), name, builder)
    finally:
        builder.current_source = None


def _reads_like_yaml(data: bytes) -> bool:
    for raw in data.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith(("---", "%", "{")):
            return True
        return bool(_YAML_KEY_LINE.match(line))
    return False


def _read_host_list(given: str, builder: InventoryBuilder) -> None:
    """``-i 'web1,web2:2222,'``: hosts in ``ungrouped``; ranges stay literal, as in Ansible.

    ``-i localhost,`` names ``localhost`` explicitly, so (as in Ansible) it is an ordinary host reached
    over SSH: only Ansible's *implicit* localhost, which sandfleet does not create, gets
    ``ansible_connection: local`` ("the localhost in inventory is treated just like any other host",
    Ansible's "Implicit 'localhost'" page). To run on this machine without SSH, set it:
    an inventory line ``localhost ansible_connection=local``."""
    col = 1
    for item in given.split(","):
        host = item.strip()
        if host:
            parsed = parse_address(host)
            name, port = parsed if parsed and "[" not in parsed[0] else (host, None)
            if not builder.has_host(name):
                builder.add_host(name, UNGROUPED, port, Mark(given, 1, col + item.index(host)))
        col += len(item) + 1
