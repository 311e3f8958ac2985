"""The operator's policy on the controller: the inventory's ``sandfleet_policy`` and ``--policy FILE``.

The rules and the check live with the host side (``sandfleet_agent/portable/policy.py``), which
enforces them on every host; this module reads the operator's documents with their positions,
so a mistake is reported as ``file:line:column`` like any playbook error, and composes the layers
each host's requests carry: the inventory's policy for that host (or the built-in default), with
``--allow-unsandboxed`` / ``sandfleet_allow_unsandboxed`` and a ``sandfleet_sandbox`` pin folded
in, then the ``--policy`` file, which only narrows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from sandfleet.errors import InputError, Mark
from sandfleet.load.sandbox_spec import plain
from sandfleet.load.yamlsrc import YList, YMap, load_yaml_file
from sandfleet_agent.portable.policy import BACKENDS, DEFAULT, Effective, Policy, PolicyError, complete, parse

INVENTORY_SOURCE = "inventory sandfleet_policy"
DEFAULT_SOURCE = DEFAULT.source


def read_policy(value: Any, mark: Optional[Mark], source: str) -> Policy:
    """A policy document loaded with positions (a YAML inventory value or file), checked."""
    try:
        return parse(plain(value), source)
    except PolicyError as exc:
        where = _position(value, exc.path, mark, exc.at_key)
        raise InputError(f"{_var(source)}{exc.message}", where, allowed=exc.allowed) from None


def load_policy_file(path: str) -> Policy:
    """``--policy FILE``: a layer that can only narrow what the inventory allows."""
    data = load_yaml_file(path)
    if not isinstance(data, (YMap, type(None))):
        raise InputError("a policy file is a mapping of policy keys", getattr(data, "mark", Mark(path, 1, 1)))
    return read_policy(data, Mark(path, 1, 1), f"--policy {path}")


def operator_layer(inventory_policy: Optional[Policy], *, unsandboxed: bool, pin: Optional[str]) -> Policy:
    """The first layer for one host: its inventory policy (or the built-in default), completed,
    with the operator's consent to unsandboxed tasks and its backend pin folded in."""
    layer = complete(inventory_policy) if inventory_policy is not None else DEFAULT
    if unsandboxed:
        layer = dataclasses.replace(layer, unsandboxed=True)
    if pin in BACKENDS and (inventory_policy is None or inventory_policy.linux_backends is None):
        layer = dataclasses.replace(layer, linux_backends=(pin,))
    return layer


def effective(inventory_policy: Optional[Policy], cli_policy: Optional[Policy], *, unsandboxed: bool,
              pin: Optional[str]) -> Effective:
    """The operator's layers for one host, as its requests carry them."""
    layers = [operator_layer(inventory_policy, unsandboxed=unsandboxed, pin=pin)]
    if cli_policy is not None:
        layers.append(cli_policy)
    return Effective(tuple(layers))


def _var(source: str) -> str:
    return "sandfleet_policy: " if source == INVENTORY_SOURCE else ""


def _position(value: Any, path: tuple[Any, ...], default: Optional[Mark], at_key: bool) -> Optional[Mark]:
    """The mark of ``path`` inside a loaded document (its key's when ``at_key``): the deepest
    part of the path that the document has."""
    mark = getattr(value, "mark", default)
    node = value
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, YMap) and part in node:
            mark = node.key_mark(part) if last and at_key else node.value_mark(part)
            node = node[part]
        elif isinstance(node, YList) and isinstance(part, int) and 0 <= part < len(node):
            mark = node.item_mark(part)
            node = node[part]
        else:
            break
    return mark
