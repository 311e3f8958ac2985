"""The loaded inventory as values: groups, hosts and variables that remember where they were set.

Every variable carries the :class:`~sandfleet.errors.Mark` of the place that set it last, so a
bad value found long after loading (a port of ``99999``, an unknown ``sandfleet_os``) can still
be reported at its file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from sandfleet.errors import Mark

ALL = "all"
UNGROUPED = "ungrouped"
# Names Ansible resolves to the controller itself when no inventory host has them.
LOCALHOST_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class VarSetting:
    """One variable's value and where it was written (``None`` for values sandfleet supplies)."""

    value: Any
    mark: Optional[Mark]


VarMap = Mapping[str, VarSetting]


@dataclass(frozen=True)
class Group:
    """A group as the inventory sources declared it.

    ``hosts`` are its direct members in the order they were added; ``depth`` is the longest path
    from ``all`` and, with ``priority`` and the name, orders group variables (Ansible's rule).
    """

    name: str
    hosts: tuple[str, ...]
    children: tuple[str, ...]
    parents: tuple[str, ...]
    vars: VarMap = field(compare=False, hash=False)
    priority: int = 1
    depth: int = 0
    mark: Optional[Mark] = None


@dataclass(frozen=True)
class Host:
    """A host: its direct groups, its own inventory variables and the source that first named it.

    ``implicit`` marks Ansible's implicit localhost, which exists only when a pattern asks for
    ``localhost`` and the inventory has no such host; it belongs to no group.
    """

    name: str
    groups: tuple[str, ...]
    vars: VarMap = field(compare=False, hash=False)
    source: Optional[str] = None
    mark: Optional[Mark] = None
    implicit: bool = False


def plain_vars(settings: VarMap) -> dict[str, Any]:
    """The values alone, for callers that do not need positions."""
    return {name: setting.value for name, setting in settings.items()}


def hosts_under(groups: Mapping[str, Group], name: str) -> list[str]:
    """All hosts of a group and its descendants, in Ansible's order.

    The group's own hosts first, then its children's, then grandchildren's, level by level
    (Ansible walks each level as a set, so its order among cousins can vary from run to run;
    here it is the order the children were declared).
    """
    ordered = [name, *groups[name].children]
    seen = set(ordered)
    level = list(groups[name].children)
    while level:
        nxt: list[str] = []
        for group in level:
            for child in groups[group].children:
                if child not in seen:
                    seen.add(child)
                    nxt.append(child)
        ordered.extend(nxt)
        level = nxt
    out: list[str] = []
    taken: set[str] = set()
    for group in ordered:
        for host in groups[group].hosts:
            if host not in taken:
                taken.add(host)
                out.append(host)
    return out
