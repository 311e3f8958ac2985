"""``sandfleet inventory --list`` and ``--graph``: the shapes ``ansible-inventory`` prints.

``--list``: each group that has direct hosts or child groups gets an entry with ``hosts`` (direct
members only; never for ``all``) and ``children``; empty groups are left out but stay named in
their parent's ``children``; group variables are not listed per group but folded into each
host's entry in ``_meta.hostvars`` (hosts with no variables are left out there).
``--graph``: the tree from ``all``, child groups before hosts, a group repeated under every
parent. :func:`dumps` prints JSON byte for byte as ``ansible-inventory`` does: keys sorted, or, when
a mapping mixes keys that cannot be ordered together (``{a: 1, 0: 2}``, from Ansible's own tests),
the whole document in inventory order with a warning, as ``ansible-inventory`` falls back; JSON
object keys are strings (``0`` prints as ``"0"``, ``true`` as ``"true"``, a date as its ISO text).
A ``!vault`` value prints as ``{"__ansible_vault": "<ciphertext>"}`` and ``!unsafe`` text as text.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from sandfleet.inventory.model import ALL, Group
from sandfleet.load.yamlsrc import VaultedValue

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


def dumps(data: Any, on_warning: Optional[Callable[[str], None]] = None) -> str:
    """JSON as ``ansible-inventory`` writes it: sorted keys, four-space indent, UTF-8 unescaped.

    Keys that cannot be sorted together (an int beside a str) make it print the document
    unsorted, telling ``on_warning`` why, as ``ansible-inventory`` does."""
    data = _json_keys(data)
    try:
        return json.dumps(data, sort_keys=True, indent=4, ensure_ascii=False, default=_json_default)
    except TypeError as exc:
        text = json.dumps(data, sort_keys=False, indent=4, ensure_ascii=False, default=_json_default)
        if on_warning is not None:
            on_warning(f"Could not sort JSON output due to issues while sorting keys: {exc}")
        return text


_JSON_KEYS = (str, int, float, bool, type(None))


def _json_keys(value: Any) -> Any:
    """Keys JSON cannot hold (a YAML date) as text; everything else as it is (json turns ``0``
    into ``"0"`` itself). Copies only the mappings that need it."""
    if isinstance(value, dict):
        items = [(k if isinstance(k, _JSON_KEYS) else _key_text(k), _json_keys(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items())):
            return value
        return dict(items)
    if isinstance(value, list):
        items = [_json_keys(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    return value


def _key_text(key: Any) -> str:
    return key.isoformat() if isinstance(key, (datetime.date, datetime.datetime, datetime.time)) else str(key)


def _json_default(value: Any) -> Any:
    if isinstance(value, VaultedValue):
        return {"__ansible_vault": value.ciphertext}
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
