"""YAML (and JSON) inventories: ``all: {hosts, vars, children}``, as Ansible's ``yaml`` plugin reads them.

Where Ansible only warns and skips (an unknown key in a group, a group that is a list), sandfleet
stops with the position and the allowed keys: a half-read inventory would run commands on the
wrong set of hosts.
"""

from __future__ import annotations

from typing import Any, Optional

from sandfleet.errors import InputError, Mark
from sandfleet.inventory.builder import InventoryBuilder
from sandfleet.inventory.ranges import RangeError, expand_host_pattern
from sandfleet.load.yamlsrc import YMap

GROUP_KEYS = ("children", "hosts", "vars")


def parse_yaml_inventory(data: Any, file: str, builder: InventoryBuilder) -> None:
    """Add one loaded YAML document's groups, hosts and variables to ``builder``."""
    top = Mark(file, 1, 1)
    if data is None:
        return  # an empty file is an empty inventory, as Ansible ends up treating it
    if not isinstance(data, YMap):
        raise InputError(
            f"a YAML inventory must be a mapping of group names (like 'all:'), got {_kind(data)}",
            getattr(data, "mark", top))
    if "plugin" in data:
        raise InputError("inventory plugin configuration files are not supported; write the hosts out "
                         "as YAML or INI", data.key_mark("plugin"))
    for name in data:
        _parse_group(builder, name, data[name], data.key_mark(name), data.value_mark(name))


def _parse_group(builder: InventoryBuilder, name: Any, body: Any, key_mark: Mark, value_mark: Mark) -> str:
    if not isinstance(name, str):
        raise InputError(f"a group name must be a string, got {name!r}", key_mark)
    if body is not None and not isinstance(body, YMap):
        raise InputError(f"group {name!r} must be a mapping with hosts, vars and children (or empty), "
                         f"got {_kind(body)}", value_mark, allowed=GROUP_KEYS)
    builder.add_group(name, key_mark)
    if body is None:
        return name
    for section in body:
        section_mark = body.key_mark(section)
        if section not in GROUP_KEYS:
            raise InputError(f"unknown key {section!r} in group {name!r}", section_mark, allowed=GROUP_KEYS)
        entries = _section_mapping(name, section, body)
        if entries is None:
            continue
        here = body.value_mark(section)
        if section == "vars":
            for var in entries:
                builder.set_group_var(name, var, entries[var], _value_mark(entries, var, here))
        elif section == "children":
            for child in entries:
                child_name = _parse_group(builder, child, entries[child], _key_mark(entries, child, here),
                                          _value_mark(entries, child, here))
                builder.add_child(name, child_name, _key_mark(entries, child, here))
        else:
            for pattern in entries:
                _parse_host_entry(builder, name, pattern, entries[pattern], _key_mark(entries, pattern, here),
                                  _value_mark(entries, pattern, here))
    return name


def _section_mapping(group: str, section: str, body: YMap) -> Optional[dict[Any, Any]]:
    """The section as a mapping; a bare string stands for ``{string: null}`` as in Ansible."""
    value = body[section]
    if value is None:
        return None
    if isinstance(value, str):
        return {value: None}
    if not isinstance(value, dict):
        raise InputError(f"{section!r} of group {group!r} must be a mapping, got {_kind(value)}",
                         body.value_mark(section))
    return value


def _parse_host_entry(builder: InventoryBuilder, group: str, pattern: Any, host_vars: Any,
                      key_mark: Mark, value_mark: Mark) -> None:
    if not isinstance(pattern, str):
        raise InputError(f"host name {pattern!r} must be a string; quote numbers", key_mark)
    if host_vars is not None and not isinstance(host_vars, dict):
        raise InputError(f"host {pattern!r} must map to a mapping of its variables (or be empty), "
                         f"got {_kind(host_vars)}", value_mark)
    try:
        names, port = expand_host_pattern(pattern)
    except RangeError as exc:
        raise InputError(str(exc), key_mark) from None
    entries = host_vars or {}
    for host in names:
        builder.add_host(host, group, port, key_mark)
        for var in entries:
            builder.set_host_var(host, var, entries[var], _value_mark(entries, var, value_mark))


def _key_mark(mapping: Any, key: Any, fallback: Mark) -> Mark:
    return mapping.key_mark(key) if isinstance(mapping, YMap) else fallback


def _value_mark(mapping: Any, key: Any, fallback: Mark) -> Mark:
    return mapping.value_mark(key) if isinstance(mapping, YMap) else fallback


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"
