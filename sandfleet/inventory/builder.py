"""Collects what the inventory sources declare and enforces the rules between groups and hosts.

The source parsers (YAML, INI, host lists) only call this; it keeps Ansible's invariants in one
place: every group descends from ``all``, hosts in no other group land in ``ungrouped``, group
trees have no loops, the first source naming a host is its ``inventory_file``, and
``ansible_group_priority`` set in an inventory source is a group property, not a variable.
"""

from __future__ import annotations

from typing import Any, Optional

from sandfleet.errors import InputError, Mark
from sandfleet.inventory.model import ALL, UNGROUPED, Group, Host, VarSetting

PRIORITY_VAR = "ansible_group_priority"


class _GroupState:
    def __init__(self, name: str, mark: Optional[Mark]) -> None:
        self.name = name
        self.mark = mark
        self.hosts: list[str] = []
        self.children: list[str] = []
        self.parents: list[str] = []
        self.vars: dict[str, VarSetting] = {}
        self.priority = 1


class _HostState:
    def __init__(self, name: str, source: Optional[str], mark: Optional[Mark]) -> None:
        self.name = name
        self.source = source
        self.mark = mark
        self.groups: list[str] = []
        self.vars: dict[str, VarSetting] = {}


class InventoryBuilder:
    """Mutable while sources are read; :meth:`finish` turns it into frozen groups and hosts."""

    def __init__(self) -> None:
        self._groups: dict[str, _GroupState] = {}
        self._hosts: dict[str, _HostState] = {}
        self.current_source: Optional[str] = None
        for name in (ALL, UNGROUPED):
            self._groups[name] = _GroupState(name, None)
        self._link(ALL, UNGROUPED)

    def has_group(self, name: str) -> bool:
        return name in self._groups

    def has_host(self, name: str) -> bool:
        return name in self._hosts

    def add_group(self, name: str, mark: Optional[Mark]) -> None:
        if not isinstance(name, str) or not name:
            raise InputError(f"a group name must be a non-empty string, got {name!r}", mark)
        if name not in self._groups:
            self._groups[name] = _GroupState(name, mark)

    def add_host(self, name: str, group: Optional[str], port: Optional[int], mark: Optional[Mark]) -> None:
        """Declare a host (again); like Ansible, a ``:port`` counts only where the host is new."""
        if not isinstance(name, str) or not name:
            raise InputError(f"a host name must be a non-empty string, got {name!r}", mark)
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = _HostState(name, self.current_source, mark)
            if port is not None:
                host.vars["ansible_port"] = VarSetting(port, mark)
        if group is not None and name not in self._groups[group].hosts:
            self._groups[group].hosts.append(name)
            host.groups.append(group)

    def set_group_var(self, group: str, key: Any, value: Any, mark: Optional[Mark]) -> None:
        _check_var_name(key, mark)
        if key == PRIORITY_VAR:
            self._groups[group].priority = _priority(value, mark)
        else:
            self._groups[group].vars[key] = VarSetting(value, mark)

    def set_host_var(self, host: str, key: Any, value: Any, mark: Optional[Mark]) -> None:
        _check_var_name(key, mark)
        self._hosts[host].vars[key] = VarSetting(value, mark)

    def add_child(self, parent: str, child: str, mark: Optional[Mark]) -> None:
        if child == ALL:
            raise InputError("'all' cannot be a child group: every group is already inside it", mark)
        if child == parent:
            raise InputError(f"group {child!r} cannot be a child of itself", mark)
        if child in self._ancestors(parent):
            raise InputError(
                f"adding group {child!r} as a child of {parent!r} creates a loop "
                f"({child!r} is already an ancestor of {parent!r})", mark)
        self._link(parent, child)

    def _link(self, parent: str, child: str) -> None:
        if child not in self._groups[parent].children:
            self._groups[parent].children.append(child)
        if parent not in self._groups[child].parents:
            self._groups[child].parents.append(parent)

    def _ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self._groups[name].parents)
        while todo:
            group = todo.pop()
            if group not in seen:
                seen.add(group)
                todo.extend(self._groups[group].parents)
        return seen

    def finish(self) -> tuple[dict[str, Group], dict[str, Host]]:
        """Apply Ansible's reconcile rules and freeze the result."""
        for name in list(self._groups):
            if name != ALL and not self._groups[name].parents:
                self._link(ALL, name)
        ungrouped = self._groups[UNGROUPED]
        for host in self._hosts.values():
            memberships: set[str] = set(host.groups)
            for group in host.groups:
                memberships |= self._ancestors(group)
            if UNGROUPED in host.groups:
                if memberships - {ALL, UNGROUPED}:
                    ungrouped.hosts.remove(host.name)
                    host.groups.remove(UNGROUPED)
            elif not memberships - {ALL}:
                ungrouped.hosts.append(host.name)
                host.groups.append(UNGROUPED)
        self._check_name_clashes()
        depths: dict[str, int] = {}
        groups = {
            name: Group(name=name, hosts=tuple(g.hosts), children=tuple(g.children),
                        parents=tuple(g.parents), vars=dict(g.vars), priority=g.priority,
                        depth=self._depth(name, depths), mark=g.mark)
            for name, g in self._groups.items()
        }
        hosts = {
            name: Host(name=name, groups=tuple(h.groups), vars=dict(h.vars), source=h.source, mark=h.mark)
            for name, h in self._hosts.items()
        }
        return groups, hosts

    def _depth(self, name: str, memo: dict[str, int]) -> int:
        if name not in memo:
            parents = self._groups[name].parents
            memo[name] = 1 + max(self._depth(p, memo) for p in parents) if parents else 0
        return memo[name]

    def _check_name_clashes(self) -> None:
        for name, host in self._hosts.items():
            if name in self._groups:
                group_mark = self._groups[name].mark
                where = f" (the host is at {host.mark})" if host.mark and group_mark else ""
                raise InputError(
                    f"{name!r} is both a host and a group{where}; a pattern could not tell which one "
                    "is meant, so rename one of them", group_mark or host.mark)


def _check_var_name(key: Any, mark: Optional[Mark]) -> None:
    if not isinstance(key, str) or not key:
        raise InputError(f"a variable name must be a non-empty string, got {key!r}", mark)


def _priority(value: Any, mark: Optional[Mark]) -> int:
    if isinstance(value, bool):
        raise InputError(f"{PRIORITY_VAR} must be an integer, got {value!r}", mark)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{PRIORITY_VAR} must be an integer, got {value!r}", mark) from None
