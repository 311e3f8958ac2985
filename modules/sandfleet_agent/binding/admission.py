"""Admitting one request on this host: does its intent fit the effective policy?

The rules are :mod:`.policy`'s; this module applies them to a bound intent with the host's
facts. It runs in the agent before anything is started, and in a dry-run on the controller with
the inventory's facts, so both give the same verdict.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from sandfleet_agent.binding.bind import WALL_SOURCES, BoundPolicy, FsView, bind_ceiling, contains, spec_paths
from sandfleet_agent.binding.facts import HostFacts
from sandfleet_agent.portable.intent import Access, Permission, SandboxIntent
from sandfleet_agent.portable.policy import (
    Denial,
    Effective,
    Grant,
    filesystem_denial,
    network_denial,
    path_spec,
    raise_hint,
    unsandboxed_denial,
)

__all__ = ["Denial", "admit_bare", "admit_bound", "with_denies"]


def with_denies(intent: SandboxIntent, effective: Effective) -> SandboxIntent:
    """The intent plus the policy's mandatory denies (credentials, the operator's and the host
    owner's lists), which every task gets whatever it asked for."""
    denies = tuple(Permission(path_spec(text), Access.DENY) for text in effective.denies)
    return replace(intent, permissions=intent.permissions + denies)


def admit_bare(effective: Effective) -> Optional[Denial]:
    """Whether a task may run with ``sandbox: false``."""
    return unsandboxed_denial(effective)


def admit_bound(bound: BoundPolicy, facts: HostFacts, fs: FsView, effective: Effective,
                pin: Optional[str]) -> Optional[Denial]:
    """The first way the bound intent exceeds the policy: its network, a grant no ceiling covers
    or one reaching into a mandatory deny, or a pinned backend a later layer does not allow."""
    denial = network_denial(bound.network.mode, bound.network.allow, effective)
    if denial is not None:
        return denial
    grants = [Grant(r.path, r.access, r.source) for r in bound.rules
              if r.access is not Access.DENY and r.source not in WALL_SOURCES]
    views = [(layer, bind_ceiling(layer, facts, fs)) for layer in effective.layers if layer.filesystem is not None]
    denied = [path for text in effective.denies for path in spec_paths(path_spec(text), facts, fs)]
    denial = filesystem_denial(grants, bound.minimal_read, views, denied, bound.protected_names,
                               contains(facts.os), bound.private)
    if denial is not None:
        return denial
    if pin and facts.os == "linux":
        for layer in effective.layers[1:]:
            if layer.linux_backends is not None and pin not in layer.linux_backends:
                return Denial(f"sandfleet_sandbox={pin} is not among the Linux backends the policy allows "
                              f"({', '.join(layer.linux_backends)}; {raise_hint(layer.source, 'linux_backends')})",
                              layer.source)
    return None


def backends(effective: Effective, pin: Optional[str]) -> tuple[str, ...]:
    """The Linux backends a task may use, in order: the pin (the operator's own choice) or the
    policy's list."""
    return (pin,) if pin else effective.linux_backends
