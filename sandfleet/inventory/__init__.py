"""Ansible-compatible inventories: YAML and INI sources, group_vars/host_vars, host patterns.

``load_inventory(["hosts.ini", "more/"])`` reads every source in order (later sources win for
the same variable at the same level) and returns an :class:`Inventory`. Every mistake in a
source is an :class:`~sandfleet.errors.InputError` naming the file and line.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandfleet.errors import InputError
from sandfleet.inventory.builder import InventoryBuilder
from sandfleet.inventory.hostconfig import HostConfig
from sandfleet.inventory.inventory import Inventory
from sandfleet.inventory.model import Group, Host, VarSetting
from sandfleet.inventory.render import dumps
from sandfleet.inventory.sources import read_sources
from sandfleet.inventory.vars_dirs import VarsDirs

__all__ = ["Group", "Host", "HostConfig", "Inventory", "VarSetting", "dumps", "load_inventory"]


def load_inventory(sources: Sequence[str]) -> Inventory:
    """Read inventory sources (files, directories, or ``host1,host2,`` lists) into one inventory."""
    if isinstance(sources, str):
        raise TypeError("load_inventory takes a sequence of sources, not one string")
    if not sources:
        raise InputError("no inventory given (use -i FILE, -i DIRECTORY or -i 'host1,host2,')")
    builder = InventoryBuilder()
    read = read_sources(sources, builder)
    groups, hosts = builder.finish()
    vars_dirs = VarsDirs([s.vars_base for s in read if s.vars_base is not None])
    inventory = Inventory(groups, hosts, vars_dirs)
    for name in inventory.hosts:  # parse every group_vars/host_vars file now: errors before anything runs
        inventory.var_settings(name)
    return inventory
