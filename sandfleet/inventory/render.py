"""``sandfleet inventory --list`` and ``--graph``: the shapes ``ansible-inventory`` prints.

``--list``: each group that has direct hosts or child groups gets an entry with ``hosts`` (direct
members only; never for ``all``) and ``children``; empty groups are left out but stay named in
their parent's ``children``; group variables are not listed per group but folded into each
host's entry in ``_meta.hostvars`` (hosts with no variables are left out there).
``--graph``: the tree from ``all``, child groups before hosts, a group repeated under every
parent. :func:`dumps` prints JSON byte for byte as ``ansible-inventory`` does.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from sandfleet.inventory.model import ALL, Group

# The JSON profile ansible-core 2.19 names in `_meta` for this output.
JSON_PROFILE = "inventory_legacy"


def list_json(groups: Mapping[str, Group], all_hosts: Sequence[str],
              hostvars: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    available = frozenset(all_hosts)
    results: dict[str, Any] = {}
    seen: set[str] = set()

    def add(name: str) -> None:
        group = groups[name]
        entry: dict[str, Any] = {}
        if name != ALL:
            members = [h for h in group.hosts if h in available]
            if members:
                entry["hosts"] = members
        if group.children:
            entry["children"] = list(group.children)
        if entry:
            results[name] = entry
        for child in group.children:
            if child not in seen:
                seen.add(child)
                add(child)

    add(ALL)
    meta: dict[str, Any] = {}
    for host in all_hosts:
        values = hostvars(host)
        if values:
            meta[host] = values
    results["_meta"] = {"hostvars": meta, "profile": JSON_PROFILE}
    return results


def graph(groups: Mapping[str, Group], top: str = ALL) -> str:
    lines: list[str] = []

    def walk(name: str, depth: int) -> None:
        lines.append(_indent(f"@{name}:", depth))
        for child in groups[name].children:
            walk(child, depth + 1)
        if name != ALL:
            lines.extend(_indent(host, depth + 1) for host in groups[name].hosts)

    walk(top, 0)
    return "\n".join(lines)


def _indent(text: str, depth: int) -> str:
    return "  |" * depth + "--" + text if depth else text


def dumps(data: Any) -> str:
    """JSON as ``ansible-inventory`` writes it: sorted keys, four-space indent, UTF-8 unescaped."""
    return json.dumps(data, sort_keys=True, indent=4, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
