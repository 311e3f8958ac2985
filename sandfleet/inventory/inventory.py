"""The loaded inventory: host selection, merged variables, host configuration and listings.

Variable precedence is Ansible's (its default ``VARIABLE_PRECEDENCE``), lowest first:

1. ``all`` group vars from the inventory sources
2. other groups' vars from the inventory sources, ordered by depth, ``ansible_group_priority``,
   then name (a child group beats its parent)
3. ``group_vars/all`` files
4. other groups' ``group_vars`` files, in the same order, each source directory in turn
5. the host's own vars from the inventory sources
6. ``host_vars`` files

So a ``group_vars/all.yml`` value beats a ``[web:vars]`` value: that surprises people, but it is
what Ansible does, and an inventory must mean the same thing to both tools.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from sandfleet.errors import InputError, Mark
from sandfleet.inventory.hostconfig import HostConfig, build_host_config
from sandfleet.inventory.model import ALL, LOCALHOST_NAMES, Group, Host, VarSetting, plain_vars
from sandfleet.inventory.patterns import PatternMatcher
from sandfleet.inventory.ranges import is_ip_address
from sandfleet.inventory.render import graph, list_json
from sandfleet.inventory.vars_dirs import VarsDirs
from sandfleet.load.playbook import connection_secret, operator_only
from sandfleet.load.yamlsrc import UnsafeText, VaultedValue, vaulted_message
from sandfleet.templating import VarRenderer

# Names ansible-inventory leaves out of --host and --list output (Ansible's INTERNAL_STATIC_VARS,
# the ones an inventory could set).
INTERNAL_VARS = frozenset((
    "ansible_async_path", "ansible_collection_name", "ansible_config_file", "ansible_dependent_role_names",
    "ansible_diff_mode", "ansible_facts", "ansible_forks", "ansible_inventory_sources", "ansible_limit",
    "ansible_play_batch", "ansible_play_hosts", "ansible_play_hosts_all", "ansible_play_role_names",
    "ansible_playbook_python", "ansible_role_name", "ansible_role_names", "ansible_run_tags",
    "ansible_skip_tags", "ansible_verbosity", "ansible_version", "inventory_dir", "inventory_file",
    "inventory_hostname", "inventory_hostname_short", "groups", "group_names", "hostvars", "playbook_dir",
    "play_hosts", "role_name", "role_names", "role_path", "role_uuid",
))


class Inventory:
    """Hosts and groups from every source, with their variables resolved as Ansible would."""

    def __init__(self, groups: Mapping[str, Group], hosts: Mapping[str, Host], vars_dirs: VarsDirs,
                 playbook_vars: Optional[VarsDirs] = None) -> None:
        self._groups = dict(groups)
        self._hosts = dict(hosts)
        self._vars_dirs = vars_dirs
        self._playbook_vars = playbook_vars
        self._matcher = PatternMatcher(self._groups, list(self._hosts), self._localhost_name)
        self._settings: dict[str, dict[str, VarSetting]] = {}
        self._operator_settings: dict[str, dict[str, VarSetting]] = {}
        self._groups_magic: Optional[dict[str, list[str]]] = None

    def beside_playbook(self, playbook_dir: str) -> Inventory:
        """This inventory with the ``group_vars/`` and ``host_vars/`` beside a playbook, as Ansible
        loads them: each level just above the inventory's own (``group_vars/all``, then each
        group's, then ``host_vars``). Every file is read now, so a mistake stops the run before
        anything runs. The playbook's folder is the playbook author's: its files may not set what
        only the operator decides (``load.playbook.OPERATOR_ONLY``) nor lead out of it (a symlink
        to the operator's ``~/.kube/config``), and a host's connection and sandbox settings never
        see them, even through a template. A folder that is also an
        inventory source's is the inventory's (read once, as the operator's)."""
        base = Path(playbook_dir).resolve()
        if any(b.resolve() == base for b in self._vars_dirs.bases) or not any(
                (base / kind).is_dir() for kind in ("group_vars", "host_vars")):
            return self
        playbook_vars = VarsDirs([base], check=operator_only, confined=True)
        beside = Inventory(self._groups, self._hosts, self._vars_dirs, playbook_vars)
        beside._operator_settings = self._operator_settings  # the same for both: share the work
        for name in beside.hosts:
            beside.var_settings(name)
        return beside

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host names in the order the sources first named them."""
        return tuple(self._hosts)

    @property
    def groups(self) -> Mapping[str, Group]:
        """Groups by name, in the order they were declared (``all`` and ``ungrouped`` first)."""
        return dict(self._groups)

    def group_hosts(self, group: str) -> list[str]:
        """Every host in ``group`` or below it, in Ansible's order."""
        if group not in self._groups:
            raise InputError(f"unknown group {group!r}{_did_you_mean(group, self._groups)}")
        return list(self._matcher.group_hosts(group))

    def select(self, pattern: str, limit: Optional[str] = None) -> list[str]:
        """Hosts matching an Ansible host pattern, restricted by a ``--limit`` pattern if given."""
        return self._matcher.select(pattern, limit)

    def unmatched_terms(self, pattern: str) -> list[str]:
        """The terms of a host pattern that match no host (a typo'd group), as Ansible warns of them."""
        return self._matcher.unmatched(pattern)

    def host_vars(self, name: str) -> dict[str, Any]:
        """The host's merged variables from the inventory (no magic variables, nothing from beside
        a playbook), templates unrendered."""
        return plain_vars(self._operator_vars(name))

    def var_settings(self, name: str) -> dict[str, VarSetting]:
        """The host's merged variables as templates see them (with the playbook's ``group_vars/``
        and ``host_vars/``, :meth:`beside_playbook`), each with the place it was set."""
        if self._playbook_vars is None:
            return self._operator_vars(name)
        if name not in self._settings:
            self._settings[name] = self._merge(self._host(name), self._playbook_vars)
        return dict(self._settings[name])

    def _operator_vars(self, name: str) -> dict[str, VarSetting]:
        host = self._host(name)
        if name not in self._operator_settings:
            self._operator_settings[name] = self._merge(host, None)
        return dict(self._operator_settings[name])

    def magic_vars(self, name: str) -> dict[str, Any]:
        """The variables Ansible defines itself for a host.

        ``groups`` is one dict shared by every host (building it per host is the slow part of
        a large fleet): read it, do not change it.
        """
        host = self._host(name)
        if self._groups_magic is None:
            self._groups_magic = {group: list(self._matcher.group_hosts(group)) for group in self._groups}
        source = host.source
        return {
            "inventory_hostname": host.name,
            "inventory_hostname_short": host.name if is_ip_address(host.name) else host.name.split(".")[0],
            "group_names": sorted(g for g in self._memberships(host) if g != ALL),
            "groups": self._groups_magic,
            "inventory_file": source,
            "inventory_dir": os.path.dirname(source) if source else None,
        }

    def renderer(self, name: str, extra_vars: Optional[Mapping[str, Any]] = None) -> VarRenderer:
        """Renders templates against the host's variables; ``extra_vars`` (play vars) win over them."""
        return self._renderer(name, extra_vars, self.magic_vars(name))

    def _renderer(self, name: str, extra_vars: Optional[Mapping[str, Any]], magic: Mapping[str, Any]) -> VarRenderer:
        settings = self.var_settings(name)
        for key, value in (extra_vars or {}).items():
            settings[key] = VarSetting(value, None)
        return TaggedRenderer(settings, magic)

    def host_config(self, name: str, extra_vars: Optional[Mapping[str, Any]] = None) -> HostConfig:
        """The host's checked connection and sandbox settings, from the inventory and ``extra_vars``
        alone (never from beside a playbook); a bad value is an InputError."""
        magic = self.magic_vars(name)
        settings = self._operator_vars(name)
        for key, value in (extra_vars or {}).items():
            settings[key] = VarSetting(value, None)
        renderer = TaggedRenderer(settings, magic)
        all_vars = {**self.host_vars(name), **(extra_vars or {}), **magic}
        return build_host_config(self._host(name).name, renderer, all_vars)

    def host(self, name: str) -> dict[str, Any]:
        """One host's variables as ``ansible-inventory --host`` prints them."""
        return {k: v for k, v in self.host_vars(name).items() if k not in INTERNAL_VARS}

    def to_list_json(self) -> dict[str, Any]:
        """The structure ``ansible-inventory --list`` prints (dump it with ``render.dumps``)."""
        return list_json(self._groups, self._matcher.group_hosts(ALL), self.host)

    def graph(self, group: str = ALL) -> str:
        """The ``ansible-inventory --graph`` tree, from ``group`` down."""
        if group not in self._groups:
            raise InputError(f"unknown group {group!r}{_did_you_mean(group, self._groups)}")
        return graph(self._groups, group)

    def _host(self, name: str) -> Host:
        host = self._hosts.get(name)
        if host is not None:
            return host
        if name in LOCALHOST_NAMES:
            explicit = self._localhost_name(name)
            if explicit is not None and explicit in self._hosts:
                return self._hosts[explicit]
            return Host(name=name, groups=(), implicit=True, vars={
                "ansible_connection": VarSetting("local", None),
                "ansible_python_interpreter": VarSetting(sys.executable, None),
            })
        raise InputError(f"unknown host {name!r}: it is not in the inventory{_did_you_mean(name, self._hosts)}")

    def _localhost_name(self, requested: str) -> Optional[str]:
        """The host a localhost pattern means: the inventory's first localhost-like host, if any."""
        for host in self._hosts:
            if host in LOCALHOST_NAMES:
                return host
        return requested

    def _memberships(self, host: Host) -> list[str]:
        out: list[str] = []
        todo = list(host.groups)
        while todo:
            group = todo.pop(0)
            if group not in out:
                out.append(group)
                todo.extend(self._groups[group].parents)
        if not host.implicit and ALL not in out:
            out.append(ALL)
        return out

    def _merge(self, host: Host, playbook: Optional[VarsDirs]) -> dict[str, VarSetting]:
        groups = sorted((self._groups[g] for g in self._memberships(host) if g != ALL),
                        key=lambda g: (g.depth, g.priority, g.name))
        names = [g.name for g in groups]
        dirs = [self._vars_dirs] if playbook is None else [self._vars_dirs, playbook]  # the playbook's win
        merged: dict[str, VarSetting] = dict(self._groups[ALL].vars)
        for group in groups:
            merged.update(group.vars)
        for each in dirs:
            merged.update(each.collect("group_vars", [ALL]))
        for each in dirs:
            merged.update(each.collect("group_vars", names))
        merged.update(host.vars)
        for each in dirs:
            merged.update(each.collect("host_vars", [host.name]))
        return merged


class TaggedRenderer(VarRenderer):
    """Renders as :class:`VarRenderer` does, with Ansible's tagged values: ``!unsafe`` text is
    taken literally (never a template), and a ``!vault`` value anywhere in what is rendered is an
    error naming the variable, since sandfleet cannot decrypt it. Connection secrets
    (``ansible_password``, ``ansible_become_password``, ...) are the connection's: no template
    reads them (a deliberate difference from Ansible, docs/variables.md), though the host's
    settings do (:meth:`get`)."""

    def hidden(self, name: str) -> Optional[str]:
        return connection_secret(name)

    def _render(self, value: Any, what: str, mark: Optional[Mark]) -> Any:
        if isinstance(value, UnsafeText):
            return str(value)
        if isinstance(value, VaultedValue):
            raise InputError(vaulted_message(what), mark)
        return super()._render(value, what, mark)


def _did_you_mean(name: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""

